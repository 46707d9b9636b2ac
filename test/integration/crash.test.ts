import { afterAll, describe, expect, it } from 'vitest';
import { groupState } from '../helpers/admin.js';
import { GroupAcker } from '../helpers/group-acker.js';
import { NodeProcess } from '../helpers/node-process.js';
import { type Frame, RawClient } from '../helpers/raw-client.js';
import { eventually, range, sleep } from '../helpers/util.js';

const PUBLISHERS = 4;
const PER_PUBLISHER = 1500;
const WINDOW = 64;

/**
 * kill -9 in the middle of a publish storm: every publish that was
 * acknowledged must be in the log after a restart, in order, at its offset;
 * every group ack must hold.
 */
describe('crash recovery', () => {
  let node: NodeProcess | undefined;
  afterAll(async () => {
    await node?.dispose();
  });

  it('keeps every acknowledged publish and group ack across kill -9', async () => {
    node = await NodeProcess.start();
    const topic = 'crash.orders';
    const setup = await RawClient.connect(node.wsUrl);
    await setup.ok({ op: 'subscribe', topic, group: 'g', from: 1, prefetch: 50 });

    const acked = new Map<number, { p: number; n: number }>();
    // Publishes the node answered with an error before the kill: none is expected.
    const refused: Frame[] = [];
    let killed = false;
    const killAfter = 1000 + Math.floor(Math.random() * 3000);

    const publisher = async (p: number) => {
      const client = await RawClient.connect(node!.wsUrl);
      let next = 0;
      const inFlight = new Set<Promise<void>>();
      while (next < PER_PUBLISHER && !killed) {
        while (inFlight.size < WINDOW && next < PER_PUBLISHER) {
          const n = next++;
          const request = client
            .request({ op: 'publish', topic, data: { p, n } })
            .then((reply: Frame) => {
              if (reply.op === 'ok') acked.set(reply.offset as number, { p, n });
              else refused.push(reply);
            })
            // Thrown: the connection died with the node; the publish may or may not be stored.
            .catch(() => undefined)
            .finally(() => inFlight.delete(request));
          inFlight.add(request);
        }
        await Promise.race(inFlight);
      }
      await Promise.race([Promise.allSettled(inFlight), sleep(2000)]);
    };

    // Acks each delivery as it arrives and records the outcome: ok (must hold), an error reply
    // (must not happen), or thrown by the kill (the ack may or may not have held).
    const consumer = new GroupAcker([setup], topic, 'g');

    const killer = (async () => {
      await eventually(() => acked.size >= killAfter || acked.size >= PUBLISHERS * PER_PUBLISHER - 10, 60_000, 'publishes');
      await node!.kill();
      killed = true;
      await consumer.stop();
    })();

    await Promise.all([...range(1, PUBLISHERS).map(publisher), killer]);
    expect(acked.size).toBeGreaterThan(0);
    expect(refused, 'publishes refused before the kill').toEqual([]);
    expect(
      consumer.acks.filter((a) => a.reply !== undefined && a.reply.op !== 'ok'),
      'acks refused before the kill',
    ).toEqual([]);
    const ackSent = new Set(consumer.acks.map((a) => a.offset));
    const groupAcked = new Set(consumer.acks.filter((a) => a.reply?.op === 'ok').map((a) => a.offset));
    expect(groupAcked.size).toBeGreaterThan(0);

    await node.start();
    const reader = await RawClient.connect(node.wsUrl);
    const log: Frame[] = [];
    for (let from = 1; ; ) {
      const page = await reader.ok({ op: 'history', topic, from, limit: 1000 });
      const messages = page.messages as Frame[];
      if (messages.length === 0) break;
      log.push(...messages);
      from = (messages.at(-1)!.offset as number) + 1;
    }
    const last = log.length;
    // Gap-free from 1, each offset once.
    expect(log.map((m) => m.offset)).toEqual(range(1, last));
    // Every acknowledged publish is there, at its offset, with its data.
    const maxAcked = Math.max(...acked.keys());
    expect(last).toBeGreaterThanOrEqual(maxAcked);
    for (const [offset, data] of acked) expect(log[offset - 1]!.data).toEqual(data);
    // Nothing was stored twice, and each publisher's messages kept their order.
    const seen = new Set(log.map((m) => JSON.stringify(m.data)));
    expect(seen.size).toBe(last);
    for (const p of range(0, PUBLISHERS - 1)) {
      const ns = log
        .map((m) => m.data as { p: number; n: number })
        .filter((d) => d.p === p)
        .map((d) => d.n);
      expect(ns).toEqual([...ns].sort((a, b) => a - b));
    }

    // The group resumes: everything not acked before the crash comes again; nothing acked does.
    const member = await RawClient.connect(node.wsUrl);
    await member.ok({ op: 'subscribe', topic, group: 'g', prefetch: 1000 });
    const resumed = new GroupAcker([member], topic, 'g');
    const mustComeBack = range(1, last).filter((o) => !ackSent.has(o));
    // Poll only until the group has nothing left to give: every offset taken, nothing pending, every delivery acked.
    await eventually(
      async () => {
        const group = await groupState(node!.url, topic, 'g');
        return group.cursor === last + 1 && group.pending === 0 && resumed.acks.length >= resumed.deliveries().length;
      },
      30_000,
      'the group to drain',
    ).catch((err) => {
      throw new Error(
        `${err}; not yet delivered ${mustComeBack.filter((o) => !resumed.offsets().has(o)).slice(0, 20)}; failed acks ${JSON.stringify(resumed.failedAcks().slice(0, 5))}`,
      );
    });
    await resumed.stop();
    expect(resumed.failedAcks(), 'acks after the restart that failed').toEqual([]);
    expect(resumed.duplicates(), 'offsets delivered twice after the restart').toEqual([]);
    const delivered = resumed.offsets();
    expect(
      mustComeBack.filter((o) => !delivered.has(o)),
      'unacked offsets that never came back',
    ).toEqual([]);
    expect(
      [...groupAcked].filter((o) => delivered.has(o)),
      'acked offsets that came back',
    ).toEqual([]);
    expect(
      [...delivered].filter((o) => o > last),
      'offsets past the log',
    ).toEqual([]);

    // Offsets go on after the last stored one.
    expect(await reader.ok({ op: 'publish', topic, data: 'after' })).toMatchObject({ offset: last + 1 });
    console.log(`crash test: ${acked.size} publishes acknowledged before kill -9, ${last} in the log, ${groupAcked.size} group acks kept`);
    await Promise.all([setup.close(), reader.close(), member.close()]);
  }, 120_000);
});
