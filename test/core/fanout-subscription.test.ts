import { type EmbeddedEngine, FanoutSubscription, HIGH_WATER_MARK } from '@meshmq/server';
import { describe, expect, it, onTestFinished, vi } from 'vitest';
import { uniqueTopic } from '../helpers/util.js';
import { range, waitUntil } from '../helpers/wait.js';
import { FakeConnection } from './fake-connection.js';
import { publishMany, tempEngine } from './temp-engine.js';

/**
 * A subscription wired as the broker wires one: live messages of its topic
 * reach onLive from the moment it exists, and it starts, after the subscribe
 * reply, from the topic's last offset as read when it was opened.
 */
async function subscribe(engine: EmbeddedEngine, connection: FakeConnection, topic: string, from?: number) {
  const info = await engine.topicInfo(topic);
  const last = info?.last ?? 0;
  const delivered = { count: 0 };
  const errors: unknown[] = [];
  const subscription = new FanoutSubscription(
    topic,
    engine,
    connection,
    from ?? last + 1,
    info?.epoch ?? '',
    () => (delivered.count += 1),
    (err) => errors.push(err),
  );
  const stop = engine.onMessage((message) => {
    if (message.topic === topic) subscription.onLive(message);
  });
  onTestFinished(() => {
    stop();
    subscription.close();
    expect(errors).toEqual([]);
  });
  return { subscription, delivered, start: () => subscription.start(last) };
}

/** Waits until `connection` was sent messages up to `offset` (or more). */
function untilOffset(connection: FakeConnection, topic: string, offset: number): Promise<void> {
  return waitUntil(() => (connection.offsets(topic).at(-1) ?? 0) >= offset, `delivery of offset ${offset}`);
}

/** Waits until the core has looked at the connection's buffer `times` more times. */
function untilPolled(connection: FakeConnection, times = 3): Promise<void> {
  const target = connection.polls + times;
  return waitUntil(() => connection.polls >= target, `${times} more looks at the connection`);
}

/** The connection got exactly the log from `from` on: every offset once, in order, with its data. */
async function expectLogFrom(engine: EmbeddedEngine, connection: FakeConnection, topic: string, from: number): Promise<void> {
  const log = await engine.read(topic, from, 1_000_000);
  expect(connection.offsets(topic)).toEqual(range(from, log.at(-1)?.offset ?? from - 1));
  expect(connection.messages(topic).map(({ offset, epoch, data }) => ({ offset, epoch, data }))).toEqual(
    log.map(({ offset, epoch, data }) => ({ offset, epoch, data })),
  );
}

