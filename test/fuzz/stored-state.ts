import { RawClient } from '../helpers/raw-client.js';
import { eventually, sleep } from '../helpers/util.js';

/** Topics written before the fuzz run and compared after it. */
export const RECORDED_TOPICS = ['rec.orders', 'rec.events', 'rec.jobs'];
/** Groups of rec.jobs with pending entries: `workers` (leased, delayed, due), `dead` (a dead letter). */
export const RECORDED_GROUPS = ['workers', 'dead'];

interface Target {
  url: string;
  wsUrl: string;
}

/** Fields of admin answers that change with time or traffic, not with stored data. */
const VOLATILE = new Set(['publishRate', 'subscribers', 'members', 'oldestPendingMs', 'ageMs']);

function withoutVolatile(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutVolatile);
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(
    Object.entries(value)
      .filter(([k]) => !VOLATILE.has(k))
      .map(([k, v]) => [k, withoutVolatile(v)]),
  );
}

/** Publishes, waiting out the node's publish rate limit (the fuzzed node's is small). */
async function publish(client: RawClient, frame: Record<string, unknown>): Promise<void> {
  for (;;) {
    const reply = await client.request({ op: 'publish', ...frame });
    if (reply.op === 'ok') return;
    if (reply.code !== 'rate_limited') throw new Error(`publish ${JSON.stringify(frame)}: ${JSON.stringify(reply)}`);
    await sleep(Number(reply.retryAfterMs));
  }
}

async function api(target: Target, token: string, path: string): Promise<unknown> {
  const res = await fetch(`${target.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
  const body = (await res.json()) as unknown;
  if (!res.ok) throw new Error(`GET ${path}: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

/**
 * Writes the recorded data with an admin token: three topics (keys, nested
 * and unicode data), a group whose pending entries are leased-then-released,
 * nacked with a long delay and acked, and a group that dead-lettered a message.
 */
export async function storeRecorded(target: Target, adminToken: string): Promise<void> {
  const client = await RawClient.connect(`${target.wsUrl}?token=${encodeURIComponent(adminToken)}`);
  try {
    for (let i = 1; i <= 20; i++) {
      await publish(client, { topic: 'rec.orders', data: { sku: `A-${i}`, qty: i, note: 'ünïcödé 😀 \u2028' }, key: `order-${i}` });
    }
    for (let i = 1; i <= 5; i++) {
      // Own `__proto__` and `constructor` keys must come back as stored.
      const data = JSON.parse(`{"i":${i},"__proto__":{"admin":true},"constructor":"x","nested":{"list":[1,"two",null,{"deep":[true,false]}]}}`) as unknown;
      await publish(client, { topic: 'rec.events', data });
    }
    for (let i = 1; i <= 10; i++) await publish(client, { topic: 'rec.jobs', data: { job: i } });

    await client.ok({ op: 'subscribe', topic: 'rec.jobs', group: 'workers', from: 1, prefetch: 4, ackWait: 60_000 });
    const leased = await client.waitForMessages(4, 'rec.jobs', 'workers');
    await client.ok({ op: 'ack', topic: 'rec.jobs', group: 'workers', offset: leased[0]!.offset, epoch: leased[0]!.epoch });
    await client.ok({ op: 'nack', topic: 'rec.jobs', group: 'workers', offset: leased[1]!.offset, delay: 3_600_000 });
    await client.ok({ op: 'unsubscribe', topic: 'rec.jobs', group: 'workers' });

    // One delivery, no ack within 100 ms, one delivery allowed: the message moves to $dlq.rec.jobs.
    await client.ok({ op: 'subscribe', topic: 'rec.jobs', group: 'dead', from: 1, prefetch: 1, ackWait: 100, maxDeliveries: 1 });
    await eventually(
      async () => ((await api(target, adminToken, '/api/topics/rec.jobs/dead-letters')) as { count: number }).count >= 1,
      10_000,
      'a dead letter',
    );
    await client.ok({ op: 'unsubscribe', topic: 'rec.jobs', group: 'dead' });
  } finally {
    await client.close();
  }
}

/**
 * The recorded data as the node reports it now, without fields that move
 * with time or traffic: each topic's messages (history over /ws and the
 * admin API's pages), its summary and groups, every pending entry, and the
 * dead letters.
 */
export async function snapshotRecorded(target: Target, adminToken: string): Promise<unknown> {
  const client = await RawClient.connect(`${target.wsUrl}?token=${encodeURIComponent(adminToken)}`);
  try {
    const snapshot: Record<string, unknown> = {};
    for (const topic of [...RECORDED_TOPICS, '$dlq.rec.jobs']) {
      const { id: _id, ...history } = await client.ok({ op: 'history', topic, from: 1, limit: 1000 });
      const encoded = encodeURIComponent(topic);
      snapshot[topic] = withoutVolatile({
        history,
        detail: await api(target, adminToken, `/api/topics/${encoded}`),
        messages: await api(target, adminToken, `/api/topics/${encoded}/messages?limit=1000`),
      });
    }
    for (const group of RECORDED_GROUPS) {
      snapshot[`rec.jobs/${group}`] = withoutVolatile(await api(target, adminToken, `/api/topics/rec.jobs/groups/${group}/pending?limit=1000`));
    }
    snapshot.deadLetters = withoutVolatile(await api(target, adminToken, '/api/topics/rec.jobs/dead-letters?limit=1000'));
    return snapshot;
  } finally {
    await client.close();
  }
}

/** Waits until two snapshots in a row agree (dead-lettering finishes after the member left). */
export async function settledSnapshot(target: Target, adminToken: string): Promise<unknown> {
  let previous = JSON.stringify(await snapshotRecorded(target, adminToken));
  return eventually(
    async () => {
      await new Promise((resolve) => setTimeout(resolve, 200));
      const next = await snapshotRecorded(target, adminToken);
      const same = JSON.stringify(next) === previous;
      previous = JSON.stringify(next);
      return same ? next : undefined;
    },
    10_000,
    'the recorded data to settle',
  );
}
