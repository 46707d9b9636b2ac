import { type EmbeddedEngine, GroupDispatcher, type GroupMember, HIGH_WATER_MARK } from '@meshmq/server';
import { MeshError } from '@meshmq/shared';
import { describe, expect, it, onTestFinished } from 'vitest';
import { uniqueTopic } from '../helpers/util.js';
import { range, waitUntil } from '../helpers/wait.js';
import { FakeConnection } from './fake-connection.js';
import { publishMany, tempEngine } from './temp-engine.js';

const GROUP = 'workers';

interface TestMember extends GroupMember {
  readonly connection: FakeConnection;
}

/**
 * A dispatcher wired as the broker wires one: created with the group, pumped
 * on every live message of its topic. Every delivery is checked against the
 * member's prefetch as it is sent.
 */
async function dispatcherFor(engine: EmbeddedEngine, topic: string, ackWaitMs = 600_000) {
  await engine.ensureGroup(topic, GROUP, { startAt: 1, ackWaitMs });
  const errors: unknown[] = [];
  const overfull: string[] = [];
  const dispatcher = new GroupDispatcher(topic, GROUP, engine, {
    delivered: () => undefined,
    deadLettered: () => undefined,
    failed: (err) => errors.push(err),
  });
  const stop = engine.onMessage((message) => {
    if (message.topic === topic) dispatcher.pump();
  });
  onTestFinished(() => {
    stop();
    dispatcher.close();
    expect(errors).toEqual([]);
    expect(overfull).toEqual([]);
  });
  const member = (name: string, prefetch: number): TestMember => {
    const connection = new FakeConnection();
    const m: TestMember = { consumer: `node-1/${name}`, connection, prefetch, inflight: new Map(), claiming: 0 };
    connection.onSend = () => {
      if (m.inflight.size > m.prefetch) overfull.push(`${name} holds ${m.inflight.size} with prefetch ${m.prefetch}`);
    };
    return m;
  };
  return { dispatcher, member };
}

const offsetsOf = (m: TestMember) => m.connection.offsets();
const countOf = (m: TestMember) => m.connection.messages().length;
const deliveriesOf = (m: TestMember) => m.connection.messages().map((f) => [f.offset, f.delivery]);

function until(check: () => boolean, what: string): Promise<void> {
  return waitUntil(check, what);
}

async function refusal(action: Promise<unknown>): Promise<MeshError> {
  try {
    await action;
  } catch (err) {
    expect(err).toBeInstanceOf(MeshError);
    return err as MeshError;
  }
  throw new Error('expected the settle to be refused');
}

