import { spawnSync } from 'node:child_process';
import { MeshClient } from '@meshmq/client';
import { mintToken } from '@meshmq/server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NodeProcess } from '../helpers/node-process.js';
import { RawClient } from '../helpers/raw-client.js';
import { eventually } from '../helpers/util.js';
import { waitUntil } from '../helpers/wait.js';

const SECRET = 'a-test-secret-that-is-long-enough-for-hs256';
const METRICS_TOKEN = 'scrape-token-for-prometheus';

/** One sample of the exposition text: name, labels, value. */
interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses Prometheus text exposition (no escapes in our label values). */
function samplesOf(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) throw new Error(`not an exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, key, value] of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"/g)) labels[key!] = value!;
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return samples;
}

/** The sum of a metric's samples whose labels include `labels`. */
function sum(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  return samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((total, s) => total + s.value, 0);
}

/**
 * `/metrics` of a real node with authentication: what Prometheus accepts,
 * who may read it, and counters that match the traffic the test sent.
 */
describe('metrics', () => {
  let node: NodeProcess;
  let admin: string;
  let client: MeshClient;
  const handlerErrors: string[] = [];

  async function scrape(token = METRICS_TOKEN): Promise<{ status: number; text: string; type: string | null }> {
    const res = await fetch(`${node.url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
    return { status: res.status, text: await res.text(), type: res.headers.get('content-type') };
  }

  beforeAll(async () => {
    node = await NodeProcess.start({ env: { AUTH_SECRET: SECRET, METRICS_TOKEN, METRICS_TOPICS: '3' } });
    admin = await mintToken({ secret: SECRET, sub: 'ops', permissions: { admin: true }, ttlMs: 600_000 });
    client = new MeshClient({ url: node.url, token: admin });
    // The handler below fails on purpose; the SDK reports each nack as an error event.
    client.on('error', (err) => handlerErrors.push(err.message));
    await client.connect();
  });

  afterAll(async () => {
    await client?.close();
    await node?.dispose();
  });

  it('is readable with the metrics token or an admin token, and by nobody else', async () => {
    expect((await fetch(`${node.url}/metrics`)).status).toBe(401);
    expect((await scrape('not-the-token')).status).toBe(401);
    const reader = await mintToken({ secret: SECRET, sub: 'reader', permissions: { subscribe: ['>'] }, ttlMs: 60_000 });
    expect((await scrape(reader)).status).toBe(403);
    expect((await scrape(admin)).status).toBe(200);
    const { status, type } = await scrape();
    expect(status).toBe(200);
    expect(type).toMatch(/^text\/plain; version=0\.0\.4/);
  });

  it('passes promtool check metrics', async () => {
    const { text } = await scrape();
    const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(check.error, 'promtool (Debian package prometheus) must be installed').toBeUndefined();
    expect(`${check.stdout}${check.stderr}`).toBe('');
    expect(check.status).toBe(0);
    // The metrics the operations guide documents are all there, with prom-client's process metrics.
    for (const name of [
      'meshmq_info',
      'meshmq_connections',
      'meshmq_subscriptions',
      'meshmq_topics',
      'meshmq_storage_free_bytes',
      'meshmq_storage_size_bytes',
      'meshmq_memory_limit_bytes',
      'meshmq_publish_duration_seconds',
      'meshmq_delivery_lag_seconds',
      'meshmq_messages_published_total',
      'meshmq_requests_refused_total',
      'nodejs_eventloop_lag_p99_seconds',
      'process_resident_memory_bytes',
      'nodejs_heap_size_used_bytes',
    ]) {
      expect(text).toContain(`# TYPE ${name} `);
    }
  });

  it('counts what it was sent: published, delivered per kind, acked, nacked, redelivered, dead-lettered, refused', async () => {
    const before = samplesOf((await scrape()).text);
    const fanout: number[] = [];
    const sub = await client.subscribe('m.orders', (m) => void fanout.push(m.offset));
    let attempts = 0;
    const consumer = await client.consume(
      'm.orders',
      'workers',
      (m) => {
        attempts++;
        // The third message fails every time: nacked, redelivered once, then dead-lettered (maxDeliveries 2).
        if ((m.data as { n: number }).n === 3) throw new Error('cannot process');
      },
      { maxDeliveries: 2 },
    );
    for (let n = 1; n <= 5; n++) await client.publish('m.orders', { n });
    // A duplicate is not stored again and not counted.
    await client.publish('m.orders', { n: 5 }, { key: 'once' });
    await client.publish('m.orders', { n: 5 }, { key: 'once' });
    await waitUntil(() => fanout.length === 6, 'the fan-out deliveries');
    await waitUntil(() => attempts === 7, 'the group deliveries');
    // Refused requests are counted by op and code; the op of a frame naming none is 'unknown'.
    const raw = await RawClient.connect(`${node.wsUrl}?token=${encodeURIComponent(admin)}`);
    expect(await raw.request({ op: 'publish', topic: 'bad topic!', data: 1 })).toMatchObject({ op: 'error', code: 'bad_request' });
    expect(await raw.request({ op: 'no-such-op' })).toMatchObject({ op: 'error', code: 'bad_request' });
    await raw.close();

    const expected = { published: 6, fanout: 6, group: 7, acked: 5, nacked: 2, redelivered: 1, deadLettered: 1 };
    let after: Sample[] = [];
    const delta = (name: string, labels: Record<string, string> = {}) => sum(after, name, labels) - sum(before, name, labels);
    await eventually(
      async () => {
        after = samplesOf((await scrape()).text);
        // The raw client's close reaches the node a moment after close() returns.
        const rawGone = sum(after, 'meshmq_connections', { transport: 'ws' }) === 1;
        return rawGone && delta('meshmq_messages_acked_total') === expected.acked && delta('meshmq_messages_dead_lettered_total') === expected.deadLettered;
      },
      10_000,
      'the acks, the dead letter and the closed connection to be counted',
    );
    expect({
      published: delta('meshmq_messages_published_total', { topic: 'm.orders' }),
      fanout: delta('meshmq_messages_delivered_total', { kind: 'fanout', topic: 'm.orders' }),
      group: delta('meshmq_messages_delivered_total', { kind: 'group', topic: 'm.orders' }),
      acked: delta('meshmq_messages_acked_total', { topic: 'm.orders' }),
      nacked: delta('meshmq_messages_nacked_total', { topic: 'm.orders' }),
      redelivered: delta('meshmq_messages_redelivered_total', { topic: 'm.orders' }),
      deadLettered: delta('meshmq_messages_dead_lettered_total', { topic: 'm.orders' }),
    }).toEqual(expected);
    // Every publish frame is timed to its reply: five new, two with the same key, one refused.
    expect(delta('meshmq_publish_duration_seconds_count')).toBe(8);
    expect(delta('meshmq_delivery_lag_seconds_count', { kind: 'fanout' })).toBe(6);
    expect(delta('meshmq_delivery_lag_seconds_count', { kind: 'group' })).toBe(7);
    expect(handlerErrors).toHaveLength(2);
    expect(delta('meshmq_requests_refused_total', { op: 'publish', code: 'bad_request' })).toBe(1);
    expect(delta('meshmq_requests_refused_total', { op: 'unknown', code: 'bad_request' })).toBe(1);
    // Gauges read at the scrape: the subscription and the group member of this client, the raw client gone.
    expect(sum(after, 'meshmq_subscriptions')).toBe(2);
    expect(sum(after, 'meshmq_connections', { transport: 'socket.io' })).toBe(0);
    expect(sum(after, 'meshmq_group_pending', { topic: 'm.orders', group: 'workers' })).toBe(0);
    await consumer.stop();
    await sub.unsubscribe();
  });

  it('keeps topic labels bounded: past --metrics-topics, topics are summed as _other', async () => {
    // METRICS_TOPICS is 3: m.orders has its label already, two more topics get theirs.
    for (let i = 0; i < 20; i++) await client.publish(`m.many.${i}`, i);
    const samples = samplesOf((await scrape()).text).filter((s) => s.name === 'meshmq_messages_published_total');
    expect(new Set(samples.map((s) => s.labels.topic))).toEqual(new Set(['m.orders', 'm.many.0', 'm.many.1', '_other']));
    expect(sum(samples, 'meshmq_messages_published_total', { topic: '_other' })).toBe(18);
  });
});
