import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, NodeProcess } from '../helpers/node-process.js';
import { RawClient } from '../helpers/raw-client.js';
import { eventually } from '../helpers/util.js';

interface Answer {
  status: number;
  body: Record<string, any>;
}

/** The node's JSON admin API (docs/api.md), over real HTTP. */
describe('admin API', () => {
  let node: NodeProcess;
  let peerPort: number;
  let client: RawClient;

  /** Calls the API as the console does: writes send JSON. */
  async function call(path: string, init: RequestInit = {}): Promise<Answer> {
    const write = init.method !== undefined && init.method !== 'GET';
    const res = await fetch(`${node.url}${path}`, write ? { ...init, headers: { 'content-type': 'application/json', ...init.headers } } : init);
    expect(res.headers.get('content-type')).toContain('application/json');
    return { status: res.status, body: (await res.json()) as Record<string, any> };
  }

  beforeAll(async () => {
    // A peer that is never started: it must show as down.
    peerPort = await freePort();
    node = await NodeProcess.start({
      args: ['--peers', `http://127.0.0.1:${peerPort}`],
      env: { RETENTION_MESSAGES: '1000' },
    });
    client = await RawClient.connect(node.wsUrl);
  });
  afterAll(async () => {
    await client?.close();
    await node?.dispose();
  });

  it('lists this node with its stats, and an unreachable static peer as down', async () => {
    await client.ok({ op: 'publish', topic: 'admin.rates', data: 1 });
    const { status, body } = await call('/api/nodes');
    expect(status).toBe(200);
    expect(body.mode).toBe('static-peers');
    expect(body.nodes).toHaveLength(2);
    const [self, peer] = body.nodes;
    expect(self).toMatchObject({ url: node.url, status: 'up', self: true, redis: null, connections: 1 });
    for (const field of ['startedAt', 'uptimeMs', 'subscriptions', 'messagesInPerSec', 'messagesOutPerSec', 'eventLoopLagMs', 'lastSeen']) {
      expect(typeof self[field], field).toBe('number');
    }
    expect(self.messagesInPerSec).toBeGreaterThan(0);
    expect(self.memory.rss).toBeGreaterThan(0);
    expect(self.memory.heapUsed).toBeGreaterThan(0);
    expect(Array.isArray(self.rates.in) && Array.isArray(self.rates.out)).toBe(true);
    expect(peer).toMatchObject({ url: `http://127.0.0.1:${peerPort}`, status: 'down', lastSeen: null });
    expect(peer.error).toMatch(/^unreachable/);

    const own = await call('/api/nodes/self');
    expect(own.body).toMatchObject({ id: self.id, url: node.url, status: 'up' });
  });

  it('lists topics with counts, offsets, retention and group counts', async () => {
    for (let i = 1; i <= 5; i++) await client.ok({ op: 'publish', topic: 'admin.orders', data: { i } });
    await client.ok({ op: 'subscribe', topic: 'admin.orders' });
    const { body } = await call('/api/topics');
    const topic = body.topics.find((t: { topic: string }) => t.topic === 'admin.orders');
    expect(topic).toMatchObject({
      count: 5,
      first: 1,
      last: 5,
      retention: { maxMessages: 1000 },
      subscribers: 1,
      groups: 0,
      deadLetters: 0,
    });
    expect(topic.publishRate).toBeGreaterThan(0);
    expect(typeof topic.lastMessageAt).toBe('number');
  });

  it('pages messages newest first by offset', async () => {
    const newest = await call('/api/topics/admin.orders/messages?limit=2');
    expect(newest.body.messages.map((m: { offset: number }) => m.offset)).toEqual([5, 4]);
    expect(newest.body.messages[0].data).toEqual({ i: 5 });
    expect(newest.body).toMatchObject({ first: 1, last: 5, older: 4, newer: null });
    const older = await call(`/api/topics/admin.orders/messages?limit=2&before=${newest.body.older}`);
    expect(older.body.messages.map((m: { offset: number }) => m.offset)).toEqual([3, 2]);
    const from = await call('/api/topics/admin.orders/messages?limit=2&from=1');
    expect(from.body.messages.map((m: { offset: number }) => m.offset)).toEqual([2, 1]);
    expect(from.body).toMatchObject({ older: null, newer: 3 });
  });

  it('answers bad input with the protocol error codes and HTTP statuses', async () => {
    expect(await call('/api/topics/nope')).toEqual({
      status: 404,
      body: { error: { code: 'not_found', message: "topic 'nope' does not exist" } },
    });
    // Asking about a topic does not create it.
    expect((await call('/api/topics')).body.topics.some((t: { topic: string }) => t.topic === 'nope')).toBe(false);
    const badName = await call('/api/topics/-bad');
    expect(badName.status).toBe(400);
    expect(badName.body.error.code).toBe('bad_request');
    const badLimit = await call('/api/topics/admin.orders/messages?limit=0');
    expect(badLimit.status).toBe(400);
    expect(badLimit.body.error.message).toContain("'limit'");
    const wrongMethod = await call('/api/topics/admin.orders', { method: 'DELETE' });
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.body.error.code).toBe('bad_request');
    const noRoute = await call('/api/nothing-here');
    expect(noRoute.status).toBe(404);
    expect(noRoute.body.error.code).toBe('not_found');
    const badBody = await call('/api/topics/admin.orders/dead-letters/replay', { method: 'POST', body: '{"purge": "yes"}' });
    expect(badBody.status).toBe(400);
    const noGroup = await call('/api/topics/admin.orders/groups/ghost/pending');
    expect(noGroup.status).toBe(404);
  });

  it('shows a group with pending entries, then dead letters that replay once and purge', async () => {
    const topic = 'admin.jobs';
    const consumer = await RawClient.connect(node.wsUrl);
    try {
      await consumer.ok({ op: 'subscribe', topic, group: 'g', maxDeliveries: 1, prefetch: 5 });
      await client.ok({ op: 'publish', topic, data: { job: 1 } });
      await client.ok({ op: 'publish', topic, data: { job: 2 } });
      await consumer.waitForMessages(2, topic, 'g');

      const detail = await call(`/api/topics/${topic}`);
      expect(detail.body.groups).toHaveLength(1);
      expect(detail.body.groups[0]).toMatchObject({ group: 'g', members: 1, pending: 2, ready: 0, maxDeliveries: 1 });
      const pending = await call(`/api/topics/${topic}/groups/g/pending`);
      expect(pending.body.entries.map((e: { offset: number }) => e.offset)).toEqual([1, 2]);
      expect(pending.body.entries[0]).toMatchObject({ delivery: 1, state: 'leased', message: { offset: 1, data: { job: 1 } } });

      // Both nacked with maxDeliveries 1: both are dead-lettered.
      await consumer.ok({ op: 'nack', topic, group: 'g', offset: 1 });
      await consumer.ok({ op: 'nack', topic, group: 'g', offset: 2 });
      const letters = await eventually(async () => {
        const page = await call(`/api/topics/${topic}/dead-letters`);
        return page.body.messages.length === 2 && page;
      });
      expect(letters.body).toMatchObject({ topic, dlqTopic: `$dlq.${topic}`, count: 2 });
      expect(letters.body.messages[1].letter).toMatchObject({ topic, group: 'g', offset: 1, data: { job: 1 }, deliveries: 1, reason: 'max_deliveries' });
      const list = await call('/api/dead-letters');
      expect(list.body.deadLetters).toContainEqual(expect.objectContaining({ topic, count: 2 }));
      expect((await call('/api/topics')).body.topics.find((t: { topic: string }) => t.topic === topic).deadLetters).toBe(2);

      const once = await call(`/api/topics/${topic}/dead-letters/1/replay`, { method: 'POST' });
      expect(once.status).toBe(200);
      expect(once.body.replayed).toMatchObject({ dlqOffset: 1, topic, offset: 3, duplicate: false });
      const twice = await call(`/api/topics/${topic}/dead-letters/1/replay`, { method: 'POST' });
      expect(twice.body.replayed).toMatchObject({ offset: 3, duplicate: true });
      const missing = await call(`/api/topics/${topic}/dead-letters/99/replay`, { method: 'POST' });
      expect(missing.status).toBe(404);

      // The member still in the group gets the replayed message.
      await consumer.waitFor((f) => f.op === 'message' && f.offset === 3);

      const all = await call(`/api/topics/${topic}/dead-letters/replay`, { method: 'POST', body: JSON.stringify({ purge: true }) });
      expect(all.body).toEqual({ replayed: 1, duplicates: 1, failed: [], purged: 2 });
      const after = await call(`/api/topics/${topic}/dead-letters`);
      expect(after.body).toMatchObject({ count: 0, first: 3, last: 2, messages: [] });
      const messages = await call(`/api/topics/${topic}/messages`);
      expect(messages.body.messages.map((m: { data: unknown }) => m.data)).toEqual([{ job: 2 }, { job: 1 }, { job: 2 }, { job: 1 }]);

      expect((await call(`/api/topics/${topic}/dead-letters`, { method: 'DELETE' })).body.purged).toBe(0);
    } finally {
      await consumer.close();
    }
  });

  it('reports dead letters of a topic that has none as empty', async () => {
    const { status, body } = await call('/api/topics/admin.orders/dead-letters');
    expect(status).toBe(200);
    expect(body).toMatchObject({ count: 0, messages: [] });
    expect((await call('/api/topics/never.seen/dead-letters')).status).toBe(404);
  });
});
