import { z } from 'zod';
import { DEFAULTS, LIMITS } from './defaults.js';
import { type ErrorCode, MeshError } from './errors.js';
import { isReadableTopicName, isValidGroupName } from './names.js';
import type { PermissionClaim } from './permissions.js';

/**
 * Schemas for every frame a client may send. This is the one place inbound
 * frames are validated; both transports call {@link parseRequest}.
 */

const requestId = z.union([z.string().max(128), z.number()]);
const topic = z.string().refine(isReadableTopicName, 'invalid topic name (1-200 of A-Z a-z 0-9 _ - . :, not starting with - . :)');
const group = z.string().refine(isValidGroupName, 'invalid group name (1-100 of A-Z a-z 0-9 _ - . :, not starting with - . :)');
const offset = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);
const between = (min: number, max: number) => z.number().int().min(min).max(max);

const hello = z.strictObject({
  op: z.literal('hello'),
  id: requestId,
  client: z.string().max(200).optional(),
});

/**
 * Checks iteratively (no recursion, so hostile nesting cannot overflow the
 * stack) that `value` is plain JSON nested at most `maxDepth` levels.
 */
export function jsonProblem(value: unknown, maxDepth: number): string | undefined {
  const stack: Array<[unknown, number]> = [[value, 1]];
  while (stack.length > 0) {
    const [item, depth] = stack.pop()!;
    if (item === null || typeof item === 'string' || typeof item === 'boolean') continue;
    if (typeof item === 'number') {
      if (!Number.isFinite(item)) return 'must be a JSON value (numbers must be finite)';
      continue;
    }
    if (typeof item !== 'object') return 'must be a JSON value';
    if (depth > maxDepth) return `nests deeper than ${maxDepth} levels`;
    if (Array.isArray(item)) {
      for (const child of item) stack.push([child, depth + 1]);
      continue;
    }
    const proto = Object.getPrototypeOf(item);
    if (proto !== Object.prototype && proto !== null) return 'must be a JSON value (plain objects, arrays and scalars only)';
    for (const child of Object.values(item)) stack.push([child, depth + 1]);
  }
  return undefined;
}

const jsonData = z.unknown().superRefine((value, ctx) => {
  if (value === undefined) return;
  const problem = jsonProblem(value, LIMITS.dataDepth);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

/** A UTF-16 surrogate without its pair: stores would replace it, so two different keys could become one. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

const idempotencyKey = z
  .string()
  .min(1)
  .max(LIMITS.keyLength)
  .refine((key) => !LONE_SURROGATE.test(key), 'must be valid Unicode (it holds a lone surrogate)');

const publish = z.strictObject({
  op: z.literal('publish'),
  id: requestId,
  topic,
  data: jsonData,
  key: idempotencyKey.optional(),
});

const subscribe = z.strictObject({
  op: z.literal('subscribe'),
  id: requestId,
  topic,
  /** Fan-out: first offset to deliver. Group: start position of a group created by this call. */
  from: offset.optional(),
  /** Fan-out: the epoch `from` refers to; when it differs from the topic's, replay starts at the first retained offset. */
  epoch: z.string().max(64).optional(),
  group: group.optional(),
  prefetch: between(LIMITS.prefetch.min, LIMITS.prefetch.max).optional(),
  ackWait: between(LIMITS.ackWaitMs.min, LIMITS.ackWaitMs.max).optional(),
  maxDeliveries: between(LIMITS.maxDeliveries.min, LIMITS.maxDeliveries.max).optional(),
});

const unsubscribe = z.strictObject({
  op: z.literal('unsubscribe'),
  id: requestId,
  topic,
  group: group.optional(),
});

/** The epoch the delivery came with: the node refuses to settle another message that took over its offset. */
const deliveryEpoch = z.string().max(64).optional();

/** One delivery (`offset`), or many delivered with the same epoch (`offsets`): one frame, one store write, one reply. */
const ack = z
  .strictObject({
    op: z.literal('ack'),
    id: requestId,
    topic,
    group,
    offset: offset.optional(),
    offsets: z.array(offset).min(1).max(LIMITS.ackOffsets).optional(),
    epoch: deliveryEpoch,
  })
  .refine((frame) => (frame.offset === undefined) !== (frame.offsets === undefined), "give 'offset' or 'offsets', one of them");

const nack = z.strictObject({
  op: z.literal('nack'),
  id: requestId,
  topic,
  group,
  offset,
  delay: between(LIMITS.nackDelayMs.min, LIMITS.nackDelayMs.max).optional(),
  epoch: deliveryEpoch,
});

const history = z.strictObject({
  op: z.literal('history'),
  id: requestId,
  topic,
  from: offset.optional(),
  limit: between(1, DEFAULTS.historyMaxLimit).optional(),
});

const ping = z.strictObject({ op: z.literal('ping'), id: requestId });

/** Replaces the connection's token (same `sub`) before the old one expires. */
const auth = z.strictObject({
  op: z.literal('auth'),
  id: requestId,
  token: z.string().min(1).max(LIMITS.tokenLength),
});

