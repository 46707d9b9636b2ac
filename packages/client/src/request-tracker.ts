import { MeshError, isErrorCode, type ErrorFrame, type OkFrame } from '@meshmq/shared';
import type { Link } from './link.js';

/**
 * What happens to a request sent on a connection that drops before its reply:
 * - `resend`: it goes back to the queue and is sent again on the next
 *   connection (publish carries an idempotency key, history is a read);
 * - `reject`: it fails with `unavailable` (ack, nack, ping; requests bound
 *   to one connection);
 * - `resolve`: it succeeds with an empty result (unsubscribe: the server
 *   dropped the subscription with the connection).
 */
export type DropPolicy = 'resend' | 'reject' | 'resolve';

interface Pending {
  id: number;
  frame: Record<string, unknown>;
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
   * Registers a request. It fails with `unavailable` unless its reply arrives
   * within `timeoutMs` of now, however often it is sent.
   */
  create(
    frame: Record<string, unknown>,
    policy: DropPolicy,
    timeoutMs: number,
    bound = false,
  ): { id: number; reply: Promise<OkFrame> } {
    const id = this.nextId++;
    const reply = new Promise<OkFrame>((resolve, reject) => {
      const timer = setTimeout(() => this.expire(id, timeoutMs), timeoutMs);
      this.pending.set(id, { id, frame, policy, bound, link: undefined, sent: false, resolve, reject, timer });
    });
    return { id, reply };
  }

  /** The frame to send for request `id`, with its id; undefined if it is settled. */
  frameOf(id: number): Record<string, unknown> | undefined {
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
      this.pending.delete(p.id);
      clearTimeout(p.timer);
      if (p.policy === 'resolve') p.resolve({ op: 'ok', id: p.id });
      else p.reject(new MeshError('unavailable', `the connection to ${link.url} was lost before '${String(p.frame.op)}' was answered`));
    }
  }

  /** Fails every request; used by close(). */
  rejectAll(error: MeshError): void {
    for (const p of [...this.pending.values()]) this.reject(p.id, error);
  }

  private expire(id: number, timeoutMs: number): void {
    const p = this.pending.get(id);
    if (!p) return;
    const op = String(p.frame.op);
    let message = p.sent
      ? `no reply to '${op}' within ${timeoutMs} ms`
      : `'${op}' could not be sent within ${timeoutMs} ms: not connected`;
    if (op === 'publish' && p.sent) {
      message += `; it may have been stored: publish again with key '${String(p.frame.key)}' to find out without creating a duplicate`;
    } else if (op === 'publish' && p.frame.key !== undefined) {
      message += `; key '${String(p.frame.key)}'`;
    }
    this.reject(id, new MeshError('unavailable', message));
  }
}
