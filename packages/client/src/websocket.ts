import type { MeshError } from '@meshmq/shared';

/**
 * The part of the WebSocket API the SDK uses. The browser's WebSocket and the
 * `ws` package's WebSocket both provide it, as does any WHATWG-compatible
 * implementation passed as the `WebSocket` option.
 */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  /** Present on the `ws` package: drops the connection without a closing handshake. */
  terminate?: () => void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** readyState of an open socket, the same in every implementation. */
export const WS_OPEN = 1;

/** A socket being opened, and why the server refused its handshake once that is known. */
export interface OpeningSocket {
  socket: WebSocketLike;
  /**
   * The server's refusal of the handshake (its HTTP status and error body),
   * when the implementation lets the SDK read it; browsers do not.
   */
  refusal?: () => MeshError | undefined;
}

/** Opens a socket to `url` that presents `token`, if any, to the server. */
export type SocketOpener = (url: string, token: string | undefined) => OpeningSocket;

/**
 * Opens sockets with `WebSocket`, the token in the URL's `token` query
 * parameter: the WebSocket API has no way to set request headers.
 */
export function queryTokenOpener(WebSocket: WebSocketConstructor): SocketOpener {
  return (url, token) => ({ socket: new WebSocket(token === undefined ? url : withToken(url, token)) });
}

function withToken(url: string, token: string): string {
  const parsed = new URL(url);
  parsed.searchParams.set('token', token);
  return parsed.toString();
}
