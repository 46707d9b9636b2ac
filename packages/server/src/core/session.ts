import { randomUUID } from 'node:crypto';
import {
  type AckResult,
  type AuthResult,
  CLOSE_CODES,
  groupKey,
  type HelloResult,
  type HistoryRequest,
  type HistoryResult,
  MeshError,
  type PublishResult,
  parseRequest,
  type Request,
  type RequestOp,
  requestIdOf,
  requestOpOf,
  type ServerFrame,
  type SubscribeRequest,
  type SubscribeResult,
} from '@meshmq/shared';
import type { Logger } from 'pino';
import type { Principal } from './access.js';
import type { Connection } from './connection.js';
import type { FanoutSubscription } from './fanout-subscription.js';
import type { GroupMembership } from './group-dispatcher.js';
import { type ConnectionLimits, HIGH_WATER_MARK, TokenBucket } from './limits.js';
import type { BrokerObserver } from './observer.js';

/** A subscription or membership the core opened, to start once the reply is sent. */
export interface Opened<T> {
  handle: T;
  result: SubscribeResult;
  start(): void;
}

/**
 * What a session needs of the node: the core operations, each of which
 * authorises the principal it is given, and the node's limits. The Broker
 * implements it; a session never reaches past it.
 */
export interface SessionContext {
  readonly logger: Logger;
  readonly limits: ConnectionLimits;
  readonly observer: BrokerObserver | undefined;
  hello(principal: Principal): HelloResult;
  /** Verifies a token; `bad_request` on a node without authentication. */
  authenticate(token: string): Promise<Principal>;
  publish(actor: Principal, topic: string, data: unknown, key?: string): Promise<PublishResult>;
  history(actor: Principal, topic: string, from: number | undefined, limit: number | undefined): Promise<HistoryResult>;
  subscribe(actor: Principal, connection: Connection, request: SubscribeRequest): Promise<Opened<FanoutSubscription>>;
  unsubscribe(subscription: FanoutSubscription, connection: Connection): void;
  join(actor: Principal, connection: Connection, consumer: string, request: SubscribeRequest & { group: string }): Promise<Opened<GroupMembership>>;
  leave(membership: GroupMembership): Promise<void>;
  /** Acks deliveries leased to the membership's member; per offset, undefined or why it was not settled. */
  ack(actor: Principal, membership: GroupMembership, offsets: readonly number[], epoch: string | undefined): Promise<Array<MeshError | undefined>>;
  nack(actor: Principal, membership: GroupMembership, offset: number, delayMs: number, epoch: string | undefined): Promise<void>;
  /** The session released everything it held. */
  sessionClosed(session: Session): void;
}

/** Outgoing bytes past which a connection that does not read is closed (the node stops producing at the high-water mark). */
export const MAX_BUFFERED_BYTES = 16 * HIGH_WATER_MARK;

/** What a request handler returns: the ok fields, and work to start once the reply is sent. */
interface Handled {
  result: object;
  afterReply?: () => void;
}

/**
 * One client connection, whatever its transport: validates each request,
 * applies the connection's limits, runs the request through the core as the
 * connection's principal, and owns the connection's subscriptions.
 */
export class Session {
  readonly id = randomUUID();
  private readonly fanout = new Map<string, FanoutSubscription>();
  private readonly groups = new Map<string, GroupMembership>();
  private readonly publishes: TokenBucket;
  private closed = false;
  private inflight = 0;
  private idleWaiters: Array<() => void> = [];
  /** History replies of one connection are produced one at a time, each once the connection has room. */
  private histories: Promise<unknown> = Promise.resolve();
  private expiryTimer: NodeJS.Timeout | undefined;

  /** The transport's connection, behind a guard that closes it when its client stops reading (every send goes through it). */
  private readonly connection: Connection;

  constructor(
    private readonly context: SessionContext,
    connection: Connection,
    private principal: Principal,
  ) {
    this.connection = this.guard(connection);
    const { publishRate, publishBurst } = context.limits;
    this.publishes = new TokenBucket(publishRate, publishBurst);
    this.watchExpiry();
  }

