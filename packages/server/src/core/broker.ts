import {
  CLOSE_CODES,
  DEFAULTS,
  type GroupSettings,
  groupKey,
  type HelloResult,
  type HistoryResult,
  isValidTopicName,
  MeshError,
  PROTOCOL_VERSION,
  type PublishResult,
  type SubscribeRequest,
  type SubscribeResult,
} from '@meshmq/shared';
import type { Logger } from 'pino';
import { type Engine, epochEnd, type GroupInfo, type PendingEntry, type StoredMessage, type TopicInfo } from '../engine/engine.js';
import { authorize, type Principal } from './access.js';
import type { Connection } from './connection.js';
import { FanoutSubscription } from './fanout-subscription.js';
import { GroupDispatcher, type GroupMembership } from './group-dispatcher.js';
import { type ConnectionLimits, DEFAULT_CONNECTION_LIMITS } from './limits.js';
import { toMessageFrame } from './message-frame.js';
import type { BrokerObserver } from './observer.js';
import { type Opened, Session, type SessionContext } from './session.js';

export interface BrokerOptions {
  engine: Engine;
  nodeId: string;
  version: string;
  /** Largest JSON-encoded `data` of one message, in bytes. */
  maxMessageBytes: number;
  /** Window of idempotent publish keys, advertised in hello. */
  dedupeWindowMs: number;
  /** Public URLs of the live nodes, this one included. */
  nodeUrls: () => string[];
  logger: Logger;
  /** How often retention by age and dedupe-key expiry run. Default 10 s. */
  retentionSweepMs?: number;
  /** What one connection may hold and send. Default {@link DEFAULT_CONNECTION_LIMITS}. */
  limits?: ConnectionLimits;
  /**
   * Verifies a token for the `auth` request. Absent on a node without
   * authentication, where `auth` is refused.
   */
  authenticate?: (token: string) => Promise<Principal>;
  /** Told of what the core does, for metrics. */
  observer?: BrokerObserver;
}

export interface BrokerStats {
  connections: number;
  subscriptions: number;
  messagesIn: number;
  messagesOut: number;
}

/** The epoch a reader is told for a topic that does not exist yet. */
const NO_TOPIC_EPOCH = '';

/**
 * The transport- and storage-independent broker. Every operation that
 * reads, writes or settles enters here, from a session or from the admin
 * API, as a {@link Principal}, and is authorised (core/access.ts) before it
 * touches the engine: this is the one path for each of them. The broker
 * also owns what lives on this node only: sessions, fan-out subscriptions,
 * group dispatchers and the topics watched for live messages.
 */
export class Broker implements SessionContext {
  readonly logger: Logger;
  readonly limits: ConnectionLimits;
  readonly observer: BrokerObserver | undefined;
  private readonly engine: Engine;
  private readonly fanout = new Map<string, Set<FanoutSubscription>>();
  private readonly dispatchers = new Map<string, Map<string, GroupDispatcher>>();
  private readonly sessions = new Set<Session>();
  /** Topics this node receives live messages for, with how many subscriptions need each. */
  private readonly watches = new Map<string, { refs: number; ready: Promise<void> }>();
  private readonly counters = { messagesIn: 0, messagesOut: 0 };
  /** Messages published through this node, per topic, since start. */
  private readonly published = new Map<string, number>();
  private sweepTimer: NodeJS.Timeout | undefined;
  private unlisten: Array<() => void> = [];
  private draining: { nodes: string[] } | undefined;

  constructor(private readonly options: BrokerOptions) {
    this.engine = options.engine;
    this.logger = options.logger;
    this.limits = options.limits ?? DEFAULT_CONNECTION_LIMITS;
    this.observer = options.observer;
  }

  start(): void {
    this.unlisten = [
      this.engine.onMessage((message) => this.onLive(message)),
      this.engine.onWake((topic, group) => this.dispatchers.get(topic)?.get(group)?.pump()),
    ];
    this.sweepTimer = setInterval(() => void this.sweep(), this.options.retentionSweepMs ?? 10_000);
    this.sweepTimer.unref();
  }

  async close(): Promise<void> {
    clearInterval(this.sweepTimer);
    for (const stop of this.unlisten) stop();
    for (const session of this.sessions) await session.close();
    for (const groups of this.dispatchers.values()) for (const dispatcher of groups.values()) dispatcher.close();
  }

