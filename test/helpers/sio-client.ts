import { io, type ManagerOptions, type Socket, type SocketOptions } from 'socket.io-client';
import { type Frame, messagesOf, waitForCount } from './frames.js';

/**
 * The Socket.IO counterpart of RawClient: each request is an event named by
 * its op, with the reply in the acknowledgement. Same surface as RawClient so
 * one behaviour suite runs over both transports.
 */
export class SioClient {
  readonly frames: Frame[] = [];
  private nextId = 1;

  private constructor(readonly socket: Socket) {
    socket.on('message', (frame: Frame) => this.frames.push(frame));
  }

  static connect(url: string, options: Partial<ManagerOptions & SocketOptions> = {}): Promise<SioClient> {
    return new Promise((resolve, reject) => {
      const socket = io(url, { transports: ['websocket'], reconnection: false, forceNew: true, ...options });
      socket.once('connect', () => resolve(new SioClient(socket)));
      socket.once('connect_error', reject);
    });
  }

  get open(): boolean {
    return this.socket.connected;
  }

  async request(frame: Record<string, unknown>): Promise<Frame> {
    const { op, id: givenId, ...payload } = frame;
    const id = (givenId as number | undefined) ?? this.nextId++;
    const reply = (await this.socket.timeout(10_000).emitWithAck(op as string, payload)) as Frame;
    const full = { ...reply, id } as Frame;
    this.frames.push(full);
    return full;
  }

  async ok(frame: Record<string, unknown>): Promise<Frame> {
    const reply = await this.request(frame);
    if (reply.op !== 'ok') throw new Error(`expected ok for ${JSON.stringify(frame)}, got ${JSON.stringify(reply)}`);
    return reply;
  }

  async waitFor(match: (frame: Frame) => boolean, timeoutMs = 10_000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.frames.find(match);
      if (hit) return hit;
      if (Date.now() > deadline) throw new Error(`timed out; frames so far: ${JSON.stringify(this.frames.slice(-5))}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
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

  async close(): Promise<void> {
    this.socket.disconnect();
  }
}

export type ProtocolClient = Pick<SioClient, 'request' | 'ok' | 'waitFor' | 'messages' | 'waitForMessages' | 'close' | 'frames'>;
