import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type MintOptions, mintToken } from '@meshmq/server';
import { LIMITS } from '@meshmq/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { groupState, pendingEntries } from '../helpers/admin.js';
import { ENGINES, EngineNode } from '../helpers/engine-node.js';
import { NodeProcess, tempDir } from '../helpers/node-process.js';
import { RawClient } from '../helpers/raw-client.js';
import { RedisProcess } from '../helpers/redis-process.js';
import { redisCli } from '../helpers/redis-topologies.js';
import { type ProtocolClient, SioClient } from '../helpers/sio-client.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { eventually, range, uniqueTopic } from '../helpers/util.js';

/** Messages kept by topics matching `keep5.*` on these nodes. */
const KEEP = 5;

/**
 * Group promises of docs/protocol.md and docs/guarantees.md that hold on
 * both engines: redelivery when a member unsubscribes, and retention, which
 * removes messages for groups that had not consumed them too.
 */
describe.each(ENGINES)('groups on the %s engine', (engine) => {
  let server: EngineNode;
  const clients: RawClient[] = [];
  const connect = async () => {
    const client = await RawClient.connect(server.node.wsUrl);
    clients.push(client);
    return client;
  };

  beforeAll(async () => {
    const configFile = join(tempDir(), 'meshmq.json');
    writeFileSync(configFile, JSON.stringify({ topics: [{ match: 'keep5.*', maxMessages: KEEP }] }));
    server = await EngineNode.start(engine, { args: ['--config', configFile] });
  });

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await server?.dispose();
  });

  it('gives a member’s unacked deliveries to another member at once when it unsubscribes, not after ackWait', async () => {
    const topic = uniqueTopic();
    const leaving = await connect();
    await leaving.ok({ op: 'subscribe', topic, group: 'g', ackWait: 60_000, prefetch: 1 });
    const publisher = await connect();
    await publisher.ok({ op: 'publish', topic, data: 'job' });
    await leaving.waitForMessages(1, topic, 'g');
    const staying = await connect();
    await staying.ok({ op: 'subscribe', topic, group: 'g', prefetch: 1 });
    // The job is leased to the first member: a message published now goes to the second one.
    await publisher.ok({ op: 'publish', topic, data: 'marker' });
    const [marker] = await staying.waitForMessages(1, topic, 'g');
    expect(marker).toMatchObject({ offset: 2, delivery: 1 });
    await staying.ok({ op: 'ack', topic, group: 'g', offset: 2 });

    await leaving.ok({ op: 'unsubscribe', topic, group: 'g' });
    // Well within the 60 s ackWait: the unsubscribe handed the lease back.
    const redelivered = await staying.waitFor((f) => f.op === 'message' && f.topic === topic && f.offset === 1, 10_000);
    expect(redelivered).toMatchObject({ data: 'job', group: 'g', delivery: 2 });
    expect(leaving.messages(topic, 'g')).toHaveLength(1);
    const [entry] = await pendingEntries(server.node.url, topic, 'g');
    expect(entry).toMatchObject({ offset: 1, delivery: 2, state: 'leased' });
  });

  it('starts a group that had not consumed what retention removed at the first retained offset', async () => {
    const topic = uniqueTopic('keep5');
    const creator = await connect();
    // The group is created at offset 1, before any message, and then has no member while messages come.
    await creator.ok({ op: 'subscribe', topic, group: 'g', from: 1 });
    await creator.ok({ op: 'unsubscribe', topic, group: 'g' });
    for (const n of range(1, 8)) await creator.ok({ op: 'publish', topic, data: n });
    expect(await creator.ok({ op: 'history', topic })).toMatchObject({ first: 4, last: 8 });

    const member = await connect();
    await member.ok({ op: 'subscribe', topic, group: 'g', prefetch: 100 });
    await creator.ok({ op: 'publish', topic, data: 9 });
    await member.waitFor((f) => f.op === 'message' && f.topic === topic && f.offset === 9);
    expect(member.messages(topic, 'g').map((m) => [m.offset, m.data, m.delivery])).toEqual(range(4, 9).map((n) => [n, n, 1]));
    expect(await groupState(server.node.url, topic, 'g')).toMatchObject({ cursor: 10, pending: 6, redeliveries: 0 });
  });

  it('does not deliver again a message that retention removed while it was pending', async () => {
    const topic = uniqueTopic('keep5');
    const member = await connect();
    await member.ok({ op: 'subscribe', topic, group: 'g', from: 1, prefetch: 1, ackWait: 300 });
    const publisher = await connect();
    await publisher.ok({ op: 'publish', topic, data: 1 });
    const [first] = await member.waitForMessages(1, topic, 'g');
    expect(first).toMatchObject({ offset: 1, delivery: 1 });
    // Not acked. Seven messages later, retention keeps 3 to 7: offsets 1 and 2 are gone.
    for (const n of range(2, 7)) await publisher.ok({ op: 'publish', topic, data: n });
    expect(await publisher.ok({ op: 'history', topic })).toMatchObject({ first: 3, last: 7 });
    // When the lease ends, redeliveries would come first; the next delivery is offset 3, for the first time.
    const [, next] = await member.waitForMessages(2, topic, 'g');
    expect(next).toMatchObject({ offset: 3, delivery: 1 });
    expect((await pendingEntries(server.node.url, topic, 'g')).map((e) => e.offset)).toEqual([3]);
    expect(await groupState(server.node.url, topic, 'g')).toMatchObject({ redeliveries: 0 });
  });
});

