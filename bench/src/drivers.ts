/**
 * One publisher and one consumer per system, each through its usual client.
 * Used inside a load agent (agent.ts). Every driver:
 * - publishes and resolves only on the system's durable acknowledgement
 *   (publisher confirm, PubAck, XADD reply, MeshMQ `ok`), rejecting with the
 *   refusal's code or message;
 * - consumes with the system's own acknowledgement, one ack per message, with
 *   at most `window` unacknowledged messages held (prefetch);
 * - opens its own connections: one for the publisher, one for the consumer.
 *
 * Batching: no driver batches publishes. Acks are one per message, except
 * MeshMQ's multi-offset ack (`offsets`, up to 1000 per frame): the plain
 * WebSocket driver uses it with `ackBatch` (every ack of one event-loop turn in
 * one frame), and the SDK uses it by itself the same way. Tables list MeshMQ
 * over plain WebSocket with and without it. A batched publish, once the
 * protocol has one, goes here the same way: an option of `meshmq-ws`, and a
 * system next to the plain one in `queueSystems()` (workloads/durable.ts).
 */
import { Buffer } from 'node:buffer';
// Client libraries are imported when a driver first connects, so that a load
// agent loads only the one it uses (and starts faster).
import type { MeshClient } from '@meshmq/client';
import type { Channel, ChannelModel, ConfirmChannel } from 'amqplib';
import type { NatsConnection } from 'nats';
import type { createClient } from 'redis';
import type WebSocket from 'ws';
import type { DriverSpec } from './pipeline-types.js';

const amqpLib = async () => (await import('amqplib')).default;
const natsLib = () => import('nats');

/** A delivery's body: the JSON text, or the decoded object where the protocol already decoded it (MeshMQ `data`). */
export type Body = string | { s: number; t: number };

export interface Driver {
  /** Connects and creates `queue` (and its consumer group), empty. */
  prepare(queue: string, window: number): Promise<void>;
  /** Starts consuming `queue`; `onMessage` gets each delivery's body (bytes as text, or MeshMQ's already-parsed `data`), then the driver acks it. */
  consume(onMessage: (body: Body) => void, onAckError: (err: unknown) => void): Promise<void>;
  /** Publishes one message; resolves on the durable acknowledgement. */
  publish(body: string, payload: object): Promise<void>;
  /** Removes the queue and closes every connection. */
  close(): Promise<void>;
}

/** The code of a refusal, for counting: a MeshMQ error code, or the error's message. */
export function errorCode(err: unknown): string {
  if (err && typeof err === 'object' && 'code' in err && typeof (err as { code: unknown }).code === 'string') return (err as { code: string }).code;
  return err instanceof Error ? err.message.slice(0, 120) : String(err).slice(0, 120);
}

export function openDriver(spec: DriverSpec): Driver {
  switch (spec.kind) {
    case 'rabbitmq':
      return new RabbitDriver(spec.url);
    case 'nats':
      return new NatsDriver(spec.url);
    case 'redis-streams':
      return new RedisStreamsDriver(spec.url);
    case 'meshmq-ws':
      return new MeshWsDriver(spec.publishUrl, spec.consumeUrl, spec.ackBatch ?? false);
    case 'meshmq-sdk':
      return new MeshSdkDriver(spec.publishUrl, spec.consumeUrl);
  }
}

// ---- RabbitMQ -----------------------------------------------------------------------

class RabbitDriver implements Driver {
  private pubConn: ChannelModel | undefined;
  private subConn: ChannelModel | undefined;
  private pub: ConfirmChannel | undefined;
  private sub: Channel | undefined;
  private queue = '';
  private window = 1;

  constructor(private readonly url: string) {}

  async prepare(queue: string, window: number): Promise<void> {
    this.queue = queue;
    this.window = window;
    const amqp = await amqpLib();
    this.pubConn = await amqp.connect(this.url);
    this.subConn = await amqp.connect(this.url);
    this.pub = await this.pubConn.createConfirmChannel();
    this.sub = await this.subConn.createChannel();
    await this.pub.assertQueue(queue, { durable: true, arguments: { 'x-queue-type': 'classic' } });
    await this.pub.purgeQueue(queue);
  }

  async consume(onMessage: (body: Body) => void, onAckError: (err: unknown) => void): Promise<void> {
    const sub = this.sub!;
    sub.on('error', onAckError);
    await sub.prefetch(this.window);
    await sub.consume(
      this.queue,
      (msg) => {
        if (!msg) return;
        onMessage(msg.content.toString('utf8'));
        sub.ack(msg);
      },
      { noAck: false },
    );
  }

  publish(body: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pub!.sendToQueue(this.queue, Buffer.from(body), { persistent: true, contentType: 'application/json' }, (err) => (err ? reject(err) : resolve()));
    });
  }

  async close(): Promise<void> {
    try {
      await this.pub?.deleteQueue(this.queue);
    } catch {
      // best effort
    }
    await Promise.allSettled([this.pubConn?.close(), this.subConn?.close()]);
  }

  static async version(url: string): Promise<string | undefined> {
    const conn = await (await amqpLib()).connect(url);
    const version = conn.connection.serverProperties.version;
    await conn.close();
    return typeof version === 'string' ? version : undefined;
  }
}

