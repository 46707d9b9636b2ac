import { MeshError, type MessageFrame, type RequestBody, type ResetFrame, type SubscribeResult } from '@meshmq/shared';
import { Fifo } from './fifo.js';
import type { Link } from './link.js';
import { Resumable, type ResumableHost } from './resumable.js';
import type { Gap, Message } from './types.js';

export interface SubscribeOptions {
  /**
   * First offset to deliver. Default: messages published from now on. To
   * resume from a saved position, pass the offset after the last one handled
   * and the `epoch` it belongs to.
   */
  from?: number;
  /**
   * The epoch `from` refers to. When the topic's epoch differs (its log was
   * replaced), delivery starts at the first retained offset and a gap with
   * reason `epoch` is reported.
   */
  epoch?: string;
  /** Called for every gap of this subscription, in addition to the client's `gap` event. */
  onGap?: (gap: Gap) => void;
  /**
   * Messages received but not yet handled above which the subscription stops
   * the server's stream; it resumes from the next offset once half of them
   * are handled. Default 1000.
   */
  maxBuffered?: number;
}

/** Handles one message; a returned promise is awaited before the next message. */
export type MessageHandler<T = unknown> = (message: Message<T>) => unknown;

/** A fan-out subscription to one topic. */
export interface Subscription {
  readonly topic: string;
  /** Epoch of the topic's log, once the server confirmed the subscription. */
  readonly epoch: string | undefined;
  /** Offset of the last message handed to the handler; 0 before the first. */
  readonly lastOffset: number;
  /** False once unsubscribed, ended by the server, or the client closed. */
  readonly active: boolean;
  /** Stops delivery (a handler already running finishes) and ends the subscription on the server. */
  unsubscribe(): Promise<void>;
}

/** Default `maxBuffered`: messages received and not yet handled before the stream is paused. */
export const DEFAULT_MAX_BUFFERED = 1000;

/**
 * Delivers a topic to a handler exactly once and in offset order across
 * reconnects: it remembers the next offset it expects and re-subscribes from
 * there with the epoch on every new connection, dropping anything older.
 */
export class FanoutSubscription<T = unknown> extends Resumable implements Subscription {
  private epochValue: string | undefined;
  /** The next offset expected from the server; undefined until the first confirmation without `from`. */
  private next: number | undefined;
  private handed = 0;
  private readonly queue = new Fifo<Message<T>>();
  private readonly maxBuffered: number;
  private draining = false;
  private paused = false;
  /** The link the server-side subscription is confirmed on. */
  private current: Link | undefined;
  /** A subscribe in flight, and the frames that arrived on its link before the reply. */
  private opening: { link: Link; early: MessageFrame[] } | undefined;

  constructor(
    host: ResumableHost,
    readonly topic: string,
    private readonly handler: MessageHandler<T>,
    private readonly options: SubscribeOptions,
    timeoutMs: number,
  ) {
    super(host, topic, `subscription to '${topic}'`, timeoutMs);
    this.maxBuffered = Math.max(2, options.maxBuffered ?? DEFAULT_MAX_BUFFERED);
  }

  get epoch(): string | undefined {
    return this.epochValue;
  }

  get lastOffset(): number {
    return this.handed;
  }

  unsubscribe(): Promise<void> {
    return this.end();
  }

  /** A message frame of this topic without a group, from `link`. */
  onMessage(link: Link, frame: MessageFrame): void {
    if (this.opening?.link === link) this.opening.early.push(frame);
    else if (this.current === link) this.accept(frame);
  }

  /**
   * The log lost messages this subscription had delivered and goes on under a
   * new epoch: report them as a gap and take the new messages from `from`.
   */
  onReset(link: Link, frame: ResetFrame): void {
    if (this.current !== link || this.ended) return;
    this.epochValue = frame.epoch;
    this.next = frame.from;
    this.host.gap({ topic: this.topic, epoch: frame.epoch, ...frame.missing, reason: 'epoch' }, this.options.onGap);
  }