  // ---- sessions ------------------------------------------------------------------

  /** A new connection that acts as `principal` (authenticated at the handshake). */
  openSession(connection: Connection, principal: Principal): Session {
    const session = new Session(this, connection, principal);
    this.sessions.add(session);
    if (this.draining) {
      session.move(this.draining.nodes);
      session.disconnect(CLOSE_CODES.draining, 'node draining');
    }
    return session;
  }

  get isDraining(): boolean {
    return this.draining !== undefined;
  }

  /**
   * Graceful shutdown of the connections: tells every client to move to one
   * of `nodes`, lets requests already received finish (up to `timeoutMs`),
   * then closes every connection with 1012 (service restart).
   */
  async drain(nodes: string[], timeoutMs = 5000): Promise<void> {
    this.draining = { nodes };
    for (const session of this.sessions) session.move(nodes);
    const settled = Promise.all([...this.sessions].map((s) => s.idle()));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([settled, new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
    for (const session of this.sessions) session.disconnect(CLOSE_CODES.draining, 'node draining');
  }

  sessionClosed(session: Session): void {
    this.sessions.delete(session);
  }

  hello(principal: Principal): HelloResult {
    const { maxSubscriptions, maxInflight, publishRate } = this.limits;
    return {
      node: this.options.nodeId,
      version: this.options.version,
      protocol: PROTOCOL_VERSION,
      nodes: this.options.nodeUrls(),
      limits: { maxMessageBytes: this.options.maxMessageBytes, dedupeWindowMs: this.options.dedupeWindowMs, maxSubscriptions, maxInflight, publishRate },
      auth: { sub: principal.sub, expiresAt: principal.expiresAt, permissions: principal.grants.toJSON() },
    };
  }

  authenticate(token: string): Promise<Principal> {
    if (!this.options.authenticate) {
      return Promise.reject(new MeshError('bad_request', 'this node does not use tokens (no authentication key is configured)'));
    }
    return this.options.authenticate(token);
  }

  // ---- writing -------------------------------------------------------------------

  /** Appends a message to a topic; resolves once it is durable. */
  async publish(actor: Principal, topic: string, data: unknown, key?: string): Promise<PublishResult> {
    if (!isValidTopicName(topic)) throw new MeshError('forbidden', `publish: topic '${topic}' is written by the broker only`);
    authorize(actor, 'publish', topic, 'publish');
    const json = JSON.stringify(data);
    if (json === undefined) throw new MeshError('bad_request', "'data' must be a JSON value");
    const size = Buffer.byteLength(json);
    if (size > this.options.maxMessageBytes) {
      throw new MeshError('payload_too_large', `'data' is ${size} bytes encoded; the limit is ${this.options.maxMessageBytes}`);
    }
    const outcome = await this.engine.publish(topic, data, key === undefined ? { json } : { key, json });
    if (!outcome.duplicate) {
      this.countIn(topic);
      this.observer?.published(topic);
    }
    return outcome;
  }

  /** Removes the retained messages of `topic` before offset `before` (purging dead letters). */
  async truncate(actor: Principal, topic: string, before: number): Promise<number> {
    authorize(actor, 'admin', topic, 'purge');
    return this.engine.truncate(topic, before);
  }

  /** Changes a group's settings for every member (a joining member never does). */
  async configureGroup(actor: Principal, topic: string, group: string, settings: Partial<GroupSettings>): Promise<GroupInfo> {
    authorize(actor, 'admin', topic, 'configure group');
    return this.engine.configureGroup(topic, group, settings);
  }

  // ---- reading -------------------------------------------------------------------

  /** A topic's state; undefined when it does not exist (reading never creates one). */
  async topic(actor: Principal, topic: string, operation = 'read'): Promise<TopicInfo | undefined> {
    authorize(actor, 'subscribe', topic, operation);
    return this.engine.topicInfo(topic);
  }

  /** Up to `limit` retained messages from `from`, at most `maxBytes` of data (at least one message). */
  async read(actor: Principal, topic: string, from: number, limit: number, maxBytes?: number): Promise<StoredMessage[]> {
    authorize(actor, 'subscribe', topic, 'read');
    return this.engine.read(topic, from, limit, maxBytes);
  }

  async history(actor: Principal, topic: string, from: number | undefined, limit: number | undefined): Promise<HistoryResult> {
    const info = await this.topic(actor, topic, 'history');
    if (!info) return { epoch: NO_TOPIC_EPOCH, first: 1, last: 0, messages: [] };
    const messages = await this.engine.read(topic, from ?? info.first, limit ?? DEFAULTS.historyLimit, this.limits.historyMaxBytes);
    return { epoch: info.epoch, first: info.first, last: info.last, messages: messages.map((m) => toMessageFrame(m)) };
  }

  /** Every topic (admin). */
  async topics(actor: Principal): Promise<TopicInfo[]> {
    authorize(actor, 'admin', undefined, 'list topics');
    return this.engine.listTopics();
  }

  async groups(actor: Principal, topic: string): Promise<GroupInfo[]> {
    authorize(actor, 'admin', topic, 'list groups');
    return this.engine.listGroups(topic);
  }

  async group(actor: Principal, topic: string, group: string): Promise<GroupInfo | undefined> {
    authorize(actor, 'admin', topic, 'read group');
    return this.engine.groupInfo(topic, group);
  }

  async pending(actor: Principal, topic: string, group: string, limit: number): Promise<PendingEntry[]> {
    authorize(actor, 'admin', topic, 'read pending deliveries');
    return this.engine.pending(topic, group, limit);
  }

  // ---- fan-out -------------------------------------------------------------------

  async subscribe(actor: Principal, connection: Connection, request: SubscribeRequest): Promise<Opened<FanoutSubscription>> {
    const { topic } = request;
    authorize(actor, 'subscribe', topic, 'subscribe');
    if (request.prefetch !== undefined || request.ackWait !== undefined || request.maxDeliveries !== undefined) {
      throw new MeshError('bad_request', "'prefetch', 'ackWait' and 'maxDeliveries' apply to group subscriptions only");
    }
    // Watch before reading the edge, so nothing published in between is missed.
    await this.watchTopic(topic);
    let info: TopicInfo;
    try {
      info = (await this.engine.topicInfo(topic)) ?? emptyTopic(topic);
    } catch (err) {
      this.unwatchTopic(topic);
      throw err;
    }
    const { from, missing } = resumePoint(info, request.from, request.epoch);
    const result: SubscribeResult = { epoch: info.epoch, first: info.first, last: info.last, recovered: missing === undefined, from };
    if (missing) result.missing = missing;
    const subscription = new FanoutSubscription(
      topic,
      this.engine,
      connection,
      from,
      info.epoch,
      (message) => {
        this.countOut(1);
        this.observer?.delivered('fanout', topic, lagSeconds(message.ts));
      },
      (err) => this.logger.error({ err, topic }, 'subscription delivery failed'),
    );
    let subs = this.fanout.get(topic);
    if (!subs) this.fanout.set(topic, (subs = new Set()));
    subs.add(subscription);
    connection.joinTopic?.(topic);
    return { handle: subscription, result, start: () => subscription.start(info.last) };
  }

  unsubscribe(subscription: FanoutSubscription, connection: Connection): void {
    subscription.close();
    const subs = this.fanout.get(subscription.topic);
    if (!subs?.delete(subscription)) return;
    if (subs.size === 0) this.fanout.delete(subscription.topic);
    connection.leaveTopic?.(subscription.topic);
    this.unwatchTopic(subscription.topic);
  }

  // ---- groups --------------------------------------------------------------------

  /**
   * Joins `consumer` (unique per connection and group on this node) to a
   * group, creating the group, with the request's settings, if it does not
   * exist. An existing group keeps its settings; the reply says which apply.
   */
  async join(actor: Principal, connection: Connection, consumer: string, request: SubscribeRequest & { group: string }): Promise<Opened<GroupMembership>> {
    const { topic, group } = request;
    authorize(actor, 'consume', topic, 'subscribe to a group');
    await this.watchTopic(topic);
    let settings: GroupInfo;
    let info: TopicInfo;
    try {
      settings = await this.engine.ensureGroup(topic, group, {
        ...(request.ackWait === undefined ? {} : { ackWaitMs: request.ackWait }),
        ...(request.maxDeliveries === undefined ? {} : { maxDeliveries: request.maxDeliveries }),
        ...(request.from === undefined ? {} : { startAt: request.from }),
      });
      info = (await this.engine.topicInfo(topic)) ?? emptyTopic(topic);
    } catch (err) {
      this.unwatchTopic(topic);
      throw err;
    }
    const dispatcher = this.dispatcher(topic, group);
    const member = {
      consumer: `${this.options.nodeId}/${consumer}`,
      connection,
      prefetch: request.prefetch ?? DEFAULTS.prefetch,
      inflight: new Map<number, number>(),
      claiming: 0,
    };
    const result: SubscribeResult = {
      epoch: info.epoch,
      first: info.first,
      last: info.last,
      recovered: true,
      group,
      prefetch: member.prefetch,
      ackWait: settings.ackWaitMs,
      maxDeliveries: settings.maxDeliveries,
    };
    return { handle: { dispatcher, member }, result, start: () => dispatcher.add(member) };
  }

  /** Ends a membership: its leases go back to the group at once. */
  async leave({ dispatcher, member }: GroupMembership): Promise<void> {
    try {
      await dispatcher.remove(member.consumer);
    } catch (err) {
      this.logger.error({ err, topic: dispatcher.topic, group: dispatcher.group }, 'releasing group leases failed');
    } finally {
      this.releaseDispatcher(dispatcher);
      this.unwatchTopic(dispatcher.topic);
    }
  }

  /** Acks deliveries leased to the membership's member, in one store write; per offset, undefined or why it was not settled. */
  async ack(
    actor: Principal,
    { dispatcher, member }: GroupMembership,
    offsets: readonly number[],
    epoch: string | undefined,
  ): Promise<Array<MeshError | undefined>> {
    authorize(actor, 'consume', dispatcher.topic, 'ack');
    const results = await dispatcher.ackMany(member, offsets, epoch);
    const acked = results.filter((error) => error === undefined).length;
    if (acked > 0) this.observer?.acked(dispatcher.topic, dispatcher.group, acked);
    return results;
  }

  /** Makes a delivery leased to the membership's member deliverable again after `delayMs`. */
  async nack(actor: Principal, { dispatcher, member }: GroupMembership, offset: number, delayMs: number, epoch: string | undefined): Promise<void> {
    authorize(actor, 'consume', dispatcher.topic, 'nack');
    await dispatcher.nack(member, offset, delayMs, epoch);
    this.observer?.nacked(dispatcher.topic, dispatcher.group);
  }

  // ---- what this node holds ------------------------------------------------------

  stats(): BrokerStats {
    let subscriptions = 0;
    for (const subs of this.fanout.values()) subscriptions += subs.size;
    for (const groups of this.dispatchers.values()) for (const d of groups.values()) subscriptions += d.size;
    return { connections: this.sessions.size, subscriptions, ...this.counters };
  }

  /** The groups that have members on this node. */
  localGroups(): Array<{ topic: string; group: string }> {
    const out: Array<{ topic: string; group: string }> = [];
    for (const [topic, groups] of this.dispatchers) for (const group of groups.keys()) out.push({ topic, group });
    return out;
  }

  /** Open connections of this node by transport (`ws`, `socket.io`). */
  connectionsByTransport(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const session of this.sessions) out[session.transport] = (out[session.transport] ?? 0) + 1;
    return out;
  }

  /** Messages published through this node per topic since start (read-only view). */
  publishedPerTopic(): ReadonlyMap<string, number> {
    return this.published;
  }

  /** Fan-out subscriptions per topic on this node. */
  subscribersPerTopic(): Record<string, number> {
    return Object.fromEntries([...this.fanout].map(([topic, subs]) => [topic, subs.size]));
  }

  /** Group members on this node, keyed by {@link groupKey}. */
  membersPerGroup(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [topic, groups] of this.dispatchers) for (const [group, d] of groups) out[groupKey(topic, group)] = d.size;
    return out;
  }

