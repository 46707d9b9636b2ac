import {
  type AuthInfo,
  type ErrorCode,
  type ErrorFrame,
  groupKey,
  type HelloResult,
  type HistoryRequest,
  isErrorCode,
  MeshError,
  type MessageFrame,
  type PublishResult,
  type RequestBody,
  type RequestOp,
  type ResultOf,
  type ServerFrame,
} from '@meshmq/shared';
import { defaultOpener } from '#websocket';
import { CLOSE_TOKEN_EXPIRED, Connector } from './connector.js';
import { Emitter } from './emitter.js';
import { type ConsumeOptions, type GroupConsumer, type GroupHandler, GroupMember } from './group-consumer.js';
import { randomKey } from './ids.js';
import type { Link } from './link.js';
import { type MeshClientOptions, type ResolvedOptions, resolveOptions } from './options.js';
import { Outbox, type Transmitted } from './outbox.js';
import { type DropPolicy, RequestTracker } from './request-tracker.js';
import type { Resumable, ResumableHost } from './resumable.js';
import { FanoutSubscription, type MessageHandler, type SubscribeOptions, type Subscription } from './subscription.js';
import { Credentials } from './token.js';
import { TokenRefresh } from './token-refresh.js';
import type { ClientEvents, ConnectionState, Gap, Message, RetryInfo } from './types.js';
import { queryTokenOpener } from './websocket.js';

export interface PublishOptions {
  /**
   * Idempotency key: a publish with a key already stored on this topic within
   * the broker's dedupe window (2 minutes) is not stored again; its reply
   * carries the original offset and `duplicate: true`. Default: a random key,
   * which makes the SDK's own re-send after a reconnect safe.
   */
  key?: string;
}

export interface HistoryOptions {
  /** First offset to return. Default: the first retained one. */
  from?: number;
  /** Largest number of messages, 1-1000. Default 100. */
  limit?: number;
}

export interface HistoryPage<T = unknown> {
  epoch: string;
  /** First retained offset. */
  first: number;
  /** Last offset of the topic (0 when empty). */
  last: number;
  messages: Message<T>[];
}

/**
 * The MeshMQ client: one WebSocket connection to one node of a cluster, kept
 * up across failures. Publishes wait while disconnected and are re-sent with
 * their idempotency key; requests the node refuses for now (its storage is
 * briefly down) are sent again within `requestTimeoutMs`; subscriptions and
 * group memberships are restored on every new connection, subscriptions
 * from the offset after the last one received, so handlers see each message
 * once and in order.
 */
export class MeshClient extends Emitter<ClientEvents> {
  private readonly options: ResolvedOptions;
  private readonly credentials: Credentials;
  private readonly connector: Connector;
  private readonly tracker = new RequestTracker();
  private readonly outboxes = new WeakMap<Link, Outbox>();
  /** The last AuthInfo an `auth` event carried, to emit only changes. */
  private lastAuth: string | undefined;
  private readonly subscriptions = new Map<string, FanoutSubscription<unknown>>();
  private readonly consumers = new Map<string, GroupMember<unknown>>();
  /** Resumables that ended but may still have an unsubscribe in flight, by key. */
  private readonly ending = new Map<string, Promise<void>>();
  private readonly host: ResumableHost;
  private closing: Promise<void> | undefined;

