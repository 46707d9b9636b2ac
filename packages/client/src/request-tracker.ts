import {
  type ErrorCode,
  type ErrorFrame,
  isErrorCode,
  MeshError,
  type OkFrame,
  type Request,
  type RequestBody,
  type RequestOp,
  type ResultOf,
} from '@meshmq/shared';
import { Backoff, type BackoffOptions } from './backoff.js';
import type { Link } from './link.js';

/**
 * What happens to a request sent on a connection that drops before its reply:
 * - `resend`: it goes back to the queue and is sent again on the next
 *   connection (publish carries an idempotency key, history is a read);
 * - `reject`: it fails (ack, nack, ping; requests bound to one connection):
 *   with `maybe_stored` if it changes state, else with `unavailable`;
 * - `resolve`: it succeeds with an empty result (unsubscribe: the server
 *   dropped the subscription with the connection).
 */
export type DropPolicy = 'resend' | 'reject' | 'resolve';

/** Ops that change what the broker stores: once sent, a lost answer leaves their outcome unknown. */
const WRITES: ReadonlySet<RequestOp> = new Set<RequestOp>(['publish', 'ack', 'nack']);

/** Ops sent again, within their timeout, when the node answers `rate_limited`. */
const RETRIED_WHEN_LIMITED: ReadonlySet<RequestOp> = new Set<RequestOp>(['publish', 'history']);

/**
 * Ops sent again, within their timeout, when the node answers `unavailable`
 * (it did nothing: its storage is briefly down, say). Sending them twice is
 * harmless: a publish carries its idempotency key, history is a read, an
 * ack or nack of a lease already settled answers `not_found`, a subscribe
 * that failed left nothing on the node.
 */
const RETRIED_WHEN_UNAVAILABLE: ReadonlySet<RequestOp> = new Set<RequestOp>(['publish', 'history', 'ack', 'nack', 'subscribe']);

/** Ops sent again, within their timeout, when the node answers `maybe_stored` (the same ones, but reads never get it). */
const RETRIED_WHEN_MAYBE_STORED: ReadonlySet<RequestOp> = new Set<RequestOp>(['publish', 'ack', 'nack', 'subscribe']);

/** The wait after a `rate_limited` answer that names none. */
export const DEFAULT_RETRY_AFTER_MS = 100;

/**
 * The waits between sends of a request the node answered `unavailable` or
 * `maybe_stored`: 100 ms, doubling up to 1 s, each shortened by up to half
 * at random so that requests refused together do not all come back
 * together. Short, because the outages they ride through (a Redis restart
 * or failover) last seconds and every wait adds to the request's latency.
 */
export const RETRY_BACKOFF: Readonly<Required<BackoffOptions>> = { initialDelayMs: 100, maxDelayMs: 1000, jitter: 0.5 };

/** A request the node refused for now, going again. */
export interface Retry {
  request: RequestBody;
  /** The node's answer: `unavailable`, `maybe_stored` or `rate_limited`. */
  code: ErrorCode;
  /** 1 for the first retry of this request. */
  attempt: number;
  /** The wait before it goes again. */
  delayMs: number;
}

/**
 * Where a request is: waiting for a connection (`queued`), in a
 * connection's outbox waiting for room (`outbox`), or sent on it and not
 * answered (`sent`).
 */
type Stage = 'queued' | 'outbox' | 'sent';