  private countIn(topic: string): void {
    this.counters.messagesIn++;
    this.published.set(topic, (this.published.get(topic) ?? 0) + 1);
  }

  private countOut(count: number): void {
    this.counters.messagesOut += count;
  }

  /**
   * Makes sure live messages of `topic` reach this node; every subscription
   * and group membership holds one reference until it ends.
   */
  private async watchTopic(topic: string): Promise<void> {
    let watch = this.watches.get(topic);
    if (!watch) {
      const ready = this.engine.watch(topic);
      watch = { refs: 0, ready };
      this.watches.set(topic, watch);
      ready.catch(() => {
        if (this.watches.get(topic) === watch) this.watches.delete(topic);
      });
    }
    watch.refs++;
    try {
      await watch.ready;
    } catch (err) {
      watch.refs--;
      throw err;
    }
  }

  private unwatchTopic(topic: string): void {
    const watch = this.watches.get(topic);
    if (!watch || --watch.refs > 0) return;
    this.watches.delete(topic);
    this.engine.unwatch(topic).catch((err) => this.logger.warn({ err, topic }, 'unwatch failed'));
  }

  private dispatcher(topic: string, group: string): GroupDispatcher {
    let groups = this.dispatchers.get(topic);
    if (!groups) this.dispatchers.set(topic, (groups = new Map()));
    let dispatcher = groups.get(group);
    if (!dispatcher) {
      dispatcher = new GroupDispatcher(topic, group, this.engine, {
        delivered: ({ message, delivery }) => {
          this.countOut(1);
          this.observer?.delivered('group', topic, lagSeconds(message.ts));
          if (delivery > 1) this.observer?.redelivered(topic, group);
        },
        deadLettered: (count) => this.observer?.deadLettered(topic, group, count),
        failed: (err) => this.logger.error({ err, topic, group }, 'group dispatch failed'),
      });
      groups.set(group, dispatcher);
    }
    return dispatcher;
  }