describe('FanoutSubscription', () => {
  it('delivers live messages in offset order', async () => {
    const engine = await tempEngine();
    const topic = uniqueTopic();
    await publishMany(engine, topic, 3);
    const connection = new FakeConnection();
    const { start, delivered } = await subscribe(engine, connection, topic);
    start();
    await publishMany(engine, topic, 200);
    for (let i = 0; i < 20; i++) await engine.publish(topic, { single: i });
    await untilOffset(connection, topic, 223);
    await expectLogFrom(engine, connection, topic, 4);
    expect(delivered.count).toBe(220);
  });

  it('replays from an older offset and continues live with no gap or duplicate at the seam', async () => {
    const engine = await tempEngine();
    const topic = uniqueTopic();
    await publishMany(engine, topic, 1200); // more than one catch-up batch
    const connection = new FakeConnection();
    // At points of the replay the client pauses reading while more is published: those live
    // messages reach the subscription while it is still catching up.
    const publishing: Array<Promise<unknown>> = [];
    connection.onSend = (frame) => {
      if (frame.op !== 'message' || frame.offset > 1200 || frame.offset % 300 !== 0) return;
      connection.buffered = HIGH_WATER_MARK;
      publishing.push(publishMany(engine, topic, 50).then(() => (connection.buffered = 0)));
    };
    const { start } = await subscribe(engine, connection, topic, 10);
    start();
    await waitUntil(() => publishing.length === 4, 'pauses at offsets 300, 600, 900 and 1200');
    await Promise.all(publishing);
    await untilOffset(connection, topic, 1400);
    // Past the seam, live messages go straight on.
    await publishMany(engine, topic, 5);
    await untilOffset(connection, topic, 1405);
    await expectLogFrom(engine, connection, topic, 10);
  });

  it('keeps live messages that arrive before start()', async () => {
    const engine = await tempEngine();
    const topic = uniqueTopic();
    await publishMany(engine, topic, 2);
    const connection = new FakeConnection();
    const { start } = await subscribe(engine, connection, topic);
    // The subscribe reply has not gone out yet: these are only noted.
    await publishMany(engine, topic, 5);
    await engine.publish(topic, 'one more');
    expect(connection.frames).toEqual([]);
    start();
    await untilOffset(connection, topic, 8);
    await expectLogFrom(engine, connection, topic, 3);
  });

  it('sends nothing while the connection is above the high-water mark, then resumes exactly where it stopped', async () => {
    const engine = await tempEngine();
    const topic = uniqueTopic();
    const connection = new FakeConnection();
    const { start } = await subscribe(engine, connection, topic, 1);
    start();
    await publishMany(engine, topic, 5);
    await untilOffset(connection, topic, 5);

    connection.buffered = HIGH_WATER_MARK;
    await publishMany(engine, topic, 700);
    await engine.publish(topic, 'last');
    await untilPolled(connection);
    expect(connection.offsets(topic)).toEqual(range(1, 5));

    connection.buffered = HIGH_WATER_MARK - 1;
    await untilOffset(connection, topic, 706);
    await expectLogFrom(engine, connection, topic, 1);
  });

  it('stops mid-replay when the connection fills and resumes from the log once it drains, however much was published meanwhile', async () => {
    const engine = await tempEngine();
    const topic = uniqueTopic();
    await publishMany(engine, topic, 600);
    const connection = new FakeConnection();
    connection.onSend = (frame) => {
      if (frame.op === 'message' && frame.offset === 250) connection.buffered = HIGH_WATER_MARK + 1;
    };
    const { start } = await subscribe(engine, connection, topic, 1);
    start();
    await untilOffset(connection, topic, 250);
    await untilPolled(connection);
    expect(connection.offsets(topic)).toEqual(range(1, 250));

    // The client is not reading; much more is published, live.
    await publishMany(engine, topic, 1500);
    await untilPolled(connection);
    expect(connection.offsets(topic)).toEqual(range(1, 250));

    connection.buffered = 0;
    await untilOffset(connection, topic, 2100);
    await expectLogFrom(engine, connection, topic, 1);
  });

  it('stops at the high-water mark on the live path too, and continues from the next offset', async () => {
    const engine = await tempEngine();
    const topic = uniqueTopic();
    const connection = new FakeConnection();
    connection.onSend = (frame) => {
      if (frame.op === 'message' && frame.offset === 3) connection.buffered = HIGH_WATER_MARK;
    };
    const { start } = await subscribe(engine, connection, topic);
    start();
    for (let i = 0; i < 6; i++) await engine.publish(topic, i);
    await untilPolled(connection);
    expect(connection.offsets(topic)).toEqual([1, 2, 3]);
    connection.buffered = 0;
    await untilOffset(connection, topic, 6);
    await expectLogFrom(engine, connection, topic, 1);
  });

  it('started before the topic existed (epoch ""), it receives the first messages in the epoch the topic gets', async () => {
    const engine = await tempEngine();
    const topic = uniqueTopic();
    const connection = new FakeConnection();
    const { start } = await subscribe(engine, connection, topic);
    start();
    await engine.publish(topic, 'first');
    await publishMany(engine, topic, 3);
    await untilOffset(connection, topic, 4);
    const info = (await engine.topicInfo(topic))!;
    expect(info.epoch).not.toBe('');
    expect(connection.frames.every((f) => f.op === 'message')).toBe(true); // no reset: nothing was lost
    expect(connection.messages(topic).every((m) => m.epoch === info.epoch)).toBe(true);
    await expectLogFrom(engine, connection, topic, 1);
  });

  it('started from offset 1 before the topic existed, it takes the first messages live, without reading the log', async () => {
    // Issue 14: 500 subscribers of a new topic each read its log on their own, all at once, when the first message came.
    const engine = await tempEngine();
    const topic = uniqueTopic();
    const connection = new FakeConnection();
    const { start } = await subscribe(engine, connection, topic, 1);
    start();
    const reads = vi.spyOn(engine, 'read');
    const infos = vi.spyOn(engine, 'topicInfo');
    for (let i = 0; i < 5; i++) await engine.publish(topic, { single: i });
    await untilOffset(connection, topic, 5);
    expect(reads).not.toHaveBeenCalled();
    expect(infos).not.toHaveBeenCalled();
    reads.mockRestore();
    infos.mockRestore();
    await expectLogFrom(engine, connection, topic, 1);
  });

  it('delivers nothing more once closed, also when closed while waiting for the connection to drain', async () => {
    const engine = await tempEngine();
    const topic = uniqueTopic();
    const closedLive = new FakeConnection();
    const closedStalled = new FakeConnection();
    const open = new FakeConnection();
    const live = await subscribe(engine, closedLive, topic);
    const stalled = await subscribe(engine, closedStalled, topic);
    const control = await subscribe(engine, open, topic);
    for (const s of [live, stalled, control]) s.start();
    await publishMany(engine, topic, 3);
    await untilOffset(closedLive, topic, 3);
    await untilOffset(closedStalled, topic, 3);

    closedStalled.buffered = HIGH_WATER_MARK;
    await publishMany(engine, topic, 3);
    await untilPolled(closedStalled);
    live.subscription.close();
    stalled.subscription.close();
    closedStalled.buffered = 0;
    await publishMany(engine, topic, 10);
    // The open subscription on the same topic got everything, the closed ones nothing past the close.
    await untilOffset(open, topic, 16);
    expect(closedLive.offsets(topic)).toEqual(range(1, 6));
    expect(closedStalled.offsets(topic)).toEqual(range(1, 3));
    expect(live.delivered.count + stalled.delivered.count).toBe(9);
  });
});
