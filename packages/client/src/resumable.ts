import { type ErrorCode, MeshError, type RequestBody, type RequestOp, type ResultOf, type SubscribeResult } from '@meshmq/shared';
import type { Link } from './link.js';
import type { Gap } from './types.js';

/** What subscriptions and group consumers need from the client. */
export interface ResumableHost {
  /** The greeted connection, if any. */
  readonly link: Link | undefined;
  /** Sends a request on `link` only; it fails if that link is lost first. */
  request<Op extends RequestOp>(link: Link, frame: RequestBody<Op>): Promise<ResultOf<Op>>;
  gap(gap: Gap, own?: (gap: Gap) => void): void;
  error(error: MeshError): void;
  /** The server failed a request in a way a new connection may fix: replace the connection. */
  reconnect(link: Link, error: MeshError): void;
  /** The subscription or consumer ended; forget it. */
  removed(resumable: Resumable): void;
}

/** Failures that another attempt would only repeat. */
const PERMANENT: readonly ErrorCode[] = ['bad_request', 'unauthorized', 'forbidden', 'not_found', 'payload_too_large', 'limit_exceeded'];

/**
 * Server-side state a client must re-create on every connection: a fan-out
 * subscription or a group membership. Subscribe and unsubscribe requests of
 * one resumable are strictly sequential, so the server never sees an
 * unsubscribe overtake the subscribe it undoes.
 */
export abstract class Resumable {
  /** Resolves when the server first confirmed; rejects if that never happens. */
  readonly ready: Promise<void>;
  protected ended = false;
  private confirmed = false;
  private control: Promise<unknown> = Promise.resolve();
  private resolveReady!: () => void;
  private rejectReady!: (error: MeshError) => void;
  private readyTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    protected readonly host: ResumableHost,
    readonly key: string,
    private readonly description: string,
    timeoutMs: number,
  ) {
    this.ready = new Promise((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    // Whoever waits for confirmation sees the rejection; it must not count as unhandled otherwise.
    this.ready.catch(() => undefined);
    this.readyTimer = setTimeout(() => void this.end(new MeshError('unavailable', `${description} was not confirmed within ${timeoutMs} ms`)), timeoutMs);
  }

  /** True until unsubscribed, stopped, failed or the client closed. */
  get active(): boolean {
    return !this.ended;
  }

  /** Creates the server-side state on `link`; resolves with the gaps found on the way. */
  attach(link: Link): Promise<Gap[]> {
    return this.serially(async () => (this.ended || !link.isOpen || this.host.link !== link ? [] : this.open(link))).catch((err: unknown) => {
      this.host.error(MeshError.from(err));
      return [];
    });
  }

  /** Resolves once every subscribe and unsubscribe this object sent has been answered. */
  settled(): Promise<void> {
    return this.control.then(() => undefined);
  }

  /**
   * Ends this object: nothing more is delivered and the server-side state is
   * removed. With an error, a pending confirmation rejects with it.
   */
  end(error?: MeshError): Promise<void> {
    if (this.ended) return this.settled();
    this.ended = true;
    clearTimeout(this.readyTimer);
    this.rejectReady(error ?? new MeshError('unavailable', `${this.description} was ended before the server confirmed it`));
    this.onEnd();
    const closing = this.serially(() => this.close());
    // After queueing close(): the client waits for settled() before the same key is used again.
    this.host.removed(this);
    return closing;
  }

  /** Ends this object without telling the server: the client is closing. */
  abandon(error: MeshError): void {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.readyTimer);
    this.rejectReady(error);
    this.onEnd();
  }

  /** Sends subscribe on `link` and applies the reply. */
  protected abstract open(link: Link): Promise<Gap[]>;
  /** Removes the server-side state, if any; never throws. */
  protected abstract close(): Promise<void>;
  /** Drops local state when the object ends. */
  protected abstract onEnd(): void;

  protected confirm(): void {
    if (this.confirmed) return;
    this.confirmed = true;
    clearTimeout(this.readyTimer);
    this.resolveReady();
  }

  /** Sends a subscribe frame on `link`; a failure is handled here and resolves undefined. */
  protected async subscribeOn(link: Link, frame: RequestBody<'subscribe'>): Promise<SubscribeResult | undefined> {
    try {
      return await this.host.request(link, frame);
    } catch (err) {
      this.failed(link, MeshError.from(err));
      return undefined;
    }
  }

  /** Handles a failed subscribe sent on `link`. */
  protected failed(link: Link, error: MeshError): void {
    if (this.ended) return;
    // The connection was lost: the next one attaches again.
    if (!link.isOpen) return;
    if (PERMANENT.includes(error.code)) {
      const ended = new MeshError(error.code, `${this.description} failed: ${error.message}`, { cause: error });
      if (this.confirmed) this.host.error(ended);
      void this.end(ended);
      return;
    }
    this.host.reconnect(link, error);
  }

  protected serially<R>(op: () => Promise<R>): Promise<R> {
    const run = this.control.then(op);
    this.control = run.catch(() => undefined);
    return run;
  }
}
