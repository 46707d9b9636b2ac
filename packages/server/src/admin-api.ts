import type { IncomingMessage } from 'node:http';
import {
  type AuthInfo,
  countOf,
  DEFAULTS,
  type DeadLettersPage,
  type DeadLetterTopicSummary,
  type DeadLetterTopicsResponse,
  deadLetterTopicOf,
  type GroupConfigResponse,
  type GroupView,
  groupKey,
  isDeadLetterTopic,
  isReadableTopicName,
  isValidGroupName,
  isValidTopicName,
  LIMITS,
  MeshError,
  type MessagesPage,
  type MessageView,
  type NodesResponse,
  type PendingPage,
  type PendingView,
  type PurgeResponse,
  type ReplayAllResponse,
  type ReplayFailure,
  type ReplayOutcome,
  type ReplayResponse,
  sourceTopicOf,
  type TopicActivity,
  type TopicDetail,
  type TopicSummary,
  type TopicsResponse,
} from '@meshmq/shared';
import { authorize, type Principal } from './core/access.js';
import type { Broker } from './core/broker.js';
import type { DeadLetter, GroupInfo, GroupSettings, PendingEntry, RetentionPolicy, StoredMessage, TopicInfo } from './engine/engine.js';
import type { JsonRoute, RouteContext } from './http-handler.js';
import type { NodeRecord, NodeStats } from './node-stats.js';

export type { GroupView, TopicActivity, TopicSummary };

export interface AdminApiOptions {
  broker: Broker;
  stats: NodeStats;
  retention: (topic: string) => RetentionPolicy;
  /** This node's public URL; a peer with the same URL is skipped. */
  selfUrl: string;
  /** Static peers: base URLs of other nodes, for nodes without a cluster membership. */
  peers: string[];
  /**
   * The cluster membership's view, this node first (a node over Redis). When
   * given, it lists the nodes instead of the static peers.
   */
  cluster?: (() => NodeRecord[]) | undefined;
  /** How long a peer may take to answer `/api/nodes/self`. Default 1000 ms. */
  peerTimeoutMs?: number;
  /**
   * Subscribers, group members and publish rates per topic: summed over the
   * cluster by a node over Redis. Default: this node's own.
   */
  activity?: () => Promise<TopicActivity>;
}

/** This node's own activity. */
export function localActivity(broker: Broker, stats: NodeStats): TopicActivity {
  return {
    subscribers: broker.subscribersPerTopic(),
    members: broker.membersPerGroup(),
    publishRates: Object.fromEntries(stats.topicRates()),
  };
}

/** Messages of a page when the request names no `limit`. */
const MESSAGES_DEFAULT_LIMIT = 50;
/** Pending entries of a page when the request names no `limit`. */
const PENDING_DEFAULT_LIMIT = 100;
const MAX_LIMIT = DEFAULTS.historyMaxLimit;
/** Largest request body (a write takes a few fields). */
const MAX_BODY_BYTES = 64 * 1024;
/** Dead letters read per step of a replay-all. */
const REPLAY_PAGE = 500;
/** Encoded message data one page of the admin API carries at most (always at least one message). */
const PAGE_MAX_BYTES = 4 * 1024 * 1024;

/** A 200 answer; `Body` is the route's documented response shape, so the compiler checks the body against it. */
const ok = <Body>(body: Body, status = 200) => ({ status, body });

function intParam(url: URL, name: string, fallback: number | undefined, min: number, max: number): number | undefined {
  const raw = url.searchParams.get(name);
  if (raw === null || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new MeshError('bad_request', `'${name}' must be an integer from ${min} to ${max}, got '${raw}'`);
  }
  return n;
}

function topicParam(params: Record<string, string>, allowSystem = false): string {
  const topic = params.topic ?? '';
  if (!(allowSystem ? isReadableTopicName(topic) : isValidTopicName(topic))) {
    throw new MeshError('bad_request', `'${topic}' is not a topic name (1-200 of A-Z a-z 0-9 _ - . :, not starting with - . or :)`);
  }
  return topic;
}

function groupParam(params: Record<string, string>): string {
  const group = params.group ?? '';
  if (!isValidGroupName(group)) throw new MeshError('bad_request', `'${group}' is not a group name`);
  return group;
}