interface Pending {
  id: number;
  frame: RequestBody;
  policy: DropPolicy;
  /** Bound requests are sent on one given link and never queued. */
  bound: boolean;
  stage: Stage;
  /** The link of the `outbox` and `sent` stages. */
  link: Link | undefined;
  /** A send of it may have taken effect: its connection was lost before the answer, or the node answered `maybe_stored`. */
  uncertain: boolean;
  /** The node's last answer that refused it for now, while it waits to go again. */
  refused: MeshError | undefined;
  /** Times it was sent again after such an answer. */
  retries: number;
  /** Waits between retries after `unavailable` and `maybe_stored`; made at the first. */
  backoff: Backoff | undefined;
  /** Time after which it fails (ms since the epoch). */
  deadline: number;
  resolve: (reply: OkFrame) => void;
  reject: (error: MeshError) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** Correlates requests with their replies, and owns their timeouts. */
export class RequestTracker {
  private nextId = 1;
  /** In creation order, which is the order queued requests are sent in. */
  private readonly pending = new Map<number, Pending>();

  /** Requests waiting for a connection. */
  get queued(): number {
    let count = 0;
    for (const p of this.pending.values()) if (p.stage === 'queued') count++;
    return count;
  }

  /**
   * Registers a request. Unless its reply arrives within `timeoutMs` of now,
   * however often it is sent, it fails: with `maybe_stored` if it changes
   * state and a send of it may have taken effect, else with the code of the
   * node's last refusal (`unavailable`, `rate_limited`), else with
   * `unavailable`.
   */
  create<Op extends RequestOp>(frame: RequestBody<Op>, policy: DropPolicy, timeoutMs: number, bound = false): { id: number; reply: Promise<ResultOf<Op>> } {
    const id = this.nextId++;
    const reply = new Promise<ResultOf<Op>>((resolve, reject) => {
      const timer = setTimeout(() => this.expire(id, timeoutMs), timeoutMs);
      this.pending.set(id, {
        id,
        frame,
        policy,
        bound,
        stage: 'queued',
        link: undefined,
        uncertain: false,
        refused: undefined,
        retries: 0,
        backoff: undefined,
        deadline: Date.now() + timeoutMs,
        resolve: (ok) => resolve(resultOf<Op>(ok)),
        reject,
        timer,
      });
    });
    return { id, reply };
  }

  /** The frame to send for request `id`, with its id; undefined if it is settled. */
  frameOf(id: number): Request | undefined {
    const p = this.pending.get(id);
    return p && { ...p.frame, id };
  }

  /** Request `id` waits in the outbox of `link`. */
  assign(id: number, link: Link): void {
    const p = this.pending.get(id);
    if (!p) return;
    p.stage = 'outbox';
    p.link = link;
  }

  /** True when request `id` waits in the outbox of `link`: it is still to be sent there. */
  isWaitingOn(id: number, link: Link): boolean {
    const p = this.pending.get(id);
    return p !== undefined && p.stage === 'outbox' && p.link === link;
  }

  markSent(id: number, link: Link): void {
    const p = this.pending.get(id);
    if (!p) return;
    p.stage = 'sent';
    p.link = link;
    p.refused = undefined;
  }

  /** Ids of queued (unsent, unbound) requests, oldest first. */
  queuedIds(): number[] {
    const ids: number[] = [];
    for (const p of this.pending.values()) if (p.stage === 'queued' && !p.bound) ids.push(p.id);
    return ids;
  }

  /**
   * When `frame` refuses a request sent on `from` for now, in a way that
   * sending it again may pass, and that fits in the request's timeout: puts
   * the request back in the outbox of `from` and says when it goes again.
   * That is `rate_limited` for publish and history (after the wait the node
   * names), and `unavailable` and `maybe_stored` for the ops of
   * RETRIED_WHEN_UNAVAILABLE and RETRIED_WHEN_MAYBE_STORED (after
   * RETRY_BACKOFF). Otherwise undefined: settle the frame.
   */
  retry(frame: ErrorFrame, from: Link): Retry | undefined {
    if (typeof frame.id !== 'number') return undefined;
    const p = this.pending.get(frame.id);
    if (p?.stage !== 'sent' || p.link !== from) return undefined;
    const { op } = p.frame;
    const error = errorOf(frame);
    let delayMs: number;
    if (error.code === 'rate_limited' && RETRIED_WHEN_LIMITED.has(op)) {
      delayMs = frame.retryAfterMs ?? DEFAULT_RETRY_AFTER_MS;
    } else if ((error.code === 'unavailable' && RETRIED_WHEN_UNAVAILABLE.has(op)) || (error.code === 'maybe_stored' && RETRIED_WHEN_MAYBE_STORED.has(op))) {
      p.backoff ??= new Backoff(RETRY_BACKOFF);
      delayMs = p.backoff.next();
    } else {
      return undefined;
    }
    // A send whose answer would come after the deadline would only turn a clear answer into `maybe_stored`.
    if (Date.now() + delayMs >= p.deadline) return undefined;
    if (error.code === 'maybe_stored') p.uncertain = true;
    p.stage = 'outbox';
    p.refused = error;
    p.retries++;
    return { request: p.frame, code: error.code, attempt: p.retries, delayMs };
  }

