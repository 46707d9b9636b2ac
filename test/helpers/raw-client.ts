import WebSocket from 'ws';

import { type Frame, messagesOf, waitForCount } from './frames.js';

export type { Frame };

/**
 * A bare protocol client over the plain WebSocket endpoint: sends frames as
 * written by a test and records every frame the server sends.
 */
export class RawClient {
  readonly frames: Frame[] = [];
  private nextId = 1;
  private waiters: Array<() => void> = [];

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      this.frames.push(JSON.parse(data.toString()) as Frame);
      for (const wake of this.waiters.splice(0)) wake();
    });
    ws.on('close', () => {
      for (const wake of this.waiters.splice(0)) wake();
    });
  }

  static connect(url: string, options?: WebSocket.ClientOptions): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, options);
      ws.once('open', () => resolve(new RawClient(ws)));
      ws.once('error', reject);
    });
  }

  /**
   * Tries a WebSocket handshake that the node should refuse: resolves with
   * the HTTP status and JSON body it answered instead of upgrading.
   */
  static refusal(url: string, options?: WebSocket.ClientOptions): Promise<{ status: number; body: { error?: { code: string; message: string } } }> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, options);
      ws.once('open', () => {
        ws.terminate();
        reject(new Error(`the handshake to ${url} was accepted`));
      });
      ws.once('unexpected-response', (_req, res) => {
        let text = '';
        res.on('data', (chunk: Buffer) => (text += chunk.toString()));
        res.on('end', () => {
          let body = {};
          try {
            body = JSON.parse(text) as object;
          } catch {
            // not JSON: left empty, the assertion on it fails
          }
          resolve({ status: res.statusCode ?? 0, body });
        });
      });
      ws.once('error', (err) => reject(err));
    });
  }

  get open(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  /** Sends a request with a fresh id and resolves with its reply (ok or error). */
  async request(frame: Record<string, unknown>): Promise<Frame> {
    const id = (frame.id as number | undefined) ?? this.nextId++;
    const sentAt = this.frames.length;
    this.sendRaw(JSON.stringify({ ...frame, id }));
    return this.waitFor((f) => (f.op === 'ok' || f.op === 'error') && f.id === id && this.frames.indexOf(f) >= sentAt);
  }

  /** Like request, but throws unless the reply is ok. */
  async ok(frame: Record<string, unknown>): Promise<Frame> {
    const reply = await this.request(frame);
    if (reply.op !== 'ok') throw new Error(`expected ok for ${JSON.stringify(frame)}, got ${JSON.stringify(reply)}`);
    return reply;
  }

  sendRaw(data: string | Buffer, binary = false): void {
    this.ws.send(data, { binary });
  }

  /** Resolves with the first recorded frame matching `match`, waiting up to `timeoutMs`. */
  async waitFor(match: (frame: Frame) => boolean, timeoutMs = 10_000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.frames.find(match);
      if (hit) return hit;
      if (Date.now() > deadline) throw new Error(`timed out; frames so far: ${JSON.stringify(this.frames.slice(-5))}`);
      if (!this.open) throw new Error('connection closed while waiting');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Message frames received so far, optionally for one topic or group. */
  messages(topic?: string, group?: string): Frame[] {
    return messagesOf(this.frames, topic, group);
  }

  /** Waits until at least `count` messages matching topic/group have arrived. */
  waitForMessages(count: number, topic?: string, group?: string, timeoutMs = 10_000): Promise<Frame[]> {
    return waitForCount(() => this.messages(topic, group), count, timeoutMs);
  }

  close(): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return Promise.resolve();
    return new Promise((resolve) => {
      this.ws.once('close', () => resolve());
      this.ws.close();
    });
  }
}
