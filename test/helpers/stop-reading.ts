import { expect } from 'vitest';
import type { NodeProcess } from './node-process.js';
import { RawClient } from './raw-client.js';
import { range } from './util.js';

/** Filler messages and their size: 16 MiB in all, far past the node's 4 MiB high-water mark and the kernel's socket buffers. */
export const FILLER_MESSAGES = 256;
const FILLER_BYTES = 64 * 1024;
/**
 * Publishes of the filler in flight at once: fewer than the smallest
 * retention a test gives a topic, so that the witness, which reads, never
 * falls that far behind.
 */
const FILLER_WINDOW = 8;

/** Deliveries the node sent since it started, to every connection (GET /healthz). */
export async function deliveriesSent(node: NodeProcess): Promise<number> {
  const res = await fetch(`${node.url}/healthz`);
  return ((await res.json()) as { messagesOut: number }).messagesOut;
}

export interface Stalled {
  /** Offsets the filler was published at, the marker (the last one) included. */
  offsets: number[];
  /** Deliveries of the topic the node had sent the stalled reader when it stopped (offsets 1 to this, when the reader subscribed before the first). */
  sentBeforeStop: number;
}

/**
 * Makes the node stop sending to a reader, a fan-out subscriber of `topic`:
 * `pause` stops it reading its socket, and the filler is published to
 * `topic`, more than the kernel's buffers and the node's high-water mark
 * take together. That the node stopped is checked, not assumed: a witness subscribed after the
 * reader and reading normally receives every filler message including a
 * marker (the last), and the node's delivery counter shows that the reader
 * was sent fewer. (Each message goes to the subscribers in the order they
 * subscribed, so a reader the node had not stopped for would have been sent
 * the marker before the witness.) The caller resumes the reader.
 */
export async function stallReader(node: NodeProcess, topic: string, pause: () => void): Promise<Stalled> {
  const publisher = await RawClient.connect(node.wsUrl);
  const witness = await RawClient.connect(node.wsUrl);
  try {
    await witness.ok({ op: 'subscribe', topic });
    pause();
    const before = await deliveriesSent(node);
    const big = 'x'.repeat(FILLER_BYTES);
    const offsets: number[] = [];
    for (let i = 0; i < FILLER_MESSAGES; i += FILLER_WINDOW) {
      const replies = await Promise.all(
        range(i, Math.min(i + FILLER_WINDOW, FILLER_MESSAGES) - 1).map((n) => publisher.ok({ op: 'publish', topic, data: { n, big } })),
      );
      offsets.push(...replies.map((r) => r.offset as number));
    }
    const marker = await publisher.ok({ op: 'publish', topic, data: { marker: true } });
    // Concurrent publishes take offsets in the order the node stores them, not the order they were sent.
    offsets.sort((a, b) => a - b);
    offsets.push(marker.offset as number);
    await witness.waitFor((f) => f.op === 'message' && f.topic === topic && f.offset === marker.offset, 30_000);
    expect(witness.messages(topic).map((m) => m.offset)).toEqual(offsets);
    const sentBeforeStop = (await deliveriesSent(node)) - before - offsets.length;
    expect(sentBeforeStop, 'deliveries sent to the reader that stopped reading').toBeLessThan(offsets.length);
    return { offsets, sentBeforeStop };
  } finally {
    await Promise.all([publisher.close(), witness.close()]);
  }
}

/** Publishes FILLER_MESSAGES messages of filler to `topic`; resolves with the last offset. */
export async function fillTopic(node: NodeProcess, topic: string): Promise<number> {
  const publisher = await RawClient.connect(node.wsUrl);
  try {
    const big = 'x'.repeat(FILLER_BYTES);
    let last = 0;
    for (let i = 0; i < FILLER_MESSAGES; i += FILLER_WINDOW) {
      const replies = await Promise.all(range(i, i + FILLER_WINDOW - 1).map((n) => publisher.ok({ op: 'publish', topic, data: { n, big } })));
      last = Math.max(last, ...replies.map((r) => r.offset as number));
    }
    return last;
  } finally {
    await publisher.close();
  }
}

/**
 * Fills the node's queue for `client` at once, without publishing: the
 * client stops reading its socket and subscribes to `filled` (a topic
 * holding FILLER_MESSAGES of filler, see fillTopic) from its first offset,
 * so the node replays it up to the high-water mark and stops there. Quick,
 * for tests racing a timer (a lease); unlike stallReader it does not check
 * that the node stopped, so the test must fail if it did not. Resolves with
 * a function that reads again and resolves once the whole filler came.
 */
export async function stopReadingByReplay(client: RawClient, filled: string, last: number): Promise<() => Promise<void>> {
  client.ws.pause();
  client.sendRaw(JSON.stringify({ op: 'subscribe', id: `replay-${filled}`, topic: filled, from: 1 }));
  return async () => {
    client.ws.resume();
    await client.waitFor((f) => f.op === 'message' && f.topic === filled && f.offset === last, 30_000);
    expect(client.messages(filled).map((m) => m.offset)).toEqual(range(1, last));
  };
}
