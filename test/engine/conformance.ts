import { afterEach, describe, expect, it } from 'vitest';
import { MeshError, deadLetterTopicOf } from '@meshmq/shared';
import type { DeadLetter, Engine, RetentionPolicy, StoredMessage } from '@meshmq/server';
import { eventually, range, uniqueTopic } from '../helpers/util.js';
import { waitUntil } from '../helpers/wait.js';

export interface EngineFactoryOptions {
  retention?: (topic: string) => RetentionPolicy;
  dedupeWindowMs?: number;
}

export interface EngineHarness {
  /** Opens a new, empty engine. */
  create(options?: EngineFactoryOptions): Promise<EngineInstance>;
}

export interface EngineInstance {
  engine: Engine;
  /** Closes the engine and opens a new one over the same storage. */
  reopen(): Promise<Engine>;
  dispose(): Promise<void>;
}

/**
 * A harness for an engine that `make` builds over some fixed storage: open,
 * reopen over the same storage, and dispose (with `cleanup` after close).
 */
export async function reopenable(make: () => Engine, cleanup?: () => void): Promise<EngineInstance> {
  let engine = make();
  await engine.open();
  return {
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
      await engine.close();
      cleanup?.();
    },
  };
}

/**
 * The contract every storage engine must meet. Engine test files call this
 * with a harness that opens their engine; the assertions are the same for all.
 */