describe('GroupDispatcher', () => {
  it('spreads messages round-robin over the members', async () => {
    const engine = await tempEngine();
    const topic = uniqueTopic();
    const { dispatcher, member } = await dispatcherFor(engine, topic);
    const a = member('a', 100);
    const b = member('b', 100);
    dispatcher.add(a);
    dispatcher.add(b);
    // One message at a time, each delivered before the next is published.
    for (let n = 1; n <= 10; n++) {
      await engine.publish(topic, n);
      await until(() => countOf(a) + countOf(b) === n, `delivery of message ${n}`);
    }
    expect(countOf(a)).toBe(5);
    expect(countOf(b)).toBe(5);
    expect([...offsetsOf(a), ...offsetsOf(b)].sort((x, y) => x - y)).toEqual(range(1, 10));
  });

  it('spreads a backlog over the members within their prefetch', async () => {
    const engine = await tempEngine();
    const topic = uniqueTopic();
    const { dispatcher, member } = await dispatcherFor(engine, topic);
    const members = [member('a', 4), member('b', 4), member('c', 4)];
    for (const m of members) dispatcher.add(m);
    await publishMany(engine, topic, 20);
    await until(() => members.every((m) => countOf(m) === 4), 'every member to hold its prefetch');
    expect(members.flatMap(offsetsOf).sort((x, y) => x - y)).toEqual(range(1, 12));
  });

  it("bounds a member's unacked deliveries by its prefetch", async () => {
    const engine = await tempEngine();
    const topic = uniqueTopic();
    const { dispatcher, member } = await dispatcherFor(engine, topic);
    const a = member('a', 3);
    dispatcher.add(a);
    await publishMany(engine, topic, 20);
    await until(() => countOf(a) === 3, 'a to hold its prefetch');
    // Whatever a did not get is still there for another member.
    const b = member('b', 50);
    dispatcher.add(b);
    await until(() => countOf(b) === 17, 'b to get the rest');
    expect(offsetsOf(a)).toEqual([1, 2, 3]);
    expect(offsetsOf(b)).toEqual(range(4, 20));
    expect(a.inflight.size).toBe(3);
  });

  it('an ack frees capacity and the member gets the next message', async () => {
    const engine = await tempEngine();
    const topic = uniqueTopic();
    const { dispatcher, member } = await dispatcherFor(engine, topic);
    const a = member('a', 2);
    dispatcher.add(a);
    await publishMany(engine, topic, 5);
    await until(() => countOf(a) === 2, 'a to hold its prefetch');
    await dispatcher.ack(a, 1);
    await until(() => countOf(a) === 3, 'the next delivery after the ack');
    await dispatcher.ack(a, 2);
    await dispatcher.ack(a, 3);
    await until(() => countOf(a) === 5, 'the rest after more acks');
    expect(offsetsOf(a)).toEqual([1, 2, 3, 4, 5]);
    expect([...a.inflight.keys()]).toEqual([4, 5]);
    expect((await engine.pending(topic, GROUP, 10)).map((e) => e.offset)).toEqual([4, 5]);
  });

  it('a nack with a delay redelivers the message once the delay has passed, not before', async () => {
    let skew = 0;
    const engine = await tempEngine({ clock: () => Date.now() + skew });
    const topic = uniqueTopic();
    const { dispatcher, member } = await dispatcherFor(engine, topic);
    const a = member('a', 10);
    dispatcher.add(a);
    await engine.publish(topic, 'job');
    await until(() => countOf(a) === 1, 'the first delivery');
    await dispatcher.nack(a, 1, 60_000);
    expect(a.inflight.size).toBe(0);
    // Due entries are claimed before new messages: message 2 coming alone shows message 1 was not due.
    await engine.publish(topic, 'next job');
    await until(() => countOf(a) === 2, 'the second message');
    expect(deliveriesOf(a)).toEqual([
      [1, 1],
      [2, 1],
    ]);
    skew += 60_000;
    dispatcher.pump();
    await until(() => countOf(a) === 3, 'the redelivery');
    expect(deliveriesOf(a)[2]).toEqual([1, 2]);
  });

  it('a nack without a delay redelivers at once', async () => {
    const engine = await tempEngine();
    const topic = uniqueTopic();
    const { dispatcher, member } = await dispatcherFor(engine, topic);
    const a = member('a', 1);
    dispatcher.add(a);
    await engine.publish(topic, 'job');
    await until(() => countOf(a) === 1, 'the first delivery');
    await dispatcher.nack(a, 1, 0);
    await until(() => countOf(a) === 2, 'the redelivery');
    expect(deliveriesOf(a)).toEqual([
      [1, 1],
      [1, 2],
    ]);
  });

  it('a congested member gets nothing until it drains while another keeps receiving', async () => {
    const engine = await tempEngine();
    const topic = uniqueTopic();
    const { dispatcher, member } = await dispatcherFor(engine, topic);
    const slow = member('slow', 10);
    const fast = member('fast', 2);
    slow.connection.buffered = HIGH_WATER_MARK;
    dispatcher.add(slow);
    dispatcher.add(fast);
    await publishMany(engine, topic, 6);
    await until(() => countOf(fast) === 2, 'fast to hold its prefetch');
    await dispatcher.ack(fast, 1);
    await until(() => countOf(fast) === 3, 'fast to get another after its ack');
    await dispatcher.ack(fast, 2);
    await until(() => countOf(fast) === 4, 'fast to get another after its ack');
    // Messages 5 and 6 wait: fast is full, slow is not reading.
    const polls = slow.connection.polls;
    await until(() => slow.connection.polls >= polls + 3, 'the dispatcher to look at the slow connection again');
    expect(countOf(slow)).toBe(0);
    expect(offsetsOf(fast)).toEqual([1, 2, 3, 4]);

    // Once it drains, it gets them without any new message or ack to wake the group.
    slow.connection.buffered = 0;
    await until(() => countOf(slow) === 2, 'slow to get the waiting messages');
    expect(offsetsOf(slow)).toEqual([5, 6]);
  });

  it('a member that leaves has its leases redelivered to another', async () => {
    const engine = await tempEngine();
    const topic = uniqueTopic();
    const { dispatcher, member } = await dispatcherFor(engine, topic);
    const a = member('a', 5);
    const b = member('b', 5);
    dispatcher.add(a);
    await publishMany(engine, topic, 3);
    await until(() => countOf(a) === 3, 'a to get everything');
    dispatcher.add(b);
    await dispatcher.remove(a.consumer);
    await until(() => countOf(b) === 3, 'b to get the released messages');
    expect(deliveriesOf(b)).toEqual([
      [1, 2],
      [2, 2],
      [3, 2],
    ]);
    expect(dispatcher.size).toBe(1);
    const pending = await engine.pending(topic, GROUP, 10);
    expect(pending.map((e) => [e.offset, e.consumer])).toEqual([
      [1, b.consumer],
      [2, b.consumer],
      [3, b.consumer],
    ]);
  });

  it('settling a delivery leased to another member is refused with not_found and changes nothing', async () => {
    const engine = await tempEngine();
    const topic = uniqueTopic();
    const { dispatcher, member } = await dispatcherFor(engine, topic);
    const a = member('a', 1);
    const b = member('b', 1);
    dispatcher.add(a);
    await engine.publish(topic, 'for a');
    await until(() => countOf(a) === 1, 'a to get message 1');
    dispatcher.add(b);
    await engine.publish(topic, 'for b');
    await until(() => countOf(b) === 1, 'b to get message 2');
    const before = await engine.pending(topic, GROUP, 10);
    expect(before.map((e) => [e.offset, e.consumer])).toEqual([
      [1, a.consumer],
      [2, b.consumer],
    ]);

    expect((await refusal(dispatcher.ack(b, 1))).code).toBe('not_found');
    expect((await refusal(dispatcher.nack(b, 1, 0))).code).toBe('not_found');
    expect((await refusal(dispatcher.ack(a, 2))).code).toBe('not_found');

    expect(await engine.pending(topic, GROUP, 10)).toEqual(before);
    expect([...a.inflight.keys()]).toEqual([1]);
    expect([...b.inflight.keys()]).toEqual([2]);
    expect(offsetsOf(a)).toEqual([1]);
    expect(offsetsOf(b)).toEqual([2]);
    // The rightful holder still settles it.
    await dispatcher.ack(a, 1);
    expect((await engine.pending(topic, GROUP, 10)).map((e) => e.offset)).toEqual([2]);
  });
});
