import { DEFAULTS, groupKey, MeshError, type MessageFrame, type RequestBody } from '@meshmq/shared';
import { AckBatch } from './ack-batch.js';
import type { Link } from './link.js';
import { Resumable, type ResumableHost } from './resumable.js';
import { unref } from './timers.js';
import type { Gap, GroupMessage } from './types.js';

export interface ConsumeOptions {
  /** Unacked deliveries this member holds at once; also how many handlers may run at once. Server default 10. */
  prefetch?: number;
  /** Ms a delivery may stay unacked before it is redelivered. Applies to the whole group. Server default 30000. */
  ackWait?: number;
  /** Deliveries after which a message moves to the dead-letter topic `$dlq.<topic>`. Applies to the whole group. Server default 5. */
  maxDeliveries?: number;
  /** Where a group created by this call starts. Default: after the topic's last message. */
  from?: number;
  /** Ack when the handler resolves, nack when it throws. Default true. */
  autoAck?: boolean;
  /** Delay of the nack sent when a handler throws with autoAck. Default 0. */
  nackDelayMs?: number;
}

/** Handles one delivery; with autoAck, resolving acks it and throwing (or rejecting) nacks it. */
export type GroupHandler<T = unknown> = (message: GroupMessage<T>) => unknown;

/** Membership of one consumer group of one topic. */
export interface GroupConsumer {
  readonly topic: string;
  readonly group: string;
  /** Handlers running now. */
  readonly running: number;
  /** False once stopped, ended by the server, or the client closed. */
  readonly active: boolean;
  /**
   * Leaves the group: takes no new message, lets running handlers finish
   * (and ack) for up to the group's ackWait, then leaves, which hands any
   * message this member still holds to the other members.
   */
  stop(): Promise<void>;
}

/**
 * A consumer-group member. Handlers run as deliveries arrive, so up to
 * `prefetch` at once; the server re-sends on a new connection what this one
 * had not acked, so the client just joins again after every reconnect.
 */
export class GroupMember<T = unknown> extends Resumable implements GroupConsumer {
  private readonly inFlight = new Set<Promise<void>>();
  private readonly ackBatches = new WeakMap<Link, AckBatch>();
  private stopping = false;
  private joined = false;
  private ackWaitMs: number;
  private current: Link | undefined;
  private opening: Link | undefined;

  constructor(
    host: ResumableHost,
    readonly topic: string,
    readonly group: string,
    private readonly handler: GroupHandler<T>,
    private readonly options: ConsumeOptions,
    timeoutMs: number,
  ) {
    super(host, groupKey(topic, group), `membership of group '${group}' of topic '${topic}'`, timeoutMs);
    this.ackWaitMs = options.ackWait ?? DEFAULTS.ackWaitMs;
  }

  get running(): number {
    return this.inFlight.size;
  }