export const rabbitVersion = (url: string) => RabbitDriver.version(url);

// ---- NATS JetStream -----------------------------------------------------------------

const encoder = new TextEncoder();
const decoder = new TextDecoder();

class NatsDriver implements Driver {
  private pubNc: NatsConnection | undefined;
  private subNc: NatsConnection | undefined;
  private stream = '';
  private subject = '';
  private window = 1;
  private stopConsumer: (() => void) | undefined;

  constructor(private readonly url: string) {}

  async prepare(queue: string, window: number): Promise<void> {
    this.stream = queue.replace(/[^A-Za-z0-9_-]/g, '_');
    this.subject = `bench.${this.stream}`;
    this.window = window;
    const { AckPolicy, connect, StorageType } = await natsLib();
    this.pubNc = await connect({ servers: this.url });
    this.subNc = await connect({ servers: this.url });
    const jsm = await this.pubNc.jetstreamManager();
    await jsm.streams.add({ name: this.stream, subjects: [this.subject], storage: StorageType.File, num_replicas: 1 });
    await jsm.consumers.add(this.stream, { durable_name: 'bench', ack_policy: AckPolicy.Explicit, max_ack_pending: Math.max(1000, window * 2) });
  }

  async consume(onMessage: (body: Body) => void, onAckError: (err: unknown) => void): Promise<void> {
    const consumer = await this.subNc!.jetstream().consumers.get(this.stream, 'bench');
    const messages = await consumer.consume({ max_messages: this.window });
    this.stopConsumer = () => void messages.stop();
    (async () => {
      for await (const m of messages) {
        onMessage(decoder.decode(m.data));
        m.ack();
      }
    })().catch(onAckError);
  }

  async publish(body: string): Promise<void> {
    await this.pubNc!.jetstream().publish(this.subject, encoder.encode(body));
  }

  async close(): Promise<void> {
    this.stopConsumer?.();
    try {
      const jsm = await this.pubNc!.jetstreamManager();
      await jsm.streams.delete(this.stream);
    } catch {
      // best effort
    }
    await Promise.allSettled([this.pubNc?.close(), this.subNc?.close()]);
  }

  static async version(url: string): Promise<string | undefined> {
    const nc = await (await natsLib()).connect({ servers: url });
    const version = nc.info?.version;
    await nc.close();
    return version;
  }
}

export const natsVersion = (url: string) => NatsDriver.version(url);

// ---- Redis Streams ----------------------------------------------------------------

type RedisClient = ReturnType<typeof createClient>;

class RedisStreamsDriver implements Driver {
  private pub: RedisClient | undefined;
  private sub: RedisClient | undefined;
  private key = '';
  private window = 1;
  private running = false;
  private loop: Promise<void> | undefined;

  constructor(private readonly url: string) {}

  async prepare(queue: string, window: number): Promise<void> {
    this.key = `bench:${queue}`;
    this.window = window;
    const { createClient } = await import('redis');
    this.pub = createClient({ url: this.url });
    this.sub = createClient({ url: this.url });
    this.pub.on('error', () => {});
    this.sub.on('error', () => {});
    await this.pub.connect();
    await this.sub.connect();
    await this.pub.del(this.key);
    await this.pub.xGroupCreate(this.key, 'bench', '0', { MKSTREAM: true });
  }

  async consume(onMessage: (body: Body) => void, onAckError: (err: unknown) => void): Promise<void> {
    const sub = this.sub!;
    this.running = true;
    this.loop = (async () => {
      while (this.running) {
        const reply = (await sub.xReadGroup('bench', 'c1', { key: this.key, id: '>' }, { COUNT: this.window, BLOCK: 200 })) as
          | { name: string; messages: { id: string; message: Record<string, string> }[] }[]
          | null;
        if (!reply) continue;
        for (const stream of reply) {
          for (const entry of stream.messages) {
            onMessage(entry.message.d ?? '');
            // One XACK per message, pipelined before the next read on this connection.
            sub.xAck(this.key, 'bench', entry.id).catch(onAckError);
          }
        }
      }
    })().catch((err) => {
      if (this.running) onAckError(err);
    });
  }

  async publish(body: string): Promise<void> {
    await this.pub!.xAdd(this.key, '*', { d: body });
  }

  async close(): Promise<void> {
    this.running = false;
    await this.loop;
    try {
      await this.pub?.del(this.key);
    } catch {
      // best effort
    }
    await Promise.allSettled([this.pub?.quit(), this.sub?.quit()]);
  }
}

// ---- MeshMQ, plain WebSocket ------------------------------------------------------

interface Pending {
  resolve: (frame: Record<string, unknown>) => void;
  reject: (err: Error & { code?: string }) => void;
}

