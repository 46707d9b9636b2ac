import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NodeProcess } from '../helpers/node-process.js';
import { type Frame, RawClient } from '../helpers/raw-client.js';
import { RedisProcess } from '../helpers/redis-process.js';
import { redisCli } from '../helpers/redis-topologies.js';
import { SioClient } from '../helpers/sio-client.js';
import { eventually, range, uniqueTopic } from '../helpers/util.js';

/**
 * A loss is never silent (docs/guarantees.md, Redis engine), shown with a
 * loss Redis really produces: with RDB snapshots and no AOF, a Redis killed
 * after a snapshot comes back with the log as it was at the snapshot, behind
 * what the node acknowledged and delivered since. The node keeps running
 * (it remembers what it acknowledged and delivered only in memory, so a node
 * restarted meanwhile could not tell), notices the log behind it when its
 * Redis link comes back, and starts a new epoch at the first lost offset.
 */
describe('a Redis that comes back from an older snapshot', () => {
  let redis: RedisProcess;
  let node: NodeProcess;
  const clients: Array<{ close(): Promise<void> }> = [];

  beforeAll(async () => {
    redis = await RedisProcess.start({ aof: false });
    node = await NodeProcess.start({ env: { REDIS_URL: redis.url, NODE_ID: 'solo', HEARTBEAT: '300ms' } });
  });

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await node?.dispose();
    await redis?.dispose();
  });

  it('sends live subscribers a reset over Socket.IO and WebSocket naming the lost offsets, then the new messages; a resume in the old epoch is told too', async () => {
    const topic = uniqueTopic('snapshot');
    const sio = await SioClient.connect(node.url);
    const ws = await RawClient.connect(node.wsUrl);
    const publisher = await RawClient.connect(node.wsUrl);
    clients.push(sio, ws, publisher);
    const sioResets: Frame[] = [];
    sio.socket.on('reset', (frame: Frame) => sioResets.push(frame));
    await sio.ok({ op: 'subscribe', topic });
    await ws.ok({ op: 'subscribe', topic });

    let oldEpoch = '';
    for (const n of range(1, 3)) oldEpoch = (await publisher.ok({ op: 'publish', topic, data: `old ${n}`, key: `old-${n}` })).epoch as string;
    expect(await redisCli(redis.port, 'SAVE')).toBe('OK');
    for (const n of range(4, 5)) await publisher.ok({ op: 'publish', topic, data: `old ${n}`, key: `old-${n}` });
    for (const client of [sio, ws]) expect((await client.waitForMessages(5, topic)).map((m) => m.offset)).toEqual(range(1, 5));

    // kill -9: what Redis holds when it starts again is the snapshot, offsets 1 to 3.
    await redis.kill();
    await redis.start();
    // Publishes may fail while the node reconnects; the key keeps a retried one from being stored twice.
    const fresh = await eventually(
      async () => {
        const reply = await publisher.request({ op: 'publish', topic, data: 'new 4', key: 'new-4' });
        return reply.op === 'ok' && reply;
      },
      20_000,
      'a publish after Redis came back',
    );
    expect(fresh).toMatchObject({ offset: 4, duplicate: false });
    expect(fresh.epoch).not.toBe(oldEpoch);

    const reset = { op: 'reset', topic, epoch: fresh.epoch, from: 4, missing: { from: 4, to: 5 } };
    await eventually(() => sioResets.length === 1, 15_000, 'the reset event over Socket.IO');
    expect(sioResets).toEqual([reset]);
    expect(await ws.waitFor((f) => f.op === 'reset', 15_000)).toEqual(reset);
    for (const client of [sio, ws]) {
      const message = await client.waitFor((f) => f.op === 'message' && f.epoch === fresh.epoch, 15_000);
      expect(message).toMatchObject({ offset: 4, data: 'new 4' });
      // Nothing else came: the old offsets 1 to 5, then offset 4 of the new epoch.
      expect(client.messages(topic).map((m) => [m.offset, m.epoch === fresh.epoch ? 'new' : 'old'])).toEqual([
        ...range(1, 5).map((o) => [o, 'old']),
        [4, 'new'],
      ]);
    }

    // A client that saw offsets up to 5 in the old epoch and resumes from 6.
    const resuming = await RawClient.connect(node.wsUrl);
    clients.push(resuming);
    const resumed = await resuming.ok({ op: 'subscribe', topic, from: 6, epoch: oldEpoch });
    expect(resumed).toMatchObject({ recovered: false, epoch: fresh.epoch, from: 4, missing: { from: 4, to: 5, reason: 'epoch' } });
    const [redelivered] = await resuming.waitForMessages(1, topic);
    expect(redelivered).toMatchObject({ offset: 4, epoch: fresh.epoch, data: 'new 4' });
    // Offsets 1 to 3 hold what they held: the history shows the old messages there and the new one at 4.
    const history = await publisher.ok({ op: 'history', topic });
    expect((history.messages as Array<{ offset: number; data: unknown }>).map((m) => [m.offset, m.data])).toEqual([
      [1, 'old 1'],
      [2, 'old 2'],
      [3, 'old 3'],
      [4, 'new 4'],
    ]);
  }, 60_000);
});

