import type { ServerFrame } from '@meshmq/shared';

/** What the core needs from a transport's connection. */
export interface Connection {
  /** Transport name, for logs and stats: `ws` or `socket.io`. */
  readonly transport: string;
  readonly remoteAddress: string;
  send(frame: ServerFrame): void;
  /** Bytes queued and not yet written to the socket. */
  bufferedAmount(): number;
  close(code: number, reason: string): void;
}
