import type { Engine, StoredMessage } from '../engine/engine.js';
import type { Connection } from './connection.js';
import { toMessageFrame } from './message-frame.js';

const CATCH_UP_BATCH = 500;
/** Bytes queued on a connection above which delivery waits for it to drain. */
const HIGH_WATER_MARK = 4 * 1024 * 1024;
const DRAIN_POLL_MS = 20;

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
  private catchingUp = false;
  /** Live messages are only noted until the subscribe reply has gone out. */
  private started = false;
  private latestSeen = 0;
  private closed = false;

  constructor(
    readonly topic: string,
    private readonly engine: Engine,
    private readonly connection: Connection,
    from: number,
    private readonly onDelivered: (count: number) => void,
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
    if (this.closed || message.offset < this.next) return;
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
  }

  private deliver(message: StoredMessage): void {
    this.connection.send(toMessageFrame(message));
    this.next = message.offset + 1;
    this.onDelivered(1);
  }

  private async catchUp(): Promise<void> {
    if (this.catchingUp) return;
    this.catchingUp = true;
    try {
      while (!this.closed && this.latestSeen >= this.next) {
        while (!this.closed && this.connection.bufferedAmount() >= HIGH_WATER_MARK) {
          await new Promise((resolve) => setTimeout(resolve, DRAIN_POLL_MS));
        }
        const batch = await this.engine.read(this.topic, this.next, CATCH_UP_BATCH);
        if (batch.length === 0) {
          // Retention may have removed everything up to latestSeen.
          const info = await this.engine.topicInfo(this.topic);
          if (info.first > this.next) this.next = info.first;
          if (info.last < this.next) break;
          continue;
        }
        for (const message of batch) {
          if (this.closed) return;
          this.deliver(message);
        }
      }
    } catch (err) {
      this.onError(err);
    } finally {
      this.catchingUp = false;
    }
  }
}