describe('the epoch history of a topic', () => {
  /** Epochs a topic keeps the history of (docs/security.md, "Authorisation in one place"). */
  const KEPT_EPOCHS = 32;
  let redis: RedisProcess;
  let node: NodeProcess;

  beforeAll(async () => {
    redis = await RedisProcess.start();
    node = await NodeProcess.start({ env: { REDIS_URL: redis.url, NODE_ID: 'solo', HEARTBEAT: '300ms' } });
  });

  afterAll(async () => {
    await node?.dispose();
    await redis?.dispose();
  });

  it('keeps the last 32 epochs: a resume in one of them goes on, one in an older epoch is told the log does not know it', async () => {
    const topic = uniqueTopic('epochs');
    const log = `mq:{${topic}}:topic:log`;
    const meta = `mq:{${topic}}:topic:meta`;
    const client = await RawClient.connect(node.wsUrl);
    try {
      const first = await client.ok({ op: 'publish', topic, data: 'start' });
      /** Each epoch and the offset it starts at, oldest first. */
      const epochs: Array<{ epoch: string; start: number }> = [{ epoch: first.epoch as string, start: 1 }];
      while (epochs.length < KEPT_EPOCHS + 8) {
        // The newest message is lost (as in a failover to a replica that lacked it); the next publish finds the log behind.
        const kept = await client.ok({ op: 'publish', topic, data: 'kept' });
        const lost = await client.ok({ op: 'publish', topic, data: 'lost' });
        await redisCli(redis.port, 'XDEL', log, `${lost.offset}-0`);
        await redisCli(redis.port, 'XSETID', log, `${kept.offset}-0`);
        await redisCli(redis.port, 'HSET', meta, 'last', String(kept.offset));
        const next = await client.ok({ op: 'publish', topic, data: 'next' });
        expect(next.offset).toBe(lost.offset);
        expect(next.epoch).not.toBe(epochs.at(-1)!.epoch);
        epochs.push({ epoch: next.epoch as string, start: next.offset as number });
      }
      /** Resumes in epoch i from where epoch i + 1 starts: the end of what epoch i holds. */
      const resumeAtEndOf = async (i: number) => {
        const reply = await client.ok({ op: 'subscribe', topic, epoch: epochs[i]!.epoch, from: epochs[i + 1]!.start });
        await client.ok({ op: 'unsubscribe', topic });
        return reply;
      };
      const oldestKept = epochs.length - KEPT_EPOCHS;
      expect(await resumeAtEndOf(oldestKept)).toMatchObject({ recovered: true, from: epochs[oldestKept + 1]!.start });
      const forgotten = await resumeAtEndOf(oldestKept - 1);
      expect(forgotten).toMatchObject({ recovered: false, from: 1, missing: { from: 1, to: epochs[oldestKept]!.start - 1, reason: 'epoch' } });
    } finally {
      await client.close();
    }
  });
});

describe('a node and its Redis that crash together', () => {
  it('tells a client that saw the lost tail what it lost, though no node remembers it', async () => {
    // Snapshots only: a restart of Redis may lose acknowledged writes.
    const redis = await RedisProcess.start({ aof: false });
    const node = await NodeProcess.start({ env: { REDIS_URL: redis.url, NODE_ID: 'solo', HEARTBEAT: '300ms' } });
    try {
      const topic = uniqueTopic('crash');
      const client = await RawClient.connect(node.wsUrl);
      await client.ok({ op: 'subscribe', topic });
      let epoch = '';
      for (const n of range(1, 3)) epoch = (await client.ok({ op: 'publish', topic, data: `old ${n}` })).epoch as string;
      await redisCli(redis.port, 'SAVE');
      for (const n of range(4, 5)) await client.ok({ op: 'publish', topic, data: `old ${n}` });
      const seen = await client.waitForMessages(5, topic);
      expect(seen.map((m) => [m.offset, m.data])).toEqual(range(1, 5).map((n) => [n, `old ${n}`]));
      await client.close();
      // One host crash takes both: Redis comes back from its snapshot (offsets 1 to 3), the node with an empty memory.
      await node.kill();
      await redis.kill();
      await redis.start();
      await node.start();
      const publisher = await RawClient.connect(node.wsUrl);
      const fresh = await eventually(async () => {
        const reply = await publisher.request({ op: 'publish', topic, data: 'new 4', key: 'new-4' });
        return reply.op === 'ok' && reply;
      }, 20_000);
      // Offset 4 holds another message now, under another epoch.
      expect(fresh).toMatchObject({ offset: 4 });
      expect(fresh.epoch).not.toBe(epoch);
      // The client saw offsets 1 to 5 of the old epoch: it is told that 4 and 5 are not what it saw.
      const resuming = await RawClient.connect(node.wsUrl);
      expect(await resuming.ok({ op: 'subscribe', topic, from: 6, epoch })).toMatchObject({ recovered: false, missing: { from: 4, to: 5 } });
      await Promise.all([publisher.close(), resuming.close()]);
    } finally {
      await node.dispose();
      await redis.dispose();
    }
  }, 60_000);
});