  constructor(options: MeshClientOptions = {}) {
    super();
    this.options = resolveOptions(options);
    const openSocket = this.options.WebSocket ? queryTokenOpener(this.options.WebSocket) : defaultOpener();
    if (!openSocket) {
      throw new MeshError('bad_request', 'no WebSocket implementation found; pass one as the `WebSocket` option');
    }
    this.credentials = new Credentials(this.options.token, this.options.connectTimeoutMs);
    this.connector = new Connector(this.options, openSocket, this.credentials, {
      onFrame: (link, frame) => this.onFrame(link, frame),
      onBadFrame: (_link, error) => this.report(error),
      hello: (link) => this.hello(link),
      ping: (link) => void this.boundRequest(link, { op: 'ping' }).catch(() => undefined),
      onReady: (link, reconnect) => this.onReady(link, reconnect),
      onClosed: (link, info, wasReady) => {
        this.outboxes.get(link)?.close();
        this.tracker.linkLost(link);
        if (!wasReady) return;
        this.emit('disconnected', { url: link.url, code: info.code, reason: info.reason });
        if (info.code === CLOSE_TOKEN_EXPIRED && !this.credentials.refreshable) {
          const expired = link.expiry?.message ?? 'the token expired';
          this.report(
            new MeshError('unauthorized', `${expired}. The token was given as a string and cannot be refreshed: pass a function as the 'token' option`),
          );
        }
      },
      onAttemptFailed: (url, error) => this.emit('connectFailed', { url, error }),
      onState: (state) => this.emit('state', state),
    });
    const connector = this.connector;
    this.host = {
      get link() {
        return connector.readyLink;
      },
      request: (link, frame) => this.boundRequest(link, frame),
      gap: (gap, own) => {
        if (own) {
          try {
            own(gap);
          } catch (err) {
            this.report(MeshError.from(err));
          }
        }
        this.emit('gap', gap);
      },
      error: (error) => this.report(error),
      reconnect: (link, error) => {
        this.report(new MeshError(error.code, `reconnecting to restore subscriptions: ${error.message}`, { cause: error }));
        link.close(4000, 'subscribe failed');
      },
      removed: (resumable) => this.forget(resumable),
    };
  }

  /** connecting, connected, reconnecting, or closed; idle before the first use. */
  get state(): ConnectionState {
    return this.connector.state;
  }

  /** The WebSocket URL of the current connection. */
  get url(): string | undefined {
    return this.connector.link?.url;
  }

  /** The hello reply of the current connection: node id, version, node list, limits. */
  get node(): HelloResult | undefined {
    return this.connector.link?.hello;
  }

  /**
   * Who the current connection acts as: the token's subject, its expiry and
   * permissions, kept current when the token is refreshed (`auth` event).
   * On a node without authentication, `sub` is null and everything is
   * allowed. Undefined while not connected.
   */
  get auth(): AuthInfo | undefined {
    return this.connector.link?.auth;
  }

  /** Every WebSocket URL the client may connect to. */
  get urls(): string[] {
    return this.connector.knownUrls;
  }

  /**
   * Connects, if not connecting already, and resolves once connected.
   * Rejects if that takes longer than `requestTimeoutMs`: with
   * `unauthorized` when every attempt meanwhile was refused for the token,
   * else with `unavailable`. The client keeps trying in the background until
   * `close()`. Calling it is optional: every operation starts connecting.
   */
  connect(): Promise<void> {
    if (this.closing) return Promise.reject(closedError());
    this.connector.start();
    if (this.connector.state === 'connected') return Promise.resolve();
    return new Promise((resolve, reject) => {
      /** The last refusal, while every attempt failed for the token. */
      let refused: MeshError | undefined;
      let otherFailure = false;
      const offFailed = this.on('connectFailed', ({ error }) => {
        if (error.code === 'unauthorized') refused = error;
        else otherFailure = true;
      });
      const timer = setTimeout(() => {
        off();
        const waited = `not connected within ${this.options.requestTimeoutMs} ms`;
        if (refused && !otherFailure) reject(new MeshError('unauthorized', `${waited}: every attempt was refused: ${refused.message}`, { cause: refused }));
        else reject(new MeshError('unavailable', `${waited}; still trying ${this.urls.join(', ')}`));
      }, this.options.requestTimeoutMs);
      const offState = this.on('state', (state) => {
        if (state !== 'connected' && state !== 'closed') return;
        off();
        if (state === 'connected') resolve();
        else reject(closedError());
      });
      const off = () => {
        clearTimeout(timer);
        offState();
        offFailed();
      };
    });
  }