  /** Settles the request a reply frame answers; false when no request has that id. */
  settle(frame: OkFrame | ErrorFrame, from: Link): boolean {
    if (typeof frame.id !== 'number') return false;
    const p = this.pending.get(frame.id);
    // A reply can only answer a request sent on the same connection.
    if (p?.stage !== 'sent' || p.link !== from) return false;
    this.pending.delete(p.id);
    clearTimeout(p.timer);
    if (frame.op === 'ok') {
      p.resolve(p.uncertain ? okAfterUncertain(p, frame) : frame);
      return true;
    }
    const error = errorOf(frame);
    p.reject(p.uncertain ? afterUncertain(p, error) : error);
    return true;
  }

  reject(id: number, error: MeshError): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    p.reject(error);
  }

  /** Applies each request's drop policy to the requests waiting on or sent on `link`. */
  linkLost(link: Link): void {
    for (const p of [...this.pending.values()]) {
      if (p.link !== link) continue;
      const sent = p.stage === 'sent';
      if (sent) p.uncertain = true;
      if (p.policy === 'resend' && !p.bound) {
        p.stage = 'queued';
        p.link = undefined;
        continue;
      }
      if (p.policy === 'resolve') {
        this.pending.delete(p.id);
        clearTimeout(p.timer);
        p.resolve({ op: 'ok', id: p.id });
        continue;
      }
      const what = `the connection to ${link.url} was lost before '${p.frame.op}' was ${sent ? 'answered' : p.uncertain ? 'sent again' : 'sent'}`;
      this.reject(p.id, sent || p.uncertain ? unanswered(p, what) : new MeshError('unavailable', what));
    }
  }

  /**
   * Fails every request; used by close(). Requests already sent that change
   * state fail with `maybe_stored` instead of `error`'s code.
   */
  rejectAll(error: MeshError): void {
    for (const p of [...this.pending.values()]) {
      const unknown = (p.stage === 'sent' || p.uncertain) && WRITES.has(p.frame.op);
      this.reject(p.id, unknown ? unanswered(p, `${error.message}, and '${p.frame.op}' sent earlier was not answered`) : error);
    }
  }

  private expire(id: number, timeoutMs: number): void {
    const p = this.pending.get(id);
    if (!p) return;
    const { op } = p.frame;
    const key = op === 'publish' ? `; key '${p.frame.key}'` : '';
    if (p.stage === 'sent') {
      this.reject(id, unanswered(p, `no reply to '${op}' within ${timeoutMs} ms`));
      return;
    }
    if (p.uncertain) {
      const last = p.refused ? `; the node's last answer: ${p.refused.code} (${p.refused.message})` : '';
      this.reject(id, unanswered(p, `'${op}' was not confirmed within ${timeoutMs} ms${last}`));
      return;
    }
    if (p.refused) {
      const options = p.refused.retryAfterMs === undefined ? {} : { retryAfterMs: p.refused.retryAfterMs };
      const what = p.refused.code === 'rate_limited' ? 'rate limited' : `refused (${p.refused.code})`;
      this.reject(id, new MeshError(p.refused.code, `'${op}' was still ${what} after ${timeoutMs} ms${key}: ${p.refused.message}`, options));
      return;
    }
    const why = p.stage === 'outbox' ? 'the connection had as many requests unanswered as the node allows' : 'not connected';
    this.reject(id, new MeshError('unavailable', `'${op}' could not be sent within ${timeoutMs} ms: ${why}${key}`));
  }
}

