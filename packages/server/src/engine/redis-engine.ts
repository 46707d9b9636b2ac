import { performance } from 'node:perf_hooks';
import { DEFAULTS, deadLetterTopicOf, isDeadLetterTopic, MeshError, sourceTopicOf } from '@meshmq/shared';
import type { Logger } from 'pino';
import type {
  ClaimResult,
  Engine,
  EngineCommonOptions,
  EngineHealth,
  GroupInfo,
  GroupOptions,
  GroupSettings,
  MessageListener,
  PendingEntry,
  PublishOptions,
  PublishOutcome,
  RetentionPolicy,
  SettleOptions,
  StoredMessage,
  TopicInfo,
  WakeListener,
} from './engine.js';
import { DEFAULT_RETENTION, epochEnd, newEpoch } from './engine.js';
import { fieldsOf, RedisLink, type RedisLinkOptions } from './redis-link.js';
import { ACK, CLAIM, CONFIGURE_GROUP, ENSURE_GROUP, GROUP_STATE, NACK, PUBLISH, REGISTER_TOPIC, RELEASE, TOPIC_STATE, TRIM } from './redis-scripts.js';

export interface RedisEngineOptions extends Partial<RedisLinkOptions>, EngineCommonOptions {
  /**
   * The connection to use, owned by its creator (the cluster, which shares it
   * with membership). Without one the engine opens and closes its own to `url`.
   */
  link?: RedisLink;
  /** Prefix of every key and channel. Default `mq:`. */
  keyPrefix?: string;
  /**
   * Replicas that must have a publish before it is acknowledged (Redis WAIT).
   * 0 (default) acknowledges once the primary has it.
   */
  replicas?: number;
  /** How long WAIT may take before the publish fails with `maybe_stored`. Default {@link DEFAULT_REPLICA_TIMEOUT_MS}. */
  replicaTimeoutMs?: number;
  logger?: Logger;
}

interface TopicKeys {
  meta: string;
  log: string;
  live: string;
  keyPrefix: string;
  groupPrefix: string;
}

function closedError(): MeshError {
  return new MeshError('unavailable', 'the storage engine is closed');
}

/** How long a publish waits for its replicas by default. */
export const DEFAULT_REPLICA_TIMEOUT_MS = 1000;
/** What the publish script answers: 'ok' or 'dup', offset, epoch, timestamp. */
type PublishReply = [string, number, string, number];

/** Pending entries scanned per claim for due redeliveries. */
const CLAIM_SCAN = 1000;
/** Entries per XRANGE when a read has a byte budget, so a page never pulls far more than it returns. */
const READ_CHUNK = 64;
/** Longest stretch of live delivery before the event loop gets a turn (see RedisEngine.pace). */
const LIVE_SLICE_MS = 10;

function offsetOf(id: string): number {
  return Number(id.slice(0, id.indexOf('-')));
}

/**
 * The cluster engine: every node shares one Redis (standalone, Sentinel or
 * Cluster). A topic is a stream whose entry ids are the offsets; groups are
 * Redis consumer groups on it. Every state change is one Lua script, so a
 * publish assigns its offset, appends, trims and notifies in one atomic step.
 *
 * Live notifications arrive over sharded pub/sub, which can drop messages
 * while a link is down. The engine therefore never forwards a notification
 * out of order: when one skips offsets it first reads the missing ones from
 * the log, and after a reconnect it reads every watched topic's tail.
 */
export class RedisEngine implements Engine {
  readonly kind = 'redis';
  readonly link: RedisLink;
  private readonly ownsLink: boolean;
  private closed = false;
  /** '1' while a Redis restart may lose acknowledged writes (read at open), for the scripts' restart fence. */
  private restartsLose: '0' | '1' = '1';
  private readonly prefix: string;
  private readonly retention: (topic: string) => RetentionPolicy;
  private readonly dedupeWindowMs: number;
  private readonly now: () => number;
  private readonly listeners = new Set<MessageListener>();
  private readonly wakeListeners = new Set<WakeListener>();
  /** Watched topics: the last offset handed to listeners, and a queue that keeps them in order. */
  private readonly watched = new Map<string, { last: number; epoch: string; queue: Promise<void> }>();
  private readonly registered = new Set<string>();
  /** The last watch or unwatch step of each topic still running. */
  private readonly watchSteps = new Map<string, Promise<void>>();
  /** Highest offset this node saw acknowledged or delivered per topic, with its epoch (for fencing). */
  private readonly seen = new Map<string, { epoch: string; last: number }>();
  /** When the current slice of live delivery started; undefined once the event loop came round. */
  private sliceStartedAt: number | undefined;