  /**
   * Stops everything: the connection, reconnecting, subscriptions and
   * consumers. Requests still waiting fail with `unavailable`.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const error = closedError();
      for (const resumable of [...this.subscriptions.values(), ...this.consumers.values()]) resumable.abandon(error);
      this.subscriptions.clear();
      this.consumers.clear();
      this.tracker.rejectAll(error);
      await this.connector.stop();
      this.tracker.rejectAll(error);
    })();
    return this.closing;
  }

  /**
   * Appends a message to a topic; resolves once it is durable. Answers that
   * it was not stored, or may have been, are retried with the same key
   * within `requestTimeoutMs`. Rejects with a MeshError that carries the
   * publish's `key`; its code says what happened (`maybe_stored`: publish
   * again with that key to find out; see the README).
   */
  publish<T = unknown>(topic: string, data: T, options: PublishOptions = {}): Promise<PublishResult> {
    const key = options.key ?? randomKey();
    let encoded: string | undefined;
    try {
      encoded = JSON.stringify(data);
    } catch (err) {
      return Promise.reject(new MeshError('bad_request', `'data' cannot be encoded as JSON: ${MeshError.from(err).message}`, { key }));
    }
    if (encoded === undefined) return Promise.reject(new MeshError('bad_request', "'data' must be a JSON value", { key }));
    return this.request({ op: 'publish', topic, data, key }, 'resend').then(
      ({ offset, epoch, ts, duplicate }) => ({ offset, epoch, ts, duplicate }),
      (err: unknown) => {
        const error = MeshError.from(err);
        const options = { cause: error.cause, key, ...(error.retryAfterMs === undefined ? {} : { retryAfterMs: error.retryAfterMs }) };
        return Promise.reject(new MeshError(error.code, error.message, options));
      },
    );
  }

  /**
   * Subscribes to every message of `topic` from now on, or from `options.from`.
   * Resolves once the server confirmed; rejects with `unavailable` if that
   * does not happen within `requestTimeoutMs` (for example while offline).
   * One subscription per topic per client.
   */
  async subscribe<T = unknown>(topic: string, handler: MessageHandler<T>, options: SubscribeOptions = {}): Promise<Subscription> {
    const subscription = new FanoutSubscription<T>(this.host, topic, handler, options, this.options.requestTimeoutMs);
    await this.register(this.subscriptions, subscription as unknown as FanoutSubscription<unknown>, `already subscribed to topic '${topic}'`);
    await subscription.ready;
    return subscription;
  }

  /**
   * Joins consumer group `group` of `topic`: each message goes to one member
   * of the group. Resolves once joined. One membership per group per client.
   */
  async consume<T = unknown>(topic: string, group: string, handler: GroupHandler<T>, options: ConsumeOptions = {}): Promise<GroupConsumer> {
    const member = new GroupMember<T>(this.host, topic, group, handler, options, this.options.requestTimeoutMs);
    await this.register(this.consumers, member as unknown as GroupMember<unknown>, `already consuming group '${group}' of topic '${topic}'`);
    await member.ready;
    return member;
  }

  /** Reads retained messages of a topic. */
  async history<T = unknown>(topic: string, options: HistoryOptions = {}): Promise<HistoryPage<T>> {
    const frame: Omit<HistoryRequest, 'id'> = { op: 'history', topic };
    if (options.from !== undefined) frame.from = options.from;
    if (options.limit !== undefined) frame.limit = options.limit;
    const reply = await this.request(frame, 'resend');
    return {
      epoch: reply.epoch,
      first: reply.first,
      last: reply.last,
      messages: reply.messages.map((m) => toMessage<T>(m)),
    };
  }

  /** Round trip to the connected node, in ms. */
  async ping(): Promise<number> {
    const start = Date.now();
    await this.request({ op: 'ping' }, 'reject');
    return Date.now() - start;
  }

  // ---- requests ----------------------------------------------------------------

  /** A request that waits for a connection if needed. */
  private request<Op extends RequestOp>(frame: RequestBody<Op>, policy: DropPolicy): Promise<ResultOf<Op>> {
    if (this.closing) return Promise.reject(closedError());
    this.connector.start();
    const link = this.connector.readyLink;
    if (!link && this.tracker.queued >= this.options.offlineQueueLimit) {
      return Promise.reject(new MeshError('unavailable', `not connected, and ${this.tracker.queued} requests are already waiting for a connection`));
    }
    const { id, reply } = this.tracker.create<Op>(frame, policy, this.options.requestTimeoutMs);
    if (link) this.send(link, id);
    return reply;
  }

