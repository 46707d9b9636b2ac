import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { groupState, pendingEntries } from '../helpers/admin.js';
import { GroupAcker } from '../helpers/group-acker.js';
import { NodeProcess, tempDir } from '../helpers/node-process.js';
import { RawClient } from '../helpers/raw-client.js';
import { type ProtocolClient, SioClient } from '../helpers/sio-client.js';
import { eventually, range, uniqueTopic } from '../helpers/util.js';

/** Long enough that the message is still held back when the test looks right after the nack. */
const NACK_DELAY_MS = 1000;

/**
 * The broker's delivery semantics, run once over the plain WebSocket endpoint
 * and once over Socket.IO against the same node.
 */
let node: NodeProcess;
const clients: ProtocolClient[] = [];

beforeAll(async () => {
  const dir = tempDir();
  const configFile = join(dir, 'meshmq.json');
  writeFileSync(
    configFile,
    JSON.stringify({
      topics: [
        { match: 'retained.*', maxMessages: 5 },
        { match: 'aged.*', maxAgeMs: 1000 },
      ],
    }),
  );
  node = await NodeProcess.start({ env: { RETENTION_SWEEP: '200ms' }, args: ['--config', configFile] });
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await node?.dispose();
});

const transports: Array<[string, () => Promise<ProtocolClient>]> = [
  ['ws', () => RawClient.connect(node.wsUrl)],
  ['socket.io', () => SioClient.connect(node.url)],
];