/** `depth` arrays nested in one another around a string: `depth` levels as docs/protocol.md counts them. */
function nestedArrays(depth: number): unknown {
  let value: unknown = 'core';
  for (let i = 0; i < depth; i++) value = [value];
  return value;
}

/** `depth` objects nested in one another. */
function nestedObjects(depth: number): unknown {
  let value: unknown = 'core';
  for (let i = 0; i < depth; i++) value = { in: value };
  return value;
}

describe('limits at their boundary', () => {
  let node: NodeProcess;
  const clients: ProtocolClient[] = [];
  beforeAll(async () => {
    node = await NodeProcess.start();
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await node?.dispose();
  });

  const transports: Array<[string, () => Promise<ProtocolClient>]> = [
    ['ws', () => RawClient.connect(node.wsUrl)],
    ['socket.io', () => SioClient.connect(node.url)],
  ];

  it.each(transports)('over %s, stores data nested exactly 64 levels and refuses 65 with bad_request', async (_transport, connectTo) => {
    expect(LIMITS.dataDepth).toBe(64);
    const client = await connectTo();
    clients.push(client);
    const topic = uniqueTopic('deep');
    for (const nested of [nestedArrays, nestedObjects]) {
      const deepest = nested(64);
      const stored = await client.ok({ op: 'publish', topic, data: deepest });
      const [message] = (await client.ok({ op: 'history', topic, from: stored.offset as number, limit: 1 })).messages as Array<{ data: unknown }>;
      expect(message!.data).toEqual(deepest);
      const refused = await client.request({ op: 'publish', topic, data: nested(65) });
      expect(refused).toMatchObject({ op: 'error', code: 'bad_request', message: expect.stringContaining('nests deeper than 64 levels') });
    }
    // Only the two accepted messages were stored.
    expect((await client.ok({ op: 'history', topic })).last).toBe(2);
  });
});

describe('history replies', () => {
  /** 4 MiB: the message data one history reply carries at most (docs/protocol.md, history). */
  const REPLY_DATA_BYTES = 4 * 1024 * 1024;
  let node: NodeProcess;
  beforeAll(async () => {
    // Messages may be larger than a reply's budget here, to show a reply still carries one.
    node = await NodeProcess.start({ env: { MAX_MESSAGE_BYTES: String(5 * 1024 * 1024) } });
  });
  afterAll(async () => {
    await node?.dispose();
  });

  it('carry at most 4 MiB of message data, and always at least one message', async () => {
    const client = await RawClient.connect(node.wsUrl);
    try {
      const topic = uniqueTopic('big');
      // Each encodes to exactly 1,000,000 bytes of JSON: four fit in a reply, five do not.
      const million = 'x'.repeat(1_000_000 - 2);
      for (const _ of range(1, 5)) await client.ok({ op: 'publish', topic, data: million });
      const page = await client.ok({ op: 'history', topic, limit: 10 });
      expect((page.messages as Array<{ offset: number }>).map((m) => m.offset)).toEqual([1, 2, 3, 4]);
      const next = await client.ok({ op: 'history', topic, from: 5, limit: 10 });
      expect((next.messages as Array<{ offset: number }>).map((m) => m.offset)).toEqual([5]);

      const huge = await client.ok({ op: 'publish', topic, data: 'y'.repeat(REPLY_DATA_BYTES + 1000) });
      const alone = await client.ok({ op: 'history', topic, from: huge.offset as number, limit: 10 });
      expect((alone.messages as Array<{ offset: number; data: string }>).map((m) => [m.offset, m.data.length])).toEqual([
        [huge.offset, REPLY_DATA_BYTES + 1000],
      ]);
    } finally {
      await client.close();
    }
  });
});