  constructor(private readonly options: RedisEngineOptions) {
    if (options.link) {
      this.link = options.link;
      this.ownsLink = false;
    } else {
      if (options.url === undefined) throw new MeshError('bad_request', 'RedisEngine needs a link or a url');
      this.link = new RedisLink({ ...options, url: options.url, replicatedWrites: (options.replicas ?? 0) > 0 });
      this.ownsLink = true;
    }
    this.prefix = options.keyPrefix ?? 'mq:';
    this.retention = options.retention ?? (() => DEFAULT_RETENTION);
    this.dedupeWindowMs = options.dedupeWindowMs ?? DEFAULTS.dedupeWindowMs;
    this.now = options.clock ?? Date.now;
    this.link.on('reconnected', () => {
      for (const topic of this.watched.keys()) this.catchUpLive(topic);
    });
  }

  async open(): Promise<void> {
    if (this.ownsLink) await this.link.connect();
    this.restartsLose = (await this.restartKeepsWrites()) ? '0' : '1';
  }

  /**
   * True when a restart of Redis keeps every write it acknowledged: AOF with
   * appendfsync always. Otherwise (or when CONFIG is refused, as on some
   * managed Redis) a restart opens a new epoch on each topic, so that what
   * it may have lost is never taken for what is there (redis-scripts.ts).
   */
  private async restartKeepsWrites(): Promise<boolean> {
    try {
      const config = fieldsOf(await this.link.command(['CONFIG', 'GET', 'append*']));
      return config.appendonly === 'yes' && config.appendfsync === 'always';
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.listeners.clear();
    this.wakeListeners.clear();
    this.watched.clear();
    if (this.ownsLink) await this.link.close();
  }

  health(): EngineHealth {
    return { state: this.closed ? 'down' : this.link.state };
  }

  /** After close every method refuses, even when the link stays open for its owner (the cluster). */
  private assertOpen(): void {
    if (this.closed) throw closedError();
  }

  onMessage(listener: MessageListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  onWake(listener: WakeListener): () => void {
    this.wakeListeners.add(listener);
    return () => this.wakeListeners.delete(listener);
  }

  // ---- keys --------------------------------------------------------------------

  private keys(topic: string): TopicKeys {
    // A dead-letter log shares its topic's hash tag so one script can move a message between them.
    const source = sourceTopicOf(topic);
    const base = `${this.prefix}{${source ?? topic}}:${source ? 'dlq' : 'topic'}`;
    return {
      meta: `${base}:meta`,
      log: `${base}:log`,
      live: `${base}:live`,
      keyPrefix: `${base}:key:`,
      groupPrefix: `${base}:group:`,
    };
  }

  private get registryKey(): string {
    return `${this.prefix}topics`;
  }

  /** Adds a topic the node is about to create to the registry, refusing one past maxTopics. */
  private async register(topic: string): Promise<void> {
    if (this.registered.has(topic)) return;
    const counted = isDeadLetterTopic(topic) ? '0' : '1';
    await this.link.eval(REGISTER_TOPIC, [this.registryKey], [topic, this.options.maxTopics ?? -1, counted]);
    this.registered.add(topic);
  }

  // ---- topics ------------------------------------------------------------------

  async publish(topic: string, data: unknown, options: PublishOptions = {}): Promise<PublishOutcome> {
    this.assertOpen();
    const json = options.json ?? JSON.stringify(data);
    if (json === undefined) throw new MeshError('bad_request', "'data' must be a JSON value");
    await this.register(topic);
    const k = this.keys(topic);
    const key = options.key ?? '';
    const seen = this.seen.get(topic);
    const keys = [k.meta, k.log, k.keyPrefix + key];
    const args = [
      json,
      this.now(),
      key,
      this.dedupeWindowMs,
      this.retention(topic).maxMessages,
      newEpoch(),
      k.live,
      seen?.epoch ?? '',
      seen?.last ?? 0,
      this.restartsLose,
    ];
    const replicas = this.options.replicas ?? 0;
    let reply: PublishReply;
    if (replicas > 0) {
      const timeoutMs = this.options.replicaTimeoutMs ?? DEFAULT_REPLICA_TIMEOUT_MS;
      const replicated = await this.link.evalThenWait<PublishReply>(PUBLISH, keys, args, replicas, timeoutMs);
      if (replicated.replicas < replicas) {
        // The primary has the write; whether it survives a failover is unknown until the replicas confirm it.
        throw new MeshError(
          'maybe_stored',
          `the primary stored it, but only ${replicated.replicas} of ${replicas} replicas confirmed within ${timeoutMs} ms, so it may not survive a failover; publish again with the same key to wait for the replicas once more`,
        );
      }
      reply = replicated.reply;
    } else {
      reply = await this.link.eval<PublishReply>(PUBLISH, keys, args);
    }
    const outcome = { offset: Number(reply[1]), epoch: String(reply[2]), ts: Number(reply[3]), duplicate: reply[0] === 'dup' };
    this.noteSeen(topic, outcome.epoch, outcome.offset);
    return outcome;
  }

  private noteSeen(topic: string, epoch: string, offset: number): void {
    const seen = this.seen.get(topic);
    if (!seen || seen.epoch !== epoch) this.seen.set(topic, { epoch, last: offset });
    else if (offset > seen.last) seen.last = offset;
  }

  async read(topic: string, from: number, limit: number, maxBytes = Infinity): Promise<StoredMessage[]> {
    this.assertOpen();
    if (limit <= 0) return [];
    const k = this.keys(topic);
    const chunk = Number.isFinite(maxBytes) ? Math.min(limit, READ_CHUNK) : limit;
    const [entries, meta] = await Promise.all([
      this.link.command<Array<[string, string[]]>>(['XRANGE', k.log, `${Math.max(1, from)}-0`, '+', 'COUNT', chunk]),
      this.link.command<Array<string | null>>(['HMGET', k.meta, 'epoch']),
    ]);
    const epoch = meta[0] ?? '';
    const out: StoredMessage[] = [];
    let bytes = 0;
    for (let page = entries; ; ) {
      for (const [id, flat] of page) {
        const f = fieldsOf(flat);
        const size = f.d?.length ?? 0;
        if (out.length > 0 && bytes + size > maxBytes) return out;
        bytes += size;
        out.push(this.messageOf(topic, epoch, id, f));
      }
      if (page.length < chunk || out.length >= limit) return out;
      const next = out.at(-1)!.offset + 1;
      page = await this.link.command<Array<[string, string[]]>>(['XRANGE', k.log, `${next}-0`, '+', 'COUNT', Math.min(chunk, limit - out.length)]);
      if (page.length === 0) return out;
    }
  }

  private toMessage(topic: string, epoch: string, id: string, flat: string[]): StoredMessage {
    return this.messageOf(topic, epoch, id, fieldsOf(flat));
  }

  private messageOf(topic: string, epoch: string, id: string, f: Record<string, string>): StoredMessage {
    const message: StoredMessage = { topic, offset: offsetOf(id), epoch, ts: Number(f.t), data: JSON.parse(f.d ?? 'null') };
    if (f.k) message.key = f.k;
    return message;
  }

  /**
   * The topic's state. Fences first (redis-scripts.ts): a new epoch starts
   * if this is the first look at the topic on a promoted primary, or if the
   * log is behind what this node itself acknowledged or delivered.
   */
  async topicInfo(topic: string): Promise<TopicInfo | undefined> {
    this.assertOpen();
    const seen = this.seen.get(topic);
    const epoch = seen?.epoch ?? '';
    const reply = await this.link.eval<[string, string, string, string | null] | null>(
      TOPIC_STATE,
      [this.keys(topic).meta],
      [newEpoch(), epoch, seen?.last ?? 0, this.restartsLose],
    );
    if (!reply) return undefined;
    const [current, first, last, epochs] = reply;
    if (current !== epoch && epoch !== '') {
      // The topic moved on from the epoch this node saw (a failover fence, or its own fence): what it saw of that epoch is settled.
      this.options.logger?.warn({ topic, was: epoch, epoch: current }, 'topic is in a new epoch (a Redis failover, or its log was behind what this node saw)');
      if (this.seen.get(topic)?.epoch === epoch) this.seen.delete(topic);
    }
    return this.toInfo(topic, current, Number(first), Number(last), epochs);
  }

  private toInfo(topic: string, epoch: string, first: number, last: number, epochs?: string | null): TopicInfo {
    const history = epochs ? (JSON.parse(epochs) as Array<[string, number]>).map(([e, start]) => ({ epoch: e, start })) : [{ epoch, start: 1 }];
    return { topic, epoch, epochs: history, first, last, count: Math.max(0, last - first + 1) };
  }

  async topicCount(): Promise<number> {
    this.assertOpen();
    return Number(await this.link.command(['SCARD', this.registryKey]));
  }

  async listTopics(): Promise<TopicInfo[]> {
    this.assertOpen();
    const names = await this.link.command<string[]>(['SMEMBERS', this.registryKey]);
    const infos = await Promise.all(
      names.map(async (topic) => {
        const [epoch, first, last, epochs] = await this.link.command<Array<string | null>>([
          'HMGET',
          this.keys(topic).meta,
          'epoch',
          'first',
          'last',
          'epochs',
        ]);
        return epoch ? this.toInfo(topic, epoch, Number(first), Number(last), epochs) : undefined;
      }),
    );
    return infos.filter((i): i is TopicInfo => i !== undefined).sort((a, b) => a.topic.localeCompare(b.topic));
  }

  async enforceRetention(topic: string): Promise<number> {
    this.assertOpen();
    const now = this.now();
    const { maxAgeMs, maxMessages } = this.retention(topic);
    const k = this.keys(topic);
    return Number(await this.link.eval(TRIM, [k.meta, k.log], ['retention', now - maxAgeMs, maxMessages]));
  }

  async truncate(topic: string, before: number): Promise<number> {
    this.assertOpen();
    const k = this.keys(topic);
    return Number(await this.link.eval(TRIM, [k.meta, k.log], ['before', before]));
  }

  // ---- live --------------------------------------------------------------------

  watch(topic: string): Promise<void> {
    if (this.closed) return Promise.reject(closedError());
    return this.serially(topic, () => this.startWatching(topic));
  }

  unwatch(topic: string): Promise<void> {
    if (this.closed) return Promise.reject(closedError());
    return this.serially(topic, async () => {
      if (this.watched.delete(topic)) await this.link.unsubscribe(this.keys(topic).live);
    });
  }

  /** Runs watch and unwatch of one topic one after the other, so an unsubscribe never undoes a later subscribe. */
  private serially(topic: string, step: () => Promise<void>): Promise<void> {
    const run = (this.watchSteps.get(topic) ?? Promise.resolve()).catch(() => undefined).then(step);
    this.watchSteps.set(topic, run);
    const forget = () => {
      if (this.watchSteps.get(topic) === run) this.watchSteps.delete(topic);
    };
    run.then(forget, forget);
    return run;
  }

  private async startWatching(topic: string): Promise<void> {
    if (this.watched.has(topic)) return;
    const state = { last: Number.MAX_SAFE_INTEGER, epoch: '', queue: Promise.resolve() };
    this.watched.set(topic, state);
    const k = this.keys(topic);
    try {
      await this.link.subscribe(k.live, (payload) => this.onLive(topic, payload));
      // Subscribed first, then read the edge: anything after it arrives live or is filled from the log.
      // A topic that does not exist yet starts at 0 with no epoch: its first message starts one.
      const info = await this.topicInfo(topic);
      state.last = info?.last ?? 0;
      state.epoch = info?.epoch ?? '';
    } catch (err) {
      // Not watched after all: the next watch() starts over.
      if (this.watched.get(topic) === state) this.watched.delete(topic);
      await this.link.unsubscribe(k.live).catch(() => undefined);
      throw err;
    }
  }

  private onLive(topic: string, payload: string): void {
    const state = this.watched.get(topic);
    if (!state) return;
    let parsed: [number, number, string, string, unknown] | { wake: string };
    try {
      parsed = JSON.parse(payload) as typeof parsed;
    } catch {
      this.options.logger?.error({ topic }, 'unreadable live notification');
      return;
    }
    if (!Array.isArray(parsed)) {
      for (const listener of this.wakeListeners) listener(topic, parsed.wake);
      return;
    }
    const [offset, ts, epoch, key, data] = parsed;
    const message: StoredMessage = { topic, offset, epoch, ts, data };
    if (key) message.key = key;
    state.queue = state.queue
      .then(() => this.deliverInOrder(topic, message))
      .catch((err) => {
        this.options.logger?.warn({ err, topic }, 'filling a live gap failed; the next message retries');
      });
  }

  /**
   * Moves a watched topic onto the log's current epoch: offsets after the end
   * of the epoch the node followed are new messages and must be delivered.
   */
  private rebase(state: { last: number; epoch: string }, info: TopicInfo | undefined): void {
    if (!info || state.epoch === info.epoch) return;
    state.last = Math.min(state.last, epochEnd(info.epochs, state.epoch) ?? info.first - 1);
    state.epoch = info.epoch;
  }

  /**
   * Live delivery in slices: past LIVE_SLICE_MS of it in one go, waits for
   * the event loop to turn before handing on the next message. One read of
   * the pub/sub connection can bring thousands of notifications (a publish
   * burst), and handing each to every subscriber in one go would hold the
   * event loop for seconds: no Redis reply, heartbeat, timer or client
   * request would be handled meanwhile, and Redis would look silent
   * (RedisLink's deadline) and the node dead to its peers (membership).
   * Order is kept: each topic's queue waits here in turn.
   */
  private async pace(): Promise<void> {
    const now = performance.now();
    if (this.sliceStartedAt === undefined) {
      this.sliceStartedAt = now;
      setImmediate(() => {
        this.sliceStartedAt = undefined;
      });
      return;
    }
    if (now - this.sliceStartedAt < LIVE_SLICE_MS) return;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }

  /** Hands `message` to listeners after any offsets it skipped, read from the log. */
  private async deliverInOrder(topic: string, message: StoredMessage): Promise<void> {
    await this.pace();
    const state = this.watched.get(topic);
    if (!state) return;
    if (message.epoch !== state.epoch) this.rebase(state, await this.topicInfo(topic));
    if (message.offset <= state.last) return;
    while (state.last + 1 < message.offset) {
      const missing = await this.read(topic, state.last + 1, Math.min(500, message.offset - state.last - 1));
      if (missing.length === 0) {
        // Removed by retention before we could read them.
        state.last = message.offset - 1;
        break;
      }
      for (const m of missing) {
        await this.pace();
        this.emit(state, m);
      }
    }
    this.emit(state, message);
  }

  private emit(state: { last: number }, message: StoredMessage): void {
    if (message.offset <= state.last) return;
    state.last = message.offset;
    this.noteSeen(message.topic, message.epoch, message.offset);
    for (const listener of this.listeners) listener(message);
  }

  /** After a reconnect: deliver whatever was published while notifications could not arrive. */
  private catchUpLive(topic: string): void {
    const state = this.watched.get(topic);
    if (!state) return;
    state.queue = state.queue
      .then(async () => {
        const info = await this.topicInfo(topic);
        if (!info) return;
        this.rebase(state, info);
        while (state.last < info.last) {
          const batch = await this.read(topic, state.last + 1, 500);
          if (batch.length === 0) break;
          for (const m of batch) {
            await this.pace();
            this.emit(state, m);
          }
        }
      })
      .catch((err) => this.options.logger?.warn({ err, topic }, 'catching up after reconnect failed'));
  }

  // ---- groups ------------------------------------------------------------------

  private groupKeys(topic: string, group: string) {
    const k = this.keys(topic);
    return { ...k, group: `${k.groupPrefix}${group}`, leases: `${k.groupPrefix}${group}:leases` };
  }

  async ensureGroup(topic: string, group: string, options: GroupOptions = {}): Promise<GroupInfo> {
    this.assertOpen();
    await this.register(topic);
    const k = this.groupKeys(topic, group);
    await this.link.eval(
      ENSURE_GROUP,
      [k.meta, k.log, k.group],
      [group, options.startAt ?? '', options.ackWaitMs ?? '', options.maxDeliveries ?? '', this.now(), newEpoch(), DEFAULTS.ackWaitMs, DEFAULTS.maxDeliveries],
    );
    const info = await this.groupInfo(topic, group);
    if (!info) throw new MeshError('internal', `group '${group}' of topic '${topic}' vanished while being created`);
    return info;
  }

  async configureGroup(topic: string, group: string, settings: Partial<GroupSettings>): Promise<GroupInfo> {
    this.assertOpen();
    const k = this.groupKeys(topic, group);
    await this.link.eval(CONFIGURE_GROUP, [k.group], [group, topic, settings.ackWaitMs ?? '', settings.maxDeliveries ?? '']);
    const info = await this.groupInfo(topic, group);
    if (!info) throw new MeshError('not_found', `group '${group}' of topic '${topic}' does not exist`);
    return info;
  }

  private async groupState(topic: string, group: string, pendingLimit: number) {
    const k = this.groupKeys(topic, group);
    const reply = await this.link.eval<
      [string, string, string, string, string, number, string, Array<[string, string, number, number, string, string]>] | null
    >(GROUP_STATE, [k.log, k.group, k.leases], [group, pendingLimit]);
    return reply ?? undefined;
  }

  async groupInfo(topic: string, group: string): Promise<GroupInfo | undefined> {
    this.assertOpen();
    const state = await this.groupState(topic, group, 100);
    if (!state) return undefined;
    const [ackWaitMs, maxDeliveries, createdAt, redeliveries, deadLettered, pending, lastId, entries] = state;
    const now = this.now();
    let oldest = now;
    for (const e of entries) if (e[5]) oldest = Math.min(oldest, Number(e[5]));
    return {
      topic,
      group,
      ackWaitMs: Number(ackWaitMs),
      maxDeliveries: Number(maxDeliveries),
      cursor: offsetOf(lastId) + 1,
      pending: Number(pending),
      oldestPendingMs: now - oldest,
      redeliveries: Number(redeliveries),
      deadLettered: Number(deadLettered),
      createdAt: Number(createdAt),
    };
  }

  async listGroups(topic: string): Promise<GroupInfo[]> {
    this.assertOpen();
    let groups: unknown[];
    try {
      groups = await this.link.command<unknown[]>(['XINFO', 'GROUPS', this.keys(topic).log]);
    } catch (err) {
      if (err instanceof MeshError && /no such key/i.test(err.message)) return [];
      throw err;
    }
    const names = groups.map((g) => fieldsOf(g).name!);
    const infos = await Promise.all(names.map((name) => this.groupInfo(topic, name)));
    return infos.filter((i): i is GroupInfo => i !== undefined).sort((a, b) => a.group.localeCompare(b.group));
  }

  async pending(topic: string, group: string, limit: number): Promise<PendingEntry[]> {
    this.assertOpen();
    const state = await this.groupState(topic, group, limit);
    if (!state) return [];
    const now = this.now();
    return state[7].map(([id, consumer, idle, count, due, firstAt]) => ({
      offset: offsetOf(id),
      consumer: consumer === '_released' ? null : consumer,
      delivery: Number(count),
      deadline: due ? Number(due) : now,
      firstDeliveredAt: firstAt ? Number(firstAt) : now - Number(idle),
      lastDeliveredAt: now - Number(idle),
    }));
  }

  async claim(topic: string, group: string, consumer: string, max: number): Promise<ClaimResult> {
    this.assertOpen();
    const now = this.now();
    const k = this.groupKeys(topic, group);
    const dlqTopic = deadLetterTopicOf(topic);
    const dlq = this.keys(dlqTopic);
    if (!this.registered.has(dlqTopic)) await this.register(dlqTopic);
    const [entries, nextDue, epoch, deadLettered] = await this.link.eval<[Array<[string, string[], number, number]>, number, string, number]>(
      CLAIM,
      [k.log, k.meta, k.group, k.leases, dlq.meta, dlq.log],
      [group, consumer, max, now, CLAIM_SCAN, newEpoch(), this.retention(dlqTopic).maxMessages, dlq.live, topic, this.restartsLose],
    );
    const result: ClaimResult = {
      deliveries: entries.map(([id, flat, delivery, deadline]) => ({
        message: this.toMessage(topic, epoch, id, flat),
        delivery: Number(delivery),
        deadline: Number(deadline),
      })),
    };
    if (Number(nextDue) >= 0) result.nextDueAt = Number(nextDue);
    if (Number(deadLettered) > 0) result.deadLettered = Number(deadLettered);
    return result;
  }

  async ack(topic: string, group: string, offset: number, { consumer, epoch }: SettleOptions): Promise<void> {
    this.assertOpen();
    const k = this.groupKeys(topic, group);
    await this.link.eval(ACK, [k.log, k.leases, k.meta], [group, `${offset}-0`, topic, epoch ?? '', consumer]);
  }

  /**
   * One ACK script per offset, sent together: the Redis client writes
   * commands issued in one turn in one go. Each is settled on its own, so a
   * Redis failure may hit some of them: those get the failure (unavailable,
   * maybe_stored) as their own result; when it hit every one, it is thrown.
   */
  async ackMany(topic: string, group: string, offsets: readonly number[], options: SettleOptions): Promise<Array<MeshError | undefined>> {
    this.assertOpen();
    const outcomes = await Promise.allSettled(offsets.map((offset) => this.ack(topic, group, offset, options)));
    const storeFailure = (o: PromiseSettledResult<void>) => o.status === 'rejected' && MeshError.from(o.reason).code !== 'not_found';
    const first = outcomes[0];
    if (first && outcomes.every(storeFailure)) throw (first as PromiseRejectedResult).reason;
    return outcomes.map((o) => (o.status === 'fulfilled' ? undefined : MeshError.from(o.reason)));
  }

  async nack(topic: string, group: string, offset: number, delayMs: number, { consumer, epoch }: SettleOptions): Promise<number> {
    this.assertOpen();
    const k = this.groupKeys(topic, group);
    const dueAt = this.now() + delayMs;
    await this.link.eval(NACK, [k.log, k.leases, k.meta], [group, `${offset}-0`, dueAt, topic, k.live, epoch ?? '', consumer]);
    return dueAt;
  }

  async release(topic: string, group: string, consumer: string): Promise<number> {
    this.assertOpen();
    const k = this.groupKeys(topic, group);
    return Number(await this.link.eval(RELEASE, [k.log, k.leases], [group, consumer, this.now(), 'exact', k.live]));
  }

  async releaseConsumers(prefix: string): Promise<number> {
    this.assertOpen();
    let released = 0;
    for (const topic of await this.listTopics()) {
      for (const group of await this.listGroups(topic.topic)) {
        const k = this.groupKeys(topic.topic, group.group);
        released += Number(await this.link.eval(RELEASE, [k.log, k.leases], [group.group, prefix, this.now(), 'prefix', k.live]));
      }
    }
    return released;
  }

  async deleteGroup(topic: string, group: string): Promise<void> {
    this.assertOpen();
    const k = this.groupKeys(topic, group);
    try {
      await this.link.command(['XGROUP', 'DESTROY', k.log, group]);
    } catch (err) {
      if (!(err instanceof MeshError && /no such key/i.test(err.message))) throw err;
    }
    await this.link.command(['DEL', k.group, k.leases]);
  }
}
