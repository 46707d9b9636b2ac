/**
 * Shapes of the node's JSON admin API (docs/api.md), shared by the server
 * that answers it and the console that reads it.
 */
import type { ErrorCode } from './errors.js';

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

// ---- Response bodies, one per route of docs/api.md ------------------------------

/** The body of every failed admin API request; its HTTP status follows the code. */
export interface ApiErrorBody {
  error: { code: ErrorCode; message: string };
}

/** A node record as `GET /api/nodes` lists it: `self` marks the node that answered. */
export interface ListedNode extends NodeRecord {
  self?: boolean;
}

/** Where the node list comes from: the Redis membership, `--peers`, or this node alone. */
export type NodesMode = 'cluster' | 'static-peers' | 'single';

/** `GET /api/nodes` (`GET /api/nodes/self` answers a bare NodeRecord). */
export interface NodesResponse {
  mode: NodesMode;
  /** This node first. */
  nodes: ListedNode[];
}

/** `GET /api/topics`. */
export interface TopicsResponse {
  topics: TopicSummary[];
}

/** `GET /api/topics/:topic`. */
export interface TopicDetail {
  topic: TopicSummary;
  groups: GroupView[];
}

/** A retained message as the admin API shows it. */
export interface MessageView {
  offset: number;
  ts: number;
  key?: string;
  data: unknown;
}

/** A newest-first window of a log, with the cursors of its neighbours. */
interface LogPage {
  first: number;
  last: number;
  count: number;
  /** `before` for the next older page, null at the oldest retained message. */
  older: number | null;
  /** `from` for the next newer page, null at the newest message. */
  newer: number | null;
}

/** `GET /api/topics/:topic/messages`. */
export interface MessagesPage extends LogPage {
  topic: string;
  epoch: string;
  messages: MessageView[];
}

/** `leased`: a member holds it; `delayed`: nacked with a delay; `due`: deliverable now. */
export type PendingState = 'leased' | 'delayed' | 'due';

export interface PendingView extends PendingEntry {
  state: PendingState;
  /** Time since its first delivery. */
  ageMs: number;
  /** Null when retention removed it. */
  message: MessageView | null;
}

/** `GET /api/topics/:topic/groups/:group/pending`. */
export interface PendingPage {
  group: GroupView;
  entries: PendingView[];
}

/** `PUT /api/topics/:topic/groups/:group`: the group with its new settings. */
export interface GroupConfigResponse {
  group: GroupView;
}

/** One dead-letter topic in `GET /api/dead-letters`. */
export interface DeadLetterTopicSummary {
  /** The topic whose dead letters it holds. */
  topic: string;
  dlqTopic: string;
  count: number;
  first: number;
  last: number;
  lastDeadLetteredAt: number | null;
}

/** `GET /api/dead-letters`. */
export interface DeadLetterTopicsResponse {
  deadLetters: DeadLetterTopicSummary[];
}

/** A message of a dead-letter topic: its offset there, and the envelope. */
export interface DeadLetterView {
  offset: number;
  ts: number;
  letter: DeadLetter;
}

/** `GET /api/topics/:topic/dead-letters`; offsets and `epoch` are the dead-letter topic's. */
export interface DeadLettersPage extends LogPage {
  topic: string;
  dlqTopic: string;
  /** Null while the topic has no dead-letter topic yet. */
  epoch: string | null;
  messages: DeadLetterView[];
}

/** One dead letter published back to its topic. */
export interface ReplayOutcome {
  /** Its offset in the dead-letter topic. */
  dlqOffset: number;
  topic: string;
  /** The offset it got (the first replay's, when `duplicate`). */
  offset: number;
  epoch: string;
  ts: number;
  duplicate: boolean;
}

/** `POST /api/topics/:topic/dead-letters/:offset/replay`. */
export interface ReplayResponse {
  replayed: ReplayOutcome;
}

export interface ReplayFailure {
  dlqOffset: number;
  error: { code: ErrorCode; message: string };
}

/** `POST /api/topics/:topic/dead-letters/replay`. */
export interface ReplayAllResponse {
  replayed: number;
  duplicates: number;
  failed: ReplayFailure[];
  purged: number;
}

/** `DELETE /api/topics/:topic/dead-letters`. */
export interface PurgeResponse {
  purged: number;
  /** The dead-letter topic's first offset from now on; absent when it had none. */
  first?: number;
}

/** Live activity per topic; `members` is keyed by `groupKey(topic, group)` (names.ts). */
export interface TopicActivity {
  subscribers: Record<string, number>;
  members: Record<string, number>;
  publishRates: Record<string, number>;
}

/** One node's answer to the cluster-wide stats request. */
export interface NodeActivity extends TopicActivity {
  node: string;
  connections: number;
  subscriptions: number;
  /** The node's active alarms, oldest first (what `GET /api/alarms` answers on it). */
  alarms: Alarm[];
}

/** `GET /api/cluster/stats`. */
export interface ClusterStats {
  nodes: NodeActivity[];
  /** Live nodes that did not answer in time. */
  missing: string[];
  totals: Omit<NodeActivity, 'node' | 'alarms'>;
}

/**
 * The count for `key` (a topic, or a {@link groupKey}) in an activity
 * record, 0 when it has none. Own properties only: a topic may be named
 * `constructor` or `__proto__`.
 */
export function countOf(record: Readonly<Record<string, number>>, key: string): number {
  return Object.hasOwn(record, key) ? (record[key] ?? 0) : 0;
}

/** A condition an operator must hear about, raised by a node (docs/operations.md lists them). */
export interface Alarm {
  /** Stable id: the kind (`redis_down`, `redis_not_persistent`, `disk_nearly_full`, `memory_high`), or the kind and what it is about (`dead_letters:<topic>`, `group_behind:<topic>:<group>`). */
  id: string;
  severity: 'critical' | 'warning';
  /** What is wrong, in one sentence. */
  summary: string;
  /** What to do about it. */
  action: string;
  /** When it was raised (ms since the Unix epoch). */
  since: number;
}

/** `GET /api/alarms`: this node's active alarms, oldest first. */
export interface AlarmsResponse {
  node: string;
  alarms: Alarm[];
}

/** `GET /api/cluster/alarms`: the active alarms of every live node that answered, the answering node first. */
export interface ClusterAlarms {
  nodes: AlarmsResponse[];
  /** Live nodes that did not answer in time: their alarms are not known. */
  missing: string[];
}
