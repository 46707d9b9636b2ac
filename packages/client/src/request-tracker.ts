import {
  MeshError,
  isErrorCode,
  type ErrorFrame,
  type OkFrame,
  type Request,
  type RequestBody,
  type RequestOp,
  type ResultOf,
} from '@meshmq/shared';
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

/** The wait after a `rate_limited` answer that names none. */
export const DEFAULT_RETRY_AFTER_MS = 100;

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
  /** Sent on a connection lost before the answer came: it may have taken effect. */
  uncertain: boolean;
  /** The node's last `rate_limited` answer, while the request waits to go again. */
  limited: MeshError | undefined;
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
   * state and was sent without an answer, with `rate_limited` if the node
   * kept refusing it so, else with `unavailable`.
   */
  create<Op extends RequestOp>(
    frame: RequestBody<Op>,
    policy: DropPolicy,
    timeoutMs: number,
    bound = false,
  ): { id: number; reply: Promise<ResultOf<Op>> } {
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
        limited: undefined,
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
    p.limited = undefined;
  }

  /** Ids of queued (unsent, unbound) requests, oldest first. */
  queuedIds(): number[] {
    const ids: number[] = [];
    for (const p of this.pending.values()) if (p.stage === 'queued' && !p.bound) ids.push(p.id);
    return ids;
  }

  /**
   * When `frame` is a `rate_limited` answer to a publish or history sent on
   * `from` that may still go again within its timeout: puts the request
   * back in the outbox of `from` and returns how long it must wait first.
   * Otherwise undefined: settle the frame.
   */
  retryAfter(frame: ErrorFrame, from: Link): number | undefined {
    if (frame.code !== 'rate_limited' || typeof frame.id !== 'number') return undefined;
    const p = this.pending.get(frame.id);
    if (!p || p.stage !== 'sent' || p.link !== from || !RETRIED_WHEN_LIMITED.has(p.frame.op)) return undefined;
    const wait = frame.retryAfterMs ?? DEFAULT_RETRY_AFTER_MS;
    if (Date.now() + wait >= p.deadline) return undefined;
    p.stage = 'outbox';
    p.limited = errorOf(frame);
    return wait;
  }

  /** Settles the request a reply frame answers; false when no request has that id. */
  settle(frame: OkFrame | ErrorFrame, from: Link): boolean {
    if (typeof frame.id !== 'number') return false;
    const p = this.pending.get(frame.id);
    // A reply can only answer a request sent on the same connection.
    if (!p || p.stage !== 'sent' || p.link !== from) return false;
    this.pending.delete(p.id);
    clearTimeout(p.timer);
    if (frame.op === 'ok') {
      p.resolve(frame);
      return true;
    }
    const error = errorOf(frame);
    // "Nothing stored" holds for this send only: an earlier one, unanswered, may have stored it.
    if (p.uncertain && (error.code === 'unavailable' || error.code === 'rate_limited')) p.reject(unanswered(p, error.message));
    else p.reject(error);
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
      const what = `the connection to ${link.url} was lost before '${p.frame.op}' was ${sent ? 'answered' : 'sent'}`;
      this.reject(p.id, sent ? unanswered(p, what) : new MeshError('unavailable', what));
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
    if (p.stage === 'sent' || p.uncertain) {
      this.reject(id, unanswered(p, `no reply to '${op}' within ${timeoutMs} ms`));
      return;
    }
    if (p.limited) {
      const options = p.limited.retryAfterMs === undefined ? {} : { retryAfterMs: p.limited.retryAfterMs };
      this.reject(id, new MeshError('rate_limited', `'${op}' was still rate limited after ${timeoutMs} ms: ${p.limited.message}`, options));
      return;
    }
    const why = p.stage === 'outbox' ? 'the connection had as many requests unanswered as the node allows' : 'not connected';
    const key = p.frame.op === 'publish' ? `; key '${p.frame.key}'` : '';
    this.reject(id, new MeshError('unavailable', `'${op}' could not be sent within ${timeoutMs} ms: ${why}${key}`));
  }
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
