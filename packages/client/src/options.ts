import { DEFAULTS, MeshError } from '@meshmq/shared';
import { BACKOFF_DEFAULTS, type BackoffOptions } from './backoff.js';
import type { TokenOption } from './token.js';
import type { WebSocketConstructor } from './websocket.js';

export interface MeshClientOptions {
  /** Base URL of a node: `http(s)://host:port` or `ws(s)://host:port[/path]`; `/ws` is added when no path is given. */
  url?: string;
  /**
   * Several nodes. The client starts at a random one, to spread load, and
   * tries the others when it fails. In a browser, with neither `url` nor
   * `urls`, the page's own origin is used.
   */
  urls?: string[];
  /**
   * The access token (a JWT) for nodes that require one: a string, or a
   * function returning one (or a promise of one). A function is called
   * before every connection attempt and, before the connection's token
   * expires, for a new one, which the connection switches to without
   * reconnecting (see the README). With the `ws` package (Node's default)
   * the token is sent in an `Authorization: Bearer` header; with a browser's
   * or a given `WebSocket`, as the `token` query parameter of the URL.
   * Default: none.
   */
  token?: TokenOption;
  /** Delay between reconnect rounds. Default `{ initialDelayMs: 100, maxDelayMs: 5000, jitter: 0.5 }`. */
  reconnect?: BackoffOptions;
  /**
   * How long a request may take, queued while disconnected, sent again
   * after answers such as `unavailable` (see the README, "Failures and
   * retries") and in flight, before it fails: with `maybe_stored` if a
   * publish, ack or nack may have taken effect, else with the code of the
   * node's last answer or `unavailable`. Keep it below the broker's dedupe
   * window (2 minutes) so that a re-sent publish can never be stored twice.
   * Default 10000.
   */
  requestTimeoutMs?: number;
  /** How long one connection attempt (open and hello) may take. Default 10000. */
  connectTimeoutMs?: number;
  /**
   * Idle time after which the client pings the server; a connection idle for
   * twice this long is considered dead and replaced. 0 disables. Default 10000.
   */
  heartbeatMs?: number;
  /** Requests that may wait for a connection; more fail at once with `unavailable`. Default 1000. */
  offlineQueueLimit?: number;
  /** Add the node URLs each hello reports to the URLs to try. Default true. */
  discoverNodes?: boolean;
  /** Sent in hello, for the server's logs. Default `meshmq-js`. */
  name?: string;
  /** WebSocket implementation. Default: the global one in browsers, the `ws` package in Node. */
  WebSocket?: WebSocketConstructor;
}

export interface ResolvedOptions {
  urls: string[];
  token: TokenOption | undefined;
  reconnect: Required<BackoffOptions>;
  requestTimeoutMs: number;
  connectTimeoutMs: number;
  heartbeatMs: number;
  offlineQueueLimit: number;
  discoverNodes: boolean;
  name: string;
  WebSocket: WebSocketConstructor | undefined;
}

export const CLIENT_DEFAULTS = {
  requestTimeoutMs: 10_000,
  connectTimeoutMs: 10_000,
  heartbeatMs: 10_000,
  offlineQueueLimit: 1000,
} as const;

function positive(name: string, value: number | undefined, fallback: number, allowZero = false): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value < 0 || (!allowZero && value === 0)) {
    throw new MeshError('bad_request', `option '${name}' must be a ${allowZero ? 'non-negative' : 'positive'} number, got ${value}`);
  }
  return value;
}

export function resolveOptions(options: MeshClientOptions): ResolvedOptions {
  const urls = [...(options.url === undefined ? [] : [options.url]), ...(options.urls ?? [])];
  const origin = (globalThis as { location?: { origin?: string } }).location?.origin;
  if (urls.length === 0 && origin && origin !== 'null') urls.push(origin);
  const requestTimeoutMs = positive('requestTimeoutMs', options.requestTimeoutMs, CLIENT_DEFAULTS.requestTimeoutMs);
  if (requestTimeoutMs >= DEFAULTS.dedupeWindowMs) {
    throw new MeshError('bad_request', `option 'requestTimeoutMs' must be below the dedupe window of ${DEFAULTS.dedupeWindowMs} ms`);
  }
  return {
    urls,
    token: options.token,
    reconnect: {
      initialDelayMs: positive('reconnect.initialDelayMs', options.reconnect?.initialDelayMs, BACKOFF_DEFAULTS.initialDelayMs),
      maxDelayMs: positive('reconnect.maxDelayMs', options.reconnect?.maxDelayMs, BACKOFF_DEFAULTS.maxDelayMs),
      jitter: positive('reconnect.jitter', options.reconnect?.jitter, BACKOFF_DEFAULTS.jitter, true),
    },
    requestTimeoutMs,
    connectTimeoutMs: positive('connectTimeoutMs', options.connectTimeoutMs, CLIENT_DEFAULTS.connectTimeoutMs),
    heartbeatMs: positive('heartbeatMs', options.heartbeatMs, CLIENT_DEFAULTS.heartbeatMs, true),
    offlineQueueLimit: positive('offlineQueueLimit', options.offlineQueueLimit, CLIENT_DEFAULTS.offlineQueueLimit, true),
    discoverNodes: options.discoverNodes ?? true,
    name: options.name ?? 'meshmq-js',
    WebSocket: options.WebSocket,
  };
}
