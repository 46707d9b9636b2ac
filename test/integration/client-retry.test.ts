import { type GroupMessage, MeshClient, type MeshClientOptions, MeshError, type PublishResult, type RetryInfo } from '@meshmq/client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { groupState } from '../helpers/admin.js';
import { NodeProcess } from '../helpers/node-process.js';
import { RedisProcess } from '../helpers/redis-process.js';
import { eventually, uniqueTopic } from '../helpers/util.js';
import { range, waitUntil } from '../helpers/wait.js';

/** Long enough that no lease ends during a test: a message pending at the end was left pending by the SDK. */
const ACK_WAIT_MS = 60_000;

/** What one client went through: its retries, its `error` events and its lost connections. */
interface Recorded {
  client: MeshClient;
  retries: RetryInfo[];
  errors: MeshError[];
  disconnects: number;
}

/**
 * The SDK rides through a short outage of the node's Redis: requests the
 * node refuses for now (`unavailable`) or whose outcome it cannot know
 * (`maybe_stored`) are sent again, with their idempotency key, within
 * requestTimeoutMs; the application sees latency, not errors.
 */
describe('client: retries through a Redis outage', () => {
  let redis: RedisProcess;
  let node: NodeProcess;
  const cleanup: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    redis = await RedisProcess.start();
    node = await NodeProcess.start({ env: { REDIS_URL: redis.url, NODE_ID: 'solo' } });
  });
  afterEach(async () => {
    for (const step of cleanup.splice(0).reverse()) await step();
  });
  afterAll(async () => {
    await node?.dispose();
    await redis?.dispose();
  });

  function client(options: MeshClientOptions = {}): Recorded {
    const c = new MeshClient({ url: node.url, reconnect: { initialDelayMs: 50, maxDelayMs: 500 }, ...options });
    const recorded: Recorded = { client: c, retries: [], errors: [], disconnects: 0 };
    c.on('retry', (info) => recorded.retries.push(info));
    c.on('error', (error) => recorded.errors.push(error));
    c.on('disconnected', () => recorded.disconnects++);
    cleanup.push(() => c.close());
    return recorded;
  }

  /** Kills Redis now; the returned step restarts it, and runs at the end of the test if the test does not. */
  async function killRedis(): Promise<() => Promise<void>> {
    await redis.kill();
    let restarted: Promise<void> | undefined;
    const restart = () => (restarted ??= redis.start());
    cleanup.push(restart);
    return restart;
  }

  /** Every retained message of `topic` (fewer than 1000 in these tests). */
  async function everything(c: MeshClient, topic: string) {
    const page = await c.history<{ i: number }>(topic, { from: 1, limit: 1000 });
    expect(page.messages.length).toBeLessThan(1000);
    return page.messages;
  }

  it('stores every publish of a stream exactly once through a Redis kill and restart, rejecting none', async () => {
    const { client: c, retries, errors, disconnects } = client();
    const topic = uniqueTopic('retry.stream');
    const TOTAL = 400;
    const keyOf = (i: number) => `${topic}-${i}`;
    const results = new Map<number, PublishResult>();
    const failures: MeshError[] = [];
    let next = 1;
    // Up to 20 publishes in flight at once, so some are in flight when Redis dies.
    const worker = async () => {
      while (next <= TOTAL) {
        const i = next++;
        try {
          results.set(i, await c.publish(topic, { i }, { key: keyOf(i) }));
        } catch (err) {
          failures.push(err as MeshError);
        }
      }
    };
    const publishing = Promise.all(range(1, 20).map(() => worker()));

    await waitUntil(() => results.size >= 100, 'the first 100 publishes');
    const restart = await killRedis();
    // Down for several rounds of retries, not just one.
    await waitUntil(
      () => retries.some((r) => r.op === 'publish' && r.code === 'unavailable' && r.attempt >= 4),
      'a publish refused four times while Redis is down',
    );
    await restart();
    await publishing;

    expect(failures).toEqual([]);
    expect(results.size).toBe(TOTAL);
    // Each payload once, at contiguous offsets, each at the offset its publish resolved with.
    const stored = await everything(c, topic);
    expect(stored.map((m) => m.offset)).toEqual(range(1, TOTAL));
    expect(stored.map((m) => m.data.i).sort((a, b) => a - b)).toEqual(range(1, TOTAL));
    for (const m of stored) expect(results.get(m.data.i)?.offset).toBe(m.offset);
    // `duplicate` only for a publish the SDK sent again after an answer that it may have been stored.
    const uncertain = new Set(retries.filter((r) => r.op === 'publish' && r.code === 'maybe_stored').map((r) => r.key));
    for (const [i, result] of results) if (result.duplicate) expect(uncertain).toContain(keyOf(i));
    expect(disconnects).toBe(0);
    expect(errors).toEqual([]);
  }, 60_000);

  it('auto-acks and auto-nacks through a Redis outage: nothing stays pending until ackWait, nothing is redelivered but the nacked one', async () => {
    const { client: publisher } = client();
    const { client: consumer, retries, errors, disconnects } = client();
    const topic = uniqueTopic('retry.group');
    const TOTAL = 30;
    const PREFETCH = 10;
    /** Thrown on its first delivery: nacked while Redis is down, delivered again after. */
    const NACKED = 3;
    const handled: Array<[offset: number, delivery: number]> = [];
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    await consumer.consume(
      topic,
      'workers',
      async (m: GroupMessage) => {
        handled.push([m.offset, m.delivery]);
        await released;
        if (m.offset === NACKED && m.delivery === 1) throw new Error('nacked on purpose');
      },
      { ackWait: ACK_WAIT_MS, prefetch: PREFETCH, from: 1 },
    );
    await Promise.all(range(1, TOTAL).map((i) => publisher.publish(topic, { i })));
    await waitUntil(() => handled.length === PREFETCH, 'a full prefetch of deliveries held by the handlers');

    const restart = await killRedis();
    // The handlers finish while Redis is down: every ack and the nack is refused, and retried.
    release();
    // The SDK sends the acks of one turn in one frame (`offsets`): a retry of it names them all.
    const settling = () =>
      new Set(retries.filter((r) => (r.op === 'ack' || r.op === 'nack') && r.code === 'unavailable').flatMap((r) => r.offsets ?? [r.offset]));
    await waitUntil(() => settling().size === PREFETCH, 'the acks and the nack of the held deliveries refused while Redis is down');
    expect(retries.some((r) => r.op === 'nack' && r.offset === NACKED)).toBe(true);
    await restart();

    await waitUntil(() => handled.length === TOTAL + 1, 'every message handled, and the nacked one again', 20_000);
    await eventually(async () => (await groupState(node.url, topic, 'workers')).pending === 0, 20_000, 'every delivery acked');
    expect(await groupState(node.url, topic, 'workers')).toMatchObject({ cursor: TOTAL + 1, pending: 0, redeliveries: 1 });
    const expected = [...range(1, TOTAL).map((o): [number, number] => [o, 1]), [NACKED, 2] as [number, number]];
    expect([...handled].sort((a, b) => a[0] - b[0] || a[1] - b[1])).toEqual(expected.sort((a, b) => a[0] - b[0] || a[1] - b[1]));
    expect(disconnects).toBe(0);
    // Only the handler that threw on purpose is reported.
    expect(errors.map((e) => e.code)).toEqual(['internal']);
    expect(errors[0]!.message).toContain('nacked on purpose');
  }, 60_000);

  it('joins a group, subscribes and reads history asked for while Redis is down once it is back, on the same connection, reporting nothing', async () => {
    const { client: c, retries, errors, disconnects } = client();
    await c.connect();
    const topic = uniqueTopic('retry.join');
    await c.publish(topic, 'before');
    const restart = await killRedis();
    const fanout: number[] = [];
    const group: number[] = [];
    const subscribing = c.subscribe(topic, (m) => void fanout.push(m.offset), { from: 1 });
    const joining = c.consume(topic, 'g', (m) => void group.push(m.offset), { from: 1 });
    const reading = c.history(topic);
    await waitUntil(
      () =>
        retries.some((r) => r.op === 'subscribe' && r.group === 'g') &&
        retries.some((r) => r.op === 'subscribe' && r.group === undefined) &&
        retries.some((r) => r.op === 'history'),
      'both subscribes and the history read refused while Redis is down',
    );
    await restart();
    await Promise.all([subscribing, joining]);
    expect((await reading).messages.map((m) => m.data)).toEqual(['before']);

    await c.publish(topic, 'after');
    await waitUntil(() => fanout.length === 2 && group.length === 2, 'both messages, to the subscription and to the group');
    expect(retries.filter((r) => ['subscribe', 'history'].includes(r.op)).every((r) => r.code === 'unavailable')).toBe(true);
    expect(disconnects).toBe(0);
    expect(errors).toEqual([]);
  }, 60_000);

  it('rejects publishes with unavailable or maybe_stored and their key when the outage outlasts requestTimeoutMs; republished with that key, each is stored once', async () => {
    const { client: c, retries } = client({ requestTimeoutMs: 1500 });
    const topic = uniqueTopic('retry.timeout');
    await c.publish(topic, { i: 0 });
    const restart = await killRedis();
    const COUNT = 20;
    const outcomes = await Promise.all(
      range(1, COUNT).map((i) =>
        c.publish(topic, { i }).then(
          () => undefined,
          (err: unknown) => err as MeshError,
        ),
      ),
    );
    const failed = outcomes.filter((e): e is MeshError => e instanceof MeshError);
    expect(failed.length).toBe(COUNT);
    for (const error of failed) {
      expect(['unavailable', 'maybe_stored']).toContain(error.code);
      expect(error.key).toMatch(/./);
    }
    // Each was tried more than once before it failed.
    for (const error of failed) expect(retries.some((r) => r.key === error.key)).toBe(true);

    await restart();
    const { client: later } = client();
    const republished = await Promise.all(failed.map((error, n) => later.publish(topic, { i: n + 1 }, { key: error.key! })));
    // `unavailable` said nothing was stored: republishing stores it now.
    failed.forEach((error, n) => {
      if (error.code === 'unavailable') expect(republished[n]!.duplicate).toBe(false);
    });
    const stored = await everything(later, topic);
    expect(stored.map((m) => m.offset)).toEqual(range(1, COUNT + 1));
    expect(stored.map((m) => m.data.i).sort((a, b) => a - b)).toEqual(range(0, COUNT));
  }, 60_000);

  it('when Redis stalls past its command timeout, resends what may be stored: publishes come back duplicate, a second ack finds the first applied', async () => {
    const { client: c, retries, errors } = client({ requestTimeoutMs: 30_000 });
    const topic = uniqueTopic('retry.stall');
    const jobs = uniqueTopic('retry.stall-jobs');
    const received: GroupMessage[] = [];
    await c.consume(jobs, 'g', (m: GroupMessage) => void received.push(m), { autoAck: false, ackWait: ACK_WAIT_MS, from: 1 });
    await c.publish(jobs, 'first');
    await c.publish(jobs, 'second');
    await c.publish(topic, { i: 0 });
    await waitUntil(() => received.length === 2, 'the deliveries to ack');
    // One ack before the stall, so that Redis (restarted by earlier tests) knows the ack script: an EVALSHA
    // it does not know fails without effect, and the ack would not be applied by the first send.
    await received[0]!.ack();

    // Stopped, Redis reads nothing: what the node writes waits in the socket until it runs again.
    redis.pause();
    let resumed = false;
    const resume = async () => {
      if (!resumed) redis.resume();
      resumed = true;
    };
    cleanup.push(resume);
    const COUNT = 5;
    const keyOf = (i: number) => `${topic}-${i}`;
    const publishing = Promise.all(range(1, COUNT).map((i) => c.publish(topic, { i }, { key: keyOf(i) })));
    const acking = received[1]!.ack().then(
      () => undefined,
      (err: unknown) => err as MeshError,
    );
    // The node's command timeout passes: it answers that each may have been stored, and the SDK sends each again.
    await waitUntil(
      () =>
        range(1, COUNT).every((i) => retries.some((r) => r.key === keyOf(i) && r.code === 'maybe_stored')) &&
        retries.some((r) => r.op === 'ack' && r.code === 'maybe_stored'),
      'maybe_stored answers to the publishes and the ack',
      30_000,
    );
    await resume();

    // Redis ran the first sends once it went on: the resends find them stored.
    const results = await publishing;
    expect(results.map((r) => r.duplicate)).toEqual(range(1, COUNT).map(() => true));
    const stored = await everything(c, topic);
    expect(stored.map((m) => m.offset)).toEqual(range(1, COUNT + 1));
    expect(stored.map((m) => m.data.i).sort((a, b) => a - b)).toEqual(range(0, COUNT));
    expect(results.map((r) => r.offset).sort((a, b) => a - b)).toEqual(range(2, COUNT + 1));

    // The ack sent again finds the offset no longer pending: the SDK cannot tell an applied ack from an ended lease, and says so.
    const ackError = await acking;
    expect(ackError).toBeInstanceOf(MeshError);
    expect(ackError!.code).toBe('maybe_stored');
    expect(ackError!.message).toContain('no longer leased to this member');
    // It was applied: nothing is pending, and nothing came again.
    await eventually(async () => (await groupState(node.url, jobs, 'g')).pending === 0, 10_000, 'the ack applied');
    expect(await groupState(node.url, jobs, 'g')).toMatchObject({ cursor: 3, pending: 0, redeliveries: 0 });
    expect(errors).toEqual([]);
  }, 90_000);
});
