import type { WebSocketConstructor } from './websocket.js';

/** Browsers (the `browser` condition of `#websocket`): the global WebSocket, looked up when a client is created. */
export function defaultWebSocket(): WebSocketConstructor | undefined {
  return typeof globalThis.WebSocket === 'function' ? (globalThis.WebSocket as unknown as WebSocketConstructor) : undefined;
}
