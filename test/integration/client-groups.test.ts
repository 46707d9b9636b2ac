import { type GroupMessage, MeshClient, type MeshError, type WebSocketConstructor } from '@meshmq/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { groupState, pendingEntries } from '../helpers/admin.js';
import { NodeProcess } from '../helpers/node-process.js';
import { RawClient } from '../helpers/raw-client.js';
import { eventually, uniqueTopic } from '../helpers/util.js';
import { range, sleep, waitUntil } from '../helpers/wait.js';

/** A `ws` WebSocket that records every frame the SDK sends on it. */
function recordingWebSocket(sent: Array<Record<string, unknown>>): WebSocketConstructor {
  class Recording extends WebSocket {
    override send(data: string, ...rest: unknown[]): void {
      sent.push(JSON.parse(data) as Record<string, unknown>);
      (super.send as (...args: unknown[]) => void)(data, ...rest);
    }
  }
  return Recording as unknown as WebSocketConstructor;
}

/** Long enough that the message is still held back when the test looks right after the nack. */
const NACK_DELAY_MS = 1000;

describe('client: consumer groups', () => {
  let node: NodeProcess;
  let client: MeshClient;
  const errors: MeshError[] = [];
  beforeAll(async () => {
    node = await NodeProcess.start();
    client = new MeshClient({ url: node.url, reconnect: { initialDelayMs: 50, maxDelayMs: 500 } });
    client.on('error', (e) => errors.push(e));
    await client.connect();
  });
  afterAll(async () => {
    await client?.close();
    await node?.dispose();
  });

  it('acks automatically when the handler resolves: nothing is redelivered', async () => {
    const got: Array<[number, number]> = [];
    const consumer = await client.consume(
      'g.auto',
      'workers',
      async (m) => {
        got.push([m.offset, m.delivery]);
      },
      { ackWait: 300 },
    );
    for (let i = 0; i < 5; i++) await client.publish('g.auto', { i });
    await waitUntil(() => got.length === 5, 'five deliveries');
    // The acks landed: nothing is pending, so nothing can come back after ackWait.
    await eventually(async () => (await groupState(node.url, 'g.auto', 'workers')).pending === 0, 10_000, 'the acks');
    expect(await groupState(node.url, 'g.auto', 'workers')).toMatchObject({ cursor: 6, pending: 0, redeliveries: 0 });
    expect(got.sort((a, b) => a[0] - b[0])).toEqual(range(1, 5).map((o) => [o, 1]));
    await consumer.stop();
    expect(consumer.active).toBe(false);

    // A new member of the same group finds nothing pending: its first delivery is the next new message.
    const later: Array<[number, number]> = [];
    const again = await client.consume('g.auto', 'workers', (m) => void later.push([m.offset, m.delivery]));
    await client.publish('g.auto', { i: 5 });
    await waitUntil(() => later.length === 1, 'the new message');
    await eventually(async () => (await groupState(node.url, 'g.auto', 'workers')).pending === 0, 10_000, 'the ack');
    expect(later).toEqual([[6, 1]]);
    expect(await groupState(node.url, 'g.auto', 'workers')).toMatchObject({ cursor: 7, pending: 0, redeliveries: 0 });
    await again.stop();
  });

  it('sends the acks made in one turn in one frame: one store write and one reply for them all', async () => {
    const topic = uniqueTopic('g.batch');
    const backlog = 200;
    const publisher = await RawClient.connect(node.wsUrl);
    for (const n of range(1, backlog)) await publisher.ok({ op: 'publish', topic, data: n });
    await publisher.close();
    const sent: Array<Record<string, unknown>> = [];
    const recording = new MeshClient({ url: node.url, WebSocket: recordingWebSocket(sent), heartbeatMs: 0 });
    await recording.connect();
    try {
      const messages: Array<GroupMessage<number>> = [];
      const consumer = await recording.consume<number>(topic, 'workers', (m) => void messages.push(m), { autoAck: false, prefetch: 500, from: 1 });
      await waitUntil(() => messages.length === backlog, 'the backlog');
      const outcomes = await Promise.allSettled(messages.map((m) => m.ack()));
      expect(outcomes.filter((o) => o.status === 'rejected')).toEqual([]);
      const acks = sent.filter((f) => f.op === 'ack');
      expect(acks, 'one ack frame for the 200 acks made in one turn').toHaveLength(1);
      expect(acks[0]!.offsets).toEqual(range(1, backlog));
      expect(await groupState(node.url, topic, 'workers')).toMatchObject({ pending: 0, redeliveries: 0 });
      // An ack made alone goes as before, with one offset.
      await recording.publish(topic, backlog + 1);
      await waitUntil(() => messages.length === backlog + 1, 'one more message');
      await messages.at(-1)!.ack();
      expect(sent.filter((f) => f.op === 'ack').at(-1)).toMatchObject({ offset: backlog + 1 });
      expect(sent.filter((f) => f.op === 'ack').at(-1)).not.toHaveProperty('offsets');
      await consumer.stop();
    } finally {
      await recording.close();
    }
  });

  it('nacks when the handler throws and gets the message again with delivery 2', async () => {
    const seen: Array<[number, number]> = [];
    const consumer = await client.consume('g.nack', 'workers', (m) => {
      seen.push([m.offset, m.delivery]);
      if (m.delivery === 1) throw new Error('transient failure');
    });
    await client.publish('g.nack', 'job');
    await waitUntil(() => seen.length === 2, 'the redelivery');
    // The second delivery was acked: nothing is pending, so there is no third.
    await eventually(async () => (await groupState(node.url, 'g.nack', 'workers')).pending === 0, 10_000, 'the ack');
    expect(seen).toEqual([
      [1, 1],
      [1, 2],
    ]);
    expect(await groupState(node.url, 'g.nack', 'workers')).toMatchObject({ pending: 0, redeliveries: 1 });
    expect(errors.some((e) => e.message.includes('transient failure') && e.message.includes('nacked'))).toBe(true);
    await consumer.stop();
  });

  it('lets a handler ack and nack with a delay itself when autoAck is off', async () => {
    const seen: number[] = [];
    let nacked = false;
    const consumer = await client.consume(
      'g.manual',
      'workers',
      async (m: GroupMessage<string>) => {
        seen.push(m.delivery);
        if (m.delivery === 1) {
          await m.nack(NACK_DELAY_MS);
          nacked = true;
        } else await m.ack();
      },
      { autoAck: false },
    );
    await client.publish('g.manual', 'later');
    await waitUntil(() => nacked, 'the nack');
    // Held back by the delay: leased to no one and not yet due, with one delivery so far.
    expect(await pendingEntries(node.url, 'g.manual', 'workers')).toMatchObject([{ offset: 1, delivery: 1, consumer: null, state: 'delayed' }]);
    expect(seen).toEqual([1]);
    await waitUntil(() => seen.length === 2, 'the delayed redelivery');
    await eventually(async () => (await groupState(node.url, 'g.manual', 'workers')).pending === 0, 10_000, 'the ack');
    expect(seen).toEqual([1, 2]);
    await consumer.stop();
  });

  it('moves a message to the dead-letter topic after maxDeliveries', async () => {
    const letters: unknown[] = [];
    const dlq = await client.subscribe('$dlq.g.dead', (m) => void letters.push(m.data), { from: 1 });
    let attempts = 0;
    const consumer = await client.consume(
      'g.dead',
      'workers',
      () => {
        attempts++;
        throw new Error('always fails');
      },
      { maxDeliveries: 2 },
    );
    await client.publish('g.dead', { order: 7 });
    await waitUntil(() => letters.length === 1, 'the dead letter');
    expect(attempts).toBe(2);
    expect(letters[0]).toMatchObject({ topic: 'g.dead', group: 'workers', offset: 1, deliveries: 2, data: { order: 7 } });
    await consumer.stop();
    await dlq.unsubscribe();
  });

  it('spreads messages over two members of one group', async () => {
    const other = new MeshClient({ url: node.url });
    try {
      const a: number[] = [];
      const b: number[] = [];
      const slow = async () => sleep(20);
      const ca = await client.consume(
        'g.spread',
        'workers',
        async (m) => {
          a.push(m.offset);
          await slow();
        },
        { prefetch: 1 },
      );
      const cb = await other.consume(
        'g.spread',
        'workers',
        async (m) => {
          b.push(m.offset);
          await slow();
        },
        { prefetch: 1 },
      );
      await Promise.all(range(1, 20).map((i) => client.publish('g.spread', i)));
      await waitUntil(() => a.length + b.length === 20, 'all twenty');
      expect([...a, ...b].sort((x, y) => x - y)).toEqual(range(1, 20));
      expect(a.length).toBeGreaterThan(0);
      expect(b.length).toBeGreaterThan(0);
      await Promise.all([ca.stop(), cb.stop()]);
    } finally {
      await other.close();
    }
  });

  it('lets running handlers finish and ack when stopped', async () => {
    const done: number[] = [];
    const consumer = await client.consume('g.stop', 'workers', async (m) => {
      await sleep(200);
      done.push(m.offset);
    });
    await client.publish('g.stop', 1);
    await waitUntil(() => consumer.running === 1, 'the handler to start');
    await consumer.stop();
    expect(done).toEqual([1]);
    // It was acked before leaving: nothing is pending.
    expect(await groupState(node.url, 'g.stop', 'workers')).toMatchObject({ cursor: 2, pending: 0 });
    // A new member's first delivery is the next new message, not offset 1 again.
    const later: Array<[number, number]> = [];
    const next = await client.consume('g.stop', 'workers', (m) => void later.push([m.offset, m.delivery]), { ackWait: 200 });
    await client.publish('g.stop', 2);
    await waitUntil(() => later.length >= 1, 'the next message');
    expect(later).toEqual([[2, 1]]);
    await next.stop();
  });
});

