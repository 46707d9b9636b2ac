import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NodeProcess } from '../helpers/node-process.js';
import { type Frame, RawClient } from '../helpers/raw-client.js';
import { RedisProcess } from '../helpers/redis-process.js';
import { eventually, uniqueTopic } from '../helpers/util.js';

const run = promisify(execFile);

/** Runs one command on the test's redis-server with redis-cli, beside the node's own connections. */
async function redisCli(redis: RedisProcess, ...args: string[]): Promise<string> {
  const { stdout } = await run('redis-cli', ['-p', String(redis.port), ...args]);
  return stdout.trim();
}

/** What a node over Redis answers when Redis fails: every failure has a documented code and says what happened. */
describe('a node over Redis, when Redis fails', () => {
  let redis: RedisProcess;
  let node: NodeProcess;
  let client: RawClient;
  beforeAll(async () => {
    redis = await RedisProcess.start();
    node = await NodeProcess.start({ env: { REDIS_URL: redis.url, NODE_ID: 'solo', HEARTBEAT: '300ms' } });
    client = await RawClient.connect(node.wsUrl);
  });
  afterAll(async () => {
    await client?.close();
    await node?.dispose();
    await redis?.dispose();
  });

  it('answers a publish Redis received but did not answer with maybe_stored; the same key then finds it stored', async () => {
    const topic = uniqueTopic('paused');
    await client.ok({ op: 'publish', topic, data: 'before' });
    redis.pause();
    let reply: Frame;
    try {
      // The node's command deadline (5 s) passes with the publish script written to Redis but not run.
      reply = await client.request({ op: 'publish', topic, data: 'during', key: 'k-paused' });
    } finally {
      redis.resume();
    }
    expect(reply).toMatchObject({ op: 'error', code: 'maybe_stored' });
    expect(reply.message).toContain('EVALSHA');
    // Redis ran the script once it was resumed: the same key finds the message instead of storing it again.
    const again = await client.ok({ op: 'publish', topic, data: 'during', key: 'k-paused' });
    expect(again).toMatchObject({ offset: 2, duplicate: true });
    const history = await client.ok({ op: 'history', topic });
    expect((history.messages as Array<{ data: unknown }>).map((m) => m.data)).toEqual(['before', 'during']);
  });

  it('answers unavailable, naming the cause, while Redis refuses writes for lack of memory', async () => {
    const topic = uniqueTopic('oom');
    await client.ok({ op: 'publish', topic, data: 'before' });
    await redisCli(redis, 'CONFIG', 'SET', 'maxmemory', '1');
    let reply: Frame;
    try {
      reply = await client.request({ op: 'publish', topic, data: 'refused' });
    } finally {
      await redisCli(redis, 'CONFIG', 'SET', 'maxmemory', '0');
    }
    expect(reply).toMatchObject({ op: 'error', code: 'unavailable' });
    expect(reply.message).toMatch(/out of memory.*OOM/);
    const history = await client.ok({ op: 'history', topic });
    expect(history.last).toBe(1);
  });

  it('answers an unexpected Redis error reply with internal, naming the command and the error Redis gave', async () => {
    const topic = uniqueTopic('wrongtype');
    await client.ok({ op: 'publish', topic, data: 'before' });
    const meta = `mq:{${topic}}:topic:meta`;
    expect(await redisCli(redis, 'EXISTS', meta)).toBe('1');
    await redisCli(redis, 'RENAME', meta, `${meta}:saved`);
    await redisCli(redis, 'SET', meta, 'not a hash');
    let reply: Frame;
    try {
      reply = await client.request({ op: 'publish', topic, data: 'broken' });
    } finally {
      await redisCli(redis, 'RENAME', `${meta}:saved`, meta);
    }
    expect(reply).toMatchObject({ op: 'error', code: 'internal' });
    expect(reply.message).toMatch(/EVALSHA.*WRONGTYPE/);
  });

  it('answers unavailable while Redis is down', async () => {
    const topic = uniqueTopic('down');
    await client.ok({ op: 'publish', topic, data: 'before' });
    await redis.kill();
    await eventually(async () => (await fetch(`${node.url}/readyz`)).status === 503, 10_000, 'the node to see Redis down');
    const reply = await client.request({ op: 'publish', topic, data: 'during' });
    expect(reply).toMatchObject({ op: 'error', code: 'unavailable' });
    expect(reply.message).toMatch(/Redis is unreachable.*nothing was stored/);
  });
});

describe('a node over Redis that waits for a replica there is not', () => {
  let redis: RedisProcess;
  let node: NodeProcess;
  beforeAll(async () => {
    redis = await RedisProcess.start();
    node = await NodeProcess.start({
      env: { REDIS_URL: redis.url, NODE_ID: 'solo', REDIS_REPLICAS: '1', REDIS_REPLICA_TIMEOUT: '100ms' },
    });
  });
  afterAll(async () => {
    await node?.dispose();
    await redis?.dispose();
  });

  it('answers maybe_stored: the primary has the message, and resending the key does not store it twice', async () => {
    const topic = uniqueTopic('wait');
    const client = await RawClient.connect(node.wsUrl);
    try {
      const first = await client.request({ op: 'publish', topic, data: 'm', key: 'k-wait' });
      expect(first).toMatchObject({ op: 'error', code: 'maybe_stored' });
      expect(first.message).toMatch(/0 of 1 replicas/);
      const again = await client.request({ op: 'publish', topic, data: 'm', key: 'k-wait' });
      expect(again).toMatchObject({ op: 'error', code: 'maybe_stored' });
      const history = await client.ok({ op: 'history', topic });
      expect((history.messages as Array<{ data: unknown }>).map((m) => m.data)).toEqual(['m']);
    } finally {
      await client.close();
    }
  });
});
