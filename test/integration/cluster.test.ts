import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { groupState } from '../helpers/admin.js';
import { GroupAcker } from '../helpers/group-acker.js';
import { NodeProcess } from '../helpers/node-process.js';
import { RawClient } from '../helpers/raw-client.js';
import { RedisProcess } from '../helpers/redis-process.js';
import { eventually, range, uniqueTopic } from '../helpers/util.js';

/** Three broker nodes sharing one real redis-server. */
describe('a cluster of three nodes over Redis', () => {
  let redis: RedisProcess;
  const nodes: NodeProcess[] = [];
  const clients: RawClient[] = [];
  const connect = async (node: NodeProcess) => {
    const client = await RawClient.connect(node.wsUrl);
    clients.push(client);
    return client;
  };

  const startNode = (id: string) => NodeProcess.start({ env: { REDIS_URL: redis.url, NODE_ID: id, HEARTBEAT: '300ms', NODE_DOWN_AFTER: '1500ms' } });

  beforeAll(async () => {
    redis = await RedisProcess.start();
    nodes.push(...(await Promise.all(['a', 'b', 'c'].map(startNode))));
  });

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(nodes.map((n) => n.dispose()));
    await redis?.dispose();
  });

  it('lists every live node in hello', async () => {
    const client = await connect(nodes[0]!);
    await eventually(async () => {
      const hello = await client.ok({ op: 'hello' });
      return (hello.nodes as string[]).length === 3 && hello;
    });
    const hello = await client.ok({ op: 'hello' });
    expect([...(hello.nodes as string[])].sort()).toEqual(nodes.map((n) => n.url).sort());
  });

  it('delivers a publish on one node to subscribers on the others, in offset order', async () => {
    const topic = uniqueTopic();
    const [onB, onC] = [await connect(nodes[1]!), await connect(nodes[2]!)];
    await onB.ok({ op: 'subscribe', topic });
    await onC.ok({ op: 'subscribe', topic });
    const pub = await connect(nodes[0]!);
    for (const n of range(1, 25)) expect(await pub.ok({ op: 'publish', topic, data: n })).toMatchObject({ offset: n });
    for (const sub of [onB, onC]) {
      const got = await sub.waitForMessages(25, topic);
      expect(got.map((m) => m.offset)).toEqual(range(1, 25));
      expect(got.map((m) => m.data)).toEqual(range(1, 25));
    }
  });

  it('keeps one gap-free order under concurrent publishers on every node', async () => {
    const topic = uniqueTopic();
    const subs = await Promise.all(nodes.map(connect));
    for (const sub of subs) await sub.ok({ op: 'subscribe', topic });
    const pubs = await Promise.all(nodes.map(connect));
    const replies = (await Promise.all(pubs.map((pub, p) => Promise.all(range(1, 100).map((n) => pub.ok({ op: 'publish', topic, data: { p, n } })))))).flat();
    expect(replies.map((r) => r.offset as number).sort((a, b) => a - b)).toEqual(range(1, 300));
    const history = [];
    for (let from = 1; from <= 300; from += 100) {
      history.push(...((await pubs[0]!.ok({ op: 'history', topic, from, limit: 100 })).messages as Array<{ offset: number; data: unknown }>));
    }
    for (const sub of subs) {
      const got = await sub.waitForMessages(300, topic);
      expect(got.map((m) => m.offset)).toEqual(range(1, 300));
      expect(got.map((m) => m.data)).toEqual(history.map((m) => m.data));
    }
  });

  it('spreads a group over members on different nodes, each message to one member', async () => {
    const topic = uniqueTopic();
    const members = await Promise.all(nodes.map(connect));
    for (const member of members) await member.ok({ op: 'subscribe', topic, group: 'workers', prefetch: 5 });
    const acker = new GroupAcker(members, topic, 'workers');
    const pub = await connect(nodes[0]!);
    for (const n of range(1, 60)) await pub.ok({ op: 'publish', topic, data: n });
    // Poll only for "all delivered, every delivery acked"; the checks read the whole record afterwards.
    await eventually(() => acker.offsets().size >= 60 && acker.acks.length >= acker.deliveries().length, 20_000, 'every offset delivered and acked');
    await acker.stop();
    expect(acker.duplicates(), 'offsets delivered more than once').toEqual([]);
    expect(acker.failedAcks(), 'acks that failed').toEqual([]);
    expect([...acker.offsets()].sort((a, b) => a - b)).toEqual(range(1, 60));
    expect(acker.deliveries().every((d) => d.delivery === 1)).toBe(true);
    expect(new Set(acker.deliveries().map((d) => d.member)).size).toBeGreaterThan(1);
    // Every ack held: nothing is pending or was ever redelivered, so no second member can get one later.
    expect(await groupState(nodes[0]!.url, topic, 'workers')).toMatchObject({ cursor: 61, pending: 0, redeliveries: 0 });
  });

  it('answers cluster-wide stats from the live nodes, without waiting for a stuck one', async () => {
    const topic = uniqueTopic();
    const subs = [await connect(nodes[1]!), await connect(nodes[2]!), await connect(nodes[2]!)];
    for (const sub of subs) await sub.ok({ op: 'subscribe', topic });
    // Subscribing does not create a topic; a publish does.
    await subs[0]!.ok({ op: 'publish', topic, data: 1 });
    const res = await fetch(`${nodes[0]!.url}/api/cluster/stats`);
    const all = (await res.json()) as {
      nodes: Array<{ node: string }>;
      missing: string[];
      totals: { subscribers: Record<string, number> };
    };
    expect(res.status, JSON.stringify(all)).toBe(200);
    expect(all.nodes.map((n) => n.node).sort()).toEqual(['a', 'b', 'c']);
    expect(all.missing).toEqual([]);
    expect(all.totals.subscribers[topic]).toBe(3);
    // The admin API's topic view sums the cluster too.
    const view = (await (await fetch(`${nodes[0]!.url}/api/topics/${topic}`)).json()) as { topic: { subscribers: number } };
    expect(view.topic.subscribers).toBe(3);
    nodes[2]!.pause();
    try {
      const partial = (await (await fetch(`${nodes[0]!.url}/api/cluster/stats`, { signal: AbortSignal.timeout(5000) })).json()) as typeof all;
      expect(partial.nodes.map((n) => n.node).sort()).toEqual(['a', 'b']);
      expect(partial.missing).toEqual(['c']);
      expect(partial.totals.subscribers[topic]).toBe(1);
    } finally {
      nodes[2]!.resume();
    }
  });

  it('answers /readyz with what an acknowledged publish survives', async () => {
    const res = await fetch(`${nodes[0]!.url}/readyz`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { ready: boolean; redis: { state: string; durability: { summary: string; survives: Record<string, boolean> } } };
    expect(body.ready).toBe(true);
    expect(body.redis.state).toBe('up');
    expect(body.redis.durability.survives).toMatchObject({ processKill: true, hostCrash: true });
    expect(body.redis.durability.summary).toContain('appendfsync always');
  });

  it('hands a dead node’s leases to a surviving member without waiting for ackWait', async () => {
    const topic = uniqueTopic();
    const doomed = await NodeProcess.start({ env: { REDIS_URL: redis.url, NODE_ID: 'doomed', HEARTBEAT: '300ms', NODE_DOWN_AFTER: '1500ms' } });
    try {
      const holder = await RawClient.connect(doomed.wsUrl);
      await holder.ok({ op: 'subscribe', topic, group: 'g', ackWait: 120_000, prefetch: 1 });
      const pub = await connect(nodes[0]!);
      await pub.ok({ op: 'publish', topic, data: 'job' });
      await holder.waitForMessages(1, topic);
      const survivor = await connect(nodes[1]!);
      await survivor.ok({ op: 'subscribe', topic, group: 'g' });
      // The holder's one lease is taken, so a message published now goes to the survivor; had the leased
      // job been free for the survivor, it would have come first (redeliveries before new offsets).
      await pub.ok({ op: 'publish', topic, data: 'marker' });
      const [first] = await survivor.waitForMessages(1, topic, 'g');
      expect(first).toMatchObject({ offset: 2, delivery: 1, data: 'marker' });
      await survivor.ok({ op: 'ack', topic, group: 'g', offset: 2 });
      await doomed.kill();
      const redelivered = await survivor.waitFor((f) => f.op === 'message' && f.topic === topic && f.offset === 1, 15_000);
      expect(redelivered).toMatchObject({ offset: 1, delivery: 2, data: 'job' });
      expect(survivor.messages(topic, 'g').map((m) => m.offset)).toEqual([2, 1]);
    } finally {
      await doomed.dispose();
    }
  });

  it('fails publishes fast while Redis is down, keeps subscribers, and resumes them after', async () => {
    const topic = uniqueTopic();
    const sub = await connect(nodes[1]!);
    await sub.ok({ op: 'subscribe', topic });
    const pub = await connect(nodes[0]!);
    await pub.ok({ op: 'publish', topic, data: 'before' });
    await redis.kill();
    // A publish racing the kill may reach the dying Redis: that one fails with maybe_stored, not unavailable.
    await eventually(async () => (await fetch(`${nodes[0]!.url}/readyz`)).status === 503, 10_000, 'the node to see Redis down');
    const failed = await pub.request({ op: 'publish', topic, data: 'during' });
    expect(failed).toMatchObject({ op: 'error', code: 'unavailable' });
    await redis.start();
    const after = await eventually(async () => {
      const reply = await pub.request({ op: 'publish', topic, data: 'after' });
      return reply.op === 'ok' && reply;
    }, 15_000);
    expect(after.offset).toBe(2);
    const got = await sub.waitForMessages(2, topic, undefined, 15_000);
    expect(got.map((m) => m.data)).toEqual(['before', 'after']);
    expect(sub.open).toBe(true);
    await eventually(async () => (await fetch(`${nodes[0]!.url}/readyz`)).status === 200, 10_000);
  });

  it('drains on SIGTERM: tells clients where to go, then exits', async () => {
    const leaving = await NodeProcess.start({ env: { REDIS_URL: redis.url, NODE_ID: 'leaving', HEARTBEAT: '300ms' } });
    try {
      const client = await RawClient.connect(leaving.wsUrl);
      await eventually(async () => ((await client.ok({ op: 'hello' })).nodes as string[]).length >= 4);
      const closed = new Promise<number>((resolve) => client.ws.once('close', (code) => resolve(code)));
      await leaving.stop();
      const move = client.frames.find((f) => f.op === 'move');
      expect(move).toBeDefined();
      expect(move!.nodes as string[]).not.toContain(leaving.url);
      expect((move!.nodes as string[]).length).toBeGreaterThanOrEqual(3);
      expect(await closed).toBe(1012);
    } finally {
      await leaving.dispose();
    }
  });
});
