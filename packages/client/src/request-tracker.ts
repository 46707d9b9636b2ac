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

interface Pending {
  id: number;
  frame: RequestBody;
  policy: DropPolicy;
  /** Bound requests are sent on one given link and never queued. */
  bound: boolean;
  link: Link | undefined;
  /** Sent at least once, on any link. */
  sent: boolean;
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
    for (const p of this.pending.values()) if (!p.link) count++;
    return count;
  }

  /**
   * Registers a request. Unless its reply arrives within `timeoutMs` of now,
   * however often it is sent, it fails: with `unavailable` if it was never
   * sent or reads only, with `maybe_stored` if it was sent and changes state.
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
        link: undefined,
        sent: false,
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

  markSent(id: number, link: Link): void {
    const p = this.pending.get(id);
    if (!p) return;
    p.link = link;
    p.sent = true;
  }

  /** Ids of queued (unsent, unbound) requests, oldest first. */
  queuedIds(): number[] {
    const ids: number[] = [];
    for (const p of this.pending.values()) if (!p.link && !p.bound) ids.push(p.id);
    return ids;
  }

  /** Settles the request a reply frame answers; false when no request has that id. */
  settle(frame: OkFrame | ErrorFrame, from: Link): boolean {
    if (typeof frame.id !== 'number') return false;
    const p = this.pending.get(frame.id);
    // A reply can only answer a request sent on the same connection.
    if (!p || p.link !== from) return false;
    this.pending.delete(p.id);
    clearTimeout(p.timer);
    if (frame.op === 'ok') p.resolve(frame);
    else p.reject(new MeshError(isErrorCode(frame.code) ? frame.code : 'internal', frame.message));
    return true;
  }

  reject(id: number, error: MeshError): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    p.reject(error);
  }

  /** Applies each request's drop policy to the requests sent on `link`. */
  linkLost(link: Link): void {
    for (const p of [...this.pending.values()]) {
      if (p.link !== link) continue;
      if (p.policy === 'resend' && !p.bound) {
        p.link = undefined;
        continue;
      }
      if (p.policy === 'resolve') {
        this.pending.delete(p.id);
        clearTimeout(p.timer);
        p.resolve({ op: 'ok', id: p.id });
        continue;
      }
      this.reject(p.id, unanswered(p, `the connection to ${link.url} was lost before '${p.frame.op}' was answered`));
    }
  }

  /**
   * Fails every request; used by close(). Requests already sent that change
   * state fail with `maybe_stored` instead of `error`'s code.
   */
  rejectAll(error: MeshError): void {
    for (const p of [...this.pending.values()]) {
      this.reject(p.id, p.sent && WRITES.has(p.frame.op) ? unanswered(p, `${error.message}, and '${p.frame.op}' sent earlier was not answered`) : error);
    }
  }

  private expire(id: number, timeoutMs: number): void {
    const p = this.pending.get(id);
    if (!p) return;
    const { op } = p.frame;
    if (p.sent) {
      this.reject(id, unanswered(p, `no reply to '${op}' within ${timeoutMs} ms`));
      return;
    }
    const key = p.frame.op === 'publish' ? `; key '${p.frame.key}'` : '';
    this.reject(id, new MeshError('unavailable', `'${op}' could not be sent within ${timeoutMs} ms: not connected${key}`));
  }
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