async function readJsonBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new MeshError('payload_too_large', `request body is larger than ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8').trim();
  if (text === '') return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new MeshError('bad_request', 'request body is not JSON');
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new MeshError('bad_request', 'request body must be a JSON object');
  }
  return parsed as Record<string, unknown>;
}

/** Refuses fields of a request body other than `allowed`. */
function onlyFields(body: Record<string, unknown>, allowed: string[]): void {
  for (const key of Object.keys(body)) {
    if (!allowed.includes(key)) throw new MeshError('bad_request', `unknown field '${key}'`);
  }
}

function intField(body: Record<string, unknown>, name: string, { min, max }: { min: number; max: number }): number | undefined {
  const value = body[name];
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new MeshError('bad_request', `'${name}' must be an integer from ${min} to ${max}`);
  }
  return value;
}

function messageView(message: StoredMessage): MessageView {
  const view: MessageView = { offset: message.offset, ts: message.ts, data: message.data };
  if (message.key !== undefined) view.key = message.key;
  return view;
}

function isDeadLetter(value: unknown): value is DeadLetter {
  const v = value as Partial<DeadLetter> | null;
  return v !== null && typeof v === 'object' && typeof v.topic === 'string' && 'data' in v && typeof v.offset === 'number';
}

/** A route only principals with the admin permission may use. */
function admin(handler: (ctx: RouteContext, actor: Principal) => ReturnType<JsonRoute>): JsonRoute {
  return async (ctx) => {
    const actor = await ctx.principal();
    authorize(actor, 'admin', undefined, `${ctx.req.method ?? 'GET'} ${ctx.url.pathname}`);
    return handler(ctx, actor);
  };
}

/**
 * The node's JSON admin API under `/api/` (documented in docs/api.md): nodes,
 * topics, messages, groups, pending entries and dead letters, read-only
 * except for dead-letter replay and purge and group settings. Every route
 * but `/api/nodes/self` needs the admin permission, and every read or write
 * goes through the broker's operations, which authorise it like any other
 * client's. Register the returned routes with createHttpHandler.
 */
export function adminRoutes(options: AdminApiOptions): Record<string, JsonRoute> {
  const { broker, stats } = options;
  const peers = new PeerPoller(
    options.peers.filter((url) => url !== options.selfUrl),
    options.peerTimeoutMs ?? 1000,
  );

  const topicMap = async (actor: Principal): Promise<Map<string, TopicInfo>> => new Map((await broker.topics(actor)).map((t) => [t.topic, t]));

  const requireTopic = async (actor: Principal, topic: string): Promise<TopicInfo> => {
    const info = await broker.topic(actor, topic);
    if (!info) throw new MeshError('not_found', `topic '${topic}' does not exist`);
    return info;
  };

  const activityNow = options.activity ?? (async () => localActivity(broker, stats));

  const newestTs = async (actor: Principal, info: TopicInfo): Promise<number | null> =>
    info.count > 0 ? ((await broker.read(actor, info.topic, info.last, 1, 1))[0]?.ts ?? null) : null;

  const summarize = async (actor: Principal, info: TopicInfo, deadLetters: number, activity: TopicActivity): Promise<TopicSummary> => {
    const groups = await broker.groups(actor, info.topic);
    let members = 0;
    for (const g of groups) members += countOf(activity.members, groupKey(info.topic, g.group));
    return {
      topic: info.topic,
      epoch: info.epoch,
      count: info.count,
      first: info.first,
      last: info.last,
      lastMessageAt: await newestTs(actor, info),
      retention: options.retention(info.topic),
      publishRate: countOf(activity.publishRates, info.topic),
      subscribers: countOf(activity.subscribers, info.topic),
      groups: groups.length,
      members,
      deadLetters,
    };
  };

  const groupView = (info: TopicInfo, group: GroupInfo, activity: TopicActivity): GroupView => ({
    ...group,
    members: countOf(activity.members, groupKey(info.topic, group.group)),
    ready: Math.max(0, info.last - Math.max(group.cursor, info.first) + 1),
  });

  /** A window of a topic's log, newest first: `before` (exclusive, newest-first paging) or `from` (inclusive). */
  const page = async (actor: Principal, info: TopicInfo, url: URL): Promise<Omit<MessagesPage, 'messages'> & { messages: StoredMessage[] }> => {
    const limit = intParam(url, 'limit', MESSAGES_DEFAULT_LIMIT, 1, MAX_LIMIT)!;
    const from = intParam(url, 'from', undefined, 1, Number.MAX_SAFE_INTEGER);
    let lo: number;
    let hi: number;
    if (from !== undefined) {
      lo = Math.max(from, info.first);
      hi = Math.min(lo + limit - 1, info.last);
    } else {
      const before = intParam(url, 'before', info.last + 1, 1, Number.MAX_SAFE_INTEGER)!;
      hi = Math.min(before - 1, info.last);
      lo = Math.max(hi - limit + 1, info.first);
    }
    let messages = hi >= lo ? await broker.read(actor, info.topic, lo, hi - lo + 1, PAGE_MAX_BYTES) : [];
    // A byte-bounded page keeps the newest end of a newest-first window.
    if (from === undefined && messages.length > 0 && messages.at(-1)!.offset < hi) {
      const kept = messages.length;
      messages = await broker.read(actor, info.topic, hi - kept + 1, kept, PAGE_MAX_BYTES);
    }
    if (messages.length > 0) {
      lo = messages[0]!.offset;
      hi = messages.at(-1)!.offset;
    }
    messages.reverse();
    return {
      topic: info.topic,
      epoch: info.epoch,
      first: info.first,
      last: info.last,
      count: info.count,
      messages,
      /** `before` for the next older page, null at the oldest retained message. */
      older: hi >= lo && lo > info.first ? lo : null,
      /** `from` for the next newer page, null at the newest message. */
      newer: hi >= lo && hi < info.last ? hi + 1 : null,
    };
  };

  const replayOne = async (actor: Principal, dlqTopic: string, epoch: string, message: StoredMessage, expectedTopic: string): Promise<ReplayOutcome> => {
    const letter = message.data;
    if (!isDeadLetter(letter) || !isValidTopicName(letter.topic)) {
      throw new MeshError('bad_request', `message ${message.offset} of '${dlqTopic}' is not a dead-letter envelope`);
    }
    if (letter.topic !== expectedTopic) {
      throw new MeshError('bad_request', `message ${message.offset} of '${dlqTopic}' belongs to topic '${letter.topic}'`);
    }
    // The same publish as any client's: authorised, counted, deduplicated by a key derived from the dead letter.
    const outcome = await broker.publish(actor, letter.topic, letter.data, `dlq-replay:${epoch}:${message.offset}`);
    return { dlqOffset: message.offset, topic: letter.topic, ...outcome };
  };

  return {
    'GET /api/nodes': admin(async () => {
      if (options.cluster) {
        const [self, ...others] = options.cluster();
        return ok<NodesResponse>({ mode: 'cluster', nodes: [{ ...(self ?? stats.record()), self: true }, ...others] });
      }
      const self = { ...stats.record(), self: true };
      const others = await peers.poll();
      return ok<NodesResponse>({ mode: options.peers.length > 0 ? 'static-peers' : 'single', nodes: [self, ...others] });
    }),

    // Open like /healthz: static peers read it from each other without a token. It holds no topic data.
    'GET /api/nodes/self': () => ok<NodeRecord>(stats.record()),

    // Who a token is and what it may do, for any valid token (the console checks a pasted token with it).
    'GET /api/auth': async ({ principal }) => {
      const actor = await principal();
      return ok<AuthInfo>({ sub: actor.sub, expiresAt: actor.expiresAt, permissions: actor.grants.toJSON() });
    },

    'GET /api/topics': admin(async (_ctx, actor) => {
      const [all, activity] = await Promise.all([topicMap(actor), activityNow()]);
      const topics: TopicSummary[] = [];
      for (const info of all.values()) {
        if (!isValidTopicName(info.topic)) continue;
        topics.push(await summarize(actor, info, all.get(deadLetterTopicOf(info.topic))?.count ?? 0, activity));
      }
      return ok<TopicsResponse>({ topics });
    }),

    'GET /api/topics/:topic': admin(async ({ params }, actor) => {
      const topic = topicParam(params, true);
      const [info, activity] = await Promise.all([requireTopic(actor, topic), activityNow()]);
      const deadLetters = isDeadLetterTopic(topic) ? 0 : ((await broker.topic(actor, deadLetterTopicOf(topic)))?.count ?? 0);
      const summary = await summarize(actor, info, deadLetters, activity);
      const groups = (await broker.groups(actor, topic)).map((g) => groupView(info, g, activity));
      return ok<TopicDetail>({ topic: summary, groups });
    }),

    'GET /api/topics/:topic/messages': admin(async ({ params, url }, actor) => {
      const info = await requireTopic(actor, topicParam(params, true));
      const result = await page(actor, info, url);
      return ok<MessagesPage>({ ...result, messages: result.messages.map(messageView) });
    }),

    'GET /api/topics/:topic/groups/:group/pending': admin(async ({ params, url }, actor) => {
      const topic = topicParam(params);
      const group = groupParam(params);
      const info = await requireTopic(actor, topic);
      const state = await broker.group(actor, topic, group);
      if (!state) throw new MeshError('not_found', `group '${group}' of topic '${topic}' does not exist`);
      const limit = intParam(url, 'limit', PENDING_DEFAULT_LIMIT, 1, MAX_LIMIT)!;
      const now = Date.now();
      const entries = await broker.pending(actor, topic, group, limit);
      const withMessages = await Promise.all(
        entries.map(async (entry: PendingEntry): Promise<PendingView> => {
          const [message] = await broker.read(actor, topic, entry.offset, 1);
          return {
            ...entry,
            state: entry.deadline > now ? (entry.consumer === null ? 'delayed' : 'leased') : 'due',
            ageMs: now - entry.firstDeliveredAt,
            message: message && message.offset === entry.offset ? messageView(message) : null,
          };
        }),
      );
      return ok<PendingPage>({ group: groupView(info, state, await activityNow()), entries: withMessages });
    }),

    'PUT /api/topics/:topic/groups/:group': admin(async ({ req, params }, actor) => {
      const topic = topicParam(params);
      const group = groupParam(params);
      const body = await readJsonBody(req);
      onlyFields(body, ['ackWaitMs', 'maxDeliveries']);
      const settings: Partial<GroupSettings> = {};
      const ackWaitMs = intField(body, 'ackWaitMs', LIMITS.ackWaitMs);
      const maxDeliveries = intField(body, 'maxDeliveries', LIMITS.maxDeliveries);
      if (ackWaitMs !== undefined) settings.ackWaitMs = ackWaitMs;
      if (maxDeliveries !== undefined) settings.maxDeliveries = maxDeliveries;
      const info = await requireTopic(actor, topic);
      const state = await broker.configureGroup(actor, topic, group, settings);
      return ok<GroupConfigResponse>({ group: groupView(info, state, await activityNow()) });
    }),

    'GET /api/dead-letters': admin(async (_ctx, actor) => {
      const all = await topicMap(actor);
      const deadLetters: DeadLetterTopicSummary[] = [];
      for (const info of all.values()) {
        if (!isDeadLetterTopic(info.topic)) continue;
        deadLetters.push({
          topic: sourceTopicOf(info.topic)!,
          dlqTopic: info.topic,
          count: info.count,
          first: info.first,
          last: info.last,
          lastDeadLetteredAt: await newestTs(actor, info),
        });
      }
      return ok<DeadLetterTopicsResponse>({ deadLetters });
    }),

    'GET /api/topics/:topic/dead-letters': admin(async ({ params, url }, actor) => {
      const topic = topicParam(params);
      const dlqTopic = deadLetterTopicOf(topic);
      const info = await broker.topic(actor, dlqTopic);
      if (!info) {
        await requireTopic(actor, topic);
        return ok<DeadLettersPage>({ topic, dlqTopic, epoch: null, first: 1, last: 0, count: 0, messages: [], older: null, newer: null });
      }
      const result = await page(actor, info, url);
      return ok<DeadLettersPage>({
        ...result,
        topic,
        dlqTopic,
        // A dead-letter topic holds only the envelopes the engine writes (clients cannot publish to `$` topics).
        messages: result.messages.map((m) => ({ offset: m.offset, ts: m.ts, letter: m.data as DeadLetter })),
      });
    }),

    'POST /api/topics/:topic/dead-letters/:offset/replay': admin(async ({ params }, actor) => {
      const topic = topicParam(params);
      const offset = Number(params.offset);
      if (!Number.isSafeInteger(offset) || offset < 1) throw new MeshError('bad_request', `'${params.offset}' is not an offset`);
      const dlqTopic = deadLetterTopicOf(topic);
      const info = await broker.topic(actor, dlqTopic);
      if (!info) throw new MeshError('not_found', `topic '${topic}' has no dead letters`);
      const [message] = await broker.read(actor, dlqTopic, offset, 1);
      if (!message || message.offset !== offset) {
        throw new MeshError('not_found', `offset ${offset} is not in '${dlqTopic}' (retained: ${info.first}-${info.last})`);
      }
      return ok<ReplayResponse>({ replayed: await replayOne(actor, dlqTopic, info.epoch, message, topic) });
    }),

    'POST /api/topics/:topic/dead-letters/replay': admin(async ({ req, params }, actor) => {
      const topic = topicParam(params);
      const body = await readJsonBody(req);
      onlyFields(body, ['purge']);
      if (body.purge !== undefined && typeof body.purge !== 'boolean') throw new MeshError('bad_request', "'purge' must be a boolean");
      const dlqTopic = deadLetterTopicOf(topic);
      const info = await broker.topic(actor, dlqTopic);
      if (!info) {
        await requireTopic(actor, topic);
        return ok<ReplayAllResponse>({ replayed: 0, duplicates: 0, failed: [], purged: 0 });
      }
      let replayed = 0;
      let duplicates = 0;
      const failed: ReplayFailure[] = [];
      // Everything dead-lettered up to now; later arrivals stay for the next replay.
      const end = info.last;
      for (let from = info.first; from <= end; ) {
        const batch = (await broker.read(actor, dlqTopic, from, Math.min(REPLAY_PAGE, end - from + 1))).filter((m) => m.offset <= end);
        if (batch.length === 0) break;
        for (const message of batch) {
          try {
            const result = await replayOne(actor, dlqTopic, info.epoch, message, topic);
            if (result.duplicate) duplicates++;
            else replayed++;
          } catch (err) {
            const error = MeshError.from(err);
            failed.push({ dlqOffset: message.offset, error: { code: error.code, message: error.message } });
          }
        }
        from = batch.at(-1)!.offset + 1;
      }
      let purged = 0;
      if (body.purge === true && failed.length === 0) purged = await broker.truncate(actor, dlqTopic, end + 1);
      return ok<ReplayAllResponse>({ replayed, duplicates, failed, purged });
    }),

    'DELETE /api/topics/:topic/dead-letters': admin(async ({ params }, actor) => {
      const topic = topicParam(params);
      const dlqTopic = deadLetterTopicOf(topic);
      const info = await broker.topic(actor, dlqTopic);
      if (!info) {
        await requireTopic(actor, topic);
        return ok<PurgeResponse>({ purged: 0 });
      }
      return ok<PurgeResponse>({ purged: await broker.truncate(actor, dlqTopic, info.last + 1), first: info.last + 1 });
    }),
  };
}

/** A down record for a peer that did not answer, with what was last known of it. */
function downRecord(url: string, last: NodeRecord | undefined, error: string): NodeRecord {
  return {
    id: last?.id ?? url,
    url: last?.url ?? url,
    status: 'down',
    version: last?.version ?? '',
    startedAt: last?.startedAt ?? 0,
    uptimeMs: 0,
    connections: 0,
    subscriptions: 0,
    messagesInPerSec: 0,
    messagesOutPerSec: 0,
    eventLoopLagMs: 0,
    memory: { rss: 0, heapUsed: 0 },
    redis: last?.redis ?? null,
    lastSeen: last?.lastSeen ?? null,
    rates: { intervalMs: last?.rates.intervalMs ?? 1000, endAt: Date.now(), in: [], out: [] },
    error,
  };
}

function isNodeRecord(value: unknown): value is NodeRecord {
  const v = value as Partial<NodeRecord> | null;
  return v !== null && typeof v === 'object' && typeof v.id === 'string' && typeof v.status === 'string' && typeof v.rates === 'object';
}

/**
 * Static-peers mode: asks each configured peer for `/api/nodes/self` with a
 * short timeout; a peer that does not answer is reported down with the time
 * it was last seen. Concurrent polls share one round of requests. The Redis
 * cluster membership replaces this.
 */
class PeerPoller {
  private readonly known = new Map<string, NodeRecord>();
  private inflight: Promise<NodeRecord[]> | undefined;

  constructor(
    private readonly urls: string[],
    private readonly timeoutMs: number,
  ) {}

  poll(): Promise<NodeRecord[]> {
    if (this.urls.length === 0) return Promise.resolve([]);
    this.inflight ??= Promise.all(this.urls.map((url) => this.pollOne(url))).finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  private async pollOne(url: string): Promise<NodeRecord> {
    try {
      const res = await fetch(`${url}/api/nodes/self`, { signal: AbortSignal.timeout(this.timeoutMs) });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const record: unknown = await res.json();
      if (!isNodeRecord(record)) throw new Error('not a node record');
      const seen: NodeRecord = { ...record, lastSeen: Date.now() };
      this.known.set(url, seen);
      return seen;
    } catch (err) {
      const cause = (err as { cause?: { code?: unknown } }).cause?.code;
      const reason =
        err instanceof Error && err.name === 'TimeoutError'
          ? `no answer within ${this.timeoutMs} ms`
          : typeof cause === 'string'
            ? cause
            : (err as Error).message;
      return downRecord(url, this.known.get(url), `unreachable: ${reason}`);
    }
  }
}