describe('a node whose Redis connection drops with a publish in flight', () => {
  let redis: RedisProcess;
  let proxy: TcpProxy;
  let node: NodeProcess;
  beforeAll(async () => {
    redis = await RedisProcess.start();
    proxy = await TcpProxy.start(redis.port);
    node = await NodeProcess.start({ env: { REDIS_URL: `redis://127.0.0.1:${proxy.port}`, NODE_ID: 'solo', HEARTBEAT: '300ms' } });
  });
  afterAll(async () => {
    await node?.dispose();
    await proxy?.close();
    await redis?.dispose();
  });

  it('answers maybe_stored; publishing again with the same key finds it stored, once', async () => {
    const topic = uniqueTopic('dropped');
    const client = await RawClient.connect(node.wsUrl);
    try {
      await client.ok({ op: 'publish', topic, data: 'before' });
      // Redis runs the publish, but its answer never reaches the node; then the connection drops.
      proxy.swallowReplies = true;
      client.sendRaw(JSON.stringify({ op: 'publish', id: 'in-flight', topic, data: 'during', key: 'k-dropped' }));
      try {
        await eventually(async () => (await redisCli(redis.port, 'HGET', `mq:{${topic}}:topic:meta`, 'last')) === '2', 10_000, 'Redis to store it');
      } finally {
        proxy.swallowReplies = false;
        proxy.cutAll();
      }
      const reply = await client.waitFor((f) => f.id === 'in-flight');
      expect(reply).toMatchObject({ op: 'error', code: 'maybe_stored' });
      const again = await eventually(
        async () => {
          const answer = await client.request({ op: 'publish', topic, data: 'during', key: 'k-dropped' });
          return answer.op === 'ok' && answer;
        },
        15_000,
        'the node to reach Redis again',
      );
      expect(again).toMatchObject({ offset: 2, duplicate: true });
      const history = await client.ok({ op: 'history', topic });
      expect((history.messages as Array<{ data: unknown }>).map((m) => m.data)).toEqual(['before', 'during']);
    } finally {
      await client.close();
    }
  });
});

describe('authorisation over Socket.IO', () => {
  const SECRET = 'a-test-secret-that-is-long-enough-for-hs256';
  let node: NodeProcess;
  beforeAll(async () => {
    node = await NodeProcess.start({ env: { AUTH_SECRET: SECRET } });
  });
  afterAll(async () => {
    await node?.dispose();
  });

  const token = (sub: string, permissions: MintOptions['permissions']) => mintToken({ secret: SECRET, sub, permissions, ttlMs: 60_000 });

  it('refuses what the token does not allow with forbidden, naming the operation and the topic, and stores nothing', async () => {
    const admin = await SioClient.connect(node.url, { auth: { token: await token('ops', { admin: true }) } });
    const app = await SioClient.connect(node.url, { auth: { token: await token('app', { publish: ['orders.*'], subscribe: ['feed.>'] }) } });
    try {
      await admin.ok({ op: 'publish', topic: 'secret', data: 'hidden' });
      expect(await app.ok({ op: 'publish', topic: 'orders.eu', data: 1 })).toMatchObject({ offset: 1 });
      const denials: Array<[Record<string, unknown>, RegExp]> = [
        [{ op: 'publish', topic: 'billing', data: 2 }, /publish.*'app'.*'billing'/],
        [{ op: 'subscribe', topic: 'secret', from: 1 }, /subscribe.*'app'.*'secret'/],
        [{ op: 'history', topic: 'secret' }, /history.*'app'.*'secret'/],
        [{ op: 'subscribe', topic: 'orders.eu', group: 'g' }, /group.*'app'.*'orders\.eu'/],
      ];
      for (const [request, message] of denials) {
        const reply = await app.request(request);
        expect(reply, JSON.stringify(request)).toMatchObject({ op: 'error', code: 'forbidden' });
        expect(String(reply.message)).toMatch(message);
      }
      // Nothing changed: no topic 'billing', no group on 'orders.eu', and the app received nothing of 'secret'.
      expect(await admin.ok({ op: 'history', topic: 'billing' })).toMatchObject({ epoch: '', last: 0 });
      const view = (await (
        await fetch(`${node.url}/api/topics/orders.eu`, { headers: { authorization: `Bearer ${await token('ops', { admin: true })}` } })
      ).json()) as {
        groups: unknown[];
      };
      expect(view.groups).toEqual([]);
      expect(app.messages('secret')).toEqual([]);
    } finally {
      await Promise.all([admin.close(), app.close()]);
    }
  });
});
