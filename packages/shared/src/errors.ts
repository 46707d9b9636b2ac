/**
 * Error codes carried by `{"op":"error"}` frames and by every error the SDK
 * rejects with. The set is closed: clients may switch on it.
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
  'internal',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && (ERROR_CODES as readonly string[]).includes(value);
}

/** The one error type of MeshMQ, on the server and in the SDK alike. */
export class MeshError extends Error {
  readonly code: ErrorCode;
  /** With `rate_limited`: how long to wait before trying again, in ms. */
  readonly retryAfterMs: number | undefined;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; retryAfterMs?: number }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'MeshError';
    this.code = code;
    this.retryAfterMs = options?.retryAfterMs;
  }

  /** Wraps anything thrown into a MeshError; unknown failures become `internal`. */
  static from(err: unknown): MeshError {
    if (err instanceof MeshError) return err;
    const message = err instanceof Error ? err.message : String(err);
    return new MeshError('internal', message, { cause: err });
  }
}
