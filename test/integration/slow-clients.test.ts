import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Gap, MeshClient, type WebSocketConstructor } from '@meshmq/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { groupState, pendingEntries } from '../helpers/admin.js';
import { ENGINES, type EngineName, EngineNode } from '../helpers/engine-node.js';
import { tempDir } from '../helpers/node-process.js';
import { RawClient } from '../helpers/raw-client.js';
import { fillTopic, stallReader, stopReadingByReplay } from '../helpers/stop-reading.js';
import { eventually, range, uniqueTopic } from '../helpers/util.js';

/** Messages kept by topics matching `short.*` on these nodes. */
const SHORT_RETENTION = 20;

/** A node whose `short.*` topics keep SHORT_RETENTION messages. */
function startNode(engine: EngineName): Promise<EngineNode> {
  const configFile = join(tempDir(), 'meshmq.json');
  writeFileSync(configFile, JSON.stringify({ topics: [{ match: 'short.*', maxMessages: SHORT_RETENTION }] }));
  return EngineNode.start(engine, { args: ['--config', configFile] });
}

/** The offsets a subscriber that stopped reading receives once it reads again, when retention removed messages meanwhile. */
function withJump(sentBeforeStop: number, first: number, last: number): number[] {
  return [...range(1, sentBeforeStop), ...range(first, last)];
}

/**
 * Clients that stop reading their socket (docs/security.md, "Clients that do
 * not read"; docs/protocol.md, subscribe): the node stops sending at its
 * high-water mark and goes on from the log where it stopped, so a slow
 * subscriber is never dropped and never skips; only retention can take
 * messages from under it, and then the jump in offsets says so. Group
 * deliveries stop the same way, and a lease that ends meanwhile can still
 * be acked by its member unless another member got the message.
 */
describe.each(ENGINES)('clients that do not read, on the %s engine', (engine) => {
  let server: EngineNode;
  const clients: RawClient[] = [];
  const connect = async () => {
    const client = await RawClient.connect(server.node.wsUrl);
    clients.push(client);
    return client;
  };

  beforeAll(async () => {
    server = await startNode(engine);
  });

  afterAll(async () => {
    // A client left paused by a failed test would never read the node's close frame.
    for (const c of clients) c.ws.resume();
    await Promise.all(clients.map((c) => c.close()));
    await server?.dispose();
  });

  it('a subscriber that stops reading is not dropped and gets every offset in order once it reads again', async () => {
    const topic = uniqueTopic('slow');
    const reader = await connect();
    await reader.ok({ op: 'subscribe', topic });
    const stalled = await stallReader(server.node, topic, () => reader.ws.pause());
    reader.ws.resume();
    await reader.waitFor((f) => f.op === 'message' && f.offset === stalled.offsets.at(-1), 30_000);
    expect(reader.messages(topic).map((m) => m.offset)).toEqual(stalled.offsets);
    expect(stalled.offsets).toEqual(range(1, stalled.offsets.length));
    expect(reader.open).toBe(true);
    console.log(`${engine}: the node stopped after sending ${stalled.sentBeforeStop} of ${stalled.offsets.length} messages of 64 KiB`);
  });

  it('retention that overtakes a stopped subscriber shows as a jump to the first retained offset', async () => {
    const topic = uniqueTopic('short');
    const reader = await connect();
    await reader.ok({ op: 'subscribe', topic });
    const stalled = await stallReader(server.node, topic, () => reader.ws.pause());
    const { first, last } = await (await connect()).ok({ op: 'history', topic, limit: 1 });
    expect(last).toBe(stalled.offsets.at(-1));
    expect(first).toBe((last as number) - SHORT_RETENTION + 1);
    // The node had sent fewer than the first retained offset before it stopped: there is something to jump over.
    expect(stalled.sentBeforeStop).toBeLessThan((first as number) - 1);
    reader.ws.resume();
    await reader.waitFor((f) => f.op === 'message' && f.offset === last, 30_000);
    expect(reader.messages(topic).map((m) => m.offset)).toEqual(withJump(stalled.sentBeforeStop, first as number, last as number));
    expect(reader.open).toBe(true);
  });

  /**
   * A lease long enough that the member's connection is full before it ends
   * (filling it by replay takes a fraction of this), short enough to wait for.
   */
  const ACK_WAIT_MS = 2000;

  it('stops group deliveries to a member that does not read; it may still ack after its lease ended, since no one else got the message', async () => {
    const topic = uniqueTopic('jobs');
    const filler = uniqueTopic('filler');
    const fillerLast = await fillTopic(server.node, filler);
    const member = await connect();
    const joined = await member.ok({ op: 'subscribe', topic, group: 'g', ackWait: ACK_WAIT_MS, prefetch: 1 });
    expect(joined.ackWait).toBe(ACK_WAIT_MS);
    const publisher = await connect();
    await publisher.ok({ op: 'publish', topic, data: 'job' });
    const [job] = await member.waitForMessages(1, topic, 'g');
    expect(job).toMatchObject({ offset: 1, delivery: 1 });

    const readAgain = await stopReadingByReplay(member, filler, fillerLast);
    // The lease ended, and the member, whose connection is full, was not given the message again.
    const [due] = await eventually(
      async () => {
        const entries = await pendingEntries(server.node.url, topic, 'g');
        return entries[0]?.state === 'due' && entries;
      },
      10_000,
      'the lease to end',
    );
    expect(due, JSON.stringify(due)).toMatchObject({ offset: 1, delivery: 1 });
    member.sendRaw(JSON.stringify({ op: 'ack', id: 'late', topic, group: 'g', offset: 1, epoch: job!.epoch }));
    await readAgain();
    expect(await member.waitFor((f) => f.id === 'late')).toMatchObject({ op: 'ok' });
    expect(await groupState(server.node.url, topic, 'g')).toMatchObject({ pending: 0, redeliveries: 0 });
    // Redeliveries go before new offsets: the next delivery being the next message shows offset 1 is not coming back.
    await publisher.ok({ op: 'publish', topic, data: 'next' });
    await member.waitForMessages(2, topic, 'g');
    expect(member.messages(topic, 'g').map((m) => [m.offset, m.delivery])).toEqual([
      [1, 1],
      [2, 1],
    ]);
  });

  it('refuses the late ack of a member whose message went to another member meanwhile, and leaves that lease alone', async () => {
    const topic = uniqueTopic('jobs');
    const filler = uniqueTopic('filler');
    const fillerLast = await fillTopic(server.node, filler);
    const first = await connect();
    await first.ok({ op: 'subscribe', topic, group: 'g', ackWait: ACK_WAIT_MS, prefetch: 1 });
    const publisher = await connect();
    await publisher.ok({ op: 'publish', topic, data: 'job' });
    const [job] = await first.waitForMessages(1, topic, 'g');

    const readAgain = await stopReadingByReplay(first, filler, fillerLast);
    const second = await connect();
    await second.ok({ op: 'subscribe', topic, group: 'g', prefetch: 1 });
    const redelivered = await second.waitFor((f) => f.op === 'message' && f.topic === topic, 10_000);
    expect(redelivered).toMatchObject({ offset: 1, delivery: 2, group: 'g' });

    first.sendRaw(JSON.stringify({ op: 'ack', id: 'late', topic, group: 'g', offset: 1, epoch: job!.epoch }));
    await readAgain();
    expect(await first.waitFor((f) => f.id === 'late')).toMatchObject({ op: 'error', code: 'not_found' });
    // The second member still holds its lease, and its ack settles the message.
    const [entry] = await pendingEntries(server.node.url, topic, 'g');
    expect(entry).toMatchObject({ offset: 1, delivery: 2, state: 'leased' });
    expect(entry!.consumer).not.toBeNull();
    await second.ok({ op: 'ack', topic, group: 'g', offset: 1, epoch: redelivered.epoch });
    expect(await groupState(server.node.url, topic, 'g')).toMatchObject({ pending: 0, redeliveries: 1 });
    expect(first.messages(topic, 'g')).toHaveLength(1);
  });
});

