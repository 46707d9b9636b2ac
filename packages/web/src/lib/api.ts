import { type ApiErrorBody, type ErrorCode, isErrorCode } from '@meshmq/shared';
import { session } from './auth.svelte.js';

/** An error answered by the node (`{error: {code, message}}`) or a failure to reach it. */
export class ApiError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly status = 0,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** The node's own words for an error, never a stack trace. */
export function errorText(err: unknown): string {
  if (err instanceof ApiError) return err.message;
  if (err && typeof err === 'object' && 'message' in err && typeof err.message === 'string') return err.message;
  return String(err);
}

export function errorCode(err: unknown): ErrorCode | undefined {
  if (err && typeof err === 'object' && 'code' in err && isErrorCode(err.code)) return err.code;
  return undefined;
}

/** Calls the admin API of the node that served the console. */
export async function api<T>(path: string, init: { method?: string; body?: unknown; signal?: AbortSignal } = {}): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  // A token the node would refuse is not sent: the console asks for another instead.
  const token = session.mode === 'anonymous' ? null : session.usableToken();
  if (token !== null) headers.authorization = `Bearer ${token}`;
  else if (session.mode === 'token') throw new ApiError('unauthorized', session.prompt || 'sign in with a token first', 401);
  let body: string | undefined;
  // The node takes writes only as JSON (a cross-site form cannot send it), with a body or without.
  if (init.method !== undefined && init.method !== 'GET') headers['content-type'] = 'application/json';
  if (init.body !== undefined) body = JSON.stringify(init.body);
  let res: Response;
  try {
    res = await fetch(path, { method: init.method ?? 'GET', headers, body, signal: init.signal, cache: 'no-store' });
  } catch (err) {
    if ((err as Error).name === 'AbortError') throw err;
    throw new ApiError('unavailable', 'cannot reach the node (network error); retrying');
  }
  let parsed: unknown;
  try {
    parsed = await res.json();
  } catch {
    throw new ApiError('internal', `the node answered ${res.status} without JSON`, res.status);
  }
  if (!res.ok) {
    const error = (parsed as Partial<ApiErrorBody> | null)?.error;
    const code = isErrorCode(error?.code) ? error.code : 'internal';
    const message = error?.message ?? `HTTP ${res.status}`;
    if (code === 'unauthorized' && token !== null) session.refusedByNode(token, message);
    throw new ApiError(code, message, res.status);
  }
  return parsed as T;
}

/**
 * Why the node refuses `token`, from an admin API request with it: its 401
 * message, or null when it does not refuse it (a browser cannot see why a
 * WebSocket handshake failed; the admin API says). A token without the admin
 * permission gets 403 here, which is not a refusal.
 */
export async function refusalOf(token: string): Promise<string | null> {
  try {
    const res = await fetch('/api/nodes', { headers: { accept: 'application/json', authorization: `Bearer ${token}` }, cache: 'no-store' });
    if (res.status !== 401) return null;
    const body = (await res.json().catch(() => null)) as Partial<ApiErrorBody> | null;
    return body?.error?.message ?? 'unauthorized';
  } catch {
    return null;
  }
}

export const enc = encodeURIComponent;

/** Where a page of a log starts: before an offset (newest first), from one, or the newest. */
export interface PageCursor {
  before?: number;
  from?: number;
}

/** Query string of a page request. */
export function pageQuery(at: PageCursor, limit: number): URLSearchParams {
  const query = new URLSearchParams({ limit: String(limit) });
  if (at.before !== undefined) query.set('before', String(at.before));
  if (at.from !== undefined) query.set('from', String(at.from));
  return query;
}

/**
 * Runs loads so that only the newest one's outcome is applied: a slow answer
 * to an older request never overwrites a newer one.
 */
export function newestOnly(): <T>(load: () => Promise<T>, apply: (value: T) => void, fail: (err: unknown) => void) => Promise<void> {
  let seq = 0;
  return async (load, apply, fail) => {
    const mine = ++seq;
    try {
      const value = await load();
      if (mine === seq) apply(value);
    } catch (err) {
      if (mine === seq) fail(err);
    }
  };
}
