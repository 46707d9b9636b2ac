import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FlushGate } from '../helpers/flush-gate.js';
import { NodeProcess } from '../helpers/node-process.js';
import { RawClient } from '../helpers/raw-client.js';
import { range, uniqueTopic } from '../helpers/util.js';

/**
 * The embedded engine's promises about the disk (docs/guarantees.md): a
 * publish is answered, and delivered, only once the disk confirmed its
 * write; an ack is answered the same way; writes share flushes. A process
 * kill cannot show any of this (the page cache survives it), so the node
 * runs with its flushes behind a gate the test opens and closes.
 */
describe('embedded engine: what waits for the disk', () => {
  let gate: FlushGate;
  let node: NodeProcess;
  const clients: RawClient[] = [];
  const connect = async () => {
    const client = await RawClient.connect(node.wsUrl);
    clients.push(client);
    return client;
  };

  beforeAll(async () => {
    gate = await FlushGate.create();
    // No retention sweep during the test: its writes would meet the closed gate too.
    node = await NodeProcess.start({ env: { ...gate.env, RETENTION_SWEEP: '1h' } });
  });

  afterAll(async () => {
    gate?.open();
    await Promise.all(clients.map((c) => c.close()));
    await node?.dispose();
    gate?.dispose();
  });

  it('neither answers nor delivers a publish until the disk confirmed it', async () => {
    const topic = uniqueTopic();
    const publisher = await connect();
    const subscriber = await connect();
    await publisher.ok({ op: 'publish', topic, data: 'first' });
    // The publisher subscribes too: a delivery and a reply on one connection arrive in the order the node sent them.
    await publisher.ok({ op: 'subscribe', topic });
    await subscriber.ok({ op: 'subscribe', topic });

    gate.close();
    try {
      publisher.sendRaw(JSON.stringify({ op: 'publish', id: 'held', topic, data: 'second' }));
      await gate.waitHeld();
      // A round trip on each connection: whatever the node sent them before now has arrived.
      await publisher.ok({ op: 'ping' });
      await subscriber.ok({ op: 'ping' });
      expect(
        publisher.frames.filter((f) => f.id === 'held'),
        'a reply before the disk confirmed',
      ).toEqual([]);
      expect(publisher.messages(topic), 'a delivery before the disk confirmed').toEqual([]);
      expect(subscriber.messages(topic), 'a delivery before the disk confirmed').toEqual([]);
    } finally {
      gate.open();
    }
    const reply = await publisher.waitFor((f) => f.id === 'held');
    expect(reply).toMatchObject({ op: 'ok', offset: 2 });
    for (const client of [publisher, subscriber]) {
      const [delivered] = await client.waitForMessages(1, topic);
      expect(delivered).toMatchObject({ offset: 2, data: 'second', epoch: reply.epoch });
    }
  });

  it('answers an ack only once the disk confirmed it', async () => {
    const topic = uniqueTopic();
    const member = await connect();
    await member.ok({ op: 'subscribe', topic, group: 'g', ackWait: 60_000 });
    await member.ok({ op: 'publish', topic, data: 'job' });
    const [job] = await member.waitForMessages(1, topic, 'g');

    gate.close();
    try {
      member.sendRaw(JSON.stringify({ op: 'ack', id: 'held-ack', topic, group: 'g', offset: job!.offset }));
      await gate.waitHeld();
      await member.ok({ op: 'ping' });
      expect(
        member.frames.filter((f) => f.id === 'held-ack'),
        'an ack reply before the disk confirmed',
      ).toEqual([]);
    } finally {
      gate.open();
    }
    expect(await member.waitFor((f) => f.id === 'held-ack')).toMatchObject({ op: 'ok' });
  });

  it('puts the publishes of many connections into a few flushes, not one each', async () => {
    const topic = uniqueTopic();
    const publishers = await Promise.all(range(1, 4).map(() => connect()));
    await publishers[0]!.ok({ op: 'publish', topic, data: 'create' });
    const before = gate.flushes;
    const PER_CONNECTION = 50;
    const replies = await Promise.all(publishers.flatMap((p, i) => range(1, PER_CONNECTION).map((n) => p.ok({ op: 'publish', topic, data: { i, n } }))));
    const flushes = gate.flushes - before;
    expect(replies.map((r) => r.offset as number).sort((a, b) => a - b)).toEqual(range(2, 1 + 4 * PER_CONNECTION));
    expect(flushes).toBeGreaterThan(0);
    console.log(`group commit: ${replies.length} publishes, ${flushes} flushes`);
    expect(flushes, 'flushes for 200 concurrent publishes').toBeLessThan(replies.length / 4);
  });
});
