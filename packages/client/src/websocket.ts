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
