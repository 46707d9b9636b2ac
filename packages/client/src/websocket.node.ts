import WebSocket from 'ws';
import type { WebSocketConstructor } from './websocket.js';

/**
 * Node (and any runtime resolving the `default` condition): the `ws` package,
 * since Node 20 has no global WebSocket.
 */
export function defaultWebSocket(): WebSocketConstructor | undefined {
  return WebSocket as unknown as WebSocketConstructor;
}