const schemas = { hello, publish, subscribe, unsubscribe, ack, nack, history, ping, auth } as const;

export type RequestOp = keyof typeof schemas;
export const REQUEST_OPS = Object.keys(schemas) as RequestOp[];

export type HelloRequest = z.infer<typeof hello>;
export type PublishRequest = z.infer<typeof publish>;
export type SubscribeRequest = z.infer<typeof subscribe>;
export type UnsubscribeRequest = z.infer<typeof unsubscribe>;
export type AckRequest = z.infer<typeof ack>;
export type NackRequest = z.infer<typeof nack>;
export type HistoryRequest = z.infer<typeof history>;
export type PingRequest = z.infer<typeof ping>;
export type AuthRequest = z.infer<typeof auth>;
export type Request =
  | HelloRequest
  | PublishRequest
  | SubscribeRequest
  | UnsubscribeRequest
  | AckRequest
  | NackRequest
  | HistoryRequest
  | PingRequest
  | AuthRequest;
export type RequestId = z.infer<typeof requestId>;

function isRequestOp(op: unknown): op is RequestOp {
  return typeof op === 'string' && Object.hasOwn(schemas, op);
}

/** Unknown fields an error message names at most. */
const MAX_NAMED_FIELDS = 5;

function describe(issue: z.core.$ZodIssue, frame: Record<string, unknown>): string {
  const path = issue.path.map(String).join('.');
  if (issue.code === 'unrecognized_keys') {
    // Named, but never echoed unbounded: a hostile frame may carry thousands of long keys.
    const named = issue.keys.slice(0, MAX_NAMED_FIELDS).map((k) => `'${k.length > 64 ? `${k.slice(0, 64)}…` : k}'`);
    const more = issue.keys.length > MAX_NAMED_FIELDS ? ` and ${issue.keys.length - MAX_NAMED_FIELDS} more` : '';
    return `unknown field${issue.keys.length > 1 ? 's' : ''} ${named.join(', ')}${more}`;
  }
  if (issue.path.length === 1 && frame[path] === undefined) return `'${path}' is required`;
  return path ? `'${path}': ${issue.message}` : issue.message;
}

/** The request id of a frame that may be invalid, so its error can still be correlated. */
export function requestIdOf(frame: unknown): RequestId | null {
  if (frame === null || typeof frame !== 'object') return null;
  const parsed = requestId.safeParse((frame as Record<string, unknown>).id);
  return parsed.success ? parsed.data : null;
}

/** The op of a frame that may be invalid when it names a known request, else 'unknown' (metrics never carry a client's string). */
export function requestOpOf(frame: unknown): RequestOp | 'unknown' {
  if (frame === null || typeof frame !== 'object') return 'unknown';
  const op = (frame as Record<string, unknown>).op;
  return isRequestOp(op) ? op : 'unknown';
}

/**
 * Validates a decoded frame. Throws a `bad_request` MeshError naming the first
 * problem; never returns a partially valid request.
 */
export function parseRequest(frame: unknown): Request {
  if (frame === null || typeof frame !== 'object' || Array.isArray(frame)) {
    throw new MeshError('bad_request', 'a frame must be a JSON object');
  }
  const op = (frame as Record<string, unknown>).op;
  if (op === undefined) throw new MeshError('bad_request', "'op' is required");
  if (!isRequestOp(op)) {
    // Named only when it is a short scalar: a hostile op (deeply nested, huge) must cost nothing to describe.
    const named = (typeof op === 'string' && op.length <= 32) || typeof op === 'number' ? JSON.stringify(op) : `(a ${Array.isArray(op) ? 'array' : typeof op})`;
    throw new MeshError('bad_request', `unknown op ${named}; expected one of ${REQUEST_OPS.join(', ')}`);
  }
  const result = schemas[op].safeParse(frame);
  if (!result.success) {
    const first = result.error.issues[0];
    throw new MeshError('bad_request', first ? describe(first, frame as Record<string, unknown>) : 'invalid frame');
  }
  return result.data as Request;
}

// ---- Frames sent by the server -------------------------------------------------

export interface OkFrame {
  op: 'ok';
  id: RequestId;
  [field: string]: unknown;
}

export interface ErrorFrame {
  op: 'error';
  id: RequestId | null;
  code: string;
  message: string;
  /** With `rate_limited`: how long to wait before trying again, in ms. */
  retryAfterMs?: number;
}

export interface MessageFrame {
  op: 'message';
  topic: string;
  offset: number;
  epoch: string;
  ts: number;
  data: unknown;
  key?: string;
  group?: string;
  delivery?: number;
}

/**
 * Sent when the node is shutting down: reconnect to one of `nodes` (public
 * URLs of the other live nodes; empty when there is none). The node finishes
 * requests already received, then closes the connection.
 */
export interface MoveFrame {
  op: 'move';
  reason: 'draining';
  nodes: string[];
}

