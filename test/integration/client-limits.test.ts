import { MeshClient, type MeshError, type PublishResult } from '@meshmq/client';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort, NodeProcess } from '../helpers/node-process.js';
import { uniqueTopic } from '../helpers/util.js';
import { range, waitUntil } from '../helpers/wait.js';

/** Settles every promise; splits the results from the errors. */
async function outcomes<T>(promises: Array<Promise<T>>): Promise<{ ok: T[]; failed: MeshError[] }> {
  const settled = await Promise.allSettled(promises);
  return {
    ok: settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : [])),
    failed: settled.flatMap((s) => (s.status === 'rejected' ? [s.reason as MeshError] : [])),
  };
}

describe('client: the node’s per-connection limits', () => {
  const cleanup: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const step of cleanup.splice(0).reverse()) await step();
  });

  async function startNode(env: Record<string, string>, port?: number): Promise<NodeProcess> {
    const node = await NodeProcess.start(port === undefined ? { env } : { env, port });
    cleanup.push(() => node.dispose());
    return node;
  }

  function client(url: string, requestTimeoutMs?: number): MeshClient {
    const c = new MeshClient({ url, reconnect: { initialDelayMs: 50, maxDelayMs: 200 }, ...(requestTimeoutMs ? { requestTimeoutMs } : {}) });
    cleanup.push(() => c.close());
    return c;
  }

  it('keeps to maxInflight when the offline queue is flushed: every queued request succeeds', async () => {
    const port = await freePort();
    const topic = uniqueTopic('inflight');
    const c = client(`http://127.0.0.1:${port}`);
    const seen: number[] = [];
    // All of this waits for a node that is not there yet.
    const subscribing = c.subscribe(topic, (m) => void seen.push(m.offset), { from: 1 });
    const publishes: Array<Promise<PublishResult>> = [];
    const others: Array<Promise<unknown>> = [];
    for (const i of range(1, 300)) {
      publishes.push(c.publish(topic, i));
      // Pings are never retried: one refused with rate_limited would fail.
      if (i % 10 === 0) others.push(c.ping(), c.history(topic, { limit: 1 }));
    }
    await startNode({ MAX_INFLIGHT: '4' }, port);
    await subscribing;
    const offsets = (await Promise.all(publishes)).map((r) => r.offset);
    await Promise.all(others);
    expect(c.node?.limits.maxInflight).toBe(4);
    expect([...offsets].sort((a, b) => a - b)).toEqual(range(1, 300));
    await waitUntil(() => seen.length === 300, 'every message delivered');
    expect(seen).toEqual(range(1, 300));
  }, 30_000);

  it('fails a subscription past maxSubscriptions with limit_exceeded and keeps the connection and the others', async () => {
    const node = await startNode({ MAX_SUBSCRIPTIONS: '2' });
    const c = client(node.url);
    let connected = 0;
    c.on('connected', () => connected++);
    const [a, b, extra] = [uniqueTopic('sub'), uniqueTopic('sub'), uniqueTopic('sub')];
    const seen: string[] = [];
    await c.subscribe(a, (m) => void seen.push(m.topic));
    const consumer = await c.consume(b, 'g', (m) => void seen.push(m.topic));
    const error = await c
      .subscribe(extra, () => undefined)
      .then(
        () => undefined,
        (err: MeshError) => err,
      );
    expect(error?.code).toBe('limit_exceeded');
    await c.publish(a, 1);
    await c.publish(b, 2);
    await waitUntil(() => seen.length === 2, 'both messages');
    expect(seen.sort()).toEqual([a, b].sort());
    expect(connected).toBe(1);
    await consumer.stop();
  });

  it('waits as the node says when it rate-limits publishes: a burst all succeeds', async () => {
    const node = await startNode({ MAX_PUBLISH_RATE: '50' });
    const c = client(node.url);
    const topic = uniqueTopic('rate');
    await c.connect();
    expect(c.node?.limits.publishRate).toBe(50);
    const { ok, failed } = await outcomes(range(1, 200).map((i) => c.publish(topic, i)));
    expect(failed).toEqual([]);
    expect(ok.map((r) => r.offset).sort((a, b) => a - b)).toEqual(range(1, 200));
    expect(ok.every((r) => !r.duplicate)).toBe(true);
  }, 30_000);

  it('fails a publish still rate-limited after requestTimeoutMs with rate_limited, and it is not stored', async () => {
    const node = await startNode({ MAX_PUBLISH_RATE: '50' });
    const c = client(node.url, 1000);
    const topic = uniqueTopic('rate');
    await c.connect();
    const keys = range(1, 200).map((i) => `k-${i}`);
    const results = await Promise.allSettled(keys.map((key, i) => c.publish(topic, i, { key })));
    const refused = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as MeshError] : []));
    // 200 publishes at 50 a second cannot all go within a second.
    const limited = refused.filter((e) => e.code === 'rate_limited');
    expect(limited.length).toBeGreaterThan(0);
    for (const error of refused) {
      // One in flight when its time ran out may have been stored; nothing else may fail.
      expect(['rate_limited', 'maybe_stored']).toContain(error.code);
      expect(keys).toContain(error.key);
    }
    for (const error of limited) expect(error.retryAfterMs).toBeGreaterThan(0);
    const page = await c.history(topic, { limit: 1000 });
    const stored = new Map(page.messages.map((m) => [m.key, m.offset]));
    expect(stored.size).toBe(page.messages.length);
    results.forEach((r, i) => {
      if (r.status === 'fulfilled') expect(stored.get(keys[i])).toBe(r.value.offset);
    });
    for (const error of limited) expect(stored.has(error.key)).toBe(false);
  }, 30_000);
});