  /** Drops a dispatcher that has no member left on this node. */
  private releaseDispatcher(dispatcher: GroupDispatcher): void {
    if (dispatcher.size > 0) return;
    const groups = this.dispatchers.get(dispatcher.topic);
    if (groups?.get(dispatcher.group) !== dispatcher) return;
    dispatcher.close();
    groups.delete(dispatcher.group);
    if (groups.size === 0) this.dispatchers.delete(dispatcher.topic);
  }

  private onLive(message: StoredMessage): void {
    const subs = this.fanout.get(message.topic);
    if (subs) for (const sub of subs) sub.onLive(message);
    const groups = this.dispatchers.get(message.topic);
    if (groups) for (const dispatcher of groups.values()) dispatcher.pump();
  }

  private async sweep(): Promise<void> {
    try {
      for (const info of await this.engine.listTopics()) {
        const removed = await this.engine.enforceRetention(info.topic);
        if (removed > 0) this.logger.debug({ topic: info.topic, removed }, 'retention removed messages');
      }
    } catch (err) {
      this.logger.error({ err }, 'retention sweep failed');
    }
  }
}

/** Seconds from a message's storing to now (its delivery). */
function lagSeconds(storedAt: number): number {
  return Math.max(0, Date.now() - storedAt) / 1000;
}

