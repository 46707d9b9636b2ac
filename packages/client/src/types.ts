import type { AuthInfo, ErrorCode, MeshError, RequestOp } from '@meshmq/shared';

/** One message of a topic, as handed to a subscription handler. */
export interface Message<T = unknown> {
  topic: string;
  /** Position in the topic: 1, 2, 3… without gaps, within one epoch. */
  offset: number;
  /** Identity of the topic's log; offsets of different epochs are unrelated. */
  epoch: string;
  /** Time the broker stored the message, ms since the Unix epoch. */
  ts: number;
  data: T;
  /** The idempotency key it was published with. */
  key?: string;
}

/** A message delivered to a consumer-group member. */
export interface GroupMessage<T = unknown> extends Message<T> {
  group: string;
  /** 1 on first delivery, 2 on the first redelivery, and so on. */
  delivery: number;
  /**
   * Settles the message. While the node cannot (`unavailable`, or
   * `maybe_stored`: its storage did not answer), the ack is sent again on
   * the same connection within `requestTimeoutMs` (see the README,
   * "Failures and retries"). Rejects with `unavailable` when the connection
   * it arrived on was lost before the ack went out (the server released it;
   * it will be redelivered) or the node refused it until the timeout; with
   * `maybe_stored` when an ack went out but its outcome stayed unknown (no
   * answer, or a retry found the offset no longer leased to this member:
   * the first was applied, or the lease had ended and the message is
   * redelivered); and with `not_found` when its lease had already ended or
   * another message took over its offset.
   */
  ack(): Promise<void>;
  /** Hands the message back for redelivery after `delayMs` (default 0). Same failures as ack. */
  nack(delayMs?: number): Promise<void>;
}

/** Offsets a subscription will never see. */
export interface Gap {
  topic: string;
  /** The epoch the subscription continues in. */
  epoch: string;
  /** First missing offset. */
  from: number;
  /** Last missing offset; `to < from` when nothing of the current log is missing. */
  to: number;
  /**
   * - `retention`: the messages were removed by retention before they were read;
   * - `epoch`: the topic's log was replaced (its data was lost or reset); the
   *   subscription restarts at the first retained offset of the new log;
   * - `skipped`: the server sent an offset past the next expected one.
   */
  reason: 'retention' | 'epoch' | 'skipped';
}

/** A request the SDK sends again after the node refused it for now. */
export interface RetryInfo {
  op: RequestOp;
  topic: string;
  /** The node's answer: `unavailable`, `maybe_stored` (publish, ack, nack, subscribe) or `rate_limited` (publish, history). */
  code: ErrorCode;
  /** 1 for the first retry of this request. */
  attempt: number;
  /** The wait before it goes again. */
  delayMs: number;
  /** A publish's idempotency key. */
  key?: string;
  /** The group of an ack, a nack or a group join. */
  group?: string;
  /** The offset of an ack or nack. */
  offset?: number;
  /** The offsets of an ack of many (the acks of one turn, sent in one frame). */
  offsets?: number[];
}

export type ConnectionState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'closed';

export interface ClientEvents {
  [event: string]: unknown[];
  /** Every change of `client.state`. */
  state: [state: ConnectionState];
  /** A connection is established and greeted; `reconnect` is false for the first one. */
  connected: [info: { url: string; node: string; version: string; reconnect: boolean }];
  /** An established connection was lost (or closed by the client). */
  disconnected: [info: { url: string; code: number; reason: string }];
  /**
   * The node is shutting down and asked the client to move to one of `nodes`.
   * Requests wait until the next connection; `disconnected` and `connected` follow.
   */
  moving: [info: { url: string; nodes: string[] }];
  /**
   * A connection attempt failed; the client goes on trying. A node that
   * refused the token gives `unauthorized` with its reason (in Node; a
   * browser cannot see why a handshake was refused: `unavailable`).
   */
  connectFailed: [info: { url: string; error: MeshError }];
  /** Who the connection acts as changed: a new connection, or its token was refreshed. */
  auth: [auth: AuthInfo];
  /**
   * After a reconnect, every subscription and group membership was restored.
   * `recovered` is false when some subscription has a gap (see `gaps`).
   */
  resumed: [info: { url: string; subscriptions: number; consumers: number; gaps: Gap[]; recovered: boolean }];
  /** A subscription will never see some offsets. */
  gap: [gap: Gap];
  /**
   * The node refused a request for now and the SDK sends it again after
   * `delayMs`, within `requestTimeoutMs` (see the README, "Failures and
   * retries"). Nothing to do: for logs and metrics.
   */
  retry: [info: RetryInfo];
  /**
   * Failures with nobody else to report to: a handler that threw, an auto-ack
   * that failed, a subscription the server ended, a token refresh that
   * failed, a token given as a string that expired. Without a listener they
   * are logged with console.error.
   */
  error: [error: MeshError];
}