describe.each(transports)('over %s', (_name, connectRaw) => {
  const connect = async () => {
    const client = await connectRaw();
    clients.push(client);
    return client;
  };

  it('delivers concurrent publishers to a subscriber in offset order, with no gap', async () => {
    const topic = uniqueTopic();
    const sub = await connect();
    await sub.ok({ op: 'subscribe', topic });
    const [a, b] = [await connect(), await connect()];
    const publishAll = (client: ProtocolClient, who: string) => Promise.all(range(1, 50).map((n) => client.ok({ op: 'publish', topic, data: { who, n } })));
    const replies = (await Promise.all([publishAll(a, 'a'), publishAll(b, 'b')])).flat();
    expect(replies.map((r) => r.offset).sort((x, y) => (x as number) - (y as number))).toEqual(range(1, 100));
    const got = await sub.waitForMessages(100, topic);
    expect(got.map((m) => m.offset)).toEqual(range(1, 100));
    // Each publisher's own messages arrive in the order it sent them.
    for (const who of ['a', 'b']) {
      const ns = got
        .map((m) => m.data as { who: string; n: number })
        .filter((d) => d.who === who)
        .map((d) => d.n);
      expect(ns).toEqual(range(1, 50));
    }
  });

  it('replays from an offset and continues live with no gap or duplicate at the seam', async () => {
    const topic = uniqueTopic();
    const pub = await connect();
    for (const n of range(1, 30)) await pub.ok({ op: 'publish', topic, data: n });
    const sub = await connect();
    const live = Promise.all(range(31, 60).map((n) => pub.ok({ op: 'publish', topic, data: n })));
    const reply = await sub.ok({ op: 'subscribe', topic, from: 10 });
    expect(reply.recovered).toBe(true);
    expect(reply.first).toBe(1);
    await live;
    // Deliveries come in offset order: once this marker is in, a duplicate at the seam would be too.
    await pub.ok({ op: 'publish', topic, data: 61 });
    await sub.waitFor((f) => f.op === 'message' && f.topic === topic && f.offset === 61);
    expect(sub.messages(topic).map((m) => m.offset)).toEqual(range(10, 61));
    expect(sub.messages(topic).map((m) => m.data)).toEqual(range(10, 61));
  });

  it('publishes idempotently by key', async () => {
    const topic = uniqueTopic();
    const pub = await connect();
    const first = await pub.ok({ op: 'publish', topic, data: 'one', key: 'order-1' });
    const again = await pub.ok({ op: 'publish', topic, data: 'changed', key: 'order-1' });
    const other = await pub.ok({ op: 'publish', topic, data: 'two', key: 'order-2' });
    expect(first).toMatchObject({ offset: 1, duplicate: false });
    expect(again).toMatchObject({ offset: 1, duplicate: true, epoch: first.epoch });
    expect(other).toMatchObject({ offset: 2, duplicate: false });
    const history = await pub.ok({ op: 'history', topic });
    expect((history.messages as Array<{ data: unknown; key: string }>).map((m) => [m.data, m.key])).toEqual([
      ['one', 'order-1'],
      ['two', 'order-2'],
    ]);
  });

  it('gives each group message to exactly one member', async () => {
    const topic = uniqueTopic();
    const [m1, m2] = [await connect(), await connect()];
    await m1.ok({ op: 'subscribe', topic, group: 'workers', prefetch: 3 });
    await m2.ok({ op: 'subscribe', topic, group: 'workers', prefetch: 3 });
    const acker = new GroupAcker([m1, m2], topic, 'workers');
    const pub = await connect();
    for (const n of range(1, 30)) await pub.ok({ op: 'publish', topic, data: n });
    // Poll only for "all delivered, every delivery acked"; the checks read the whole record afterwards.
    await eventually(() => acker.offsets().size >= 30 && acker.acks.length >= acker.deliveries().length, 15_000, 'every offset delivered and acked');
    await acker.stop();
    expect(acker.duplicates(), 'offsets delivered more than once').toEqual([]);
    expect(acker.failedAcks(), 'acks that failed').toEqual([]);
    expect([...acker.offsets()].sort((a, b) => a - b)).toEqual(range(1, 30));
    expect(acker.deliveries().every((d) => d.delivery === 1)).toBe(true);
    const byM1 = acker.deliveries().filter((d) => d.member === 0).length;
    expect(byM1).toBeGreaterThan(0);
    expect(byM1).toBeLessThan(30);
    // Every ack held: nothing is pending or was ever redelivered, so no member can get a second copy later.
    expect(await groupState(node.url, topic, 'workers')).toMatchObject({ cursor: 31, pending: 0, redeliveries: 0 });
  });

  it('acks many offsets in one frame: settles those leased to the member, names each other one, and hands out more', async () => {
    const topic = uniqueTopic();
    const member = await connect();
    const other = await connect();
    await member.ok({ op: 'subscribe', topic, group: 'g', prefetch: 4 });
    const pub = await connect();
    for (const n of range(1, 4)) await pub.ok({ op: 'publish', topic, data: n });
    const got = await member.waitForMessages(4, topic);
    await other.ok({ op: 'subscribe', topic, group: 'g', prefetch: 1 });
    await pub.ok({ op: 'publish', topic, data: 5 });
    await other.waitForMessages(1, topic);
    const reply = await member.ok({ op: 'ack', topic, group: 'g', offsets: [1, 2, 5, 3, 2, 42], epoch: got[0]!.epoch });
    expect(reply).toMatchObject({ acked: 3 });
    expect((reply.failed as Array<{ offset: number; code: string }>).map((f) => [f.offset, f.code])).toEqual([
      [5, 'not_found'],
      [2, 'not_found'],
      [42, 'not_found'],
    ]);
    expect((await pendingEntries(node.url, topic, 'g')).map((e) => e.offset)).toEqual([4, 5]);
    // The freed prefetch is filled: the next messages go to this member.
    for (const n of range(6, 8)) await pub.ok({ op: 'publish', topic, data: n });
    expect((await member.waitForMessages(7, topic)).map((m) => m.offset)).toEqual([1, 2, 3, 4, 6, 7, 8]);
    expect(await member.request({ op: 'ack', topic, group: 'other', offsets: [4] })).toMatchObject({ op: 'error', code: 'not_found' });
  });

  it('bounds unacked deliveries per member by prefetch', async () => {
    const topic = uniqueTopic();
    const member = await connect();
    await member.ok({ op: 'subscribe', topic, group: 'g', prefetch: 2 });
    const pub = await connect();
    for (const n of range(1, 5)) await pub.ok({ op: 'publish', topic, data: n });
    await member.waitForMessages(2, topic);
    // A second member with room for one gets the next offset: the full member was passed over for it.
    const witness = await connect();
    await witness.ok({ op: 'subscribe', topic, group: 'g', prefetch: 1 });
    expect((await witness.waitForMessages(1, topic)).map((m) => m.offset)).toEqual([3]);
    expect(member.messages(topic).map((m) => m.offset)).toEqual([1, 2]);
    await member.ok({ op: 'ack', topic, group: 'g', offset: 1 });
    await member.waitForMessages(3, topic);
    expect(member.messages(topic).map((m) => m.offset)).toEqual([1, 2, 4]);
    await witness.ok({ op: 'ack', topic, group: 'g', offset: 3 });
    expect((await witness.waitForMessages(2, topic)).map((m) => m.offset)).toEqual([3, 5]);
    expect(member.messages(topic).map((m) => m.offset)).toEqual([1, 2, 4]);
  });

  it('redelivers after ackWait when a member does not ack', async () => {
    const topic = uniqueTopic();
    const member = await connect();
    const joined = await member.ok({ op: 'subscribe', topic, group: 'slow', ackWait: 300 });
    expect(joined.ackWait).toBe(300);
    const pub = await connect();
    await pub.ok({ op: 'publish', topic, data: 'job' });
    const redelivered = await member.waitFor((f) => f.op === 'message' && f.topic === topic && f.delivery === 2);
    expect(redelivered.offset).toBe(1);
    expect(member.messages(topic).map((m) => m.delivery)).toEqual([1, 2]);
    await member.ok({ op: 'ack', topic, group: 'slow', offset: 1 });
    const again = await member.request({ op: 'ack', topic, group: 'slow', offset: 1 });
    expect(again).toMatchObject({ op: 'error', code: 'not_found' });
  });

  it('redelivers at once to another member when a member disconnects', async () => {
    const topic = uniqueTopic();
    const a = await connect();
    await a.ok({ op: 'subscribe', topic, group: 'g', ackWait: 60_000, prefetch: 1 });
    const pub = await connect();
    await pub.ok({ op: 'publish', topic, data: 'job' });
    await a.waitForMessages(1, topic);
    const b = await connect();
    await b.ok({ op: 'subscribe', topic, group: 'g' });
    // a's one lease is taken, so a message published now goes to b; had the leased job been free for b,
    // it would have come first (redeliveries before new offsets).
    await pub.ok({ op: 'publish', topic, data: 'marker' });
    const [first] = await b.waitForMessages(1, topic);
    expect(first).toMatchObject({ offset: 2, delivery: 1, data: 'marker' });
    await b.ok({ op: 'ack', topic, group: 'g', offset: 2 });
    await a.close();
    const [, redelivered] = await b.waitForMessages(2, topic);
    expect(redelivered).toMatchObject({ offset: 1, delivery: 2, data: 'job', group: 'g' });
  });

  it('nacks with a delay, then dead-letters after maxDeliveries', async () => {
    const topic = uniqueTopic();
    const member = await connect();
    await member.ok({ op: 'subscribe', topic, group: 'g', maxDeliveries: 2 });
    const pub = await connect();
    await pub.ok({ op: 'publish', topic, data: { poison: true }, key: 'p-1' });
    await member.waitForMessages(1, topic);
    await member.ok({ op: 'nack', topic, group: 'g', offset: 1, delay: NACK_DELAY_MS });
    // Held back by the delay: leased to no one and not yet due, with one delivery so far.
    expect(await pendingEntries(node.url, topic, 'g')).toMatchObject([{ offset: 1, delivery: 1, consumer: null, state: 'delayed' }]);
    expect(member.messages(topic)).toHaveLength(1);
    const second = await member.waitFor((f) => f.op === 'message' && f.topic === topic && f.delivery === 2);
    expect(second.offset).toBe(1);
    await member.ok({ op: 'nack', topic, group: 'g', offset: 1 });
    const dlq = `$dlq.${topic}`;
    const letters = await eventually(async () => {
      const h = await pub.ok({ op: 'history', topic: dlq });
      return (h.messages as Array<{ data: Record<string, unknown> }>).length === 1 && h;
    });
    const letter = (letters.messages as Array<{ data: Record<string, unknown> }>)[0]!.data;
    expect(letter).toMatchObject({ topic, group: 'g', offset: 1, data: { poison: true }, key: 'p-1', deliveries: 2, reason: 'max_deliveries' });
    // Dead-lettered, nothing left pending: there is no third delivery to come.
    expect(await groupState(node.url, topic, 'g')).toMatchObject({ pending: 0, deadLettered: 1 });
    expect(member.messages(topic)).toHaveLength(2);
    const denied = await pub.request({ op: 'publish', topic: dlq, data: 1 });
    expect(denied).toMatchObject({ op: 'error', code: 'forbidden' });
  });

  it('keeps at most the configured count of messages', async () => {
    const topic = uniqueTopic('retained');
    const pub = await connect();
    for (const n of range(1, 8)) await pub.ok({ op: 'publish', topic, data: n });
    const history = await pub.ok({ op: 'history', topic });
    expect(history).toMatchObject({ first: 4, last: 8 });
    expect((history.messages as Array<{ offset: number }>).map((m) => m.offset)).toEqual(range(4, 8));
    const sub = await connect();
    const reply = await sub.ok({ op: 'subscribe', topic, from: 1 });
    expect(reply).toMatchObject({ recovered: false, missing: { from: 1, to: 3 }, first: 4, last: 8 });
    expect((await sub.waitForMessages(5, topic)).map((m) => m.offset)).toEqual(range(4, 8));
    // Offsets go on from the last one ever assigned, not from the retained count.
    expect(await pub.ok({ op: 'publish', topic, data: 9 })).toMatchObject({ offset: 9 });
  });

  it('removes messages older than the configured age', async () => {
    const topic = uniqueTopic('aged');
    const pub = await connect();
    for (const n of range(1, 3)) await pub.ok({ op: 'publish', topic, data: n });
    const emptied = await eventually(async () => {
      const h = await pub.ok({ op: 'history', topic });
      return (h.messages as unknown[]).length === 0 && h;
    });
    expect(emptied).toMatchObject({ first: 4, last: 3 });
    expect(await pub.ok({ op: 'publish', topic, data: 4 })).toMatchObject({ offset: 4 });
  });
});

describe('across transports', () => {
  it('shares topics, offsets and groups between ws and Socket.IO clients', async () => {
    const topic = uniqueTopic();
    const ws = await RawClient.connect(node.wsUrl);
    const sio = await SioClient.connect(node.url);
    clients.push(ws, sio);
    await sio.ok({ op: 'subscribe', topic });
    await ws.ok({ op: 'subscribe', topic, group: 'mixed' });
    expect(await ws.ok({ op: 'publish', topic, data: 'from ws' })).toMatchObject({ offset: 1 });
    expect(await sio.ok({ op: 'publish', topic, data: 'from sio' })).toMatchObject({ offset: 2 });
    expect((await sio.waitForMessages(2, topic)).map((m) => m.data)).toEqual(['from ws', 'from sio']);
    expect((await ws.waitForMessages(2, topic, 'mixed')).map((m) => m.offset)).toEqual([1, 2]);
  });
});