/** What a topic that does not exist yet looks like to a reader: no epoch, nothing retained. */
function emptyTopic(topic: string): TopicInfo {
  return { topic, epoch: NO_TOPIC_EPOCH, epochs: [], first: 1, last: 0, count: 0 };
}

/**
 * Where a fan-out subscription starts and what the client asked for that it
 * will not get as it knew it: offsets removed by retention, or offsets the
 * log no longer holds as the client saw them (an earlier epoch that was lost,
 * or a log behind what the client saw): those hold other messages now.
 *
 * The client's claim changes only its own subscription, never the topic: a
 * new epoch comes only from what the broker itself recorded.
 */
export function resumePoint(
  info: TopicInfo,
  requested: number | undefined,
  epoch: string | undefined,
): { from: number; missing?: { from: number; to: number; reason: 'retention' | 'epoch' } } {
  if (requested === undefined) return { from: info.last + 1 };
  // '' is the epoch of a topic that did not exist yet: a client holding it saw nothing of any epoch.
  if (epoch !== undefined && epoch !== NO_TOPIC_EPOCH) {
    if (epoch !== info.epoch) {
      const end = epochEnd(info.epochs, epoch);
      // A log the client read from is gone entirely: its offsets mean nothing here.
      if (end === undefined) return { from: info.first, missing: { from: 1, to: requested - 1, reason: 'epoch' } };
      if (requested - 1 > end) return { from: Math.max(end + 1, info.first), missing: { from: end + 1, to: requested - 1, reason: 'epoch' } };
    } else if (requested - 1 > info.last) {
      // The client saw more of this epoch than the log holds: those offsets will hold other messages.
      return { from: Math.max(info.last + 1, info.first), missing: { from: info.last + 1, to: requested - 1, reason: 'epoch' } };
    }
  }
  if (requested < info.first) return { from: info.first, missing: { from: requested, to: info.first - 1, reason: 'retention' } };
  return { from: requested };
}
