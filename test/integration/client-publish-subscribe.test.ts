import { MeshClient, MeshError, type Message } from '@meshmq/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { topicSubscribers } from '../helpers/admin.js';
import { NodeProcess } from '../helpers/node-process.js';
import { range, sleep, waitUntil } from '../helpers/wait.js';

describe('client: publish, subscribe, history', () => {
  let node: NodeProcess;
  let client: MeshClient;
  beforeAll(async () => {
    node = await NodeProcess.start();
    client = new MeshClient({ url: node.url });
    await client.connect();
  });
  afterAll(async () => {
    await client?.close();
    await node?.dispose();
  });

  it('connects, keeps the node list from hello, and reports its state', () => {
    expect(client.state).toBe('connected');
    expect(client.url).toBe(node.wsUrl);
    expect(client.node?.nodes).toEqual([node.url]);
    expect(client.node?.limits.maxMessageBytes).toBeGreaterThan(0);
    expect(client.urls).toEqual([node.wsUrl]);
  });

  it('publishes with increasing offsets and a subscriber receives them in order', async () => {
    const got: Message<{ i: number }>[] = [];
    const sub = await client.subscribe<{ i: number }>('ps.orders', (m) => {
      got.push(m);
    });
    const results = [];
    for (let i = 0; i < 30; i++) results.push(await client.publish('ps.orders', { i }));
    expect(results.map((r) => r.offset)).toEqual(range(1, 30));
    expect(results.every((r) => r.duplicate === false && r.epoch === sub.epoch)).toBe(true);
    expect(Object.keys(results[0]!).sort()).toEqual(['duplicate', 'epoch', 'offset', 'ts']);
    await waitUntil(() => got.length >= 30, '30 messages');
    expect(got.map((m) => m.offset)).toEqual(range(1, 30));
    expect(got.map((m) => m.data.i)).toEqual(range(0, 29));
    expect(got[0]).toMatchObject({ topic: 'ps.orders', epoch: sub.epoch });
    expect(typeof got[0]!.key).toBe('string');
    expect(sub.lastOffset).toBe(30);
    expect(await topicSubscribers(node.url, 'ps.orders')).toBe(1);
    await sub.unsubscribe();
    expect(sub.active).toBe(false);
    // The node holds no subscription to the topic any more: it has nowhere to deliver a new message to.
    expect(await topicSubscribers(node.url, 'ps.orders')).toBe(0);
    await client.publish('ps.orders', { i: 30 });
    expect(got).toHaveLength(30);
  });

  it('runs an async handler to completion before the next message', async () => {
    const events: string[] = [];
    const sub = await client.subscribe('ps.async', async (m) => {
      events.push(`start ${m.offset}`);
      await sleep(m.offset === 1 ? 50 : 1);
      events.push(`end ${m.offset}`);
    });
    await Promise.all([1, 2, 3].map((i) => client.publish('ps.async', i)));
    await waitUntil(() => events.length === 6, 'three handlers');
    expect(events).toEqual(['start 1', 'end 1', 'start 2', 'end 2', 'start 3', 'end 3']);
    await sub.unsubscribe();
  });

  it('replays from an offset and reads history', async () => {
    for (let i = 1; i <= 5; i++) await client.publish('ps.replay', `m${i}`);
    const got: number[] = [];
    const sub = await client.subscribe('ps.replay', (m) => void got.push(m.offset), { from: 3 });
    await waitUntil(() => got.length === 3, 'replayed messages');
    expect(got).toEqual([3, 4, 5]);
    const page = await client.history<string>('ps.replay', { from: 2, limit: 2 });
    expect(page).toMatchObject({ epoch: sub.epoch, first: 1, last: 5 });
    expect(page.messages.map((m) => [m.offset, m.data])).toEqual([
      [2, 'm2'],
      [3, 'm3'],
    ]);
    expect(page.messages[0]).not.toHaveProperty('op');
    await sub.unsubscribe();
  });

  it('rejects a publish with a MeshError carrying the server code', async () => {
    const error = await client.publish('$dlq.ps.orders', { x: 1 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MeshError);
    expect(error).toMatchObject({ code: 'forbidden', message: expect.stringContaining('$dlq.ps.orders') });
    const invalid = await client.publish('bad topic!', 1).catch((e: unknown) => e);
    expect(invalid).toBeInstanceOf(MeshError);
    expect((invalid as MeshError).code).toBe('bad_request');
    const sub = await client.subscribe('bad topic!', () => {}).catch((e: unknown) => e);
    expect(sub).toMatchObject({ code: 'bad_request' });
    // The connection survives errors.
    expect((await client.publish('ps.after-errors', 1)).offset).toBe(1);
  });

  it('does not store a publish twice when its key is repeated', async () => {
    const first = await client.publish('ps.idem', { n: 1 }, { key: 'order-17' });
    const again = await client.publish('ps.idem', { n: 1 }, { key: 'order-17' });
    const other = await client.publish('ps.idem', { n: 2 }, { key: 'order-18' });
    expect(first).toMatchObject({ offset: 1, duplicate: false });
    expect(again).toMatchObject({ offset: 1, duplicate: true, epoch: first.epoch, ts: first.ts });
    expect(other).toMatchObject({ offset: 2, duplicate: false });
    const page = await client.history('ps.idem');
    expect(page.messages.map((m) => m.key)).toEqual(['order-17', 'order-18']);
  });

  it('gives each publish without a key a fresh key', async () => {
    await client.publish('ps.keys', 'same');
    await client.publish('ps.keys', 'same');
    const page = await client.history('ps.keys');
    expect(page.last).toBe(2);
    const [a, b] = page.messages.map((m) => m.key);
    expect(a).toMatch(/^[0-9a-f-]{36}$/);
    expect(a).not.toBe(b);
  });

  it('refuses a second subscription to one topic and allows it after unsubscribe', async () => {
    const sub = await client.subscribe('ps.once', () => {});
    await expect(client.subscribe('ps.once', () => {})).rejects.toMatchObject({ code: 'bad_request' });
    await sub.unsubscribe();
    const got: number[] = [];
    const again = await client.subscribe('ps.once', (m) => void got.push(m.offset));
    await client.publish('ps.once', 1);
    await waitUntil(() => got.length === 1, 'message after re-subscribe');
    // Without waiting for the unsubscribe: the next subscribe still succeeds and gets only new messages.
    void again.unsubscribe();
    const third: number[] = [];
    const last = await client.subscribe('ps.once', (m) => void third.push(m.offset));
    await client.publish('ps.once', 2);
    await waitUntil(() => third.length === 1, 'message after the third subscribe');
    expect(third).toEqual([2]);
    expect(got).toEqual([1]);
    await last.unsubscribe();
  });

  it('reports a handler that throws and goes on with the next message', async () => {
    const errors: MeshError[] = [];
    const off = client.on('error', (e) => errors.push(e));
    const got: number[] = [];
    const sub = await client.subscribe('ps.throws', (m) => {
      got.push(m.offset);
      if (m.offset === 1) throw new Error('boom');
    });
    await client.publish('ps.throws', 1);
    await client.publish('ps.throws', 2);
    await waitUntil(() => got.length === 2, 'both messages');
    expect(errors.map((e) => e.message)).toEqual([expect.stringContaining('boom')]);
    off();
    await sub.unsubscribe();
  });

  it('pauses the stream of a subscription whose handler falls behind, and misses nothing', async () => {
    const got: number[] = [];
    const sub = await client.subscribe(
      'ps.slow',
      async (m) => {
        got.push(m.offset);
        await sleep(1);
      },
      { maxBuffered: 10 },
    );
    await Promise.all(range(1, 200).map((i) => client.publish('ps.slow', i)));
    // Deliveries come in offset order: once this marker is in, anything missed or repeated before it shows.
    await client.publish('ps.slow', 201);
    await waitUntil(() => got.includes(201), 'the marker after all 200 messages', 15_000);
    expect(got).toEqual(range(1, 201));
    await sub.unsubscribe();
  });

  it('reports a subscription from an offset before the first retained one as a gap', async () => {
    // This node keeps the last 3 messages of every topic.
    const short = await NodeProcess.start({ env: { RETENTION_MESSAGES: '3' } });
    const c = new MeshClient({ url: short.url });
    try {
      for (let i = 1; i <= 6; i++) await c.publish('ps.short', i);
      const gaps: unknown[] = [];
      const got: number[] = [];
      const sub = await c.subscribe('ps.short', (m) => void got.push(m.offset), { from: 1, onGap: (g) => gaps.push(g) });
      await waitUntil(() => got.length === 3, 'retained messages');
      expect(got).toEqual([4, 5, 6]);
      expect(gaps).toEqual([{ topic: 'ps.short', epoch: sub.epoch, from: 1, to: 3, reason: 'retention' }]);
    } finally {
      await c.close();
      await short.dispose();
    }
  });
});

describe('client: payload limit', () => {
  let node: NodeProcess;
  beforeAll(async () => {
    node = await NodeProcess.start({ env: { MAX_MESSAGE_BYTES: '1000' } });
  });
  afterAll(async () => {
    await node?.dispose();
  });

  it('rejects data over the node limit with payload_too_large and stays usable', async () => {
    const client = new MeshClient({ url: node.url });
    try {
      await client.connect();
      expect(client.node?.limits.maxMessageBytes).toBe(1000);
      const error = await client.publish('big', 'x'.repeat(2000)).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(MeshError);
      expect((error as MeshError).code).toBe('payload_too_large');
      // Far over the limit: the frame would exceed what the server accepts; the client must not send it.
      const huge = await client.publish('big', 'x'.repeat(200_000)).catch((e: unknown) => e);
      expect((huge as MeshError).code).toBe('payload_too_large');
      expect(client.state).toBe('connected');
      expect((await client.publish('big', 'x'.repeat(900))).offset).toBe(1);
      expect((await client.history('big')).last).toBe(1);
    } finally {
      await client.close();
    }
  });
});
