import type { Logger } from 'pino';
import type { Engine, StoredMessage } from '../engine/engine.js';
import type { Connection } from './connection.js';
import { FanoutSubscription } from './fanout-subscription.js';
import { GroupDispatcher } from './group-dispatcher.js';
import { Session } from './session.js';

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
}

export interface BrokerStats {
  connections: number;
  subscriptions: number;
  messagesIn: number;
  messagesOut: number;
}

/**
 * The transport- and storage-independent broker: sessions, fan-out
 * subscriptions and group dispatch over an {@link Engine}.
 */
export class Broker {
  readonly engine: Engine;
  readonly logger: Logger;
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

  constructor(readonly options: BrokerOptions) {
    this.engine = options.engine;
    this.logger = options.logger;
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

  openSession(connection: Connection): Session {
    const session = new Session(this, connection);
    this.sessions.add(session);
    if (this.draining) {
      session.move(this.draining.nodes);
      session.disconnect(1012, 'node draining');
    }
    return session;
  }

  private draining: { nodes: string[] } | undefined;

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
    for (const session of this.sessions) session.disconnect(1012, 'node draining');
  }

  /** @internal called by Session once it has released everything it held. */
  sessionClosed(session: Session): void {
    this.sessions.delete(session);
  }

  stats(): BrokerStats {
    let subscriptions = 0;
    for (const subs of this.fanout.values()) subscriptions += subs.size;
    for (const groups of this.dispatchers.values()) for (const d of groups.values()) subscriptions += d.size;
    return { connections: this.sessions.size, subscriptions, ...this.counters };
  }

  countIn(topic: string): void {
    this.counters.messagesIn++;
    this.published.set(topic, (this.published.get(topic) ?? 0) + 1);
  }

  /** Messages published through this node per topic since start (read-only view). */
  publishedPerTopic(): ReadonlyMap<string, number> {
    return this.published;
  }

  /** Fan-out subscriptions per topic on this node. */
  subscribersPerTopic(): Record<string, number> {
    return Object.fromEntries([...this.fanout].map(([topic, subs]) => [topic, subs.size]));
  }

  /** Group members on this node, keyed `<topic>\u0000<group>`. */
  membersPerGroup(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [topic, groups] of this.dispatchers) for (const [group, d] of groups) out[`${topic}\u0000${group}`] = d.size;
    return out;
  }

  /** Fan-out subscriptions to `topic` on this node. */
  subscriberCount(topic: string): number {
    return this.fanout.get(topic)?.size ?? 0;
  }

  /** Members of `group` of `topic` connected to this node. */
  groupMemberCount(topic: string, group: string): number {
    return this.dispatchers.get(topic)?.get(group)?.size ?? 0;
  }

  countOut(count: number): void {
    this.counters.messagesOut += count;
  }

  /**
   * Makes sure live messages of `topic` reach this node; every subscription
   * and group membership holds one reference until it ends.
   */
  async watchTopic(topic: string): Promise<void> {
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

  unwatchTopic(topic: string): void {
    const watch = this.watches.get(topic);
    if (!watch || --watch.refs > 0) return;
    this.watches.delete(topic);
    this.engine.unwatch(topic).catch((err) => this.logger.warn({ err, topic }, 'unwatch failed'));
  }

  addFanout(subscription: FanoutSubscription): void {
    let subs = this.fanout.get(subscription.topic);
    if (!subs) this.fanout.set(subscription.topic, (subs = new Set()));
    subs.add(subscription);
  }

  removeFanout(subscription: FanoutSubscription): void {
    subscription.close();
    const subs = this.fanout.get(subscription.topic);
    subs?.delete(subscription);
    if (subs?.size === 0) this.fanout.delete(subscription.topic);
  }

  dispatcher(topic: string, group: string): GroupDispatcher {
    let groups = this.dispatchers.get(topic);
    if (!groups) this.dispatchers.set(topic, (groups = new Map()));
    let dispatcher = groups.get(group);
    if (!dispatcher) {
      dispatcher = new GroupDispatcher(
        topic,
        group,
        this.engine,
        (count) => this.countOut(count),
        (err) => this.logger.error({ err, topic, group }, 'group dispatch failed'),
      );
      groups.set(group, dispatcher);
    }
    return dispatcher;
  }

  /** Drops a dispatcher that has no member left on this node. */
  releaseDispatcher(dispatcher: GroupDispatcher): void {
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
