/** Response shapes of the node's admin API (docs/api.md); the shared ones come from @meshmq/shared. */
import type { DeadLetter, GroupView, NodeRecord as NodeRecordBase, PendingEntry, TopicSummary } from '@meshmq/shared';

export type { DeadLetter, GroupView, NodeStatus, RateSeries, RetentionPolicy, TopicSummary } from '@meshmq/shared';

/** A node record as `GET /api/nodes` lists it: `self` marks the node that answered. */
export interface NodeRecord extends NodeRecordBase {
  self?: boolean;
}

export interface NodesResponse {
  mode: 'single' | 'static-peers' | string;
  nodes: NodeRecord[];
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

export interface PendingView extends PendingEntry {
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

export interface DeadLettersPage {
  topic: string;
  dlqTopic: string;
  epoch: string | null;
  first: number;
  last: number;
  count: number;
  messages: Array<{ offset: number; ts: number; letter: DeadLetter }>;
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
