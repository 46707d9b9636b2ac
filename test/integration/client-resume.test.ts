import { type ConnectionState, isRetryable, MeshClient, MeshError, type PublishResult } from '@meshmq/client';
import { afterEach, describe, expect, it } from 'vitest';
import { NodeProcess } from '../helpers/node-process.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { range, sleep, track, waitUntil } from '../helpers/wait.js';

describe('client: reconnect and resume', () => {
  const cleanup: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const step of cleanup.splice(0).reverse()) await step();
  });

  async function startNode(): Promise<NodeProcess> {
    const node = await NodeProcess.start();
    cleanup.push(() => node.dispose());
    return node;
  }

  function client(url: string): MeshClient {
    const c = new MeshClient({ url, reconnect: { initialDelayMs: 50, maxDelayMs: 500 } });
    cleanup.push(() => c.close());
    return c;
  }

  it('delivers every acknowledged offset exactly once, in order, across a kill -9 and restart', async () => {
    const node = await startNode();
    const subscriber = client(node.url);
    const publisher = client(node.url);
    const states: ConnectionState[] = [];
    subscriber.on('state', (s) => states.push(s));
    const resumed: Array<{ recovered: boolean; subscriptions: number }> = [];
    subscriber.on('resumed', (info) => resumed.push(info));

    const seen: number[] = [];
    const seenData: number[] = [];
    const sub = await subscriber.subscribe<{ i: number }>('resume.stream', async (m) => {
      seen.push(m.offset);
      seenData.push(m.data.i);
      // A slow handler keeps a backlog queued locally while the node goes down.
      if (m.offset % 25 === 0) await sleep(5);
    });

    const TOTAL = 400;
    const acked: PublishResult[] = [];
    let next = 0;
    // Up to 20 publishes in flight at once, so some are in flight when the node dies.
    const worker = async () => {
      while (next < TOTAL) {
        const i = next++;
        acked.push(await publisher.publish('resume.stream', { i }));
      }
    };
    const publishing = Promise.all(range(1, 20).map(() => worker()));

    await waitUntil(() => seen.length >= 100, 'the first 100 messages');
    await node.kill();
    await waitUntil(() => subscriber.state === 'reconnecting', 'the subscriber to notice');
    const seenWhileDown = seen.length;
    // Down for a while, so publishes queue up in the publisher meanwhile.
    await sleep(300);
    await node.start();
    await publishing;

    expect(acked).toHaveLength(TOTAL);
    const last = Math.max(...acked.map((r) => r.offset));
    // Deliveries come in offset order: once this marker is in, anything (a duplicate) before it is too.
    const marker = await publisher.publish('resume.stream', { i: TOTAL });
    await waitUntil(() => seen.includes(marker.offset), 'the marker after all messages', 15_000);

    // Exactly once, in order, nothing missing.
    expect(seen).toEqual(range(1, last + 1));
    // Every publish call was stored exactly once, re-sent or not.
    expect(last).toBe(TOTAL);
    expect(marker.offset).toBe(TOTAL + 1);
    expect([...seenData].sort((a, b) => a - b)).toEqual(range(0, TOTAL));
    expect(new Set(acked.map((r) => r.offset)).size).toBe(TOTAL);
    expect(seenWhileDown).toBeLessThan(TOTAL);
    expect(sub.lastOffset).toBe(TOTAL + 1);

    expect(states).toContain('reconnecting');
    expect(states.at(-1)).toBe('connected');
    expect(resumed.length).toBeGreaterThanOrEqual(1);
    expect(resumed[0]).toMatchObject({ recovered: true, subscriptions: 1 });
  });

  it('reports a gap with reason epoch when the node comes back with a different log', async () => {
    const first = await startNode();
    const c = client(first.url);
    const seen: Array<[string, number]> = [];
    const gaps: unknown[] = [];
    const resumed: boolean[] = [];
    c.on('gap', (g) => gaps.push(g));
    c.on('resumed', (info) => resumed.push(info.recovered));
    const sub = await c.subscribe('resume.epoch', (m) => void seen.push([m.epoch, m.offset]));
    for (let i = 0; i < 3; i++) await c.publish('resume.epoch', i);
    await waitUntil(() => seen.length === 3, 'three messages');
    const oldEpoch = sub.epoch!;

    // Same address, empty data directory: the topic's log is a new one.
    await first.kill();
    const second = await NodeProcess.start({ port: first.port });
    cleanup.push(() => second.dispose());
    await waitUntil(() => resumed.length === 1, 'the resume');
    expect(resumed).toEqual([false]);
    expect(sub.epoch).not.toBe(oldEpoch);
    // What it had seen at offsets 1..3 is not in the new log.
    expect(gaps).toEqual([{ topic: 'resume.epoch', epoch: sub.epoch, from: 1, to: 3, reason: 'epoch' }]);

    await c.publish('resume.epoch', 'new');
    await waitUntil(() => seen.length === 4, 'the first message of the new log');
    expect(seen).toEqual([
      [oldEpoch, 1],
      [oldEpoch, 2],
      [oldEpoch, 3],
      [sub.epoch, 1],
    ]);
  });

  it('resolves a publish issued while the node is down once it is back, without a duplicate', async () => {
    const node = await startNode();
    const c = client(node.url);
    expect((await c.publish('resume.down', 'before')).offset).toBe(1);
    await node.kill();
    await waitUntil(() => c.state === 'reconnecting', 'reconnecting');

    let failedAttempts = 0;
    c.on('connectFailed', () => failedAttempts++);
    const pending = track(c.publish('resume.down', 'while down'));
    // The client tried the node again and failed: the publish stays queued rather than failing.
    await waitUntil(() => failedAttempts >= 1, 'a failed reconnect attempt');
    expect(pending.settled()).toBe(false);
    await node.start();
    const result = await pending.promise;
    expect(result).toMatchObject({ offset: 2, duplicate: false });

    const page = await c.history<string>('resume.down');
    expect(page.messages.map((m) => m.data)).toEqual(['before', 'while down']);
    expect(c.state).toBe('connected');
  });

  it('re-sends a publish whose reply was lost and gets the original offset back, stored once', async () => {
    const node = await startNode();
    const proxy = await TcpProxy.start(node.port);
    cleanup.push(() => proxy.close());
    // Hello advertises the node's own URL; keep this client on the proxy.
    const c = new MeshClient({ url: proxy.url, discoverNodes: false, reconnect: { initialDelayMs: 50, maxDelayMs: 500 } });
    cleanup.push(() => c.close());
    await c.connect();
    expect((await c.publish('resume.lost', 'first')).offset).toBe(1);

    proxy.swallowReplies = true;
    const pending = track(c.publish('resume.lost', 'reply lost'));
    // The node stores it; its reply never arrives.
    const stored = client(node.url);
    let last = 0;
    for (let i = 0; i < 100 && last < 2; i++) {
      last = (await stored.history('resume.lost')).last;
      if (last < 2) await sleep(20);
    }
    expect(last).toBe(2);
    expect(pending.settled()).toBe(false);

    proxy.swallowReplies = false;
    proxy.cutAll();
    const result = await pending.promise;
    expect(result).toMatchObject({ offset: 2, duplicate: true });
    const page = await stored.history<string>('resume.lost');
    expect(page.messages.map((m) => m.data)).toEqual(['first', 'reply lost']);
  });

  it('resumes a live subscription that had seen nothing yet from where it started', async () => {
    const node = await startNode();
    const subscriber = client(node.url);
    const publisher = client(node.url);
    await publisher.publish('resume.quiet', 'old');
    const seen: string[] = [];
    await subscriber.subscribe<string>('resume.quiet', (m) => void seen.push(m.data));
    await node.kill();
    await node.start();
    // Published before the subscriber is back: it must still get it.
    await publisher.publish('resume.quiet', 'during');
    await publisher.publish('resume.quiet', 'after');
    await publisher.publish('resume.quiet', 'marker');
    // Deliveries come in offset order: once the marker is in, anything before it is too.
    await waitUntil(() => seen.includes('marker'), 'the marker after the restart');
    expect(seen).toEqual(['during', 'after', 'marker']);
  });

  it('fails a queued publish with unavailable after requestTimeoutMs', async () => {
    const node = await startNode();
    // Room for a reconnect attempt or two (reconnect delays up to 200 ms) before the request times out.
    const c = new MeshClient({ url: node.url, requestTimeoutMs: 1500, reconnect: { initialDelayMs: 50, maxDelayMs: 200 } });
    cleanup.push(() => c.close());
    await c.connect();
    await node.kill();
    await waitUntil(() => c.state === 'reconnecting', 'reconnecting');
    let failedAttempts = 0;
    c.on('connectFailed', () => failedAttempts++);
    const publishing = track(c.publish('resume.timeout', 1, { key: 'k-1' }));
    // Queued, not refused at once: it outlives a failed reconnect attempt.
    await waitUntil(() => failedAttempts >= 1, 'a failed reconnect attempt');
    expect(publishing.settled()).toBe(false);
    // Then its request timeout ends it, saying so and naming the key to publish again with.
    const error = await publishing.promise.catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'unavailable', message: expect.stringContaining('could not be sent within 1500 ms') });
    expect(error).toMatchObject({ message: expect.stringContaining('k-1') });
    await node.start();
    // The key was never stored: the same key now publishes for real.
    await waitUntil(() => c.state === 'connected', 'reconnected', 5000);
    expect(await c.publish('resume.timeout', 1, { key: 'k-1' })).toMatchObject({ offset: 1, duplicate: false });
  });

  it('fails a publish the node received but did not answer with maybe_stored and its key; that key then finds it stored', async () => {
    const node = await startNode();
    // No heartbeat: the connection stays while the node is stopped, so the node answers the publish once resumed.
    const c = new MeshClient({ url: node.url, requestTimeoutMs: 500, heartbeatMs: 0 });
    cleanup.push(() => c.close());
    await c.connect();
    node.pause();
    let error: unknown;
    try {
      error = await c.publish('resume.unanswered', 'once').catch((e: unknown) => e);
    } finally {
      node.resume();
    }
    expect(error).toBeInstanceOf(MeshError);
    expect(error).toMatchObject({ code: 'maybe_stored', key: expect.any(String) });
    expect(isRetryable(error)).toBe(true);
    const again = await c.publish('resume.unanswered', 'once', { key: (error as MeshError).key });
    expect(again).toMatchObject({ offset: 1, duplicate: true });
    expect((await c.history('resume.unanswered')).messages.map((m) => m.data)).toEqual(['once']);
  });

  it('fails a publish sent but not answered when the client closes with maybe_stored, one never sent with unavailable', async () => {
    const node = await startNode();
    const c = new MeshClient({ url: node.url, heartbeatMs: 0 });
    cleanup.push(() => c.close());
    await c.connect();
    node.pause();
    try {
      const sent = c.publish('resume.closing', 1, { key: 'k-sent' }).catch((e: unknown) => e);
      await c.close();
      expect(await sent).toMatchObject({ code: 'maybe_stored', key: 'k-sent' });
      expect(await c.publish('resume.closing', 2, { key: 'k-late' }).catch((e: unknown) => e)).toMatchObject({
        code: 'unavailable',
        key: 'k-late',
      });
    } finally {
      node.resume();
    }
  });

  it('rejects publishes past the offline queue limit at once', async () => {
    const c = new MeshClient({ url: 'http://127.0.0.1:1', offlineQueueLimit: 2, requestTimeoutMs: 2000 });
    cleanup.push(() => c.close());
    const first = track(c.publish('t', 1));
    const second = track(c.publish('t', 2));
    await expect(c.publish('t', 3)).rejects.toMatchObject({ code: 'unavailable' });
    expect(first.settled() || second.settled()).toBe(false);
    await c.close();
    await expect(first.promise).rejects.toMatchObject({ code: 'unavailable' });
    await expect(second.promise).rejects.toMatchObject({ code: 'unavailable' });
  });

  it('detects a node that stops answering with the heartbeat and reconnects', async () => {
    const node = await startNode();
    const c = new MeshClient({ url: node.url, heartbeatMs: 200, reconnect: { initialDelayMs: 50, maxDelayMs: 200 } });
    cleanup.push(() => c.close());
    const disconnected: number[] = [];
    c.on('disconnected', (info) => disconnected.push(info.code));
    await c.connect();
    process.kill(node.pid!, 'SIGSTOP');
    try {
      await waitUntil(() => c.state === 'reconnecting', 'the heartbeat to give up', 3000);
      expect(disconnected).toEqual([4000]);
    } finally {
      process.kill(node.pid!, 'SIGCONT');
    }
    await waitUntil(() => c.state === 'connected', 'reconnected', 5000);
    expect((await c.publish('resume.hb', 1)).offset).toBe(1);
  });
});
