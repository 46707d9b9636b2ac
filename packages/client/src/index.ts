/**
 * MeshMQ client SDK for browsers and Node.
 *
 * ```ts
 * const client = new MeshClient({ url: 'http://127.0.0.1:8080', token: () => fetchToken() });
 * await client.subscribe('orders', (m) => console.log(m.offset, m.data));
 * const { offset } = await client.publish('orders', { sku: 'A-1' });
 * ```
 */
export { MeshClient, type PublishOptions, type HistoryOptions, type HistoryPage } from './client.js';
export type { MeshClientOptions } from './options.js';
export { CLIENT_DEFAULTS } from './options.js';
export type { TokenOption } from './token.js';
export { REFRESH_MARGIN_MS, REFRESH_MARGIN_SHARE, REFRESH_ATTEMPTS } from './token-refresh.js';
export { CLOSE_TOKEN_EXPIRED } from './connector.js';
export type { BackoffOptions } from './backoff.js';
export type { Subscription, SubscribeOptions, MessageHandler } from './subscription.js';
export type { GroupConsumer, ConsumeOptions, GroupHandler } from './group-consumer.js';
export type { Message, GroupMessage, Gap, ConnectionState, ClientEvents, RetryInfo } from './types.js';
export { RETRY_BACKOFF } from './request-tracker.js';
export type { WebSocketLike, WebSocketConstructor } from './websocket.js';
export { toWebSocketUrl } from './urls.js';
export { MeshError, ERROR_CODES, RETRYABLE_CODES, isErrorCode, isRetryable, DEFAULTS, LIMITS } from '@meshmq/shared';
export type {
  ErrorCode,
  MeshErrorOptions,
  PublishResult,
  SubscribeResult,
  HistoryResult,
  HelloResult,
  AuthInfo,
  PermissionClaim,
  ClientLimits,
  MessageFrame,
} from '@meshmq/shared';
