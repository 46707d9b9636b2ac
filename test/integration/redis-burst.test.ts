import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { NodeProcess } from '../helpers/node-process.js';
import { type Frame, RawClient } from '../helpers/raw-client.js';
import { RedisProcess } from '../helpers/redis-process.js';
import { eventually, range, uniqueTopic } from '../helpers/util.js';

const SUBSCRIBERS = 500;
const PUBLISHES = 2000;
/** Size of each message's data when encoded. */
const DATA_BYTES = 256;

/** How a delivery frame starts (core/message-frame.ts puts op, topic and offset first). */
const DELIVERY = Buffer.from('{"op":"message","topic":');
const OFFSET = Buffer.from('"offset":');

/** The offset of a delivery frame, read from its bytes. */
function offsetIn(raw: Buffer): number {
  let at = raw.indexOf(OFFSET) + OFFSET.length;
  let offset = 0;
  for (let c = raw[at]!; c >= 0x30 && c <= 0x39; c = raw[++at]!) offset = offset * 10 + (c - 0x30);
  return offset;
}

/**
 * A plain WebSocket subscriber that keeps only what the test checks (half a
 * million deliveries would not fit in RawClient's frame list): how many
 * messages came, whether each was the offset after the one before, and,
 * for a witness, the data of each.
 */
class Subscriber {
  count = 0;
  last = 0;
  /** Deliveries that were not the offset after the previous one (a gap, a duplicate, a step back). */
  readonly outOfLine: Array<{ after: number; got: number }> = [];
  /** Other frames than deliveries after the subscribe reply (an error, a reset). */
  readonly other: Frame[] = [];
  /** Offset → the publish number in the data, for a witness. */
  readonly data = new Map<number, number>();

  private constructor(
    private readonly ws: WebSocket,
    private readonly witness: boolean,
  ) {}

  static async subscribe(url: string, topic: string, witness: boolean): Promise<Subscriber> {
    const ws = new WebSocket(url);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const subscriber = new Subscriber(ws, witness);
    const reply = new Promise<Frame>((resolve) => {
      ws.on('message', (raw: Buffer) => {
        // Half a million deliveries: read a plain delivery's offset straight from the bytes, parse the rest.
        if (!witness && raw.subarray(0, DELIVERY.length).equals(DELIVERY)) {
          subscriber.delivered(offsetIn(raw));
          return;
        }
        const frame = JSON.parse(raw.toString()) as Frame;
        if (frame.id === 'sub') resolve(frame);
        else subscriber.take(frame);
      });
    });
    ws.send(JSON.stringify({ op: 'subscribe', id: 'sub', topic, from: 1 }));
    const answer = await reply;
    if (answer.op !== 'ok') throw new Error(`subscribe failed: ${JSON.stringify(answer)}`);
    return subscriber;
  }

  private take(frame: Frame): void {
    if (frame.op !== 'message') {
      this.other.push(frame);
      return;
    }
    this.delivered(frame.offset as number);
    if (this.witness) this.data.set(frame.offset as number, (frame.data as { n: number }).n);
  }

  private delivered(offset: number): void {
    if (offset !== this.last + 1) this.outOfLine.push({ after: this.last, got: offset });
    this.last = Math.max(this.last, offset);
    this.count++;
  }

  close(): void {
    this.ws.terminate();
  }
}

/**
 * Issue 14: a fan-out burst, 500 plain WebSocket subscribers on one topic and
 * one connection pipelining 2,000 publishes of 256 B, on two nodes over one
 * real redis-server (publisher on node a, subscribers split over a and b).
 * Redis answered every command, only late, behind the burst, yet a node
 * refused publishes as if it had failed (some of them stored anyway), its
 * live delivery held its event loop for seconds, and its peers declared it
 * down. Limits are lifted (`--max-publish-rate 0`, `--max-inflight 4096`) so
 * that only the node's handling of Redis is under test. No timing is
 * asserted: only that everything is answered and delivered.
 */
