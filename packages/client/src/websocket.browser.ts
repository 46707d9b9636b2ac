import { queryTokenOpener, type SocketOpener, type WebSocketConstructor } from './websocket.js';

/**
 * Browsers (the `browser` condition of `#websocket`): the global WebSocket,
 * looked up when a client is created. It cannot send headers, so the token
 * goes in the URL; nor does it tell why a handshake was refused.
 */
export function defaultOpener(): SocketOpener | undefined {
  return typeof globalThis.WebSocket === 'function' ? queryTokenOpener(globalThis.WebSocket as unknown as WebSocketConstructor) : undefined;
}
