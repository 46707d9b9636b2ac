import type { DeadLetter, Engine, RetentionPolicy, StoredMessage, TopicInfo } from '@meshmq/server';
import { deadLetterTopicOf, MeshError } from '@meshmq/shared';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually, range, uniqueTopic } from '../helpers/util.js';
import { waitUntil } from '../helpers/wait.js';

export interface EngineFactoryOptions {
  retention?: (topic: string) => RetentionPolicy;
  dedupeWindowMs?: number;
  maxTopics?: number;
  clock?: () => number;
}

/** A clock a test moves by hand. */
export function manualClock(start = Date.now()): { now: () => number; advance: (ms: number) => void } {
  let t = start;
  return { now: () => t, advance: (ms) => (t += ms) };
}

/** The state of a topic that must exist. */
async function infoOf(engine: Engine, topic: string): Promise<TopicInfo> {
  const info = await engine.topicInfo(topic);
  if (!info) throw new Error(`topic ${topic} does not exist`);
  return info;
}

/** Another node's engine over the instance's shared store. */
async function peerOf(instance: EngineInstance): Promise<Engine> {
  if (!instance.peer) throw new Error('a harness with a shared store must give its instances a peer');
  return instance.peer();
}

const by = (consumer: string, epoch?: string) => (epoch === undefined ? { consumer } : { consumer, epoch });

export interface EngineHarness {
  /** Opens a new, empty engine. */
  create(options?: EngineFactoryOptions): Promise<EngineInstance>;
  /**
   * Whether several nodes share the engine's store (Redis). Then each node
   * receives live messages only of the topics it watches, and a release or
   * nack wakes the group's members on every node that watches the topic.
   * Otherwise (embedded) every message of the store is live on its one node,
   * and onWake never fires: the node that settles a lease pumps its own
   * dispatcher.
   */
  shared: boolean;
  /**
   * Cases this harness leaves out, by title, each with the product bug that
   * fails it. The run prints them, and a title that names no case fails it.
   */
  knownFailures?: Readonly<Record<string, string>>;
}

export interface EngineInstance {
  engine: Engine;
  /** Closes the engine and opens a new one over the same storage. */
  reopen(): Promise<Engine>;
  /**
   * Opens another engine over the same storage, as another node does; closed
   * with the instance. Only for a shared store.
   */
  peer?: () => Promise<Engine>;
  dispose(): Promise<void>;
}

export interface ReopenableOptions {
  /** Runs after the engine is closed for good (removes its files). */
  cleanup?: () => void;
  /** The store is shared between nodes: the instance gets `peer`. */
  shared?: boolean;
}

/**
 * A harness for an engine that `make` builds over some fixed storage: open,
 * reopen over the same storage, peers over it when it is shared, and dispose.
 */
export async function reopenable(make: () => Engine, options: ReopenableOptions = {}): Promise<EngineInstance> {
  let engine = make();
  await engine.open();
  const peers: Engine[] = [];
  const instance: EngineInstance = {
    get engine() {
      return engine;
    },
    async reopen() {
      await engine.close();
      engine = make();
      await engine.open();
      return engine;
    },
    async dispose() {
      await Promise.all([engine, ...peers].map((e) => e.close()));
      options.cleanup?.();
    },
  };
  if (options.shared) {
    instance.peer = async () => {
      const peer = make();
      peers.push(peer);
      await peer.open();
      return peer;
    };
  }
  return instance;
}

/** Longer than any call on a closed engine takes to fail; only one that never settles reaches it. */
const HANG_MS = 10_000;

/**
 * How a call ends: the code it rejects with (`no code: <message>` for an
 * error without one), `resolved`, or `hung` when it has not settled within
 * {@link HANG_MS}.
 */
async function outcomeOf(call: () => Promise<unknown>): Promise<string> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hung = new Promise<string>((resolve) => (timer = setTimeout(() => resolve('hung'), HANG_MS)));
  const settled = Promise.resolve()
    .then(call)
    .then(
      () => 'resolved',
      (err: unknown) => (err instanceof MeshError ? err.code : `no code: ${err instanceof Error ? err.message : String(err)}`),
    );
  try {
    return await Promise.race([settled, hung]);
  } finally {
    clearTimeout(timer);
  }
}

/** The outcome of every call, by name, all started at once. */
async function outcomesOf(calls: Record<string, () => Promise<unknown>>): Promise<Record<string, string>> {
  const names = Object.keys(calls);
  const outcomes = await Promise.all(names.map((name) => outcomeOf(calls[name]!)));
  return Object.fromEntries(names.map((name, i) => [name, outcomes[i]!]));
}

/** Every name mapped to `outcome`. */
const all = (calls: Record<string, unknown>, outcome: string) => Object.fromEntries(Object.keys(calls).map((name) => [name, outcome]));

/**
 * The contract every storage engine must meet. Engine test files call this
 * with a harness that opens their engine; the assertions are the same for all.
 */