  protected async open(link: Link): Promise<Gap[]> {
    if (this.paused || this.current === link) return [];
    const resuming = this.next !== undefined;
    const from = this.next ?? this.options.from;
    const epoch = resuming ? this.epochValue : this.options.epoch;
    const frame: RequestBody<'subscribe'> = { op: 'subscribe', topic: this.topic };
    if (from !== undefined) frame.from = from;
    if (epoch !== undefined) frame.epoch = epoch;
    this.opening = { link, early: [] };
    const reply = await this.subscribeOn(link, frame);
    if (!reply) {
      this.opening = undefined;
      return [];
    }
    const early = this.opening?.link === link ? this.opening.early : [];
    this.opening = undefined;
    // Set even when ended meanwhile: close(), queued after this, unsubscribes it.
    this.current = link;
    if (this.ended) return [];
    const gaps = this.apply(reply, from, epoch, resuming);
    this.confirm();
    for (const message of early) this.accept(message);
    return gaps;
  }

  protected async close(): Promise<void> {
    const link = this.current;
    this.current = undefined;
    if (!link?.isOpen) return;
    try {
      await this.host.request(link, { op: 'unsubscribe', topic: this.topic });
    } catch {
      // not_found or a lost connection: either way the server holds nothing.
    }
  }

  protected onEnd(): void {
    this.queue.clear();
  }

  /** Takes the position from a subscribe reply; reports what cannot be recovered. */
  private apply(reply: SubscribeResult, from: number | undefined, epoch: string | undefined, resuming: boolean): Gap[] {
    const epochChanged = epoch !== undefined && reply.epoch !== epoch;
    this.epochValue = reply.epoch;
    const requested = from ?? reply.last + 1;
    // Servers since protocol 1.1 say where delivery starts; older ones start at `first` when they cannot recover.
    let start = reply.from ?? (reply.recovered && !epochChanged ? requested : Math.max(epochChanged ? 1 : requested, reply.first));
    const gaps: Gap[] = [];
    if (!reply.recovered) {
      const missing = reply.missing ?? { from: epochChanged ? 1 : requested, to: reply.first - 1 };
      const reason = reply.missing?.reason ?? (epochChanged ? 'epoch' : 'retention');
      gaps.push({ topic: this.topic, epoch: reply.epoch, from: missing.from, to: missing.to, reason });
    } else if (resuming && start > reply.last + 1 && !epochChanged) {
      this.host.error(
        new MeshError(
          'internal',
          `topic '${this.topic}' ends at offset ${reply.last} but this subscription has seen up to ${start - 1} in the same epoch; the server lost messages`,
        ),
      );
    }
    if (reply.from === undefined && !reply.recovered) start = Math.max(start, reply.first);
    this.next = start;
    for (const gap of gaps) this.host.gap(gap, this.options.onGap);
    return gaps;
  }

  private accept(frame: MessageFrame): void {
    if (this.ended || this.paused) return;
    if (this.next !== undefined) {
      if (frame.offset < this.next) return;
      if (frame.offset > this.next) {
        const gap: Gap = { topic: this.topic, epoch: frame.epoch, from: this.next, to: frame.offset - 1, reason: 'skipped' };
        this.host.gap(gap, this.options.onGap);
      }
    }
    this.next = frame.offset + 1;
    // A topic that did not exist when subscribing gets its epoch with its first message.
    this.epochValue = frame.epoch;
    const message: Message<T> = { topic: frame.topic, offset: frame.offset, epoch: frame.epoch, ts: frame.ts, data: frame.data as T };
    if (frame.key !== undefined) message.key = frame.key;
    this.queue.push(message);
    if (this.queue.length >= this.maxBuffered) this.pause();
    void this.drain();
  }

  /** Runs the handler on each queued message in turn, awaiting any promise it returns. */
  private async drain(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    try {
      for (let message = this.queue.shift(); message && !this.ended; message = this.queue.shift()) {
        this.handed = message.offset;
        try {
          const result = this.handler(message);
          if (isThenable(result)) await result;
        } catch (err) {
          this.host.error(
            new MeshError('internal', `handler of subscription to '${this.topic}' threw at offset ${message.offset}: ${MeshError.from(err).message}`, {
              cause: err,
            }),
          );
        }
        if (this.paused && this.queue.length <= this.maxBuffered / 2) this.unpause();
      }
    } finally {
      this.draining = false;
    }
  }

  /** Too much is buffered: stop the server's stream; nothing received from now on counts. */
  private pause(): void {
    this.paused = true;
    void this.serially(() => this.close());
  }

  private unpause(): void {
    this.paused = false;
    const link = this.host.link;
    if (link) void this.attach(link);
  }
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return value !== null && typeof value === 'object' && typeof (value as { then?: unknown }).then === 'function';
}