  /** A request sent on `link` only. */
  private boundRequest<Op extends RequestOp>(link: Link, frame: RequestBody<Op>, timeoutMs = this.options.requestTimeoutMs): Promise<ResultOf<Op>> {
    const { id, reply } = this.tracker.create<Op>(frame, 'reject', timeoutMs, true);
    if (!this.send(link, id)) {
      this.tracker.reject(id, new MeshError('unavailable', `the connection to ${link.url} is closed`));
    }
    return reply;
  }

  /** Hands request `id` to the outbox of `link`, which sends it when the node's limits allow; false if the link is closed. */
  private send(link: Link, id: number): boolean {
    if (!link.isOpen) return false;
    const frame = this.tracker.frameOf(id);
    if (!frame) return true;
    this.tracker.assign(id, link);
    this.outboxOf(link).push(id, frame.op);
    return true;
  }

  private outboxOf(link: Link): Outbox {
    let outbox = this.outboxes.get(link);
    if (!outbox) {
      outbox = new Outbox(
        () => link.hello?.limits,
        (id) => this.transmit(link, id),
      );
      this.outboxes.set(link, outbox);
    }
    return outbox;
  }

  /** Writes request `id` to `link`, if it still waits for that. */
  private transmit(link: Link, id: number): Transmitted {
    const frame = this.tracker.frameOf(id);
    if (!frame || !this.tracker.isWaitingOn(id, link)) return 'dropped';
    const limit = link.hello?.limits.maxMessageBytes;
    if (frame.op === 'publish' && limit !== undefined) {
      const size = utf8Length(JSON.stringify(frame.data));
      if (size > limit) {
        this.tracker.reject(id, new MeshError('payload_too_large', `'data' is ${size} bytes encoded; the limit is ${limit}`));
        return 'dropped';
      }
    }
    if (!link.send(frame)) return 'closed';
    this.tracker.markSent(id, link);
    return 'sent';
  }

  private hello(link: Link): Promise<HelloResult> {
    return this.boundRequest(link, { op: 'hello', client: this.options.name }, this.options.connectTimeoutMs);
  }

  // ---- connection events -------------------------------------------------------

  private onReady(link: Link, reconnect: boolean): void {
    const hello = link.hello!;
    link.auth = hello.auth;
    new TokenRefresh(link, this.credentials, {
      request: (on, frame) => this.boundRequest(on, frame),
      refreshed: (on, auth) => {
        on.auth = auth;
        if (this.connector.link === on) this.announceAuth(auth);
      },
      error: (error) => this.report(error),
    }).start(hello.auth);
    const subscriptions = [...this.subscriptions.values()];
    const consumers = [...this.consumers.values()];
    const restoring = [...subscriptions, ...consumers].map((r) => r.attach(link));
    for (const id of this.tracker.queuedIds()) {
      if (!this.send(link, id)) break;
    }
    this.emit('connected', { url: link.url, node: hello.node, version: hello.version, reconnect });
    this.announceAuth(hello.auth);
    if (!reconnect) return;
    void Promise.all(restoring).then((found) => {
      if (this.connector.link !== link) return;
      const gaps: Gap[] = found.flat();
      this.emit('resumed', {
        url: link.url,
        subscriptions: subscriptions.length,
        consumers: consumers.length,
        gaps,
        recovered: gaps.length === 0,
      });
    });
  }

  /** Emits `auth` when who the client acts as changed. */
  private announceAuth(auth: AuthInfo | undefined): void {
    // Nodes before authentication have no `auth` in hello.
    if (!auth) return;
    const text = JSON.stringify(auth);
    if (text === this.lastAuth) return;
    this.lastAuth = text;
    this.emit('auth', auth);
  }

  private onFrame(link: Link, frame: ServerFrame): void {
    switch (frame.op) {
      case 'ok':
        if (typeof frame.id === 'number') this.outboxes.get(link)?.answered(frame.id);
        this.tracker.settle(frame, link);
        return;
      case 'error':
        this.onError(link, frame);
        return;
      case 'message':
        this.route(link, frame);
        return;
      case 'move':
        this.emit('moving', { url: link.url, nodes: frame.nodes });
        this.connector.move(link, frame.nodes);
        return;
      case 'reset':
        this.subscriptions.get(frame.topic)?.onReset(link, frame);
        return;
      default:
        // Frames of later protocol versions are ignored.
        return;
    }
  }