describe('client: consumer groups across a restart', () => {
  it('fails an ack sent whose connection dropped before the answer with maybe_stored', async () => {
    const node = await NodeProcess.start();
    const client = new MeshClient({ url: node.url, heartbeatMs: 200, reconnect: { initialDelayMs: 50, maxDelayMs: 500 } });
    try {
      const held: GroupMessage[] = [];
      await client.consume('g.unanswered', 'workers', (m) => void held.push(m), { autoAck: false });
      await client.publish('g.unanswered', 'a');
      await waitUntil(() => held.length === 1, 'the delivery');
      node.pause();
      try {
        const acking = held[0]!.ack().catch((e: unknown) => e);
        // The heartbeat gives up on the stopped node and drops the connection the ack went out on.
        expect(await acking).toMatchObject({ code: 'maybe_stored' });
      } finally {
        node.resume();
      }
    } finally {
      await client.close();
      await node.dispose();
    }
  });

  it('re-joins after the node restarts; an ack for the old connection fails with unavailable', async () => {
    const node = await NodeProcess.start();
    const client = new MeshClient({ url: node.url, reconnect: { initialDelayMs: 50, maxDelayMs: 500 } });
    try {
      const seen: Array<[number, number]> = [];
      const held: GroupMessage[] = [];
      await client.consume(
        'g.restart',
        'workers',
        (m) => {
          seen.push([m.offset, m.delivery]);
          if (m.delivery === 1) held.push(m);
          else return m.ack();
        },
        { autoAck: false },
      );
      await client.publish('g.restart', 'a');
      await waitUntil(() => held.length === 1, 'the first delivery');
      await node.kill();
      await waitUntil(() => client.state === 'reconnecting', 'reconnecting');
      await expect(held[0]!.ack()).rejects.toMatchObject({ code: 'unavailable' });
      await node.start();
      // The lease ended with the connection: the message comes back, then new ones.
      await waitUntil(() => seen.length === 2, 'the redelivery after the restart');
      await client.publish('g.restart', 'b');
      await waitUntil(() => seen.length === 3, 'a new message');
      expect(seen).toEqual([
        [1, 1],
        [1, 2],
        [2, 1],
      ]);
    } finally {
      await client.close();
      await node.dispose();
    }
  });
});