  /** The transport the connection came by. */
  get transport(): string {
    return this.connection.transport;
  }

  /** Who this connection acts as. */
  get sub(): string | null {
    return this.principal.sub;
  }

  /**
   * Handles one decoded frame and sends exactly one reply for it: ok or error.
   * Never throws.
   */
  async handleFrame(frame: unknown): Promise<void> {
    const id = requestIdOf(frame);
    const op = requestOpOf(frame);
    if (this.inflight >= this.context.limits.maxInflight) {
      this.sendError(
        id,
        new MeshError('rate_limited', `${this.inflight} requests of this connection are unanswered, the limit; wait for replies`, { retryAfterMs: 100 }),
        op,
      );
      return;
    }
    this.inflight++;
    const receivedAt = performance.now();
    try {
      const request = parseRequest(frame);
      const { result, afterReply } = await this.dispatch(request);
      this.send({ op: 'ok', id: request.id, ...result });
      afterReply?.();
    } catch (err) {
      this.sendError(id, err, op);
    } finally {
      if (op === 'publish') this.context.observer?.publishAnswered((performance.now() - receivedAt) / 1000);
      if (--this.inflight === 0) for (const wake of this.idleWaiters.splice(0)) wake();
    }
  }

  /** Resolves once no request of this connection is being handled. */
  idle(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Tells the client to reconnect elsewhere (the node is draining). */
  move(nodes: string[]): void {
    this.send({ op: 'move', reason: 'draining', nodes });
  }

  /** Closes the underlying connection; the transport then calls close(). */
  disconnect(code: number, reason: string): void {
    this.connection.close(code, reason);
  }

  /** Sends an error frame; used by transports for frames that never decoded. */
  sendError(id: string | number | null, err: unknown, op: RequestOp | 'unknown' = 'unknown'): void {
    const error = MeshError.from(err);
    this.context.observer?.refused(op, error.code);
    if (error.code === 'internal') this.context.logger.error({ err, session: this.id, sub: this.sub }, 'request failed');
    else if (error.code === 'forbidden') this.context.logger.info({ session: this.id, sub: this.sub, reason: error.message }, 'request denied');
    const frame: ServerFrame = { op: 'error', id, code: error.code, message: error.message };
    if (error.retryAfterMs !== undefined) frame.retryAfterMs = error.retryAfterMs;
    this.send(frame);
  }

  /** Releases every subscription; group leases go back to the group at once. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.expiryTimer);
    for (const sub of this.fanout.values()) this.context.unsubscribe(sub, this.connection);
    this.fanout.clear();
    const leaving = [...this.groups.values()];
    this.groups.clear();
    await Promise.all(leaving.map((m) => this.context.leave(m)));
    this.context.sessionClosed(this);
  }

  private send(frame: ServerFrame): void {
    if (!this.closed) this.connection.send(frame);
  }

  /**
   * Wraps the connection so that every frame sent to it, replies and
   * deliveries alike, is followed by the check that its client still reads:
   * past MAX_BUFFERED_BYTES queued it is closed (the node stops producing at
   * the high-water mark, so only a client that asked for more than that gets
   * here).
   */
  private guard(connection: Connection): Connection {
    let closing = false;
    const send: Connection['send'] = (frame, encode) => {
      if (closing) return;
      connection.send(frame, encode);
      const buffered = connection.bufferedAmount();
      if (buffered > MAX_BUFFERED_BYTES) {
        closing = true;
        this.context.logger.warn({ session: this.id, sub: this.sub, buffered }, 'closing a connection that does not read');
        connection.close(CLOSE_CODES.tooSlow, 'too slow: the client does not read what it asked for');
      }
    };
    const guarded: Connection = {
      transport: connection.transport,
      remoteAddress: connection.remoteAddress,
      send,
      bufferedAmount: () => connection.bufferedAmount(),
      close: (code, reason) => connection.close(code, reason),
    };
    if (connection.joinTopic) guarded.joinTopic = (topic) => connection.joinTopic!(topic);
    if (connection.leaveTopic) guarded.leaveTopic = (topic) => connection.leaveTopic!(topic);
    return guarded;
  }

  private dispatch(request: Request): Promise<Handled> {
    if (this.closed) throw new MeshError('unavailable', 'the connection is closing');
    switch (request.op) {
      case 'hello':
        return Promise.resolve({ result: this.context.hello(this.principal) });
      case 'ping':
        return Promise.resolve({ result: { ts: Date.now() } });
      case 'auth':
        return this.reauthenticate(request.token).then((result) => ({ result }));
      case 'publish': {
        const wait = this.publishes.take();
        if (wait > 0) {
          throw new MeshError('rate_limited', `this connection publishes faster than ${this.context.limits.publishRate} messages a second`, {
            retryAfterMs: wait,
          });
        }
        return this.context.publish(this.principal, request.topic, request.data, request.key).then((result) => ({ result }));
      }
      case 'subscribe':
        return request.group === undefined ? this.subscribe(request) : this.join({ ...request, group: request.group });
      case 'unsubscribe':
        return this.unsubscribe(request.topic, request.group).then(() => ({ result: {} }));
      case 'ack':
        return this.ack(request.topic, request.group, request.offsets ?? [request.offset!], request.epoch, request.offsets === undefined).then((result) => ({
          result,
        }));
      case 'nack':
        return this.nack(request.topic, request.group, request.offset, request.delay ?? 0, request.epoch).then(() => ({ result: {} }));
      case 'history':
        return this.history(request).then((result) => ({ result }));
    }
  }

  // ---- authentication ------------------------------------------------------------

  /**
   * Replaces the token with a newer one for the same subject. Refused when
   * the new token would not allow a subscription this connection holds.
   */
  private async reauthenticate(token: string): Promise<AuthResult> {
    const next = await this.context.authenticate(token);
    if (next.sub !== this.principal.sub) {
      throw new MeshError('forbidden', `the new token is for '${String(next.sub)}'; this connection is '${String(this.principal.sub)}'`);
    }
    for (const sub of this.fanout.values()) {
      if (!next.grants.can('subscribe', sub.topic)) {
        throw new MeshError('forbidden', `the new token may not read topic '${sub.topic}', which this connection subscribes to; unsubscribe first`);
      }
    }
    for (const { dispatcher } of this.groups.values()) {
      if (!next.grants.can('consume', dispatcher.topic)) {
        throw new MeshError('forbidden', `the new token may not consume from topic '${dispatcher.topic}', which this connection does; unsubscribe first`);
      }
    }
    this.principal = next;
    this.watchExpiry();
    return { sub: next.sub!, expiresAt: next.expiresAt, permissions: next.grants.toJSON() };
  }

  /** Closes the connection when its token expires, unless a newer one replaces it first. */
  private watchExpiry(): void {
    clearTimeout(this.expiryTimer);
    const { expiresAt } = this.principal;
    if (expiresAt === null) return;
    const expire = () => {
      this.sendError(null, new MeshError('unauthorized', `the token expired at ${new Date(expiresAt).toISOString()}; connect again with a new one`));
      this.connection.close(CLOSE_CODES.tokenExpired, 'token expired');
    };
    // Timers hold at most about 24.8 days; check again then.
    const delay = expiresAt - Date.now();
    if (delay <= 0) expire();
    else this.expiryTimer = setTimeout(() => (Date.now() >= expiresAt ? expire() : this.watchExpiry()), Math.min(delay, 2 ** 31 - 1));
    this.expiryTimer?.unref();
  }

  // ---- subscriptions -------------------------------------------------------------

  private get subscriptionCount(): number {
    return this.fanout.size + this.groups.size;
  }

  private assertRoomForSubscription(): void {
    const max = this.context.limits.maxSubscriptions;
    if (this.subscriptionCount >= max) {
      throw new MeshError('limit_exceeded', `this connection holds ${max} subscriptions and group memberships, the limit; unsubscribe from one first`);
    }
  }

  private async subscribe(request: SubscribeRequest): Promise<Handled> {
    const { topic } = request;
    if (this.fanout.has(topic)) throw new MeshError('bad_request', `already subscribed to topic '${topic}'`);
    this.assertRoomForSubscription();
    const opened = await this.context.subscribe(this.principal, this.connection, request);
    if (this.closed || this.fanout.has(topic)) {
      this.context.unsubscribe(opened.handle, this.connection);
      throw this.closed ? new MeshError('unavailable', 'the connection is closing') : new MeshError('bad_request', `already subscribed to topic '${topic}'`);
    }
    this.fanout.set(topic, opened.handle);
    return { result: opened.result, afterReply: opened.start };
  }

  private async join(request: SubscribeRequest & { group: string }): Promise<Handled> {
    const { topic, group } = request;
    const key = groupKey(topic, group);
    if (this.groups.has(key)) throw new MeshError('bad_request', `already a member of group '${group}' of topic '${topic}'`);
    this.assertRoomForSubscription();
    const opened = await this.context.join(this.principal, this.connection, `${this.id}/${group}`, request);
    if (this.closed || this.groups.has(key)) {
      await this.context.leave(opened.handle);
      throw this.closed
        ? new MeshError('unavailable', 'the connection is closing')
        : new MeshError('bad_request', `already a member of group '${group}' of topic '${topic}'`);
    }
    this.groups.set(key, opened.handle);
    return { result: opened.result, afterReply: opened.start };
  }

  private async unsubscribe(topic: string, group: string | undefined): Promise<void> {
    if (group === undefined) {
      const sub = this.fanout.get(topic);
      if (!sub) throw new MeshError('not_found', `not subscribed to topic '${topic}'`);
      this.fanout.delete(topic);
      this.context.unsubscribe(sub, this.connection);
      return;
    }
    const key = groupKey(topic, group);
    const membership = this.groups.get(key);
    if (!membership) throw notMember(topic, group);
    this.groups.delete(key);
    await this.context.leave(membership);
  }

  /**
   * An ack of one `offset` fails with the error that kept it from being
   * settled; one of `offsets` answers how many were settled and why the
   * others were not.
   */
  private async ack(topic: string, group: string, offsets: readonly number[], epoch: string | undefined, single: boolean): Promise<AckResult> {
    const results = await this.context.ack(this.principal, this.membership(topic, group), offsets, epoch);
    if (single) {
      if (results[0]) throw results[0];
      return {};
    }
    const failed: AckResult['failed'] = [];
    for (const [i, error] of results.entries()) if (error) failed.push({ offset: offsets[i]!, code: error.code, message: error.message });
    return { acked: offsets.length - failed.length, failed };
  }

  private async nack(topic: string, group: string, offset: number, delayMs: number, epoch: string | undefined): Promise<void> {
    await this.context.nack(this.principal, this.membership(topic, group), offset, delayMs, epoch);
  }

  private membership(topic: string, group: string): GroupMembership {
    const membership = this.groups.get(groupKey(topic, group));
    if (!membership) throw notMember(topic, group);
    return membership;
  }

  /** One history reply at a time per connection, each only once the connection has room for it. */
  private history(request: HistoryRequest): Promise<HistoryResult> {
    const run = this.histories.then(async () => {
      while (!this.closed && this.connection.bufferedAmount() >= HIGH_WATER_MARK) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      if (this.closed) throw new MeshError('unavailable', 'the connection is closing');
      return this.context.history(this.principal, request.topic, request.from, request.limit);
    });
    this.histories = run.catch(() => undefined);
    return run;
  }
}

function notMember(topic: string, group: string): MeshError {
  return new MeshError('not_found', `this connection is not a member of group '${group}' of topic '${topic}'`);
}