  private onError(link: Link, frame: ErrorFrame): void {
    if (typeof frame.id === 'number') {
      this.outboxes.get(link)?.answered(frame.id);
      const retry = this.tracker.retry(frame, link);
      if (retry) {
        const { request, code, attempt, delayMs } = retry;
        this.outboxOf(link).retry(frame.id, request.op, delayMs, code === 'rate_limited');
        this.emit('retry', { op: request.op, topic: retryTopic(request), code, attempt, delayMs, ...retryDetail(request) });
        return;
      }
    }
    if (this.tracker.settle(frame, link)) return;
    if (frame.id === null && frame.code === 'unauthorized') {
      // The token expired: the node closes the connection next, and that is where it is handled.
      link.expiry = new MeshError('unauthorized', frame.message);
      return;
    }
    this.report(new MeshError(isCode(frame.code), `server error: ${frame.message}`));
  }

  private route(link: Link, frame: MessageFrame): void {
    if (frame.group === undefined) this.subscriptions.get(frame.topic)?.onMessage(link, frame);
    else this.consumers.get(groupKey(frame.topic, frame.group))?.onMessage(link, frame);
  }

  /** Emits `error`; with no listener, logs it rather than losing it. */
  private report(error: MeshError): void {
    if (this.listenerCount('error') > 0) this.emit('error', error);
    else console.error('[meshmq]', error);
  }

  // ---- subscriptions and consumers ---------------------------------------------

  private async register<R extends Resumable>(registry: Map<string, R>, resumable: R, duplicate: string): Promise<void> {
    if (this.closing) {
      resumable.abandon(closedError());
      throw closedError();
    }
    if (registry.has(resumable.key)) {
      resumable.abandon(new MeshError('bad_request', duplicate));
      throw new MeshError('bad_request', duplicate);
    }
    registry.set(resumable.key, resumable);
    this.connector.start();
    // Wait for an earlier one with the same key to be unsubscribed on the server.
    const previous = this.ending.get(resumable.key);
    if (previous) await previous;
    const link = this.connector.readyLink;
    if (link && registry.get(resumable.key) === resumable) void resumable.attach(link);
  }

  private forget(resumable: Resumable): void {
    const registry: Map<string, Resumable> = resumable instanceof GroupMember ? this.consumers : this.subscriptions;
    if (registry.get(resumable.key) !== resumable) return;
    registry.delete(resumable.key);
    const done = resumable.settled().then(() => {
      if (this.ending.get(resumable.key) === done) this.ending.delete(resumable.key);
    });
    this.ending.set(resumable.key, done);
  }
}

function toMessage<T>(frame: MessageFrame): Message<T> {
  const message: Message<T> = { topic: frame.topic, offset: frame.offset, epoch: frame.epoch, ts: frame.ts, data: frame.data as T };
  if (frame.key !== undefined) message.key = frame.key;
  return message;
}

/** The topic a retried request is about (every retried op has one). */
function retryTopic(request: RequestBody): string {
  return 'topic' in request && typeof request.topic === 'string' ? request.topic : '';
}

/** What identifies a retried request beyond its topic: a publish's key, an ack's or nack's group and offset. */
function retryDetail(request: RequestBody): Pick<RetryInfo, 'key' | 'group' | 'offset' | 'offsets'> {
  if (request.op === 'publish') return { key: request.key };
  if (request.op === 'ack' && request.offsets) return { group: request.group, offsets: request.offsets };
  if (request.op === 'ack' || request.op === 'nack') return { group: request.group, offset: request.offset };
  if (request.op === 'subscribe' && request.group !== undefined) return { group: request.group };
  return {};
}

function closedError(): MeshError {
  return new MeshError('unavailable', 'the client is closed');
}

function isCode(code: string): ErrorCode {
  return isErrorCode(code) ? code : 'internal';
}

function utf8Length(text: string): number {
  return new TextEncoder().encode(text).length;
}
