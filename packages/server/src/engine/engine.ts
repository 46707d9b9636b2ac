/**
 * The storage interface the broker core talks to. Every engine (embedded,
 * Redis) implements it and passes the same conformance suite
 * (test/engine/conformance.ts).
 *
 * Contract highlights:
 * - Offsets per topic start at 1, are gap-free and strictly increasing.
 * - `publish` resolves only once the message is durable by the engine's
 *   definition (documented per engine in docs/guarantees.md).
 * - Live messages reach `onMessage` listeners in offset order per topic, only
 *   after they are durable.
 * - Group state (cursor, pending entries, delivery counts) is durable.
 */

import { randomBytes } from 'node:crypto';
import { DEFAULTS, type DeadLetter, type GroupInfo, type GroupSettings, type MeshError, type PendingEntry, type RetentionPolicy } from '@meshmq/shared';

export type { DeadLetter, GroupInfo, GroupSettings, PendingEntry, RetentionPolicy };

export interface StoredMessage {
  topic: string;
  offset: number;
  epoch: string;
  ts: number;
  data: unknown;
  key?: string;
}

/** One epoch of a topic's log: offsets from `start` on were written under it. */
export interface EpochStart {
  epoch: string;
  start: number;
}

/**
 * Last offset of `epoch` that is still the one in the log: Infinity for the
 * current epoch, the offset before the next epoch's start for an earlier
 * one, undefined for an epoch the log does not know (lost entirely, or older
 * than the history kept).
 */
export function epochEnd(epochs: readonly EpochStart[], epoch: string): number | undefined {
  const i = epochs.findIndex((e) => e.epoch === epoch);
  if (i < 0) return undefined;
  const next = epochs[i + 1];
  return next === undefined ? Infinity : next.start - 1;
}

/**
 * True when the message at `offset` in epoch `epoch` is still the one in the
 * log: `epoch` is the current one, or an earlier one that `offset` precedes
 * the end of.
 */
export function epochHolds(epochs: readonly EpochStart[], epoch: string, offset: number): boolean {
  const end = epochEnd(epochs, epoch);
  return end !== undefined && offset <= end;
}

/** Epochs a topic's history keeps; older ones count as unknown (a client resuming from one is told it lost everything). */
export const MAX_EPOCHS = 32;

/** A new epoch id: 12 hex digits. */
export function newEpoch(): string {
  return randomBytes(6).toString('hex');
}

/** Retention when none is configured. */
export const DEFAULT_RETENTION: RetentionPolicy = {
  maxMessages: DEFAULTS.retentionMaxMessages,
  maxAgeMs: DEFAULTS.retentionMaxAgeMs,
};

export interface TopicInfo {
  topic: string;
  epoch: string;
  /**
   * Every epoch of the log, oldest first, the current one last. Offsets before
   * an epoch's `start` are shared with the epoch before it; from `start` on,
   * the older epoch's messages (if any were acknowledged) were lost.
   */
  epochs: EpochStart[];
  /** First retained offset; `last + 1` when nothing is retained. */
  first: number;
  /** Last offset ever assigned; 0 for a topic with no message yet. */
  last: number;
  /** Retained messages. */
  count: number;
}

export interface PublishOptions {
  /** Idempotency key. */
  key?: string;
  /** `JSON.stringify(data)`, when the caller has it already. */
  json?: string;
}

export interface PublishOutcome {
  offset: number;
  epoch: string;
  ts: number;
  duplicate: boolean;
}

/** Who settles a delivery, and the epoch it was delivered with. */
export interface SettleOptions {
  /** The consumer the delivery is leased to; anyone else is refused. */
  consumer: string;
  /**
   * The epoch the message was delivered with: the engine refuses to settle
   * another message that took over its offset after a loss.
   */
  epoch?: string;
}

/** Settings of a group and where a group created by the call starts. */
export interface GroupOptions extends Partial<GroupSettings> {
  /** First offset a group created by this call takes; default after the last one. */
  startAt?: number;
}

/** Options every engine takes. */
export interface EngineCommonOptions {
  /** Retention of a topic. Default: {@link DEFAULT_RETENTION} for every topic. */
  retention?: (topic: string) => RetentionPolicy;
  /** Window in which a repeated publish key is a duplicate. Default {@link DEFAULTS.dedupeWindowMs}. */
  dedupeWindowMs?: number;
  /**
   * Most topics the store may hold (dead-letter topics included); a publish
   * or group join that would create one more fails with `limit_exceeded`.
   * The broker's own dead-letter topics are created past it. Default: no
   * limit.
   */
  maxTopics?: number;
  /** Current time in ms; tests give a controllable clock. Default `Date.now`. */
  clock?: () => number;
}

/** One message handed to one group member. */
export interface GroupDelivery {
  message: StoredMessage;
  /** 1 on first delivery. */
  delivery: number;
  /** When the member's lease ends and the message becomes deliverable again. */
  deadline: number;
}

export interface ClaimResult {
  deliveries: GroupDelivery[];
  /** Messages this claim moved to the dead-letter topic (they had reached maxDeliveries). */
  deadLettered?: number;
  /**
   * Earliest time at which a pending entry of this group becomes deliverable
   * again (lease expiry or nack delay), or undefined when none is waiting.
   */
  nextDueAt?: number;
}

/** What `/readyz` reports of the storage. */
export interface EngineHealth {
  /** `up` when the engine can store and read; `connecting` before it first could; `down` when it cannot now. */
  state: 'up' | 'connecting' | 'down';
}

