import { mkdirSync } from 'node:fs';
import { DEFAULTS, deadLetterTopicOf, groupKey, isDeadLetterTopic, MeshError } from '@meshmq/shared';
import { type Database, open, type RootDatabase } from 'lmdb';
import { DiskSpace } from './disk-space.js';
import type {
  ClaimResult,
  DeadLetter,
  Engine,
  EngineCommonOptions,
  EngineHealth,
  EpochStart,
  GroupDelivery,
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
} from './engine.js';
import { DEFAULT_RETENTION, epochHolds, newEpoch } from './engine.js';
import { LiveSequencer } from './live-sequencer.js';

export interface EmbeddedEngineOptions extends EngineCommonOptions {
  /** Directory holding the store; created if missing. */
  dataDir: string;
  /**
   * Publishes are refused with `unavailable` while less than this many bytes
   * are free on the data directory's disk; 0 turns the check off. Default
   * 64 MiB (`DEFAULT_DISK_FREE_LIMIT`).
   */
  diskFreeLimit?: number;
}

/** Persisted per-topic record. `last` is the source of truth for offset assignment. */
interface TopicRecord {
  epoch: string;
  /** Earlier epochs and where each later one starts; absent while the log has one epoch. */
  epochs?: EpochStart[];
  first: number;
  last: number;
  createdAt: number;
}

interface MessageRecord {
  ts: number;
  json: string;
  key?: string;
}

interface DedupeRecord {
  offset: number;
  ts: number;
}

interface GroupRecord extends GroupSettings {
  cursor: number;
  createdAt: number;
  redeliveries: number;
  deadLettered: number;
}

interface GroupState extends GroupRecord {
  topic: string;
  group: string;
  pending: Map<number, PendingEntry>;
  /**
   * No pending entry's deadline is earlier than this (-Infinity: unknown).
   * A claim looks through the pending entries for due ones only once it has
   * passed, not on every call: with a large prefetch that look was a claim's
   * largest cost.
   */
  dueAt: number;
}

/** `flush: false` resolves a write once committed (it survives a process kill), before it reaches the disk. */
interface WriteOptions {
  flush?: boolean;
}

type MessageKey = [string, number];
type GroupKey = [string, string];
type PendingKey = [string, string, number];

/**
 * The single-node engine: everything in one LMDB environment under `dataDir`.
 *
 * Durability: LMDB commits a write transaction and then fsyncs it (lmdb-js
 * "overlappingSync"); a committed transaction that is not yet flushed survives
 * a process kill but not a host crash. Every method that changes state resolves
 * only after `flushed`, so what it acknowledged survives both. lmdb-js puts all
 * writes of one event turn in one transaction: that is the group commit.
 *
 * Offsets are assigned inside the write transaction from the stored `last`, so
 * a failed commit consumes no offset and the log stays gap-free.
 */
export class EmbeddedEngine implements Engine {
  readonly kind = 'embedded';
  private root!: RootDatabase;
  private topicsDb!: Database<TopicRecord, string>;
  private messagesDb!: Database<MessageRecord, MessageKey>;
  private dedupeDb!: Database<DedupeRecord, [string, string]>;
  private groupsDb!: Database<GroupRecord, GroupKey>;
  private pendingDb!: Database<PendingEntry, PendingKey>;

  /** Durable view of each topic: what listeners have been told about. */
  private readonly topics = new Map<string, TopicInfo>();
  private readonly groups = new Map<string, GroupState>();
  /** Topics being created, so that concurrent first publishes share one creation. */
  private readonly creating = new Map<string, Promise<TopicInfo>>();
  private readonly listeners = new Set<MessageListener>();
  private readonly sequencer: LiveSequencer;
  private readonly retention: (topic: string) => RetentionPolicy;
  private readonly dedupeWindowMs: number;
  private readonly now: () => number;
  private closed = false;
  private readonly disk: DiskSpace;

  constructor(private readonly options: EmbeddedEngineOptions) {
    this.disk = new DiskSpace(options.dataDir, options.diskFreeLimit);
    this.retention = options.retention ?? (() => DEFAULT_RETENTION);
    this.dedupeWindowMs = options.dedupeWindowMs ?? DEFAULTS.dedupeWindowMs;
    this.now = options.clock ?? Date.now;
    this.sequencer = new LiveSequencer((message) => {
      const info = this.topics.get(message.topic);
      if (info && message.offset > info.last) {
        info.last = message.offset;
        info.count = info.last - info.first + 1;
      }
      for (const listener of this.listeners) listener(message);
    });
  }

