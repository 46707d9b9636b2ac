/**
 * Shapes of the node's JSON admin API (docs/api.md), shared by the server
 * that answers it and the console that reads it.
 */

export interface RetentionPolicy {
  maxMessages: number;
  maxAgeMs: number;
}

export interface GroupSettings {
  ackWaitMs: number;
  maxDeliveries: number;
}

export interface GroupInfo extends GroupSettings {
  topic: string;
  group: string;
  /** Next offset this group will take from the topic. */
  cursor: number;
  /** Delivered and not yet acked, or waiting for redelivery. */
  pending: number;
  /** Age in ms of the oldest pending delivery, 0 when none. */
  oldestPendingMs: number;
  /** Deliveries beyond the first, over the group's life. */
  redeliveries: number;
  /** Messages moved to the dead-letter topic, over the group's life. */
  deadLettered: number;
  createdAt: number;
}

export interface PendingEntry {
  offset: number;
  consumer: string | null;
  delivery: number;
  deadline: number;
  firstDeliveredAt: number;
  lastDeliveredAt: number;
}

/** Envelope stored as `data` of a message in a dead-letter topic. */
export interface DeadLetter {
  topic: string;
  group: string;
  offset: number;
  epoch: string;
  ts: number;
  key?: string;
  data: unknown;
  deliveries: number;
  firstDeliveredAt: number;
  lastDeliveredAt: number;
  reason: 'max_deliveries';
  deadLetteredAt: number;
}

export type NodeStatus = 'up' | 'draining' | 'down';

/** Per-interval message rates, oldest first: `in[i]` is messages per second over interval i. */
export interface RateSeries {
  intervalMs: number;
  /** End time of the newest interval (ms since the epoch). */
  endAt: number;
  in: number[];
  out: number[];
}

/**
 * What one node says about itself: the records of `GET /api/nodes`. The
 * static-peers mode and the Redis membership heartbeat carry the same
 * record.
 */
export interface NodeRecord {
  id: string;
  url: string;
  status: NodeStatus;
  version: string;
  startedAt: number;
  uptimeMs: number;
  connections: number;
  subscriptions: number;
  messagesInPerSec: number;
  messagesOutPerSec: number;
  /** Largest event-loop delay beyond the timer's own resolution in the last sampling interval, ms. */
  eventLoopLagMs: number;
  memory: { rss: number; heapUsed: number };
  /** Null when the node runs without Redis. */
  redis: { state: string } | null;
  /** When this record was last confirmed by the node itself (ms since the epoch). */
  lastSeen: number | null;
  rates: RateSeries;
  /** Why the node is shown down (peer records only). */
  error?: string;
}

/** One topic in `GET /api/topics`. */
export interface TopicSummary {
  topic: string;
  epoch: string;
  count: number;
  first: number;
  last: number;
  /** ts of the newest retained message, null when none is retained. */
  lastMessageAt: number | null;
  retention: RetentionPolicy;
  /** Messages per second published over the last seconds (through every node, in a cluster). */
  publishRate: number;
  /** Fan-out subscriptions (on every node, in a cluster). */
  subscribers: number;
  /** Consumer groups of the topic. */
  groups: number;
  /** Group members connected (to any node, in a cluster). */
  members: number;
  /** Messages in the topic's dead-letter topic. */
  deadLetters: number;
}

export interface GroupView extends GroupInfo {
  /** Members connected (to any node, in a cluster). */
  members: number;
  /** Retained messages the group has not taken yet. */
  ready: number;
}