export type MessageListener = (message: StoredMessage) => void;
/** Leases of `group` became deliverable (released or nacked, possibly by another node). */
export type WakeListener = (topic: string, group: string) => void;

export interface Engine {
  /** `embedded` or `redis`. */
  readonly kind: string;

  open(): Promise<void>;
  /** After close, every other method rejects with `unavailable` at once and changes nothing; `health()` is `down`. */
  close(): Promise<void>;
  /** Whether the engine can serve right now (read by `/readyz`). */
  health(): EngineHealth;

  /** `json`, when given, is `data` already encoded (the caller measured it), so it is not encoded twice. */
  publish(topic: string, data: unknown, options?: PublishOptions): Promise<PublishOutcome>;
  /**
   * Up to `limit` retained messages with offset >= `from`, in offset order;
   * `maxBytes`, when given, stops the page once the messages' encoded data
   * passes it (always at least one message).
   */
  read(topic: string, from: number, limit: number, maxBytes?: number): Promise<StoredMessage[]>;
  /**
   * The topic's state, or undefined when it does not exist. Never creates a
   * topic: only publish and ensureGroup do, so reads cannot fill the store.
   */
  topicInfo(topic: string): Promise<TopicInfo | undefined>;
  listTopics(): Promise<TopicInfo[]>;
  /** How many topics the store holds (dead-letter topics included), without listing them. */
  topicCount(): Promise<number>;
  /** Removes messages the topic's retention no longer keeps; returns how many. */
  enforceRetention(topic: string): Promise<number>;
  /**
   * Removes every retained message with offset < `before` (all of them when
   * `before` is past `last`); offsets are never reused. Returns how many.
   */
  truncate(topic: string, before: number): Promise<number>;

  /** Registers a live listener; returns a function that removes it. */
  onMessage(listener: MessageListener): () => void;
  /**
   * Asks for live messages of `topic` (engines that share a log between nodes
   * only forward the topics a node watches). Resolves once every message
   * published after it will reach the listeners.
   */
  watch(topic: string): Promise<void>;
  /**
   * Registers a wake listener for watched topics; returns a function that
   * removes it. An engine whose store nodes share (Redis) calls it on every
   * node that watches the topic, the releasing node included, when a release
   * or nack makes leases of the group deliverable. A single-node engine
   * (embedded) never calls it: the node that released or nacked pumps its
   * own dispatcher.
   */
  onWake(listener: WakeListener): () => void;
  /**
   * Stops live messages and wakes of `topic` on this node (shared stores); a
   * later `watch` hears what is published after it, not what was published
   * in between. A single-node engine keeps every topic live.
   */
  unwatch(topic: string): Promise<void>;

  /**
   * Creates the group (and its topic) if missing, starting at `startAt`
   * (default: after the last offset) with the given settings. An existing
   * group keeps its settings: a joining member never rewrites them (see
   * configureGroup). Returns its state.
   */
  ensureGroup(topic: string, group: string, options?: GroupOptions): Promise<GroupInfo>;
  /** Changes an existing group's settings; `not_found` when it does not exist. */
  configureGroup(topic: string, group: string, settings: Partial<GroupSettings>): Promise<GroupInfo>;
  groupInfo(topic: string, group: string): Promise<GroupInfo | undefined>;
  listGroups(topic: string): Promise<GroupInfo[]>;
  pending(topic: string, group: string, limit: number): Promise<PendingEntry[]>;
  /**
   * Leases up to `max` messages to `consumer`: due pending entries first (in
   * offset order), then new messages after the cursor. An entry that has
   * reached maxDeliveries is moved to the dead-letter topic instead.
   */
  claim(topic: string, group: string, consumer: string, max: number): Promise<ClaimResult>;
  /**
   * Settles a delivery leased to `options.consumer`. Throws `not_found` if
   * the offset is not pending, is leased to another consumer (its lease
   * ended and it was redelivered, or it never was this consumer's), or if
   * `options.epoch` says the consumer's message at that offset was lost and
   * another one holds it now.
   */
  ack(topic: string, group: string, offset: number, options: SettleOptions): Promise<void>;
  /**
   * Settles many deliveries leased to `options.consumer` as `ack` settles
   * one, in one store write where the engine can. Resolves, per offset in
   * the order given, to undefined when it was settled or to the `not_found`
   * error `ack` would have thrown (an offset given twice: the second one).
   * Rejects when the store failed for all of them. An engine that settles
   * each offset on its own (Redis) resolves a failure that hit only some
   * with that failure (`unavailable`, `maybe_stored`) as their result.
   */
  ackMany(topic: string, group: string, offsets: readonly number[], options: SettleOptions): Promise<Array<MeshError | undefined>>;
  /**
   * Makes a delivery leased to `options.consumer` deliverable again after
   * `delayMs`; returns when. Throws `not_found` as ack does.
   */
  nack(topic: string, group: string, offset: number, delayMs: number, options: SettleOptions): Promise<number>;
  /** Makes every delivery leased to `consumer` deliverable now; returns how many. */
  release(topic: string, group: string, consumer: string): Promise<number>;
  /**
   * Makes every delivery leased to a consumer whose name starts with
   * `prefix`, in every group of every topic, deliverable now (the leases of
   * a node that is gone); returns how many.
   */
  releaseConsumers(prefix: string): Promise<number>;
  deleteGroup(topic: string, group: string): Promise<void>;
}
