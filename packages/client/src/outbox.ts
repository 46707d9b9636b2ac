import type { RequestOp } from '@meshmq/shared';

/** What became of a request the outbox handed on. */
export type Transmitted = 'sent' | 'dropped' | 'closed';

/** The limits of the node an outbox follows (from hello). */
export interface OutboxLimits {
  /** Requests the node lets one connection have unanswered. */
  maxInflight: number;
  /** Publishes a second the node lets one connection send. */
  publishRate: number;
}

interface Entry {
  id: number;
  publish: boolean;
  /** Not to be sent before this time (ms): the node asked to wait. */
  notBefore: number;
}

/**
 * The requests of one connection on their way out. It keeps to the node's
 * limits, so that a burst (such as the offline queue flushed on
 * reconnecting) is not refused: at most `maxInflight` requests are
 * unanswered at once, the rest wait in order. A request the node refused
 * for now waits the time the request tracker says and goes again; a
 * publish waiting so holds back the later publishes, which keeps their
 * order. After a publish was rate limited, publishes go at the node's
 * `publishRate` until none waits, rather than all at once to be limited
 * again.
 */
export class Outbox {
  /** Ids of requests sent and not answered: the node counts them. */
  private readonly unanswered = new Set<number>();
  /** Requests waiting, by id: the order they were made in. */
  private readonly waiting: Entry[] = [];
  /** Set while publishes are paced: the earliest time the next may go. */
  private nextPublishAt: number | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private closed = false;

  constructor(
    /** The node's limits; undefined until hello answered (only hello goes before). */
    private readonly limits: () => OutboxLimits | undefined,
    /** Sends request `id` on the connection. */
    private readonly transmit: (id: number) => Transmitted,
  ) {}

  /** Sends request `id` now if the connection has room, else once it has. */
  push(id: number, op: RequestOp): void {
    this.enqueue({ id, publish: op === 'publish', notBefore: 0 });
  }

  /** The node answered request `id`. */
  answered(id: number): void {
    if (this.unanswered.delete(id)) this.pump();
  }

  /**
   * The node refused request `id` for now: sends it again in `afterMs`.
   * After `rate_limited` (`paced`), publishes go at the node's
   * `publishRate` from then on until none waits.
   */
  retry(id: number, op: RequestOp, afterMs: number, paced: boolean): void {
    const notBefore = Date.now() + afterMs;
    const publish = op === 'publish';
    if (paced && publish && (this.limits()?.publishRate ?? 0) > 0) this.nextPublishAt = Math.max(this.nextPublishAt ?? 0, notBefore);
    this.enqueue({ id, publish, notBefore });
  }

  /** The connection is gone: forget everything (the request tracker re-queues or fails the requests). */
  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.waiting.length = 0;
    this.unanswered.clear();
  }

  private enqueue(entry: Entry): void {
    if (this.closed) return;
    // Re-sent requests are older than those waiting: keep the order they were made in.
    let at = this.waiting.length;
    while (at > 0 && this.waiting[at - 1]!.id > entry.id) at--;
    this.waiting.splice(at, 0, entry);
    this.pump();
  }

  /** Sends what may go now, in order; wakes up when the next delayed one may. */
  private pump(): void {
    if (this.closed) return;
    const limits = this.limits();
    const maxInflight = limits?.maxInflight ?? Infinity;
    const publishGap = limits && limits.publishRate > 0 ? 1000 / limits.publishRate : 0;
    const now = Date.now();
    let wakeAt = Infinity;
    let publishHeld = false;
    for (let i = 0; i < this.waiting.length && this.unanswered.size < maxInflight; ) {
      const entry = this.waiting[i]!;
      // A held publish holds the later ones too, so that publishes keep their order.
      if (entry.publish && publishHeld) {
        i++;
        continue;
      }
      const readyAt = Math.max(entry.notBefore, entry.publish ? (this.nextPublishAt ?? 0) : 0);
      if (readyAt > now) {
        if (entry.publish) publishHeld = true;
        wakeAt = Math.min(wakeAt, readyAt);
        i++;
        continue;
      }
      this.waiting.splice(i, 1);
      const result = this.transmit(entry.id);
      if (result === 'closed') return;
      if (result === 'dropped') continue;
      this.unanswered.add(entry.id);
      if (entry.publish && this.nextPublishAt !== undefined) this.nextPublishAt = Math.max(this.nextPublishAt, now) + publishGap;
    }
    if (this.nextPublishAt !== undefined && !this.waiting.some((entry) => entry.publish)) this.nextPublishAt = undefined;
    clearTimeout(this.timer);
    this.timer = wakeAt === Infinity ? undefined : setTimeout(() => this.pump(), wakeAt - now);
  }
}
