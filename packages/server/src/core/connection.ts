import type { ServerFrame } from '@meshmq/shared';

/** What the core needs from a transport's connection. */
export interface Connection {
  /** Transport name, for logs and stats: `ws` or `socket.io`. */
  readonly transport: string;
  readonly remoteAddress: string;
  /**
   * Sends one frame. `encode`, when given, returns the frame's JSON text as
   * UTF-8 bytes, encoded once for all the connections a message fans out to.
   */
  send(frame: ServerFrame, encode?: () => Buffer): void;
  /** Bytes queued and not yet written to the socket. */
  bufferedAmount(): number;
  close(code: number, reason: string): void;
  /** Told when the connection starts and stops a fan-out subscription (Socket.IO puts it in a room). */
  joinTopic?(topic: string): void;
  leaveTopic?(topic: string): void;
}
