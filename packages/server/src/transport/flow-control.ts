import type { WebSocket } from 'ws';
import { HIGH_WATER_MARK } from '../core/limits.js';

/** How often a paused or watched connection is looked at again. */
const POLL_MS = 20;

/**
 * Stops reading a client's requests while the replies and deliveries queued
 * for it pass the high-water mark, and reads again once it has taken half of
 * them. A client that sends requests but never reads its socket then meets
 * TCP backpressure instead of making the node buffer every reply.
 *
 * `socket` is read on each check, so a transport may change underneath (a
 * Socket.IO connection upgrading from polling); without a WebSocket nothing
 * is paused (the node's hard limit on queued bytes still holds).
 */
export class InputThrottle {
  private timer: NodeJS.Timeout | undefined;
  private paused: WebSocket | undefined;

  constructor(
    private readonly buffered: () => number,
    private readonly socket: () => WebSocket | undefined,
  ) {}

  /** Call after each request read. */
  check(): void {
    if (this.paused || this.buffered() < HIGH_WATER_MARK) return;
    const ws = this.socket();
    if (!ws) return;
    ws.pause();
    this.paused = ws;
    this.timer = setInterval(() => {
      if (this.buffered() >= HIGH_WATER_MARK / 2) return;
      this.stop();
    }, POLL_MS);
    this.timer.unref();
  }

  /** Reads again (and stops watching); call when the connection closes. */
  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    const ws = this.paused;
    this.paused = undefined;
    if (ws && ws.readyState === ws.OPEN) ws.resume();
  }
}

interface ReceiverState {
  _bufferedBytes?: number;
  _fragments?: unknown[];
}

/**
 * Closes WebSockets that started a frame (or a fragmented message) and did
 * not finish it within `timeoutMs`: a client trickling, or stalling in, a
 * large frame would otherwise hold up to the frame limit of node memory for
 * as long as it likes. One timer for every watched socket.
 */
export class FrameWatchdog {
  private readonly watched = new Map<WebSocket, { since: number | undefined; onStall: () => void }>();
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly timeoutMs: number) {
    this.timer = setInterval(() => this.sweep(), Math.max(100, Math.floor(timeoutMs / 4)));
    this.timer.unref();
  }

  /** Watches `ws` until it closes; `onStall` ends it. */
  watch(ws: WebSocket, onStall: () => void): void {
    const entry = { since: undefined as number | undefined, onStall };
    this.watched.set(ws, entry);
    // A complete message means no frame is stalled right now.
    ws.on('message', () => (entry.since = undefined));
    ws.once('close', () => this.watched.delete(ws));
  }

  close(): void {
    clearInterval(this.timer);
    this.watched.clear();
  }

  private sweep(): void {
    const now = Date.now();
    for (const [ws, entry] of this.watched) {
      // ws keeps a partial frame in its receiver; these fields are how it counts one (ws 8).
      const receiver = (ws as unknown as { _receiver?: ReceiverState })._receiver;
      const partial = (receiver?._bufferedBytes ?? 0) > 0 || (receiver?._fragments?.length ?? 0) > 0;
      // A connection the node paused (InputThrottle) is not the client's stall.
      if (!partial || ws.isPaused) {
        entry.since = undefined;
        continue;
      }
      entry.since ??= now;
      if (now - entry.since >= this.timeoutMs) {
        this.watched.delete(ws);
        entry.onStall();
      }
    }
  }
}
