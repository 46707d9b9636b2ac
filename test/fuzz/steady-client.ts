import { io, type Socket } from 'socket.io-client';
import WebSocket from 'ws';

/** What a well-behaved client saw while the fuzzers ran. */
export interface SteadyReport {
  name: string;
  /** Messages it published (each acknowledged once, at the offset equal to its number). */
  published: number;
  /** Messages delivered to its subscription, each the next offset in order. */
  received: number;
  /** Publishes sent again after rate_limited or unavailable (same key). */
  retries: number;
  /** Anything wrong: error replies, out-of-order or missing deliveries, a dropped connection. */
  problems: string[];
}

type Reply = Record<string, unknown> & { op: string };

/** How a steady client talks to the node: one request and its reply, and deliveries. */
interface Channel {
  request(op: string, fields: Record<string, unknown>): Promise<Reply>;
  onMessage(listener: (frame: Reply) => void): void;
  onDrop(listener: (why: string) => void): void;
  close(): void;
}

/** Pause between two publishes: the steady client is a modest, well-behaved load. */
const PUBLISH_INTERVAL_MS = 10;
const REQUEST_TIMEOUT_MS = 30_000;

async function wsChannel(wsUrl: string, token: string): Promise<Channel> {
  const ws = new WebSocket(`${wsUrl}?token=${encodeURIComponent(token)}`);
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  const pending = new Map<number, (reply: Reply) => void>();
  const messageListeners: Array<(frame: Reply) => void> = [];
  let nextId = 1;
  ws.on('message', (raw) => {
    const frame = JSON.parse(raw.toString()) as Reply;
    if (frame.op === 'ok' || frame.op === 'error') {
      pending.get(frame.id as number)?.(frame);
      pending.delete(frame.id as number);
    } else {
      for (const listener of messageListeners) listener(frame);
    }
  });
  return {
    request: (op, fields) =>
      new Promise((resolve, reject) => {
        const id = nextId++;
        const timer = setTimeout(() => reject(new Error(`${op} unanswered after ${REQUEST_TIMEOUT_MS} ms`)), REQUEST_TIMEOUT_MS);
        pending.set(id, (reply) => {
          clearTimeout(timer);
          resolve(reply);
        });
        ws.send(JSON.stringify({ ...fields, op, id }));
      }),
    onMessage: (listener) => messageListeners.push(listener),
    onDrop: (listener) => ws.on('close', (code) => listener(`closed with ${code}`)),
    close: () => ws.close(),
  };
}

async function socketIoChannel(url: string, token: string): Promise<Channel> {
  const socket: Socket = io(url, { transports: ['websocket'], reconnection: false, forceNew: true, auth: { token } });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('connect_error', reject);
  });
  return {
    request: (op, fields) => socket.timeout(REQUEST_TIMEOUT_MS).emitWithAck(op, fields) as Promise<Reply>,
    onMessage: (listener) => socket.on('message', listener),
    onDrop: (listener) => socket.on('disconnect', (reason) => listener(reason)),
    close: () => socket.disconnect(),
  };
}

/**
 * A well-behaved client beside the fuzzers: subscribes to its own topic,
 * then publishes numbered messages one at a time (retrying with the same key
 * when told to), and checks that every message comes back once, in order.
 */
export class SteadyClient {
  private published = 0;
  private received = 0;
  private retries = 0;
  private readonly problems: string[] = [];
  private stopping = false;
  private closing = false;
  private loop: Promise<void> | undefined;

  private constructor(
    readonly name: string,
    private readonly channel: Channel,
    private readonly topic: string,
  ) {
    channel.onMessage((frame) => this.onDelivery(frame));
    channel.onDrop((why) => {
      if (!this.closing) this.problems.push(`connection dropped: ${why}`);
    });
  }

  static async start(transport: 'ws' | 'socket.io', target: { url: string; wsUrl: string }, token: string, topic: string): Promise<SteadyClient> {
    const channel = transport === 'ws' ? await wsChannel(target.wsUrl, token) : await socketIoChannel(target.url, token);
    const client = new SteadyClient(`${transport} ${topic}`, channel, topic);
    const reply = await channel.request('subscribe', { topic, from: 1 });
    if (reply.op !== 'ok') throw new Error(`steady client could not subscribe: ${JSON.stringify(reply)}`);
    client.loop = client.run();
    return client;
  }

  /** Stops publishing and waits (up to `timeoutMs`) until every published message was delivered. */
  async stop(timeoutMs: number): Promise<SteadyReport> {
    this.stopping = true;
    await this.loop;
    const deadline = Date.now() + timeoutMs;
    while (this.received < this.published && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    if (this.received < this.published) this.problems.push(`only ${this.received} of ${this.published} messages delivered`);
    this.closing = true;
    this.channel.close();
    return { name: this.name, published: this.published, received: this.received, retries: this.retries, problems: this.problems };
  }

  private async run(): Promise<void> {
    while (!this.stopping && this.problems.length === 0) {
      const n = this.published + 1;
      try {
        const reply = await this.channel.request('publish', { topic: this.topic, data: { n }, key: `steady-${n}` });
        if (reply.op === 'ok') {
          if (reply.offset !== n) this.problems.push(`publish ${n} stored at offset ${String(reply.offset)}`);
          this.published = n;
        } else if (reply.code === 'rate_limited' || reply.code === 'unavailable') {
          this.retries++;
          await new Promise((resolve) => setTimeout(resolve, Math.max(10, Number(reply.retryAfterMs ?? 0))));
          continue;
        } else {
          this.problems.push(`publish ${n} failed: ${JSON.stringify(reply)}`);
        }
      } catch (err) {
        this.problems.push(`publish ${n}: ${(err as Error).message}`);
      }
      await new Promise((resolve) => setTimeout(resolve, PUBLISH_INTERVAL_MS));
    }
  }

  private onDelivery(frame: Reply): void {
    if (frame.op !== 'message' || frame.topic !== this.topic) {
      this.problems.push(`unexpected frame ${JSON.stringify(frame).slice(0, 200)}`);
      return;
    }
    const expected = this.received + 1;
    const n = (frame.data as { n?: unknown } | null)?.n;
    if (frame.offset !== expected || n !== expected) {
      if (this.problems.length < 10) this.problems.push(`delivery ${expected} out of order: offset ${String(frame.offset)}, n ${String(n)}`);
      return;
    }
    this.received = expected;
  }
}
