/**
 * Error codes carried by `{"op":"error"}` frames, by admin API errors and by
 * every error the SDK rejects with. What each means for the caller (see the
 * error table of docs/protocol.md):
 *
 * - `unavailable`, `rate_limited`: nothing was stored; the same request may
 *   succeed later.
 * - `maybe_stored`: the request reached the storage but its outcome is
 *   unknown; it may have taken effect. Send it again with the same
 *   idempotency key: the answer says what happened (`duplicate: true` when
 *   the first one was stored).
 * - every other code is final: the same request fails the same way.
 *
 * Clients should treat a code they do not know as `internal`.
 */
export const ERROR_CODES = [
  'bad_request',
  'unauthorized',
  'forbidden',
  'not_found',
  'payload_too_large',
  'rate_limited',
  'limit_exceeded',
  'unavailable',
  'maybe_stored',
  'internal',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/** Codes after which sending the same request again (with the same idempotency key) may succeed. */
export const RETRYABLE_CODES: readonly ErrorCode[] = ['unavailable', 'rate_limited', 'maybe_stored'];

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && (ERROR_CODES as readonly string[]).includes(value);
}

export interface MeshErrorOptions {
  cause?: unknown;
  /** The idempotency key of the publish that failed, to send it again with. */
  key?: string;
  /** With `rate_limited`: how long to wait before trying again, in ms. */
  retryAfterMs?: number;
}

/** The one error type of MeshMQ, on the server and in the SDK alike. */
export class MeshError extends Error {
  readonly code: ErrorCode;
  /**
   * The idempotency key of the publish this error fails, when it is one (the
   * SDK sets it on every publish rejection): after `maybe_stored`, publish
   * again with this key to find out whether the first one was stored.
   */
  readonly key?: string;
  /** With `rate_limited`: how long to wait before trying again, in ms. */
  readonly retryAfterMs?: number;

  constructor(code: ErrorCode, message: string, options?: MeshErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'MeshError';
    this.code = code;
    if (options?.key !== undefined) this.key = options.key;
    if (options?.retryAfterMs !== undefined) this.retryAfterMs = options.retryAfterMs;
  }

  /** Wraps anything thrown into a MeshError; unknown failures become `internal`. */
  static from(err: unknown): MeshError {
    if (err instanceof MeshError) return err;
    return new MeshError('internal', describeError(err), { cause: err });
  }
}

/**
 * True when sending the same request again may succeed: `unavailable` and
 * `rate_limited` (nothing was stored), `maybe_stored` (send it with the same
 * idempotency key). Anything that is not a MeshError is not.
 */
export function isRetryable(err: unknown): boolean {
  return err instanceof MeshError && RETRYABLE_CODES.includes(err.code);
}

/**
 * A readable one-line description of anything thrown, never empty: the
 * message, else the error's `code` (Node system errors), else the
 * descriptions of an AggregateError's errors, else its class name.
 */
export function describeError(err: unknown): string {
  if (!(err instanceof Error)) {
    const text = typeof err === 'string' ? err : safeJson(err);
    return text || 'unknown error';
  }
  if (err.message) return err.message;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && code) return code;
  if (err instanceof AggregateError && err.errors.length > 0) {
    return [...new Set(err.errors.map((e: unknown) => describeError(e)))].join('; ');
  }
  const name = err.constructor?.name && err.constructor.name !== 'Error' ? err.constructor.name : err.name;
  return name ? `${name} (no message)` : 'unknown error';
}

function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