/**
 * The topic's log lost messages this subscription had already delivered (a
 * Redis failover without replicated acknowledgements) and continues under a
 * new epoch: offsets `missing.from`..`missing.to` now hold other messages,
 * which follow, from offset `from`.
 */
export interface ResetFrame {
  op: 'reset';
  topic: string;
  epoch: string;
  from: number;
  missing: { from: number; to: number };
}

export type ServerFrame = OkFrame | ErrorFrame | MessageFrame | MoveFrame | ResetFrame;

// ---- Results of each request (the fields of its ok frame) ----------------------

/** Who the connection acts as. */
export interface AuthInfo {
  /** The token's subject; null on a node without authentication (anonymous, everything allowed). */
  sub: string | null;
  /** When the token expires (ms since the Unix epoch); null when it does not. */
  expiresAt: number | null;
  permissions: PermissionClaim;
}

/** Limits of the node that a client should respect (docs/security.md). */
export interface ClientLimits {
  maxMessageBytes: number;
  dedupeWindowMs: number;
  /** Fan-out subscriptions and group memberships one connection may hold. */
  maxSubscriptions: number;
  /** Requests one connection may have unanswered at once. */
  maxInflight: number;
  /** Publishes per second one connection may send (sustained; bursts up to as many at once). */
  publishRate: number;
}

export interface HelloResult {
  node: string;
  version: string;
  protocol: number;
  nodes: string[];
  limits: ClientLimits;
  auth: AuthInfo;
}

/** Result of `auth`: the connection now acts with the new token. */
export interface AuthResult {
  sub: string;
  expiresAt: number | null;
  permissions: PermissionClaim;
}

export interface PublishResult {
  offset: number;
  epoch: string;
  ts: number;
  duplicate: boolean;
}

export interface SubscribeResult {
  epoch: string;
  /** First retained offset (last + 1 when nothing is retained). */
  first: number;
  /** Last offset ever assigned in this topic (0 when none). */
  last: number;
  /**
   * False when the subscription cannot continue exactly where the client
   * asked: offsets no longer retained, or lost with an earlier epoch; see
   * `missing`.
   */
  recovered: boolean;
  /**
   * Offsets the client will not get as it knew them: removed by retention,
   * or lost (the log is behind what the client saw, or was replaced): those
   * offsets hold other messages now, delivered from `from`.
   */
  missing?: { from: number; to: number; reason: 'retention' | 'epoch' };
  /** First offset this subscription delivers (fan-out only). */
  from?: number;
  group?: string;
  prefetch?: number;
  ackWait?: number;
  maxDeliveries?: number;
}

/**
 * Result of `ack`: empty for one `offset` (an offset not settled is an
 * error reply); for `offsets`, how many were settled and why each other
 * one was not (`not_found`: not leased to this member, or lost).
 */
export interface AckResult {
  acked?: number;
  failed?: Array<{ offset: number; code: ErrorCode; message: string }>;
}

export interface HistoryResult {
  epoch: string;
  first: number;
  last: number;
  messages: MessageFrame[];
}

export interface PingResult {
  /** Server time, ms since the epoch. */
  ts: number;
}

/** The result of a request whose ok frame carries nothing but `op` and `id`. */
export type EmptyResult = Record<never, never>;

/** The result (the fields of the ok frame besides `op` and `id`) of each request op. */
export interface RequestResults {
  hello: HelloResult;
  publish: PublishResult;
  subscribe: SubscribeResult;
  unsubscribe: EmptyResult;
  ack: AckResult;
  nack: EmptyResult;
  history: HistoryResult;
  ping: PingResult;
  auth: AuthResult;
}

/** The request of op `Op`. */
export type RequestOf<Op extends RequestOp> = Extract<Request, { op: Op }>;
/**
 * The request of op `Op` without its `id`: what a client hands to whatever
 * numbers its requests. (The `{ op: Op }` part lets a generic function infer
 * `Op` from the frame it is given.)
 */
export type RequestBody<Op extends RequestOp = RequestOp> = (Op extends RequestOp ? Omit<RequestOf<Op>, 'id'> : never) & { op: Op };
/** The result of a request of op `Op`. */
export type ResultOf<Op extends RequestOp> = RequestResults[Op];

/** The protocol version hello reports; it grows by new ops and optional fields only. */
export const PROTOCOL_VERSION = 1;

/**
 * WebSocket close codes a node closes connections with (docs/protocol.md).
 * Errors never close a connection; only these do.
 */
export const CLOSE_CODES = {
  /** A frame larger than the frame limit. */
  tooBig: 1009,
  /** The node is draining: reconnect to one of the nodes of the `move` frame. */
  draining: 1012,
  /** The token expired without a refresh: reconnect with a new one. */
  tokenExpired: 4001,
  /** A frame was started and not finished within the frame timeout. */
  frameTimeout: 4002,
  /** The client does not read: more was queued for it than the node keeps. */
  tooSlow: 4008,
} as const;
