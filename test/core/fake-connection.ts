import type { Connection } from '@meshmq/server';
import type { ErrorFrame, MessageFrame, OkFrame, ServerFrame } from '@meshmq/shared';

/**
 * A Connection that keeps what the core does to it: the frames it is sent,
 * in order, and close calls. `buffered` is what `bufferedAmount()` answers,
 * so a test decides when the client "reads"; `polls` counts how often the
 * core looked, so a test can wait until the core looked again instead of
 * sleeping.
 */
export class FakeConnection implements Connection {
  readonly transport = 'fake';
  readonly remoteAddress = '127.0.0.1';
  readonly frames: ServerFrame[] = [];
  readonly closes: Array<{ code: number; reason: string }> = [];
  /** Bytes the connection claims to have queued. */
  buffered = 0;
  /** How many times bufferedAmount() was called. */
  polls = 0;
  /** Called with each frame right after it is recorded (to act at a precise point of a delivery). */
  onSend: ((frame: ServerFrame) => void) | undefined;

  send(frame: ServerFrame): void {
    this.frames.push(frame);
    this.onSend?.(frame);
  }

  bufferedAmount(): number {
    this.polls++;
    return this.buffered;
  }

  close(code: number, reason: string): void {
    this.closes.push({ code, reason });
  }

  /** Message frames, optionally of one topic. */
  messages(topic?: string): MessageFrame[] {
    return this.frames.filter((f): f is MessageFrame => f.op === 'message' && (topic === undefined || f.topic === topic));
  }

  /** Offsets of the message frames, in the order they were sent. */
  offsets(topic?: string): number[] {
    return this.messages(topic).map((m) => m.offset);
  }

  /** The reply (ok or error) to request `id`, if one was sent. */
  reply(id: string | number): OkFrame | ErrorFrame | undefined {
    return this.frames.find((f): f is OkFrame | ErrorFrame => (f.op === 'ok' || f.op === 'error') && f.id === id);
  }
}