describe('a fan-out burst on two nodes over Redis', () => {
  let redis: RedisProcess;
  const nodes: NodeProcess[] = [];
  const subscribers: Subscriber[] = [];
  let publisher: RawClient | undefined;

  beforeAll(async () => {
    redis = await RedisProcess.start();
    const env = (id: string) => ({
      REDIS_URL: redis.url,
      NODE_ID: id,
      MAX_PUBLISH_RATE: '0',
      MAX_INFLIGHT: String(2 * PUBLISHES),
      MAX_CONNECTIONS_PER_ADDRESS: String(SUBSCRIBERS + 10),
    });
    nodes.push(await NodeProcess.start({ env: env('a') }), await NodeProcess.start({ env: env('b') }));
    const [a] = nodes;
    // Both nodes see each other up before the burst: a later 'node is down' line is the burst's doing.
    const hello = await RawClient.connect(a!.wsUrl);
    try {
      await eventually(async () => ((await hello.ok({ op: 'hello' })).nodes as string[]).length === 2, 20_000, 'both nodes listed');
    } finally {
      await hello.close();
    }
  });

  afterAll(async () => {
    for (const subscriber of subscribers) subscriber.close();
    await publisher?.close();
    await Promise.all(nodes.map((n) => n.dispose()));
    await redis?.dispose();
  });

  it('answers every pipelined publish ok and delivers every message once, in order, to every subscriber on both nodes; no node goes down', async () => {
    const [a, b] = nodes as [NodeProcess, NodeProcess];
    // Subscribed before the topic exists, as in the issue: the burst creates it.
    const topic = uniqueTopic('burst');
    for (const batch of range(0, SUBSCRIBERS / 50 - 1)) {
      subscribers.push(...(await Promise.all(range(batch * 50, batch * 50 + 49).map((i) => Subscriber.subscribe((i % 2 === 0 ? a : b).wsUrl, topic, i < 2)))));
    }

    publisher = await RawClient.connect(a.wsUrl);
    const padding = 'x'.repeat(DATA_BYTES - JSON.stringify({ n: PUBLISHES, pad: '' }).length);
    // All sent at once, without waiting for any reply.
    for (const n of range(1, PUBLISHES)) {
      publisher.sendRaw(JSON.stringify({ op: 'publish', id: n, topic, data: { n, pad: padding }, key: `k-${n}` }));
    }
    const isReply = (f: Frame) => typeof f.id === 'number' && (f.op === 'ok' || f.op === 'error');
    await eventually(() => publisher!.frames.filter(isReply).length >= PUBLISHES, 150_000, 'a reply to every publish');
    const replies = publisher.frames.filter(isReply);
    // One reply per publish.
    expect(replies.map((r) => r.id as number).sort((x, y) => x - y)).toEqual(range(1, PUBLISHES));

    const refused = replies.filter((r) => r.op !== 'ok');
    expect(refused.length, `refused publishes, the first: ${JSON.stringify(refused.slice(0, 3))}`).toBe(0);
    // Offsets 1..2000, each acknowledged once.
    expect(replies.map((r) => r.offset as number).sort((x, y) => x - y)).toEqual(range(1, PUBLISHES));
    const publishOf = new Map(replies.map((r) => [r.offset as number, r.id as number]));

    await eventually(() => subscribers.every((s) => s.last >= PUBLISHES), 150_000, 'every subscriber to receive the last offset');
    for (const [i, s] of subscribers.entries()) {
      expect({ subscriber: i, count: s.count, last: s.last, outOfLine: s.outOfLine.slice(0, 3), other: s.other.slice(0, 3) }).toEqual({
        subscriber: i,
        count: PUBLISHES,
        last: PUBLISHES,
        outOfLine: [],
        other: [],
      });
    }
    // The witnesses (one per node) got at each offset the message acknowledged at it.
    for (const witness of subscribers.slice(0, 2)) {
      expect(range(1, PUBLISHES).map((offset) => witness.data.get(offset))).toEqual(range(1, PUBLISHES).map((offset) => publishOf.get(offset)));
    }

    for (const node of nodes) {
      expect((await fetch(`${node.url}/readyz`)).status, `${node.url} ready`).toBe(200);
      expect(node.running).toBe(true);
    }
    const trouble = nodes.flatMap((n) => n.logs.split('\n').filter((line) => /node is down|redis link down/.test(line)));
    expect(trouble, 'a node declared down, or a Redis link dropped, during the burst').toEqual([]);
    const hello = await publisher.ok({ op: 'hello' });
    expect(hello.nodes).toHaveLength(2);
  }, 300_000);
});