export function engineConformance(name: string, harness: EngineHarness): void {
  describe(`${name} engine conformance`, () => {
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
      it('assigns gap-free offsets from 1 under concurrent publishes, with one epoch', async () => {
        const { engine } = await create();
        const topic = uniqueTopic();
        const outcomes = await Promise.all(range(1, 200).map((n) => engine.publish(topic, { n })));
        expect(outcomes.map((o) => o.offset).sort((a, b) => a - b)).toEqual(range(1, 200));
        expect(new Set(outcomes.map((o) => o.epoch)).size).toBe(1);
        expect(outcomes.every((o) => o.duplicate === false)).toBe(true);
        const info = await engine.topicInfo(topic);
        expect(info).toMatchObject({ topic, first: 1, last: 200, count: 200, epoch: outcomes[0]!.epoch });
      });

      it('keeps each topic its own log', async () => {
        const { engine } = await create();
        const [a, b] = [uniqueTopic(), uniqueTopic()];
        await engine.publish(a, 'a1');
        await engine.publish(b, 'b1');
        await engine.publish(a, 'a2');
        expect((await engine.read(a, 1, 10)).map((m) => [m.offset, m.data])).toEqual([[1, 'a1'], [2, 'a2']]);
        expect((await engine.read(b, 1, 10)).map((m) => [m.offset, m.data])).toEqual([[1, 'b1']]);
        const topics = (await engine.listTopics()).map((t) => t.topic);
        expect(topics).toEqual(expect.arrayContaining([a, b]));
      });

      it('reads ranges in offset order with a limit', async () => {
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

      it('stores JSON data exactly', async () => {
        const { engine } = await create();
        const topic = uniqueTopic();
        const values = [null, 0, -1.5, 'text', true, [1, [2, { a: 'b' }]], { nested: { deep: [null, false] } }, 'ünïcødé ✓'];
        for (const value of values) await engine.publish(topic, value);
        expect((await engine.read(topic, 1, 100)).map((m) => m.data)).toEqual(values);
      });

      it('creates an empty topic with an epoch on first look', async () => {
        const { engine } = await create();
        const topic = uniqueTopic();
        const info = await engine.topicInfo(topic);
        expect(info).toMatchObject({ topic, first: 1, last: 0, count: 0, epochs: [{ epoch: info.epoch, start: 1 }] });
        expect(info.epoch).toMatch(/^\S+$/);
        expect((await engine.publish(topic, 1)).epoch).toBe(info.epoch);
      });

      it('tells listeners about each message once, in offset order', async () => {
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

      it('recognises a repeated key within the window and stores nothing new', async () => {
        const { engine } = await create({ dedupeWindowMs: 60_000 });
        const topic = uniqueTopic();
        const [first, concurrent] = await Promise.all([
          engine.publish(topic, 'a', { key: 'k' }),
          engine.publish(topic, 'a', { key: 'k' }),
        ]);
        expect([first.duplicate, concurrent.duplicate].sort()).toEqual([false, true]);
        expect(concurrent.offset).toBe(first.offset);
        const later = await engine.publish(topic, 'changed', { key: 'k' });
        expect(later).toMatchObject({ offset: first.offset, duplicate: true });
        expect((await engine.topicInfo(topic)).last).toBe(1);
        expect((await engine.publish(topic, 'other', { key: 'k2' })).offset).toBe(2);
        expect((await engine.publish(uniqueTopic(), 'a', { key: 'k' })).duplicate).toBe(false);
      });

      it('forgets keys after the window', async () => {
        const { engine } = await create({ dedupeWindowMs: 100 });
        const topic = uniqueTopic();
        await engine.publish(topic, 'a', { key: 'k' });
        // Within the window a repeat stores nothing; the first repeat after it is stored as new.
        const stored = await eventually(async () => {
          const outcome = await engine.publish(topic, 'a', { key: 'k' });
          return !outcome.duplicate && outcome;
        }, 5000, 'the key to be forgotten');
        expect(stored).toMatchObject({ offset: 2, duplicate: false });
      });

      it('enforces retention by count on publish and by age on demand', async () => {
        const { engine } = await create({
          retention: (t) => (t.startsWith('count') ? { maxMessages: 3, maxAgeMs: 1e12 } : { maxMessages: 1e9, maxAgeMs: 1000 }),
        });
        const counted = uniqueTopic('count');
        for (const n of range(1, 7)) await engine.publish(counted, n);
        expect(await engine.topicInfo(counted)).toMatchObject({ first: 5, last: 7, count: 3 });
        expect((await engine.read(counted, 1, 10)).map((m) => m.offset)).toEqual([5, 6, 7]);

        const aged = uniqueTopic('age');
        for (const n of range(1, 3)) await engine.publish(aged, n);
        expect(await engine.enforceRetention(aged)).toBe(0);
        expect(await engine.enforceRetention(aged, Date.now() + 2000)).toBe(3);
        expect(await engine.topicInfo(aged)).toMatchObject({ first: 4, last: 3, count: 0 });
        expect((await engine.publish(aged, 4)).offset).toBe(4);
      });

      it('starts a new epoch when the log is behind what was seen of it', async () => {
        const { engine } = await create();
        const topic = uniqueTopic();
        for (const n of range(1, 5)) await engine.publish(topic, n);
        const { epoch } = await engine.topicInfo(topic);
        // Nothing lost: no new epoch, whatever the order of the calls.
        expect(await engine.fence(topic, epoch, 5)).toMatchObject({ epoch, last: 5, epochs: [{ epoch, start: 1 }] });
        expect((await engine.fence(topic, 'some-other-epoch', 99)).epoch).toBe(epoch);
        // Offsets 6..8 of this epoch were seen but are not in the log: they were lost.
        const fenced = await engine.fence(topic, epoch, 8);
        expect(fenced.epoch).not.toBe(epoch);
        expect(fenced.epochs).toEqual([
          { epoch, start: 1 },
          { epoch: fenced.epoch, start: 6 },
        ]);
        expect(await engine.publish(topic, 6)).toMatchObject({ offset: 6, epoch: fenced.epoch });
        // A second report of the same loss changes nothing more.
        expect((await engine.fence(topic, epoch, 8)).epochs).toHaveLength(2);
        expect((await engine.read(topic, 1, 10)).map((m) => [m.offset, m.epoch])).toEqual([
          [1, fenced.epoch],
          [2, fenced.epoch],
          [3, fenced.epoch],
          [4, fenced.epoch],
          [5, fenced.epoch],
          [6, fenced.epoch],
        ]);
      });

      it('refuses to settle a delivery whose message was lost with its epoch', async () => {
        const { engine } = await create();
        const topic = uniqueTopic();
        await engine.ensureGroup(topic, 'g', { startAt: 1 });
        for (const n of range(1, 3)) await engine.publish(topic, n);
        const old = (await engine.topicInfo(topic)).epoch;
        const { deliveries } = await engine.claim(topic, 'g', 'A', 3);
        expect(deliveries.map((d) => d.message.offset)).toEqual([1, 2, 3]);
        // Offsets 3..5 of the old epoch were seen, the log ends at 3: a new epoch starts at 4.
        await engine.fence(topic, old, 5);
        await engine.ack(topic, 'g', 1, old);
        await engine.nack(topic, 'g', 2, 0, Date.now(), old);
        await engine.ack(topic, 'g', 3, old);
        await engine.publish(topic, 'new 4');
        const next = await engine.claim(topic, 'g', 'A', 5);
        expect(next.deliveries.map((d) => [d.message.offset, d.delivery])).toEqual([
          [2, 2],
          [4, 1],
        ]);
        await expect(engine.ack(topic, 'g', 4, old)).rejects.toMatchObject({ code: 'not_found' });
        await expect(engine.nack(topic, 'g', 4, 0, Date.now(), old)).rejects.toMatchObject({ code: 'not_found' });
        await expect(engine.ack(topic, 'g', 4, 'never-existed')).rejects.toMatchObject({ code: 'not_found' });
        await engine.ack(topic, 'g', 4, (await engine.topicInfo(topic)).epoch);
      });

      it('truncates the front of a log without reusing offsets', async () => {
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
      it('starts a new group after the last offset unless told where', async () => {
        const { engine } = await create();
        const topic = uniqueTopic();
        for (const n of range(1, 3)) await engine.publish(topic, n);
        const fromNow = await engine.ensureGroup(topic, 'late');
        expect(fromNow).toMatchObject({ topic, group: 'late', cursor: 4, pending: 0, ackWaitMs: 30_000, maxDeliveries: 5 });
        const fromStart = await engine.ensureGroup(topic, 'early', { startAt: 1, ackWaitMs: 500, maxDeliveries: 2 });
        expect(fromStart).toMatchObject({ cursor: 1, ackWaitMs: 500, maxDeliveries: 2 });
        const again = await engine.ensureGroup(topic, 'early', { startAt: 3, ackWaitMs: 900 });
        expect(again).toMatchObject({ cursor: 1, ackWaitMs: 900, maxDeliveries: 2 });
        expect((await engine.listGroups(topic)).map((g) => g.group)).toEqual(['early', 'late']);
      });

      it('leases each message to one consumer and settles it on ack', async () => {
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
        await engine.ack(topic, 'g', 2);
        await expect(engine.ack(topic, 'g', 2)).rejects.toMatchObject({ code: 'not_found' });
        await expect(engine.ack(topic, 'g', 99)).rejects.toBeInstanceOf(MeshError);
        const info = await engine.groupInfo(topic, 'g');
        expect(info).toMatchObject({ cursor: 6, pending: 4 });
        expect((await engine.pending(topic, 'g', 10)).map((p) => [p.offset, p.consumer])).toEqual([
          [1, 'A'],
          [3, 'A'],
          [4, 'B'],
          [5, 'B'],
        ]);
      });

      it('redelivers when a lease ends, counting deliveries', async () => {
        const { engine } = await create();
        const topic = uniqueTopic();
        await engine.ensureGroup(topic, 'g', { ackWaitMs: 1000 });
        await engine.publish(topic, 'job');
        const now = Date.now();
        const first = await engine.claim(topic, 'g', 'A', 1, now);
        expect(first.deliveries[0]).toMatchObject({ delivery: 1, deadline: now + 1000 });
        expect((await engine.claim(topic, 'g', 'B', 1, now + 999)).deliveries).toEqual([]);
        const second = await engine.claim(topic, 'g', 'B', 1, now + 1000);
        expect(second.deliveries.map((d) => [d.message.offset, d.delivery])).toEqual([[1, 2]]);
        expect((await engine.groupInfo(topic, 'g'))?.redeliveries).toBe(1);
      });

      it('makes a nacked message deliverable after its delay', async () => {
        const { engine } = await create();
        const topic = uniqueTopic();
        await engine.ensureGroup(topic, 'g');
        await engine.publish(topic, 'job');
        const now = Date.now();
        await engine.claim(topic, 'g', 'A', 1, now);
        expect(await engine.nack(topic, 'g', 1, 500, now)).toBe(now + 500);
        const early = await engine.claim(topic, 'g', 'A', 1, now + 100);
        expect(early.deliveries).toEqual([]);
        expect(early.nextDueAt).toBe(now + 500);
        expect((await engine.claim(topic, 'g', 'A', 1, now + 500)).deliveries[0]?.delivery).toBe(2);
        await expect(engine.nack(topic, 'g', 7, 0)).rejects.toMatchObject({ code: 'not_found' });
      });

      it('releases a departed consumer’s leases at once', async () => {
        const { engine } = await create();
        const topic = uniqueTopic();
        await engine.ensureGroup(topic, 'g', { ackWaitMs: 60_000 });
        for (const n of range(1, 3)) await engine.publish(topic, n);
        await engine.claim(topic, 'g', 'A', 2);
        await engine.claim(topic, 'g', 'B', 1);
        expect(await engine.release(topic, 'g', 'A')).toBe(2);
        const taken = await engine.claim(topic, 'g', 'C', 10);
        expect(taken.deliveries.map((d) => [d.message.offset, d.delivery])).toEqual([[1, 2], [2, 2]]);
      });

      it('moves a message to the dead-letter topic after maxDeliveries', async () => {
        const { engine } = await create();
        const topic = uniqueTopic();
        await engine.ensureGroup(topic, 'g', { maxDeliveries: 2 });
        await engine.publish(topic, { poison: 1 }, { key: 'p' });
        await engine.claim(topic, 'g', 'A', 1);
        await engine.nack(topic, 'g', 1, 0);
        expect((await engine.claim(topic, 'g', 'A', 1)).deliveries[0]?.delivery).toBe(2);
        await engine.nack(topic, 'g', 1, 0);
        expect((await engine.claim(topic, 'g', 'A', 1)).deliveries).toEqual([]);
        const dlq = deadLetterTopicOf(topic);
        let letters: StoredMessage[] = [];
        for (let i = 0; i < 100 && letters.length === 0; i++) {
          letters = await engine.read(dlq, 1, 10);
          if (letters.length === 0) await new Promise((resolve) => setTimeout(resolve, 10));
        }
        expect(letters).toHaveLength(1);
        const letter = letters[0]!.data as DeadLetter;
        expect(letter).toMatchObject({ topic, group: 'g', offset: 1, data: { poison: 1 }, key: 'p', deliveries: 2, reason: 'max_deliveries' });
        expect(await engine.groupInfo(topic, 'g')).toMatchObject({ pending: 0, deadLettered: 1 });
      });

      it('deletes a group and its pending entries', async () => {
        const { engine } = await create();
        const topic = uniqueTopic();
        await engine.ensureGroup(topic, 'g');
        await engine.publish(topic, 1);
        await engine.claim(topic, 'g', 'A', 1);
        await engine.deleteGroup(topic, 'g');
        expect(await engine.groupInfo(topic, 'g')).toBeUndefined();
        await expect(engine.ack(topic, 'g', 1)).rejects.toMatchObject({ code: 'not_found' });
      });
    });

    describe('durability', () => {
      it('keeps messages, offsets, epochs and group state across a reopen', async () => {
        const instance = await create();
        const topic = uniqueTopic();
        const { engine } = instance;
        for (const n of range(1, 10)) await engine.publish(topic, { n }, { key: `k${n}` });
        const epoch = (await engine.topicInfo(topic)).epoch;
        await engine.ensureGroup(topic, 'g', { startAt: 1, ackWaitMs: 60_000, maxDeliveries: 7 });
        await engine.claim(topic, 'g', 'A', 4);
        await engine.ack(topic, 'g', 1);
        await engine.ack(topic, 'g', 3);

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
  });
}