export function engineConformance(name: string, harness: EngineHarness): void {
  describe(`${name} engine conformance`, () => {
    const leftOut = new Map(Object.entries(harness.knownFailures ?? {}));
    /** A case, unless this harness leaves it out for a known bug. */
    const test = (title: string, body: () => Promise<void>) => {
      const bug = leftOut.get(title);
      if (bug === undefined) return it(title, body);
      leftOut.delete(title);
      console.warn(`${name} engine conformance leaves out "${title}": ${bug}`);
      it.skip(`${title} [left out: ${bug}]`, body);
    };
    const open: EngineInstance[] = [];
    const create = async (options?: EngineFactoryOptions) => {
      const instance = await harness.create(options);
      open.push(instance);
      return instance;
    };
    afterEach(async () => {
      await Promise.all(open.splice(0).map((i) => i.dispose()));
    });

    describe('topics', () => {
      test('assigns gap-free offsets from 1 under concurrent publishes, with one epoch', async () => {
        const { engine } = await create();
        const topic = uniqueTopic();
        const outcomes = await Promise.all(range(1, 200).map((n) => engine.publish(topic, { n })));
        expect(outcomes.map((o) => o.offset).sort((a, b) => a - b)).toEqual(range(1, 200));
        expect(new Set(outcomes.map((o) => o.epoch)).size).toBe(1);
        expect(outcomes.every((o) => o.duplicate === false)).toBe(true);
        const info = await infoOf(engine, topic);
        expect(info).toMatchObject({ topic, first: 1, last: 200, count: 200, epoch: outcomes[0]!.epoch });
      });

      test('keeps each topic its own log', async () => {
        const { engine } = await create();
        const [a, b] = [uniqueTopic(), uniqueTopic()];
        await engine.publish(a, 'a1');
        await engine.publish(b, 'b1');
        await engine.publish(a, 'a2');
        expect((await engine.read(a, 1, 10)).map((m) => [m.offset, m.data])).toEqual([
          [1, 'a1'],
          [2, 'a2'],
        ]);
        expect((await engine.read(b, 1, 10)).map((m) => [m.offset, m.data])).toEqual([[1, 'b1']]);
        const topics = (await engine.listTopics()).map((t) => t.topic);
        expect(topics).toEqual(expect.arrayContaining([a, b]));
      });

      test('reads ranges in offset order with a limit', async () => {
        const { engine } = await create();
        const topic = uniqueTopic();
        for (const n of range(1, 10)) await engine.publish(topic, n, n === 4 ? { key: 'four' } : {});
        const page = await engine.read(topic, 3, 4);
        expect(page.map((m) => m.offset)).toEqual([3, 4, 5, 6]);
        expect(page.map((m) => m.data)).toEqual([3, 4, 5, 6]);
        expect(page[1]).toMatchObject({ topic, key: 'four' });
        expect(page[0]!.ts).toBeGreaterThan(0);
        expect(await engine.read(topic, 11, 10)).toEqual([]);
        expect(await engine.read(uniqueTopic(), 1, 10)).toEqual([]);
      });

      test('stores JSON data exactly', async () => {
        const { engine } = await create();
        const topic = uniqueTopic();
        const values = [null, 0, -1.5, 'text', true, [1, [2, { a: 'b' }]], { nested: { deep: [null, false] } }, 'ünïcødé ✓'];
        for (const value of values) await engine.publish(topic, value);
        expect((await engine.read(topic, 1, 100)).map((m) => m.data)).toEqual(values);
      });

      test('never creates a topic by reading it; the first publish does, with an epoch', async () => {
        const { engine } = await create();
        const topic = uniqueTopic();
        expect(await engine.topicInfo(topic)).toBeUndefined();
        expect(await engine.read(topic, 1, 10)).toEqual([]);
        expect(await engine.truncate(topic, 5)).toBe(0);
        expect(await engine.enforceRetention(topic)).toBe(0);
        expect((await engine.listTopics()).map((t) => t.topic)).not.toContain(topic);
        const { epoch } = await engine.publish(topic, 1);
        expect(epoch).toMatch(/^\S+$/);
        expect(await engine.topicInfo(topic)).toMatchObject({ topic, epoch, first: 1, last: 1, count: 1, epochs: [{ epoch, start: 1 }] });
      });

      test('stops a page at its byte budget, but never below one message', async () => {
        const { engine } = await create();
        const topic = uniqueTopic();
        for (const n of range(1, 20)) await engine.publish(topic, 'x'.repeat(100 + n));
        // Each message encodes to about 100 bytes: a 350-byte budget holds three of them.
        expect((await engine.read(topic, 1, 20, 350)).map((m) => m.offset)).toEqual([1, 2, 3]);
        expect((await engine.read(topic, 5, 20, 1)).map((m) => m.offset)).toEqual([5]);
        expect((await engine.read(topic, 1, 20)).map((m) => m.offset)).toEqual(range(1, 20));
      });

      test('refuses to create topics past maxTopics, except its own dead-letter topics', async () => {
        const { engine } = await create({ maxTopics: 2 });
        const [a, b, c] = [uniqueTopic(), uniqueTopic(), uniqueTopic()];
        await engine.publish(a, 1);
        await engine.ensureGroup(b, 'g', { maxDeliveries: 1 });
        await expect(engine.publish(c, 1)).rejects.toMatchObject({ code: 'limit_exceeded' });
        await expect(engine.ensureGroup(c, 'g')).rejects.toMatchObject({ code: 'limit_exceeded' });
        expect(await engine.topicInfo(c)).toBeUndefined();
        // Existing topics go on; a poison message of b still reaches b's dead-letter topic.
        expect((await engine.publish(a, 2)).offset).toBe(2);
        await engine.publish(b, 'poison');
        await engine.claim(b, 'g', 'A', 1);
        await engine.nack(b, 'g', 1, 0, by('A'));
        expect((await engine.claim(b, 'g', 'A', 1)).deliveries).toEqual([]);
        const dlq = deadLetterTopicOf(b);
        const letters = await eventually(
          async () => {
            const read = await engine.read(dlq, 1, 10);
            return read.length > 0 && read;
          },
          5000,
          'the dead letter',
        );
        expect(letters).toHaveLength(1);
      });

      test('tells listeners about each message once, in offset order', async () => {
        const { engine } = await create();
        const topic = uniqueTopic();
        const seen: StoredMessage[] = [];
        const stop = engine.onMessage((m) => m.topic === topic && seen.push(m));
        // Stays on to the end: every listener hears each message, so once this one has heard
        // offset 101, the stopped one would have heard it too.
        const witness: number[] = [];
        engine.onMessage((m) => m.topic === topic && witness.push(m.offset));
        await engine.watch(topic);
        const outcomes = await Promise.all(range(1, 100).map((n) => engine.publish(topic, n)));
        await waitUntil(() => witness.includes(100), 'offset 100 to reach the listeners');
        expect(seen.map((m) => m.offset)).toEqual(range(1, 100));
        for (const m of seen) expect(m.data).toBe(m.offset);
        expect(seen[0]!.epoch).toBe(outcomes[0]!.epoch);
        stop();
        await engine.publish(topic, 101);
        await waitUntil(() => witness.includes(101), 'offset 101 to reach the listener still on');
        expect(seen).toHaveLength(100);
        expect(witness).toEqual(range(1, 101));
      });

      test('recognises a repeated key within the window and stores nothing new', async () => {
        const { engine } = await create({ dedupeWindowMs: 60_000 });
        const topic = uniqueTopic();
        const [first, concurrent] = await Promise.all([engine.publish(topic, 'a', { key: 'k' }), engine.publish(topic, 'a', { key: 'k' })]);
        expect([first.duplicate, concurrent.duplicate].sort()).toEqual([false, true]);
        expect(concurrent.offset).toBe(first.offset);
        const later = await engine.publish(topic, 'changed', { key: 'k' });
        expect(later).toMatchObject({ offset: first.offset, duplicate: true });
        expect((await infoOf(engine, topic)).last).toBe(1);
        expect((await engine.publish(topic, 'other', { key: 'k2' })).offset).toBe(2);
        expect((await engine.publish(uniqueTopic(), 'a', { key: 'k' })).duplicate).toBe(false);
      });

      test('forgets keys after the window', async () => {
        const { engine } = await create({ dedupeWindowMs: 100 });
        const topic = uniqueTopic();
        await engine.publish(topic, 'a', { key: 'k' });
        // Within the window a repeat stores nothing; the first repeat after it is stored as new.
        const stored = await eventually(
          async () => {
            const outcome = await engine.publish(topic, 'a', { key: 'k' });
            return !outcome.duplicate && outcome;
          },
          5000,
          'the key to be forgotten',
        );
        expect(stored).toMatchObject({ offset: 2, duplicate: false });
      });

      test('enforces retention by count on publish and by age on demand', async () => {
        const clock = manualClock();
        const { engine } = await create({
          retention: (t) => (t.startsWith('count') ? { maxMessages: 3, maxAgeMs: 1e12 } : { maxMessages: 1e9, maxAgeMs: 1000 }),
          clock: clock.now,
        });
        const counted = uniqueTopic('count');
        for (const n of range(1, 7)) await engine.publish(counted, n);
        expect(await engine.topicInfo(counted)).toMatchObject({ first: 5, last: 7, count: 3 });
        expect((await engine.read(counted, 1, 10)).map((m) => m.offset)).toEqual([5, 6, 7]);

        const aged = uniqueTopic('age');
        for (const n of range(1, 3)) await engine.publish(aged, n);
        expect(await engine.enforceRetention(aged)).toBe(0);
        clock.advance(2000);
        expect(await engine.enforceRetention(aged)).toBe(3);
        expect(await engine.topicInfo(aged)).toMatchObject({ first: 4, last: 3, count: 0 });
        expect((await engine.publish(aged, 4)).offset).toBe(4);
      });

      test('refuses to settle a delivery with an epoch the log does not know', async () => {
        const { engine } = await create();
        const topic = uniqueTopic();
        await engine.ensureGroup(topic, 'g', { startAt: 1 });
        const { epoch } = await engine.publish(topic, 1);
        await engine.claim(topic, 'g', 'A', 1);
        await expect(engine.ack(topic, 'g', 1, by('A', 'never-existed'))).rejects.toMatchObject({ code: 'not_found' });
        await expect(engine.nack(topic, 'g', 1, 0, by('A', 'never-existed'))).rejects.toMatchObject({ code: 'not_found' });
        await engine.ack(topic, 'g', 1, by('A', epoch));
        expect(await engine.groupInfo(topic, 'g')).toMatchObject({ pending: 0 });
      });

      test('truncates the front of a log without reusing offsets', async () => {
        const { engine } = await create();
        const topic = uniqueTopic();
        for (const n of range(1, 5)) await engine.publish(topic, n);
        expect(await engine.truncate(topic, 3)).toBe(2);
        expect(await engine.topicInfo(topic)).toMatchObject({ first: 3, last: 5, count: 3 });
        expect(await engine.truncate(topic, Number.MAX_SAFE_INTEGER)).toBe(3);
        expect(await engine.topicInfo(topic)).toMatchObject({ first: 6, last: 5, count: 0 });
        expect(await engine.read(topic, 1, 10)).toEqual([]);
        expect((await engine.publish(topic, 6)).offset).toBe(6);
        expect(await engine.truncate(uniqueTopic(), 10)).toBe(0);
      });
    });

    describe('groups', () => {
      test('starts a new group after the last offset unless told where', async () => {
        const { engine } = await create();
        const topic = uniqueTopic();
        for (const n of range(1, 3)) await engine.publish(topic, n);
        const fromNow = await engine.ensureGroup(topic, 'late');
        expect(fromNow).toMatchObject({ topic, group: 'late', cursor: 4, pending: 0, ackWaitMs: 30_000, maxDeliveries: 5 });
        const fromStart = await engine.ensureGroup(topic, 'early', { startAt: 1, ackWaitMs: 500, maxDeliveries: 2 });
        expect(fromStart).toMatchObject({ cursor: 1, ackWaitMs: 500, maxDeliveries: 2 });
        // A member joining an existing group never rewrites its settings or position.
        const again = await engine.ensureGroup(topic, 'early', { startAt: 3, ackWaitMs: 900, maxDeliveries: 1 });
        expect(again).toMatchObject({ cursor: 1, ackWaitMs: 500, maxDeliveries: 2 });
        expect((await engine.listGroups(topic)).map((g) => g.group)).toEqual(['early', 'late']);
      });

      test('changes a group\u2019s settings only through configureGroup', async () => {
        const { engine } = await create();
        const topic = uniqueTopic();
        await engine.ensureGroup(topic, 'g', { ackWaitMs: 500, maxDeliveries: 2 });
        expect(await engine.configureGroup(topic, 'g', { maxDeliveries: 9 })).toMatchObject({ ackWaitMs: 500, maxDeliveries: 9 });
        expect(await engine.configureGroup(topic, 'g', { ackWaitMs: 1500 })).toMatchObject({ ackWaitMs: 1500, maxDeliveries: 9 });
        expect(await engine.groupInfo(topic, 'g')).toMatchObject({ ackWaitMs: 1500, maxDeliveries: 9 });
        await expect(engine.configureGroup(topic, 'nope', { maxDeliveries: 3 })).rejects.toMatchObject({ code: 'not_found' });
      });

      test('leases each message to one consumer and settles it on ack', async () => {
        const { engine } = await create();
        const topic = uniqueTopic();
        await engine.ensureGroup(topic, 'g');
        for (const n of range(1, 5)) await engine.publish(topic, n);
        const a = await engine.claim(topic, 'g', 'A', 3);
        const b = await engine.claim(topic, 'g', 'B', 10);
        expect(a.deliveries.map((d) => d.message.offset)).toEqual([1, 2, 3]);
        expect(b.deliveries.map((d) => d.message.offset)).toEqual([4, 5]);
        expect([...a.deliveries, ...b.deliveries].every((d) => d.delivery === 1)).toBe(true);
        expect((await engine.claim(topic, 'g', 'C', 10)).deliveries).toEqual([]);
        expect(a.nextDueAt).toBeGreaterThan(Date.now());
        await engine.ack(topic, 'g', 2, by('A'));
        await expect(engine.ack(topic, 'g', 2, by('A'))).rejects.toMatchObject({ code: 'not_found' });
        await expect(engine.ack(topic, 'g', 99, by('A'))).rejects.toBeInstanceOf(MeshError);
        const info = await engine.groupInfo(topic, 'g');
        expect(info).toMatchObject({ cursor: 6, pending: 4 });
        expect((await engine.pending(topic, 'g', 10)).map((p) => [p.offset, p.consumer])).toEqual([
          [1, 'A'],
          [3, 'A'],
          [4, 'B'],
          [5, 'B'],
        ]);
      });

      test('settles a delivery only for the consumer it is leased to', async () => {
        const { engine } = await create();
        const topic = uniqueTopic();
        await engine.ensureGroup(topic, 'g');
        for (const n of range(1, 3)) await engine.publish(topic, n);
        await engine.claim(topic, 'g', 'A', 2);
        await engine.claim(topic, 'g', 'B', 1);
        await expect(engine.ack(topic, 'g', 1, by('B'))).rejects.toMatchObject({ code: 'not_found' });
        await expect(engine.nack(topic, 'g', 2, 0, by('B'))).rejects.toMatchObject({ code: 'not_found' });
        await expect(engine.ack(topic, 'g', 3, by('A'))).rejects.toMatchObject({ code: 'not_found' });
        // Nothing changed: A still holds 1 and 2, B holds 3.
        expect((await engine.pending(topic, 'g', 10)).map((p) => [p.offset, p.consumer, p.delivery])).toEqual([
          [1, 'A', 1],
          [2, 'A', 1],
          [3, 'B', 1],
        ]);
        await engine.ack(topic, 'g', 1, by('A'));
        await engine.nack(topic, 'g', 3, 0, by('B'));
        // A nacked delivery is nobody's until it is claimed again.
        await expect(engine.ack(topic, 'g', 3, by('B'))).rejects.toMatchObject({ code: 'not_found' });
      });

      test('redelivers when a lease ends, counting deliveries, and refuses the late ack of the first holder', async () => {
        const clock = manualClock();
        const { engine } = await create({ clock: clock.now });
        const topic = uniqueTopic();
        await engine.ensureGroup(topic, 'g', { ackWaitMs: 1000 });
        await engine.publish(topic, 'job');
        const first = await engine.claim(topic, 'g', 'A', 1);
        expect(first.deliveries[0]).toMatchObject({ delivery: 1, deadline: clock.now() + 1000 });
        clock.advance(999);
        expect((await engine.claim(topic, 'g', 'B', 1)).deliveries).toEqual([]);
        clock.advance(1);
        const second = await engine.claim(topic, 'g', 'B', 1);
        expect(second.deliveries.map((d) => [d.message.offset, d.delivery])).toEqual([[1, 2]]);
        expect((await engine.groupInfo(topic, 'g'))?.redeliveries).toBe(1);
        await expect(engine.ack(topic, 'g', 1, by('A'))).rejects.toMatchObject({ code: 'not_found' });
        await engine.ack(topic, 'g', 1, by('B'));
      });

      test('acks many deliveries at once, settling those leased to the consumer and saying why each other one was not', async () => {
        const { engine } = await create();
        const topic = uniqueTopic();
        await engine.ensureGroup(topic, 'g', { ackWaitMs: 60_000 });
        for (const n of range(1, 5)) await engine.publish(topic, n);
        await engine.claim(topic, 'g', 'A', 3);
        await engine.claim(topic, 'g', 'B', 1);
        const results = await engine.ackMany(topic, 'g', [3, 1, 4, 9, 1, 2], by('A'));
        expect(results.map((e) => e?.code)).toEqual([undefined, undefined, 'not_found', 'not_found', 'not_found', undefined]);
        expect(results[2]?.message).toMatch(/not leased to this member/);
        const info = await engine.groupInfo(topic, 'g');
        expect(info?.pending).toBe(1);
        expect((await engine.pending(topic, 'g', 10)).map((e) => [e.offset, e.consumer])).toEqual([[4, 'B']]);
        // Settled is settled: they are not delivered again.
        expect((await engine.claim(topic, 'g', 'C', 10)).deliveries.map((d) => d.message.offset)).toEqual([5]);
        await expect(engine.ackMany(topic, 'g', [4], { consumer: 'B', epoch: 'not-an-epoch' })).resolves.toEqual([
          expect.objectContaining({ code: 'not_found' }),
        ]);
      });

      test('hands out due entries over several small claims, oldest first, and keeps track of the next deadline as entries settle', async () => {
        const clock = manualClock();
        const { engine } = await create({ clock: clock.now });
        const topic = uniqueTopic();
        await engine.ensureGroup(topic, 'g', { ackWaitMs: 1000 });
        for (const n of range(1, 6)) await engine.publish(topic, n);
        const start = clock.now();
        await engine.claim(topic, 'g', 'A', 3);
        clock.advance(500);
        const later = await engine.claim(topic, 'g', 'A', 3);
        // The earliest deadline is the first claim's, though it is acked below: at worst a wake-up comes early.
        await engine.ack(topic, 'g', 2, by('A'));
        clock.advance(500);
        // Offsets 1 and 3 are due (2 was acked); 4..6 are leased until start + 1500.
        const one = await engine.claim(topic, 'g', 'B', 1);
        expect(one.deliveries.map((d) => [d.message.offset, d.delivery])).toEqual([[1, 2]]);
        const two = await engine.claim(topic, 'g', 'B', 5);
        expect(two.deliveries.map((d) => [d.message.offset, d.delivery])).toEqual([[3, 2]]);
        expect(two.nextDueAt).toBe(start + 1500);
        expect(later.deliveries.map((d) => d.deadline)).toEqual([start + 1500, start + 1500, start + 1500]);
        await engine.nack(topic, 'g', 5, 100, by('A'));
        const early = await engine.claim(topic, 'g', 'B', 5);
        expect(early.deliveries).toEqual([]);
        expect(early.nextDueAt).toBe(start + 1100);
        clock.advance(100);
        expect((await engine.claim(topic, 'g', 'B', 5)).deliveries.map((d) => [d.message.offset, d.delivery])).toEqual([[5, 2]]);
        clock.advance(400);
        expect((await engine.claim(topic, 'g', 'C', 5)).deliveries.map((d) => [d.message.offset, d.delivery])).toEqual([
          [4, 2],
          [6, 2],
        ]);
      });

      test('makes a nacked message deliverable after its delay', async () => {
        const clock = manualClock();
        const { engine } = await create({ clock: clock.now });
        const topic = uniqueTopic();
        await engine.ensureGroup(topic, 'g');
        await engine.publish(topic, 'job');
        const start = clock.now();
        await engine.claim(topic, 'g', 'A', 1);
        expect(await engine.nack(topic, 'g', 1, 500, by('A'))).toBe(start + 500);
        clock.advance(100);
        const early = await engine.claim(topic, 'g', 'A', 1);
        expect(early.deliveries).toEqual([]);
        expect(early.nextDueAt).toBe(start + 500);
        clock.advance(400);
        expect((await engine.claim(topic, 'g', 'A', 1)).deliveries[0]?.delivery).toBe(2);
        await expect(engine.nack(topic, 'g', 7, 0, by('A'))).rejects.toMatchObject({ code: 'not_found' });
      });

      test('releases a departed consumer’s leases at once', async () => {
        const { engine } = await create();
        const topic = uniqueTopic();
        await engine.ensureGroup(topic, 'g', { ackWaitMs: 60_000 });
        for (const n of range(1, 3)) await engine.publish(topic, n);
        await engine.claim(topic, 'g', 'A', 2);
        await engine.claim(topic, 'g', 'B', 1);
        expect(await engine.release(topic, 'g', 'A')).toBe(2);
        const taken = await engine.claim(topic, 'g', 'C', 10);
        expect(taken.deliveries.map((d) => [d.message.offset, d.delivery])).toEqual([
          [1, 2],
          [2, 2],
        ]);
      });

      test('moves a message to the dead-letter topic after maxDeliveries', async () => {
        const { engine } = await create();
        const topic = uniqueTopic();
        await engine.ensureGroup(topic, 'g', { maxDeliveries: 2 });
        await engine.publish(topic, { poison: 1 }, { key: 'p' });
        await engine.claim(topic, 'g', 'A', 1);
        await engine.nack(topic, 'g', 1, 0, by('A'));
        expect((await engine.claim(topic, 'g', 'A', 1)).deliveries[0]?.delivery).toBe(2);
        await engine.nack(topic, 'g', 1, 0, by('A'));
        expect((await engine.claim(topic, 'g', 'A', 1)).deliveries).toEqual([]);
        const dlq = deadLetterTopicOf(topic);
        const letters = await eventually(
          async () => {
            const read = await engine.read(dlq, 1, 10);
            return read.length > 0 && read;
          },
          5000,
          'the dead letter',
        );
        expect(letters).toHaveLength(1);
        const letter = letters[0]!.data as DeadLetter;
        expect(letter).toMatchObject({ topic, group: 'g', offset: 1, data: { poison: 1 }, key: 'p', deliveries: 2, reason: 'max_deliveries' });
        expect(await engine.groupInfo(topic, 'g')).toMatchObject({ pending: 0, deadLettered: 1 });
      });

      test('deletes a group and its pending entries', async () => {
        const { engine } = await create();
        const topic = uniqueTopic();
        await engine.ensureGroup(topic, 'g');
        await engine.publish(topic, 1);
        await engine.claim(topic, 'g', 'A', 1);
        await engine.deleteGroup(topic, 'g');
        expect(await engine.groupInfo(topic, 'g')).toBeUndefined();
        await expect(engine.ack(topic, 'g', 1, by('A'))).rejects.toMatchObject({ code: 'not_found' });
      });
    });

    describe('live', () => {
      if (harness.shared) {
        test('stops live messages and wakes of a topic on unwatch, and hears all that follows a new watch', async () => {
          const { engine } = await create();
          const topic = uniqueTopic();
          // The topic's dead-letter topic shares its hash slot, so on every topology its notifications
          // come over the same connection as the topic's, in publish order: its mark, once heard, shows
          // that anything of the topic published before it would have been heard too.
          const witness = deadLetterTopicOf(topic);
          const heard: number[] = [];
          const marks: unknown[] = [];
          const wakes: string[] = [];
          engine.onMessage((m) => (m.topic === topic ? heard.push(m.offset) : m.topic === witness && marks.push(m.data)));
          engine.onWake((t, group) => t === topic && wakes.push(group));
          await engine.ensureGroup(topic, 'g');
          await engine.watch(topic);
          await engine.watch(witness);
          await engine.publish(topic, 1);
          await waitUntil(() => heard.includes(1), 'offset 1 while the topic is watched');

          await engine.unwatch(topic);
          await engine.publish(topic, 2);
          await engine.claim(topic, 'g', 'A', 1);
          await engine.nack(topic, 'g', 1, 0, by('A'));
          await engine.publish(witness, 'mark');
          await waitUntil(() => marks.includes('mark'), 'the mark on the witness topic');
          expect(heard).toEqual([1]);
          expect(wakes).toEqual([]);

          await engine.watch(topic);
          for (const n of range(3, 5)) await engine.publish(topic, n);
          expect((await engine.claim(topic, 'g', 'A', 1)).deliveries.map((d) => [d.message.offset, d.delivery])).toEqual([[1, 2]]);
          await engine.nack(topic, 'g', 1, 0, by('A'));
          await waitUntil(() => heard.includes(5) && wakes.length > 0, 'offset 5 and a wake after watching again');
          // Offset 2 was published while the topic was not watched: it is not live here (readers catch
          // up from the log), and listeners hear a topic in offset order, so after 3 it cannot come.
          expect(heard).toEqual([1, 3, 4, 5]);
          expect(wakes).toEqual(['g']);
        });

        test('wakes the group on every node that watches its topic when a lease is released or nacked', async () => {
          const instance = await create();
          const { engine } = instance;
          const other = await peerOf(instance);
          const topic = uniqueTopic();
          const own: string[] = [];
          const removed: string[] = [];
          // Stays on to the end: every wake listener hears each wake, so once this one has heard the
          // last, the removed one would have heard it too.
          const witness: string[] = [];
          engine.onWake((t, group) => t === topic && own.push(group));
          const stop = other.onWake((t, group) => t === topic && removed.push(group));
          other.onWake((t, group) => t === topic && witness.push(group));
          await Promise.all([engine.watch(topic), other.watch(topic)]);
          await engine.ensureGroup(topic, 'g', { ackWaitMs: 60_000 });
          for (const n of range(1, 2)) await engine.publish(topic, n);
          await engine.claim(topic, 'g', 'A', 2);

          expect(await engine.release(topic, 'g', 'A')).toBe(2);
          await waitUntil(() => witness.length >= 1 && own.length >= 1, 'the release to wake both nodes');
          await engine.claim(topic, 'g', 'B', 1);
          await engine.nack(topic, 'g', 1, 0, by('B'));
          await waitUntil(() => witness.length >= 2 && own.length >= 2, 'the nack to wake both nodes');
          expect(removed).toEqual(['g', 'g']);

          stop();
          await engine.claim(topic, 'g', 'B', 1);
          await engine.nack(topic, 'g', 1, 0, by('B'));
          await waitUntil(() => witness.length >= 3 && own.length >= 3, 'the last nack to wake both nodes');
          expect(removed).toEqual(['g', 'g']);
          expect(witness).toEqual(['g', 'g', 'g']);
          expect(own).toEqual(['g', 'g', 'g']);
        });
      } else {
        test('keeps every message live on its one node, watched or not', async () => {
          const { engine } = await create();
          const topic = uniqueTopic();
          const heard: number[] = [];
          engine.onMessage((m) => m.topic === topic && heard.push(m.offset));
          await engine.publish(topic, 1);
          await engine.watch(topic);
          await engine.publish(topic, 2);
          await engine.unwatch(topic);
          await engine.publish(topic, 3);
          await waitUntil(() => heard.includes(3), 'offset 3 after unwatch');
          expect(heard).toEqual([1, 2, 3]);
        });

        test('never calls wake listeners: the node that releases or nacks a lease pumps its own dispatcher', async () => {
          const { engine } = await create();
          const topic = uniqueTopic();
          const wakes: string[] = [];
          const heard: unknown[] = [];
          const stop = engine.onWake((t, group) => wakes.push(`${t}/${group}`));
          engine.onMessage((m) => m.topic === topic && heard.push(m.data));
          await engine.watch(topic);
          await engine.ensureGroup(topic, 'g');
          await engine.publish(topic, 'job');
          await engine.claim(topic, 'g', 'A', 1);
          expect(await engine.release(topic, 'g', 'A')).toBe(1);
          await engine.claim(topic, 'g', 'B', 1);
          await engine.nack(topic, 'g', 1, 0, by('B'));
          // Heard after the release and the nack, this mark shows the engine has gone past both.
          await engine.publish(topic, 'mark');
          await waitUntil(() => heard.includes('mark'), 'the mark');
          expect(wakes).toEqual([]);
          expect(stop).toBeTypeOf('function');
          stop();
        });
      }
    });

    describe('after close', () => {
      test('rejects a publish with unavailable at once and stores nothing of it', async () => {
        const instance = await create();
        const { engine } = instance;
        const [topic, fresh] = [uniqueTopic(), uniqueTopic()];
        await engine.publish(topic, 1);
        await engine.close();
        const publishes = {
          publish: () => engine.publish(topic, 'late'),
          'publish with a key': () => engine.publish(topic, 'late', { key: 'late' }),
          'publish to a new topic': () => engine.publish(fresh, 'late'),
        };
        expect(await outcomesOf(publishes)).toEqual(all(publishes, 'unavailable'));

        const reopened = await instance.reopen();
        expect(await reopened.topicInfo(topic)).toMatchObject({ first: 1, last: 1, count: 1 });
        expect((await reopened.read(topic, 1, 10)).map((m) => m.data)).toEqual([1]);
        expect(await reopened.topicInfo(fresh)).toBeUndefined();
        expect((await reopened.listTopics()).map((t) => t.topic)).not.toContain(fresh);
        // Not even its key was kept: the same key stores a new message now.
        expect(await reopened.publish(topic, 'again', { key: 'late' })).toMatchObject({ offset: 2, duplicate: false });
      });

      test('rejects every read with unavailable at once and reports the engine down', async () => {
        const { engine } = await create();
        const topic = uniqueTopic();
        await engine.ensureGroup(topic, 'g', { startAt: 1 });
        await engine.publish(topic, 1);
        await engine.claim(topic, 'g', 'A', 1);
        await engine.close();
        expect(engine.health().state).toBe('down');
        const reads = {
          read: () => engine.read(topic, 1, 10),
          topicInfo: () => engine.topicInfo(topic),
          listTopics: () => engine.listTopics(),
          groupInfo: () => engine.groupInfo(topic, 'g'),
          listGroups: () => engine.listGroups(topic),
          pending: () => engine.pending(topic, 'g', 10),
        };
        expect(await outcomesOf(reads)).toEqual(all(reads, 'unavailable'));
      });

      test('rejects every change with unavailable at once and changes nothing', async () => {
        const instance = await create();
        const { engine } = instance;
        const topic = uniqueTopic();
        await engine.ensureGroup(topic, 'g', { startAt: 1, ackWaitMs: 60_000, maxDeliveries: 5 });
        for (const n of range(1, 3)) await engine.publish(topic, n);
        await engine.claim(topic, 'g', 'A', 2);
        await engine.close();
        const changes = {
          enforceRetention: () => engine.enforceRetention(topic),
          truncate: () => engine.truncate(topic, 3),
          'ensureGroup of an existing group': () => engine.ensureGroup(topic, 'g'),
          'ensureGroup of a new group': () => engine.ensureGroup(topic, 'h', { startAt: 1 }),
          configureGroup: () => engine.configureGroup(topic, 'g', { maxDeliveries: 9 }),
          claim: () => engine.claim(topic, 'g', 'B', 10),
          ack: () => engine.ack(topic, 'g', 1, by('A')),
          nack: () => engine.nack(topic, 'g', 2, 0, by('A')),
          release: () => engine.release(topic, 'g', 'A'),
          releaseConsumers: () => engine.releaseConsumers('A'),
          deleteGroup: () => engine.deleteGroup(topic, 'g'),
        };
        expect(await outcomesOf(changes)).toEqual(all(changes, 'unavailable'));

        const reopened = await instance.reopen();
        expect(await reopened.topicInfo(topic)).toMatchObject({ first: 1, last: 3, count: 3 });
        expect((await reopened.listGroups(topic)).map((g) => [g.group, g.cursor, g.maxDeliveries])).toEqual([['g', 3, 5]]);
        expect((await reopened.pending(topic, 'g', 10)).map((p) => [p.offset, p.delivery])).toEqual([
          [1, 1],
          [2, 1],
        ]);
      });

      test('rejects watch and unwatch with unavailable at once', async () => {
        const { engine } = await create();
        const [watched, unwatched] = [uniqueTopic(), uniqueTopic()];
        await engine.watch(watched);
        await engine.close();
        const calls = { watch: () => engine.watch(unwatched), unwatch: () => engine.unwatch(watched) };
        expect(await outcomesOf(calls)).toEqual(all(calls, 'unavailable'));
      });
    });

    describe('durability', () => {
      test('keeps messages, offsets, epochs and group state across a reopen', async () => {
        const instance = await create();
        const topic = uniqueTopic();
        const { engine } = instance;
        for (const n of range(1, 10)) await engine.publish(topic, { n }, { key: `k${n}` });
        const epoch = (await infoOf(engine, topic)).epoch;
        await engine.ensureGroup(topic, 'g', { startAt: 1, ackWaitMs: 60_000, maxDeliveries: 7 });
        await engine.claim(topic, 'g', 'A', 4);
        await engine.ack(topic, 'g', 1, by('A'));
        await engine.ack(topic, 'g', 3, by('A'));

        const reopened = await instance.reopen();
        expect(await reopened.topicInfo(topic)).toMatchObject({ epoch, first: 1, last: 10 });
        expect((await reopened.read(topic, 1, 100)).map((m) => (m.data as { n: number }).n)).toEqual(range(1, 10));
        expect(await reopened.publish(topic, 'again', { key: 'k10' })).toMatchObject({ offset: 10, duplicate: true });
        expect((await reopened.publish(topic, { n: 11 })).offset).toBe(11);
        expect(await reopened.groupInfo(topic, 'g')).toMatchObject({ cursor: 5, pending: 2, ackWaitMs: 60_000, maxDeliveries: 7 });
        expect((await reopened.pending(topic, 'g', 10)).map((p) => [p.offset, p.delivery])).toEqual([
          [2, 1],
          [4, 1],
        ]);
        // Once the consumer that held them is declared gone, its leases come again with their counts.
        await reopened.release(topic, 'g', 'A');
        const redelivered = await reopened.claim(topic, 'g', 'B', 10);
        expect(redelivered.deliveries.map((d) => [d.message.offset, d.delivery])).toEqual([
          [2, 2],
          [4, 2],
          [5, 1],
          [6, 1],
          [7, 1],
          [8, 1],
          [9, 1],
          [10, 1],
          [11, 1],
        ]);
      });
    });

    // Runs after every case above was collected, so any title still here names none of them.
    it('leaves out only cases the suite has', () => {
      expect([...leftOut.keys()]).toEqual([]);
    });
  });
}
