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

import type { DeadLetter, GroupInfo, GroupSettings, PendingEntry, RetentionPolicy } from '@meshmq/shared';

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
 * True when the message at `offset` in epoch `epoch` is still the one in the
 * log: `epoch` is the current one, or an earlier one that `offset` precedes
 * the end of.
 */
export function epochHolds(epochs: readonly EpochStart[], epoch: string, offset: number): boolean {
  const i = epochs.findIndex((e) => e.epoch === epoch);
  if (i < 0) return false;
  const next = epochs[i + 1];
  return next === undefined || offset < next.start;
}

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
  /**
   * Earliest time at which a pending entry of this group becomes deliverable
   * again (lease expiry or nack delay), or undefined when none is waiting.
   */
  nextDueAt?: number;
}



export type MessageListener = (message: StoredMessage) => void;
/** Leases of `group` became deliverable (released or nacked, possibly by another node). */
export type WakeListener = (topic: string, group: string) => void;

export interface Engine {
  /** `embedded` or `redis`. */
  readonly kind: string;

  open(): Promise<void>;
  close(): Promise<void>;

  /** `json`, when given, is `data` already encoded (the caller measured it), so it is not encoded twice. */
  publish(topic: string, data: unknown, options?: PublishOptions): Promise<PublishOutcome>;
  /** Up to `limit` retained messages with offset >= `from`, in offset order. */
  read(topic: string, from: number, limit: number): Promise<StoredMessage[]>;
  /** Creates the topic's log (and epoch) if it does not exist yet. */
  topicInfo(topic: string): Promise<TopicInfo>;
  /**
   * Reports that offsets up to `seenLast` of `epoch` were acknowledged or
   * delivered. If the log is behind that in the same epoch (it lost its
   * newest messages, e.g. in a Redis failover), a new epoch begins at
   * `last + 1`, so that reused offsets are never mistaken for the lost ones.
   * Returns the topic's state after the check.
   */
  fence(topic: string, epoch: string, seenLast: number): Promise<TopicInfo>;
  listTopics(): Promise<TopicInfo[]>;
  /** Removes messages the topic's retention no longer keeps; returns how many. */
  enforceRetention(topic: string, now?: number): Promise<number>;
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
  /** Registers a wake listener for watched topics; returns a function that removes it. */
  onWake(listener: WakeListener): () => void;
  unwatch(topic: string): Promise<void>;

  /**
   * Creates the group if missing (starting at `startAt`, default: after the
   * last offset) and applies any given settings. Returns its state.
   */
  ensureGroup(
    topic: string,
    group: string,
    options?: Partial<GroupSettings> & { startAt?: number },
  ): Promise<GroupInfo>;
  groupInfo(topic: string, group: string): Promise<GroupInfo | undefined>;
  listGroups(topic: string): Promise<GroupInfo[]>;
  pending(topic: string, group: string, limit: number): Promise<PendingEntry[]>;
  /**
   * Leases up to `max` messages to `consumer`: due pending entries first (in
   * offset order), then new messages after the cursor. An entry that has
   * reached maxDeliveries is moved to the dead-letter topic instead.
   */
  claim(topic: string, group: string, consumer: string, max: number, now?: number): Promise<ClaimResult>;
  /**
   * Settles a pending delivery. Throws `not_found` if the offset is not
   * pending, or if `epoch` (the epoch the message was delivered with) says
   * the member's message at that offset was lost and another one holds it now.
   */
  ack(topic: string, group: string, offset: number, epoch?: string): Promise<void>;
  /** Makes a pending delivery deliverable again after `delayMs`. Throws `not_found` as ack does. */
  nack(topic: string, group: string, offset: number, delayMs: number, now?: number, epoch?: string): Promise<number>;
  /** Makes every delivery leased to `consumer` deliverable now; returns how many. */
  release(topic: string, group: string, consumer: string): Promise<number>;
  deleteGroup(topic: string, group: string): Promise<void>;
}