  async open(): Promise<void> {
    mkdirSync(this.options.dataDir, { recursive: true });
    this.root = open({ path: this.options.dataDir, compression: false });
    this.topicsDb = this.root.openDB<TopicRecord, string>({ name: 'topics' });
    this.messagesDb = this.root.openDB<MessageRecord, MessageKey>({ name: 'messages' });
    this.dedupeDb = this.root.openDB<DedupeRecord, [string, string]>({ name: 'dedupe' });
    this.groupsDb = this.root.openDB<GroupRecord, GroupKey>({ name: 'groups' });
    this.pendingDb = this.root.openDB<PendingEntry, PendingKey>({ name: 'pending' });

    for (const { key, value } of this.topicsDb.getRange()) {
      this.ensureTopicState(key, value);
    }
    const now = this.now();
    for (const { key, value } of this.groupsDb.getRange()) {
      const [topic, group] = key;
      this.groups.set(groupKey(topic, group), { ...value, topic, group, pending: new Map(), dueAt: -Infinity });
    }
    for (const { key, value } of this.pendingDb.getRange()) {
      const [topic, group, offset] = key;
      // Every member was disconnected by the restart: their leases end now.
      const entry: PendingEntry = { ...value, offset, consumer: null, deadline: Math.min(value.deadline, now) };
      this.groups.get(groupKey(topic, group))?.pending.set(offset, entry);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.listeners.clear();
    await this.root?.flushed;
    await this.root?.close();
  }

  health(): EngineHealth {
    return { state: this.closed ? 'down' : 'up' };
  }

  onMessage(listener: MessageListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Every message of this node's store is live here: nothing to watch. */
  async watch(): Promise<void> {
    this.assertOpen();
  }

  /** One node: whoever releases or nacks a lease pumps its own dispatcher. */
  onWake(): () => void {
    return () => undefined;
  }

  async unwatch(): Promise<void> {
    this.assertOpen();
  }

  // ---- topics ------------------------------------------------------------------

  async publish(topic: string, data: unknown, options: PublishOptions = {}): Promise<PublishOutcome> {
    const json = options.json ?? JSON.stringify(data);
    if (json === undefined) throw new MeshError('bad_request', "'data' must be a JSON value");
    this.assertOpen();
    this.disk.assertRoomForPublish();
    return this.append(topic, data, json, options.key);
  }

  /**
   * Appends one message in a write transaction; `alsoInTransaction` runs in the
   * same transaction (dead-lettering removes the pending entry atomically).
   */
  private async append(topic: string, data: unknown, json: string, key: string | undefined, alsoInTransaction?: () => void): Promise<PublishOutcome> {
    this.assertOpen();
    // Creating the topic first gives its in-memory state exactly one starting point.
    if (!this.topics.has(topic)) await this.createTopic(topic);
    const now = this.now();
    const retention = this.retention(topic);
    let trimmed: (() => void) | undefined;
    let result: PublishOutcome & { message?: StoredMessage };
    try {
      result = await this.root.transaction(() => {
        if (key !== undefined) {
          const seen = this.dedupeDb.get([topic, key]);
          if (seen && now - seen.ts < this.dedupeWindowMs) {
            const record = this.topicsDb.get(topic);
            return { offset: seen.offset, epoch: record?.epoch ?? '', ts: seen.ts, duplicate: true };
          }
        }
        const record = this.topicsDb.get(topic);
        if (!record) throw new MeshError('internal', `topic '${topic}' vanished from the store`);
        const offset = record.last + 1;
        const stored: MessageRecord = key === undefined ? { ts: now, json } : { ts: now, json, key };
        this.messagesDb.put([topic, offset], stored);
        let first = record.first;
        // Count retention, enforced on the write path so a topic never exceeds it.
        while (offset - first + 1 > retention.maxMessages) {
          this.messagesDb.remove([topic, first]);
          first++;
        }
        if (first > record.first) trimmed = this.advanceFirst(topic, first);
        this.topicsDb.put(topic, { ...record, first, last: offset });
        if (key !== undefined) this.dedupeDb.put([topic, key], { offset, ts: now });
        alsoInTransaction?.();
        const message: StoredMessage = { topic, offset, epoch: record.epoch, ts: now, data: undefined };
        if (key !== undefined) message.key = key;
        return { offset, epoch: record.epoch, ts: now, duplicate: false, message };
      });
      await this.root.flushed;
    } catch (err) {
      trimmed?.();
      throw this.storageError(err);
    }
    const { message, ...outcome } = result;
    if (message) {
      message.data = data;
      this.sequencer.push(message);
    } else {
      // A duplicate of a publish still in flight must not be answered before it is durable.
      await this.sequencer.reached(topic, outcome.offset);
    }
    return outcome;
  }

  async read(topic: string, from: number, limit: number, maxBytes = Infinity): Promise<StoredMessage[]> {
    this.assertOpen();
    return this.readDurable(topic, from, limit, maxBytes);
  }

  /** Synchronous so that claim can pick and lease entries without interleaving. */
  private readDurable(topic: string, from: number, limit: number, maxBytes = Infinity): StoredMessage[] {
    const info = this.topics.get(topic);
    if (!info || limit <= 0) return [];
    const start = Math.max(from, info.first);
    if (start > info.last) return [];
    const out: StoredMessage[] = [];
    let bytes = 0;
    for (const { key, value } of this.messagesDb.getRange({
      start: [topic, start],
      end: [topic, info.last + 1],
      limit,
    })) {
      if (out.length > 0 && bytes + value.json.length > maxBytes) break;
      bytes += value.json.length;
      const message: StoredMessage = { topic, offset: key[1], epoch: info.epoch, ts: value.ts, data: JSON.parse(value.json) };
      if (value.key !== undefined) message.key = value.key;
      out.push(message);
    }
    return out;
  }

  async topicInfo(topic: string): Promise<TopicInfo | undefined> {
    this.assertOpen();
    const known = this.topics.get(topic);
    return known && { ...known, epochs: [...known.epochs] };
  }

  /**
   * Creates the topic's record (first publish or group); refuses one past
   * maxTopics. Concurrent callers share one creation, so publishes that
   * arrive while it is under way go on in the order they came.
   */
  private createTopic(topic: string): Promise<TopicInfo> {
    const known = this.topics.get(topic);
    if (known) return Promise.resolve(known);
    let creating = this.creating.get(topic);
    if (!creating) {
      creating = this.writeTopic(topic).finally(() => this.creating.delete(topic));
      this.creating.set(topic, creating);
    }
    return creating;
  }

  private async writeTopic(topic: string): Promise<TopicInfo> {
    this.assertOpen();
    // Every topic counts, those being created too; only the broker's own dead-letter topics are created past the limit.
    const max = this.options.maxTopics;
    const count = this.topics.size + this.creating.size;
    if (!isDeadLetterTopic(topic) && max !== undefined && count >= max) {
      throw new MeshError('limit_exceeded', `this node holds ${count} topics, its limit (--max-topics); topic '${topic}' was not created`);
    }
    let record: TopicRecord;
    try {
      record = await this.root.transaction(() => {
        const existing = this.topicsDb.get(topic);
        if (existing) return existing;
        const fresh = { epoch: newEpoch(), first: 1, last: 0, createdAt: this.now() };
        this.topicsDb.put(topic, fresh);
        return fresh;
      });
      await this.root.flushed;
    } catch (err) {
      throw this.storageError(err);
    }
    return this.ensureTopicState(topic, record);
  }

  async topicCount(): Promise<number> {
    this.assertOpen();
    return this.topics.size;
  }

  async listTopics(): Promise<TopicInfo[]> {
    this.assertOpen();
    return [...this.topics.values()].map((info) => ({ ...info })).sort((a, b) => a.topic.localeCompare(b.topic));
  }

  async enforceRetention(topic: string): Promise<number> {
    this.assertOpen();
    const now = this.now();
    const { maxAgeMs, maxMessages } = this.retention(topic);
    const removed = await this.removeOldest(topic, (offset, message, last) => now - message.ts > maxAgeMs || last - offset + 1 > maxMessages);
    await this.expireDedupeKeys(topic, now);
    return removed;
  }

  async truncate(topic: string, before: number): Promise<number> {
    this.assertOpen();
    return this.removeOldest(topic, (offset) => offset < before);
  }

  /** Removes messages from the front of the log while `shouldRemove` says so. */
  private async removeOldest(topic: string, shouldRemove: (offset: number, message: MessageRecord, last: number) => boolean): Promise<number> {
    const info = this.topics.get(topic);
    if (!info) return 0;
    let removed = 0;
    let first = 0;
    let undo: (() => void) | undefined;
    try {
      await this.root.transaction(() => {
        const record = this.topicsDb.get(topic);
        if (!record) return;
        first = record.first;
        const durableLast = info.last;
        for (const { key, value } of this.messagesDb.getRange({ start: [topic, first], end: [topic, durableLast + 1] })) {
          if (!shouldRemove(key[1], value, record.last)) break;
          this.messagesDb.remove(key);
          first = key[1] + 1;
          removed++;
        }
        if (removed > 0) {
          this.topicsDb.put(topic, { ...record, first });
          undo = this.advanceFirst(topic, first);
        }
      });
      await this.root.flushed;
    } catch (err) {
      undo?.();
      throw this.storageError(err);
    }
    return removed;
  }

  private async expireDedupeKeys(topic: string, now: number): Promise<void> {
    const expired: Array<[string, string]> = [];
    // From the topic's first key until another topic's: an end bound such as [topic, '\uffff'] would miss keys
    // that start above U+FFFF (their UTF-8 sorts after it), and they would never expire.
    for (const { key, value } of this.dedupeDb.getRange({ start: [topic, ''] })) {
      if (key[0] !== topic) break;
      if (now - value.ts >= this.dedupeWindowMs) expired.push(key);
    }
    if (expired.length > 0) {
      await this.write(() => {
        for (const key of expired) this.dedupeDb.remove(key);
      });
    }
  }

  // ---- groups ------------------------------------------------------------------

  async ensureGroup(topic: string, group: string, options: GroupOptions = {}): Promise<GroupInfo> {
    this.assertOpen();
    const existing = this.groups.get(groupKey(topic, group));
    if (existing) return this.describeGroup(existing, this.now());
    const info = await this.createTopic(topic);
    // Another call may have created it while the topic was being created.
    let state = this.groups.get(groupKey(topic, group));
    if (!state) {
      state = {
        topic,
        group,
        cursor: Math.max(options.startAt ?? info.last + 1, info.first),
        ackWaitMs: options.ackWaitMs ?? DEFAULTS.ackWaitMs,
        maxDeliveries: options.maxDeliveries ?? DEFAULTS.maxDeliveries,
        createdAt: this.now(),
        redeliveries: 0,
        deadLettered: 0,
        pending: new Map(),
        dueAt: Infinity,
      };
      this.groups.set(groupKey(topic, group), state);
      await this.persistGroup(state);
    }
    return this.describeGroup(state, this.now());
  }

  async configureGroup(topic: string, group: string, settings: Partial<GroupSettings>): Promise<GroupInfo> {
    this.assertOpen();
    const state = this.requireGroup(topic, group);
    const { ackWaitMs, maxDeliveries } = state;
    if (settings.ackWaitMs !== undefined) state.ackWaitMs = settings.ackWaitMs;
    if (settings.maxDeliveries !== undefined) state.maxDeliveries = settings.maxDeliveries;
    const record = this.groupRecord(state);
    await this.writeOrUndo([() => Object.assign(state, { ackWaitMs, maxDeliveries })], () => this.groupsDb.put([topic, group], record));
    return this.describeGroup(state, this.now());
  }

  async groupInfo(topic: string, group: string): Promise<GroupInfo | undefined> {
    this.assertOpen();
    const state = this.groups.get(groupKey(topic, group));
    return state && this.describeGroup(state, this.now());
  }

  async listGroups(topic: string): Promise<GroupInfo[]> {
    this.assertOpen();
    const now = this.now();
    return [...this.groups.values()]
      .filter((state) => state.topic === topic)
      .map((state) => this.describeGroup(state, now))
      .sort((a, b) => a.group.localeCompare(b.group));
  }

  async pending(topic: string, group: string, limit: number): Promise<PendingEntry[]> {
    this.assertOpen();
    const state = this.groups.get(groupKey(topic, group));
    if (!state) return [];
    return [...state.pending.values()]
      .sort((a, b) => a.offset - b.offset)
      .slice(0, limit)
      .map((e) => ({ ...e }));
  }

  async claim(topic: string, group: string, consumer: string, max: number): Promise<ClaimResult> {
    this.assertOpen();
    const now = this.now();
    const state = this.requireGroup(topic, group);
    const info = this.topics.get(topic);
    const deliveries: GroupDelivery[] = [];
    const changed: PendingEntry[] = [];
    const dropped: number[] = [];
    let deadLettered = 0;
    // Memory changes first (claims of one turn must not interleave); a write that fails undoes them.
    const undo: Array<() => void> = [];
    const { cursor, redeliveries } = state;
    undo.push(() => Object.assign(state, { cursor, redeliveries, dueAt: -Infinity }));

    const due = now >= state.dueAt ? this.dueEntries(state, now) : [];
    for (const entry of due) {
      if (deliveries.length >= max) {
        // Due entries are left for the next claim: it must look again.
        state.dueAt = now;
        break;
      }
      const [message] = this.readDurable(topic, entry.offset, 1);
      if (!message || message.offset !== entry.offset) {
        // Retention removed it while it was pending: nothing left to deliver.
        state.pending.delete(entry.offset);
        undo.push(() => state.pending.set(entry.offset, entry));
        dropped.push(entry.offset);
        continue;
      }
      if (entry.delivery >= state.maxDeliveries) {
        state.pending.delete(entry.offset);
        void this.deadLetter(state, entry, message, now);
        deadLettered++;
        continue;
      }
      const before = { ...entry };
      undo.push(() => Object.assign(entry, before));
      entry.delivery += 1;
      entry.consumer = consumer;
      entry.deadline = now + state.ackWaitMs;
      entry.lastDeliveredAt = now;
      state.redeliveries += 1;
      changed.push(entry);
      deliveries.push({ message, delivery: entry.delivery, deadline: entry.deadline });
    }

    if (info && deliveries.length < max) {
      if (state.cursor < info.first) state.cursor = info.first;
      const fresh = this.readDurable(topic, state.cursor, max - deliveries.length);
      for (const message of fresh) {
        const entry: PendingEntry = {
          offset: message.offset,
          consumer,
          delivery: 1,
          deadline: now + state.ackWaitMs,
          firstDeliveredAt: now,
          lastDeliveredAt: now,
        };
        state.pending.set(message.offset, entry);
        state.dueAt = Math.min(state.dueAt, entry.deadline);
        undo.push(() => state.pending.delete(message.offset));
        state.cursor = message.offset + 1;
        changed.push(entry);
        deliveries.push({ message, delivery: 1, deadline: entry.deadline });
      }
    }

    if (changed.length > 0 || dropped.length > 0) {
      const record = this.groupRecord(state);
      const entries = changed.map((entry) => ({ ...entry }));
      // Committed, not yet flushed: a lease lost to a power cut only means the message is delivered again
      // (at least once), and not waiting for the disk lets deliveries go out as soon as the message is durable.
      await this.writeOrUndo(
        undo,
        () => {
          this.groupsDb.put([topic, group], record);
          for (const entry of entries) this.pendingDb.put([topic, group, entry.offset], entry);
          for (const offset of dropped) this.pendingDb.remove([topic, group, offset]);
        },
        { flush: false },
      );
    }
    const result: ClaimResult = { deliveries };
    if (deadLettered > 0) result.deadLettered = deadLettered;
    // A lower bound (an entry acked since does not raise it): an early wake-up only costs one look.
    if (state.pending.size > 0 && state.dueAt > now && state.dueAt < Infinity) result.nextDueAt = state.dueAt;
    return result;
  }

  private async deadLetter(state: GroupState, entry: PendingEntry, message: StoredMessage, now: number): Promise<void> {
    const letter: DeadLetter = {
      topic: state.topic,
      group: state.group,
      offset: entry.offset,
      epoch: message.epoch,
      ts: message.ts,
      data: message.data,
      deliveries: entry.delivery,
      firstDeliveredAt: entry.firstDeliveredAt,
      lastDeliveredAt: entry.lastDeliveredAt,
      reason: 'max_deliveries',
      deadLetteredAt: now,
    };
    if (message.key !== undefined) letter.key = message.key;
    state.deadLettered += 1;
    try {
      await this.append(deadLetterTopicOf(state.topic), letter, JSON.stringify(letter), undefined, () => {
        this.pendingDb.remove([state.topic, state.group, entry.offset]);
        this.groupsDb.put([state.topic, state.group], this.groupRecord(state));
      });
    } catch {
      // Keep the message: it stays pending and is dead-lettered on a later claim.
      state.deadLettered -= 1;
      state.pending.set(entry.offset, entry);
      state.dueAt = -Infinity;
    }
  }

  async ack(topic: string, group: string, offset: number, options: SettleOptions): Promise<void> {
    const [error] = await this.ackMany(topic, group, [offset], options);
    if (error) throw error;
  }

  async ackMany(topic: string, group: string, offsets: readonly number[], options: SettleOptions): Promise<Array<MeshError | undefined>> {
    this.assertOpen();
    const state = this.requireGroup(topic, group);
    const results: Array<MeshError | undefined> = [];
    const settled: Array<[number, PendingEntry]> = [];
    for (const offset of offsets) {
      try {
        const entry = this.leasedEntry(state, offset, options);
        // Gone from memory at once, so a second ack of it fails; back if the write does.
        state.pending.delete(offset);
        settled.push([offset, entry]);
        results.push(undefined);
      } catch (err) {
        results.push(MeshError.from(err));
      }
    }
    if (settled.length === 0) return results;
    const undo = () => {
      for (const [offset, entry] of settled) state.pending.set(offset, entry);
      state.dueAt = -Infinity;
    };
    await this.writeOrUndo([undo], () => {
      for (const [offset] of settled) this.pendingDb.remove([topic, group, offset]);
    });
    return results;
  }

  async nack(topic: string, group: string, offset: number, delayMs: number, options: SettleOptions): Promise<number> {
    this.assertOpen();
    const state = this.requireGroup(topic, group);
    const entry = this.leasedEntry(state, offset, options);
    const before = { ...entry };
    entry.consumer = null;
    entry.deadline = this.now() + delayMs;
    state.dueAt = Math.min(state.dueAt, entry.deadline);
    const stored = { ...entry };
    await this.writeOrUndo([() => Object.assign(entry, before)], () => this.pendingDb.put([topic, group, offset], stored));
    return entry.deadline;
  }

  /** The pending entry at `offset` if it is leased to the settling consumer in the epoch it names. */
  private leasedEntry(state: GroupState, offset: number, { consumer, epoch }: SettleOptions): PendingEntry {
    const { topic, group } = state;
    this.assertEpochHolds(topic, group, offset, epoch);
    const entry = state.pending.get(offset);
    if (!entry) throw new MeshError('not_found', `offset ${offset} is not pending in group '${group}' of topic '${topic}'`);
    if (entry.consumer !== consumer) {
      throw new MeshError('not_found', `offset ${offset} of group '${group}' of topic '${topic}' is not leased to this member (its lease ended)`);
    }
    return entry;
  }

  private assertEpochHolds(topic: string, group: string, offset: number, epoch: string | undefined): void {
    const info = this.topics.get(topic);
    if (epoch === undefined || !info || epochHolds(info.epochs, epoch, offset)) return;
    throw new MeshError('not_found', `offset ${offset} of epoch ${epoch} in group '${group}' of topic '${topic}' was lost; another message holds it now`);
  }

  async release(topic: string, group: string, consumer: string): Promise<number> {
    this.assertOpen();
    const state = this.groups.get(groupKey(topic, group));
    return state ? this.releaseWhere(state, (c) => c === consumer) : 0;
  }

  async releaseConsumers(prefix: string): Promise<number> {
    this.assertOpen();
    let released = 0;
    for (const state of this.groups.values()) released += await this.releaseWhere(state, (c) => c.startsWith(prefix));
    return released;
  }

  private async releaseWhere(state: GroupState, held: (consumer: string) => boolean): Promise<number> {
    const { topic, group } = state;
    const now = this.now();
    const released: PendingEntry[] = [];
    const undo: Array<() => void> = [];
    for (const entry of state.pending.values()) {
      if (entry.consumer === null || !held(entry.consumer)) continue;
      const before = { ...entry };
      undo.push(() => Object.assign(entry, before));
      entry.consumer = null;
      entry.deadline = now;
      state.dueAt = Math.min(state.dueAt, now);
      released.push({ ...entry });
    }
    if (released.length > 0) {
      await this.writeOrUndo(undo, () => {
        for (const entry of released) this.pendingDb.put([topic, group, entry.offset], entry);
      });
    }
    return released.length;
  }

  async deleteGroup(topic: string, group: string): Promise<void> {
    this.assertOpen();
    const state = this.groups.get(groupKey(topic, group));
    if (!state) return;
    this.groups.delete(groupKey(topic, group));
    await this.write(() => {
      this.groupsDb.remove([topic, group]);
      for (const offset of state.pending.keys()) this.pendingDb.remove([topic, group, offset]);
    });
  }

  // ---- helpers -----------------------------------------------------------------

  private requireGroup(topic: string, group: string): GroupState {
    const state = this.groups.get(groupKey(topic, group));
    if (!state) throw new MeshError('not_found', `group '${group}' of topic '${topic}' does not exist`);
    return state;
  }

  private groupRecord(state: GroupState): GroupRecord {
    const { ackWaitMs, maxDeliveries, cursor, createdAt, redeliveries, deadLettered } = state;
    return { ackWaitMs, maxDeliveries, cursor, createdAt, redeliveries, deadLettered };
  }

  private persistGroup(state: GroupState): Promise<void> {
    return this.write(() => this.groupsDb.put([state.topic, state.group], this.groupRecord(state)));
  }

  private describeGroup(state: GroupState, now: number): GroupInfo {
    let oldest = now;
    for (const entry of state.pending.values()) oldest = Math.min(oldest, entry.firstDeliveredAt);
    return {
      topic: state.topic,
      group: state.group,
      ackWaitMs: state.ackWaitMs,
      maxDeliveries: state.maxDeliveries,
      cursor: state.cursor,
      pending: state.pending.size,
      oldestPendingMs: now - oldest,
      redeliveries: state.redeliveries,
      deadLettered: state.deadLettered,
      createdAt: state.createdAt,
    };
  }

  /**
   * The due pending entries in offset order; sets `dueAt` to the earliest
   * deadline of the others, those a claim redelivering the due ones leaves
   * (it gives them `now + ackWaitMs`, later than every other).
   */
  private dueEntries(state: GroupState, now: number): PendingEntry[] {
    const due: PendingEntry[] = [];
    let next = Infinity;
    for (const entry of state.pending.values()) {
      if (entry.deadline <= now) due.push(entry);
      else if (entry.deadline < next) next = entry.deadline;
    }
    state.dueAt = due.length > 0 ? Math.min(next, now + state.ackWaitMs) : next;
    return due.sort((a, b) => a.offset - b.offset);
  }

  /** Writes, or, when the write fails, runs `undo` (newest first) to put memory back as it was, and throws. */
  private async writeOrUndo(undo: Array<() => void>, body: () => void, options?: WriteOptions): Promise<void> {
    try {
      await this.write(body, options);
    } catch (err) {
      for (const step of undo.reverse()) step();
      throw err;
    }
  }

  /** Runs `body` in a write transaction; resolves once it is flushed to disk, or only committed with `flush: false`. */
  private async write(body: () => void, { flush = true }: WriteOptions = {}): Promise<void> {
    this.assertOpen();
    try {
      await this.root.transaction(body);
      if (flush) await this.root.flushed;
    } catch (err) {
      throw this.storageError(err);
    }
  }

  private ensureTopicState(topic: string, record: TopicRecord): TopicInfo {
    let info = this.topics.get(topic);
    if (!info) {
      info = this.toInfo(topic, record);
      this.topics.set(topic, info);
      this.sequencer.reset(topic, record.last);
    }
    return info;
  }

  /**
   * Moves the durable view's `first` forward as soon as a transaction removes
   * messages, before it commits, so readers never see `first` pointing at a
   * removed message. Returns an undo for a transaction that fails.
   */
  private advanceFirst(topic: string, first: number): () => void {
    const info = this.topics.get(topic);
    if (!info || first <= info.first) return () => undefined;
    const previous = info.first;
    info.first = first;
    info.count = Math.max(0, info.last - info.first + 1);
    return () => {
      if (info.first === first) {
        info.first = previous;
        info.count = Math.max(0, info.last - info.first + 1);
      }
    };
  }

  private toInfo(topic: string, record: TopicRecord): TopicInfo {
    return {
      topic,
      epoch: record.epoch,
      epochs: record.epochs ?? [{ epoch: record.epoch, start: 1 }],
      first: record.first,
      last: record.last,
      count: Math.max(0, record.last - record.first + 1),
    };
  }

  private assertOpen(): void {
    if (this.closed) throw new MeshError('unavailable', 'the storage engine is closed');
  }

  private storageError(err: unknown): MeshError {
    return this.disk.writeFailed(err);
  }
}