/**
 * The error of a request a send of which may have taken effect, answered
 * `error` on a later send. "Nothing stored" (`unavailable`, `rate_limited`)
 * speaks for that send only. `not_found` to an ack or nack sent again is
 * what the first one leaves behind if it was applied (the lease is settled)
 * as much as what a lease that ended leaves: the SDK cannot tell which, so
 * it says `maybe_stored`, as for an answer lost.
 */
function afterUncertain(p: Pending, error: MeshError): MeshError {
  const { frame } = p;
  if (error.code === 'unavailable' || error.code === 'rate_limited') return unanswered(p, error.message);
  if (error.code === 'not_found' && (frame.op === 'ack' || frame.op === 'nack')) {
    return new MeshError(
      'maybe_stored',
      `'${frame.op}' of ${frame.op === 'ack' && frame.offsets ? `offsets ${frame.offsets.join(', ')}` : `offset ${frame.offset}`} may have been applied: an earlier send of it got no certain answer, and sending it again ` +
        `found the offset no longer leased to this member (${error.message}); if the earlier one was not applied, the lease had ended ` +
        'and the message is delivered again',
      { cause: error },
    );
  }
  return error;
}

/**
 * The answer to an ack of many `offsets` sent again after an uncertain send:
 * an offset it reports `not_found` may be one the earlier send settled, so,
 * as for an ack of one offset, it becomes `maybe_stored`.
 */
function okAfterUncertain(p: Pending, frame: OkFrame): OkFrame {
  const failed = (frame as { failed?: unknown }).failed;
  if (p.frame.op !== 'ack' || !Array.isArray(failed)) return frame;
  return {
    ...frame,
    failed: (failed as Array<{ offset: number; code: string; message: string }>).map((f) =>
      f.code === 'not_found'
        ? {
            offset: f.offset,
            code: 'maybe_stored',
            message: `ack of offset ${f.offset} may have been applied: an earlier send of it got no certain answer, and sending it again found the offset no longer leased to this member (${f.message}); if the earlier one was not applied, the lease had ended and the message is delivered again`,
          }
        : f,
    ),
  };
}

/** The MeshError of an error frame; a code this SDK does not know counts as `internal`. */
function errorOf(frame: ErrorFrame): MeshError {
  const code = isErrorCode(frame.code) ? frame.code : 'internal';
  return new MeshError(code, frame.message, typeof frame.retryAfterMs === 'number' ? { retryAfterMs: frame.retryAfterMs } : undefined);
}

/**
 * The error of a request sent whose answer will not come: `maybe_stored` for
 * a write (the broker may have applied it), `unavailable` for a read.
 */
function unanswered(p: Pending, what: string): MeshError {
  const { frame } = p;
  if (!WRITES.has(frame.op)) return new MeshError('unavailable', what);
  if (frame.op === 'publish') {
    return new MeshError('maybe_stored', `${what}; it may have been stored: publish again with key '${frame.key}' to find out without creating a duplicate`);
  }
  return new MeshError('maybe_stored', `${what}; it may have been applied: if it was not, the message is delivered again`);
}

/**
 * The result carried by an ok frame. The one place a reply is taken at its
 * word: the server answers each op with that op's result (docs/protocol.md).
 */
function resultOf<Op extends RequestOp>(frame: OkFrame): ResultOf<Op> {
  const { op: _op, id: _id, ...result } = frame;
  return result as ResultOf<Op>;
}
