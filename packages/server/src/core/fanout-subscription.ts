import { type Engine, epochEnd, type StoredMessage } from '../engine/engine.js';
import type { Connection } from './connection.js';
import { HIGH_WATER_MARK } from './limits.js';
import { sharedMessageFrame } from './message-frame.js';

/** Messages read from the log per step while catching up; a step's bytes are also bounded by the high-water mark. */
const CATCH_UP_BATCH = 500;
/** How often a congested connection is checked for room again. */
export const DRAIN_POLL_MS = 20;
/** After a failed read (storage unreachable), catching up is tried again this much later, doubling up to the max. */
const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 5000;

/**
 * One connection's fan-out subscription to one topic: a cursor over the log.
 *
 * Live messages are sent straight on when they are the next offset; anything
 * else (a replay from an older offset, a gap, a congested connection) switches
 * to catching up from the log, so the subscriber sees every offset once, in
 * order, whatever the live path does.
 */
export class FanoutSubscription {
  private next: number;
  /** Set when a message of another epoch was seen: the log may have lost what we delivered. */
  private epochChanged = false;
  private catchingUp = false;
  /** Live messages are only noted until the subscribe reply has gone out. */
  private started = false;
  private latestSeen = 0;
  private closed = false;
  private retryMs = RETRY_MIN_MS;
  private retryTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly topic: string,
    private readonly engine: Engine,
    private readonly connection: Connection,
    from: number,
    private epoch: string,
    private readonly onDelivered: (message: StoredMessage) => void,
    private readonly onError: (err: unknown) => void,
  ) {
    this.next = from;
  }

  /** Starts delivery; call after the subscribe reply was sent. */
  start(lastKnown: number): void {
    this.started = true;
    this.latestSeen = Math.max(this.latestSeen, lastKnown);
    if (this.next <= this.latestSeen) void this.catchUp();
  }

  onLive(message: StoredMessage): void {
    if (this.closed) return;
    // Subscribed from offset 1 before the topic existed: nothing was delivered, so no epoch can have taken anything
    // back, and the topic's first epoch is simply adopted. (Going through rebase would send every subscriber of a
    // new topic to read the log on its own, all at once.)
    if (this.epoch === '' && this.next === 1) this.epoch = message.epoch;
    if (message.epoch !== this.epoch) {
      this.epochChanged = true;
      this.latestSeen = Math.max(this.latestSeen, message.offset);
      if (this.started) void this.catchUp();
      return;
    }
    if (message.offset < this.next) return;
    this.latestSeen = Math.max(this.latestSeen, message.offset);
    if (this.catchingUp || !this.started) return;
    if (message.offset === this.next && this.connection.bufferedAmount() < HIGH_WATER_MARK) {
      this.deliver(message);
      return;
    }
    void this.catchUp();
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retryTimer);
  }

  private deliver(message: StoredMessage): void {
    const { frame, encode } = sharedMessageFrame(message);
    this.connection.send(frame, encode);
    this.next = message.offset + 1;
    this.onDelivered(message);
  }

  /**
   * Follows the log onto a new epoch. If this subscription delivered offsets
   * past the end of the epoch it followed, those messages were lost and the
   * offsets hold others now: the client is told (a reset frame) and gets the
   * new messages from the first such offset.
   */
  private async rebase(): Promise<void> {
    this.epochChanged = false;
    const info = await this.engine.topicInfo(this.topic);
    if (!info || info.epoch === this.epoch) return;
    // An epoch the log does not know (the subscription started before the topic existed, or its log was replaced) ends before the first retained offset.
    const end = epochEnd(info.epochs, this.epoch) ?? info.first - 1;
    if (this.next - 1 > end) {
      const from = Math.max(end + 1, info.first);
      this.connection.send({ op: 'reset', topic: this.topic, epoch: info.epoch, from, missing: { from: end + 1, to: this.next - 1 } });
      this.next = from;
    }
    this.epoch = info.epoch;
    this.latestSeen = Math.max(this.latestSeen, info.last);
  }

  private async catchUp(): Promise<void> {
    if (this.catchingUp) return;
    this.catchingUp = true;
    try {
      if (this.epochChanged) await this.rebase();
      while (!this.closed && this.latestSeen >= this.next) {
        while (!this.closed && this.connection.bufferedAmount() >= HIGH_WATER_MARK) {
          await new Promise((resolve) => setTimeout(resolve, DRAIN_POLL_MS));
        }
        const batch = await this.engine.read(this.topic, this.next, CATCH_UP_BATCH, HIGH_WATER_MARK);
        if (batch[0] && batch[0].epoch !== this.epoch) {
          await this.rebase();
          continue;
        }
        if (batch.length === 0) {
          // Retention may have removed everything up to latestSeen.
          const info = await this.engine.topicInfo(this.topic);
          if (!info) break;
          if (info.first > this.next) this.next = info.first;
          if (info.last < this.next) break;
          continue;
        }
        for (const message of batch) {
          if (this.closed) return;
          // Stop mid-batch when the connection fills: what is queued for it stays near the high-water mark
          // however many subscriptions share it. The rest is read again once it drains.
          if (this.connection.bufferedAmount() >= HIGH_WATER_MARK) break;
          this.deliver(message);
        }
      }
      this.retryMs = RETRY_MIN_MS;
    } catch (err) {
      // No new message may come to restart it: try again.
      this.onError(err);
      if (!this.closed) {
        clearTimeout(this.retryTimer);
        this.retryTimer = setTimeout(() => void this.catchUp(), this.retryMs);
        this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
      }
    } finally {
      this.catchingUp = false;
    }
    // A new epoch noticed while the last read was in flight.
    if (this.epochChanged && !this.closed) void this.catchUp();
  }
}
