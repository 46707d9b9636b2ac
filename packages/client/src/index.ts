/**
 * MeshMQ client SDK for browsers and Node.
 *
 * ```ts
 * const client = new MeshClient({ url: 'http://127.0.0.1:8080', token: () => fetchToken() });
 * await client.subscribe('orders', (m) => console.log(m.offset, m.data));
 * const { offset } = await client.publish('orders', { sku: 'A-1' });
 * ```
 */

export type {
  AuthInfo,
  ClientLimits,
  ErrorCode,
  HelloResult,
  HistoryResult,
  MeshErrorOptions,
  MessageFrame,
  PermissionClaim,
  PublishResult,
  SubscribeResult,
} from '@meshmq/shared';
export { DEFAULTS, ERROR_CODES, isErrorCode, isRetryable, LIMITS, MeshError, RETRYABLE_CODES } from '@meshmq/shared';
export type { BackoffOptions } from './backoff.js';
export { type HistoryOptions, type HistoryPage, MeshClient, type PublishOptions } from './client.js';
export { CLOSE_TOKEN_EXPIRED } from './connector.js';
export type { ConsumeOptions, GroupConsumer, GroupHandler } from './group-consumer.js';
export type { MeshClientOptions } from './options.js';
export { CLIENT_DEFAULTS } from './options.js';
export { RETRY_BACKOFF } from './request-tracker.js';
export type { MessageHandler, SubscribeOptions, Subscription } from './subscription.js';
export type { TokenOption } from './token.js';
export { REFRESH_ATTEMPTS, REFRESH_MARGIN_MS, REFRESH_MARGIN_SHARE } from './token-refresh.js';
export type { ClientEvents, ConnectionState, Gap, GroupMessage, Message, RetryInfo } from './types.js';
export { toWebSocketUrl } from './urls.js';
export type { WebSocketConstructor, WebSocketLike } from './websocket.js';