/** The `ws` WebSocket, remembering each one the SDK opens so that the test can stop it reading. */
class PausableWebSocket extends WebSocket {
  static readonly opened: PausableWebSocket[] = [];
  constructor(url: string) {
    super(url);
    PausableWebSocket.opened.push(this);
  }
}

describe('client: a subscription overtaken by retention', () => {
  let server: EngineNode;
  beforeAll(async () => {
    server = await startNode('embedded');
  });
  afterAll(async () => {
    await server?.dispose();
  });

  it('reports the jump as a gap with reason skipped and hands on the first retained message', async () => {
    // No heartbeat: the connection stays while the test keeps it from reading.
    const client = new MeshClient({ url: server.node.url, WebSocket: PausableWebSocket as unknown as WebSocketConstructor, heartbeatMs: 0 });
    try {
      const topic = uniqueTopic('short');
      const handled: number[] = [];
      const gaps: Gap[] = [];
      const sub = await client.subscribe(topic, (m) => void handled.push(m.offset), { onGap: (gap) => gaps.push(gap) });
      const socket = PausableWebSocket.opened.at(-1)!;
      const stalled = await stallReader(server.node, topic, () => socket.pause());
      // Asked over another connection: this one does not read.
      const reader = await RawClient.connect(server.node.wsUrl);
      const { first, last } = await reader.ok({ op: 'history', topic, limit: 1 });
      await reader.close();
      socket.resume();
      await eventually(() => handled.includes(last as number), 30_000, 'the last message');
      expect(handled).toEqual(withJump(stalled.sentBeforeStop, first as number, last as number));
      expect(gaps).toEqual([{ topic, epoch: sub.epoch, from: stalled.sentBeforeStop + 1, to: (first as number) - 1, reason: 'skipped' }]);
    } finally {
      await client.close();
    }
  });
});
