/** Response shapes of the node's admin API (docs/api.md). */

export type NodeStatus = 'up' | 'draining' | 'down';

export interface RateSeries {
  intervalMs: number;
  endAt: number;
  in: number[];
  out: number[];
}

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
  eventLoopLagMs: number;
  memory: { rss: number; heapUsed: number };
  redis: { state: string } | null;
  lastSeen: number | null;
  rates: RateSeries;
  error?: string;
  self?: boolean;
}

export interface NodesResponse {
  mode: 'single' | 'static-peers' | string;
  nodes: NodeRecord[];
}

export interface RetentionPolicy {
  maxMessages: number;
  maxAgeMs: number;
}

export interface TopicSummary {
  topic: string;
  epoch: string;
  count: number;
  first: number;
  last: number;
  lastMessageAt: number | null;
  retention: RetentionPolicy;
  publishRate: number;
  subscribers: number;
  groups: number;
  members: number;
  deadLetters: number;
}

export interface GroupView {
  topic: string;
  group: string;
  ackWaitMs: number;
  maxDeliveries: number;
  cursor: number;
  pending: number;
  oldestPendingMs: number;
  redeliveries: number;
  deadLettered: number;
  createdAt: number;
  members: number;
  ready: number;
}

export interface TopicDetail {
  topic: TopicSummary;
  groups: GroupView[];
}

export interface MessageView {
  offset: number;
  ts: number;
  key?: string;
  data: unknown;
}

export interface MessagesPage {
  topic: string;
  epoch: string;
  first: number;
  last: number;
  count: number;
  messages: MessageView[];
  older: number | null;
  newer: number | null;
}

export interface PendingView {
  offset: number;
  consumer: string | null;
  delivery: number;
  deadline: number;
  firstDeliveredAt: number;
  lastDeliveredAt: number;
  state: 'leased' | 'delayed' | 'due';
  ageMs: number;
  message: MessageView | null;
}

export interface PendingResponse {
  group: GroupView;
  entries: PendingView[];
}

export interface DeadLetterTopic {
  topic: string;
  dlqTopic: string;
  count: number;
  first: number;
  last: number;
  lastDeadLetteredAt: number | null;
}

export interface DeadLetterEnvelope {
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
  reason: string;
  deadLetteredAt: number;
}

export interface DeadLettersPage {
  topic: string;
  dlqTopic: string;
  epoch: string | null;
  first: number;
  last: number;
  count: number;
  messages: Array<{ offset: number; ts: number; letter: DeadLetterEnvelope }>;
  older: number | null;
  newer: number | null;
}

export interface ReplayOutcome {
  dlqOffset: number;
  topic: string;
  offset: number;
  epoch: string;
  ts: number;
  duplicate: boolean;
}

export interface ReplayAllOutcome {
  replayed: number;
  duplicates: number;
  failed: Array<{ dlqOffset: number; error: { code: string; message: string } }>;
  purged: number;
}