  async stop(): Promise<void> {
    if (this.ended || this.stopping) return this.settled();
    this.stopping = true;
    if (this.inFlight.size > 0) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        Promise.allSettled([...this.inFlight]),
        new Promise((resolve) => {
          timer = setTimeout(resolve, this.ackWaitMs);
          // Waiting for handlers must not by itself keep a Node process alive.
          unref(timer);
        }),
      ]);
      clearTimeout(timer);
    }
    await this.end();
  }

  /** A message frame of this topic and group, from `link`. */
  onMessage(link: Link, frame: MessageFrame): void {
    if (this.ended || (link !== this.current && link !== this.opening)) return;
    // While stopping, what arrives stays unacked: leaving the group hands it to the others.
    if (this.stopping) return;
    const run = this.handle(this.message(link, frame));
    this.inFlight.add(run);
    void run.finally(() => this.inFlight.delete(run));
  }

  protected async open(link: Link): Promise<Gap[]> {
    if (this.current === link) return [];
    const frame: RequestBody<'subscribe'> = { op: 'subscribe', topic: this.topic, group: this.group };
    if (this.options.prefetch !== undefined) frame.prefetch = this.options.prefetch;
    if (this.options.ackWait !== undefined) frame.ackWait = this.options.ackWait;
    if (this.options.maxDeliveries !== undefined) frame.maxDeliveries = this.options.maxDeliveries;
    // `from` only positions a group that does not exist yet; send it on the first join only.
    if (this.options.from !== undefined && !this.joined) frame.from = this.options.from;
    this.opening = link;
    const reply = await this.subscribeOn(link, frame);
    if (this.opening === link) this.opening = undefined;
    if (!reply) return [];
    this.current = link;
    this.joined = true;
    if (reply.ackWait !== undefined) this.ackWaitMs = reply.ackWait;
    this.confirm();
    return [];
  }

  protected async close(): Promise<void> {
    const link = this.current;
    this.current = undefined;
    if (!link?.isOpen) return;
    try {
      await this.host.request(link, { op: 'unsubscribe', topic: this.topic, group: this.group });
    } catch {
      // not_found or a lost connection: either way the server released this member.
    }
  }

  protected onEnd(): void {
    // Running handlers finish; their acks fail once the membership is gone.
  }

  private async handle(message: GroupMessage<T>): Promise<void> {
    const autoAck = this.options.autoAck ?? true;
    let threw: unknown;
    let failed = false;
    try {
      await this.handler(message);
    } catch (err) {
      failed = true;
      threw = err;
    }
    if (failed) {
      this.host.error(
        new MeshError(
          'internal',
          `handler of group '${this.group}' of topic '${this.topic}' threw at offset ${message.offset}` +
            `${autoAck ? ' (nacked)' : ''}: ${MeshError.from(threw).message}`,
          { cause: threw },
        ),
      );
    }
    if (!autoAck) return;
    try {
      await (failed ? message.nack(this.options.nackDelayMs ?? 0) : message.ack());
    } catch (err) {
      const error = MeshError.from(err);
      this.host.error(
        new MeshError(error.code, `auto-${failed ? 'nack' : 'ack'} of offset ${message.offset} of group '${this.group}' failed: ${error.message}`, {
          cause: err,
        }),
      );
    }
  }

  /** The acks of deliveries that came on `link` go back on it, together. */
  private acksOn(link: Link): AckBatch {
    let batch = this.ackBatches.get(link);
    if (!batch) {
      batch = new AckBatch(this.topic, this.group, (request) => this.host.request(link, request));
      this.ackBatches.set(link, batch);
    }
    return batch;
  }

  private message(link: Link, frame: MessageFrame): GroupMessage<T> {
    // The epoch makes the node refuse to settle the message at this offset if it was lost and replaced meanwhile.
    const delivered = { topic: this.topic, group: this.group, offset: frame.offset, epoch: frame.epoch };
    let settling: Promise<void> | undefined;
    const settle = (request: RequestBody<'ack' | 'nack'>): Promise<void> => {
      if (settling) return settling;
      // Only the connection a delivery came on holds its lease (a draining one still does).
      if (!link.isOpen) {
        settling = Promise.reject(
          new MeshError(
            'unavailable',
            `cannot ${request.op} offset ${frame.offset}: the connection it was delivered on was lost, so the server released it for redelivery`,
          ),
        );
      } else if (request.op === 'ack') {
        settling = this.acksOn(link).add(frame.offset, frame.epoch);
      } else {
        settling = this.host.request(link, request).then(() => undefined);
      }
      return settling;
    };
    const message: GroupMessage<T> = {
      topic: frame.topic,
      offset: frame.offset,
      epoch: frame.epoch,
      ts: frame.ts,
      data: frame.data as T,
      group: this.group,
      delivery: frame.delivery ?? 1,
      ack: () => settle({ op: 'ack', ...delivered }),
      nack: (delayMs?: number) => settle(delayMs ? { op: 'nack', ...delivered, delay: delayMs } : { op: 'nack', ...delivered }),
    };
    if (frame.key !== undefined) message.key = frame.key;
    return message;
  }
}