/** A minimal client of docs/protocol.md: requests matched to replies by id. */
class WsConnection {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  onMessage: ((frame: Record<string, unknown>) => void) | undefined;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (raw) => {
      const frame = JSON.parse(raw.toString()) as Record<string, unknown>;
      if (frame.op === 'message') {
        this.onMessage?.(frame);
        return;
      }
      const id = frame.id as number;
      const p = this.pending.get(id);
      if (!p) return;
      this.pending.delete(id);
      if (frame.op === 'ok') p.resolve(frame);
      else p.reject(Object.assign(new Error(String(frame.message)), { code: String(frame.code) }));
    });
    ws.on('close', () => {
      for (const p of this.pending.values()) p.reject(Object.assign(new Error('connection closed'), { code: 'closed' }));
      this.pending.clear();
    });
  }

  static async open(url: string): Promise<WsConnection> {
    const { default: WebSocketClass } = await import('ws');
    return new Promise((resolve, reject) => {
      const ws = new WebSocketClass(url, { perMessageDeflate: false });
      ws.once('open', () => resolve(new WsConnection(ws)));
      ws.once('error', reject);
    });
  }

  request(frame: Record<string, unknown>): Promise<Record<string, unknown>> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ ...frame, id }));
    });
  }

  close(): void {
    this.ws.close();
  }
}

class MeshWsDriver implements Driver {
  private pub: WsConnection | undefined;
  private sub: WsConnection | undefined;
  private topic = '';
  private window = 1;

  constructor(
    private readonly publishUrl: string,
    private readonly consumeUrl: string,
    private readonly ackBatch: boolean,
  ) {}

  async prepare(queue: string, window: number): Promise<void> {
    this.topic = queue;
    this.window = window;
    this.pub = await WsConnection.open(this.publishUrl);
    this.sub = await WsConnection.open(this.consumeUrl);
  }

  async consume(onMessage: (body: Body) => void, onAckError: (err: unknown) => void): Promise<void> {
    const sub = this.sub!;
    const topic = this.topic;
    const ackOne = (frame: Record<string, unknown>) => {
      sub.request({ op: 'ack', topic, group: 'bench', offset: frame.offset, epoch: frame.epoch }).catch(onAckError);
    };
    // Multi-offset ack: the offsets acked in one event-loop turn, per epoch, in frames of at most 1000.
    let batch: Map<string, number[]> | undefined;
    const flush = () => {
      const pending = batch!;
      batch = undefined;
      for (const [epoch, offsets] of pending) {
        for (let i = 0; i < offsets.length; i += 1000) {
          const chunk = offsets.slice(i, i + 1000);
          sub.request({ op: 'ack', topic, group: 'bench', offsets: chunk, epoch }).then((reply) => {
            for (const f of (reply.failed as { code: string; message: string }[] | undefined) ?? []) {
              onAckError(Object.assign(new Error(f.message), { code: f.code }));
            }
          }, onAckError);
        }
      }
    };
    const ackBatched = (frame: Record<string, unknown>) => {
      if (!batch) {
        batch = new Map();
        setImmediate(flush);
      }
      const epoch = String(frame.epoch);
      let list = batch.get(epoch);
      if (!list) batch.set(epoch, (list = []));
      list.push(frame.offset as number);
    };
    const ack = this.ackBatch ? ackBatched : ackOne;
    sub.onMessage = (frame) => {
      onMessage(frame.data as Body);
      ack(frame);
    };
    await sub.request({ op: 'subscribe', topic, group: 'bench', prefetch: Math.min(10_000, this.window), ackWait: 120_000, from: 1 });
  }

  async publish(_body: string, payload: object): Promise<void> {
    await this.pub!.request({ op: 'publish', topic: this.topic, data: payload });
  }

  async close(): Promise<void> {
    this.pub?.close();
    this.sub?.close();
  }
}

// ---- MeshMQ, SDK ------------------------------------------------------------------

class MeshSdkDriver implements Driver {
  private pub: MeshClient | undefined;
  private sub: MeshClient | undefined;
  private topic = '';
  private window = 1;

  constructor(
    private readonly publishUrl: string,
    private readonly consumeUrl: string,
  ) {}

  async prepare(queue: string, window: number): Promise<void> {
    this.topic = queue;
    this.window = window;
    const { MeshClient } = await import('@meshmq/client');
    this.pub = new MeshClient({ url: this.publishUrl, discoverNodes: false, requestTimeoutMs: 60_000 });
    this.sub = new MeshClient({ url: this.consumeUrl, discoverNodes: false, requestTimeoutMs: 60_000 });
    await this.pub.connect();
    await this.sub.connect();
  }

  async consume(onMessage: (body: Body) => void, onAckError: (err: unknown) => void): Promise<void> {
    this.sub!.on('error', onAckError);
    await this.sub!.consume(
      this.topic,
      'bench',
      (m) => {
        onMessage(m.data as Body);
      },
      { prefetch: Math.min(10_000, this.window), ackWait: 120_000, from: 1 },
    );
  }

  async publish(_body: string, payload: object): Promise<void> {
    await this.pub!.publish(this.topic, payload);
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.pub?.close(), this.sub?.close()]);
  }
}
