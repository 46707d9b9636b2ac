import { afterAll, describe, expect, it } from 'vitest';
import { NodeProcess } from '../helpers/node-process.js';
import { RawClient, type Frame } from '../helpers/raw-client.js';
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
    const groupAcked = new Set<number>();
    // Acks sent whose reply may have been lost in the kill: they may or may not have held.
    const ackSent = new Set<number>();
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
            })
            .catch(() => undefined)
            .finally(() => inFlight.delete(request));
          inFlight.add(request);
        }
        await Promise.race(inFlight);
      }
      await Promise.race([Promise.allSettled(inFlight), sleep(2000)]);
    };

    const consumer = (async () => {
      let handled = 0;
      while (!killed) {
        const batch = setup.messages(topic, 'g').slice(handled);
        handled += batch.length;
        await Promise.all(
          batch.map(async (m) => {
            ackSent.add(m.offset as number);
            const reply = await setup.request({ op: 'ack', topic, group: 'g', offset: m.offset }).catch(() => undefined);
            if (reply?.op === 'ok') groupAcked.add(m.offset as number);
          }),
        );
        await sleep(5);
      }
    })();

    const killer = (async () => {
      await eventually(() => acked.size >= killAfter || acked.size >= PUBLISHERS * PER_PUBLISHER - 10, 60_000, 'publishes');
      await node!.kill();
      killed = true;
    })();

    await Promise.all([...range(1, PUBLISHERS).map(publisher), killer, consumer]);
    expect(acked.size).toBeGreaterThan(0);

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
      const ns = log.map((m) => m.data as { p: number; n: number }).filter((d) => d.p === p).map((d) => d.n);
      expect(ns).toEqual([...ns].sort((a, b) => a - b));
    }

    // The group resumes: everything not acked before the crash comes again; nothing acked does.
    const member = await RawClient.connect(node.wsUrl);
    await member.ok({ op: 'subscribe', topic, group: 'g', prefetch: 1000 });
    const mustComeBack = range(1, last).filter((o) => !ackSent.has(o));
    const delivered = new Set<number>();
    await eventually(async () => {
      for (const m of member.messages(topic, 'g')) {
        const offset = m.offset as number;
        if (!delivered.has(offset)) {
          delivered.add(offset);
          await member.ok({ op: 'ack', topic, group: 'g', offset });
        }
      }
      return mustComeBack.every((o) => delivered.has(o));
    }, 30_000, 'group redelivery').catch((err) => {
      throw new Error(`${err}; missing ${mustComeBack.filter((o) => !delivered.has(o)).slice(0, 20)}`);
    });
    for (const offset of groupAcked) expect(delivered.has(offset), `acked offset ${offset} came back`).toBe(false);
    for (const offset of delivered) expect(offset).toBeLessThanOrEqual(last);

    // Offsets go on after the last stored one.
    expect(await reader.ok({ op: 'publish', topic, data: 'after' })).toMatchObject({ offset: last + 1 });
    console.log(`crash test: ${acked.size} publishes acknowledged before kill -9, ${last} in the log, ${groupAcked.size} group acks kept`);
    await Promise.all([setup.close(), reader.close(), member.close()]);
  }, 120_000);
});
