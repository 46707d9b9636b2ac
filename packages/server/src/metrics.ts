import { statfs } from 'node:fs/promises';
import type { ErrorCode, GroupInfo, RequestOp } from '@meshmq/shared';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { BrokerObserver } from './core/observer.js';
import type { Engine } from './engine/engine.js';
import { memoryLimit } from './memory-limit.js';

/** Topics that get their own `topic` label by default; the rest are summed under {@link OTHER_TOPICS}. */
export const DEFAULT_LABELLED_TOPICS = 100;
/** The `topic` label of every topic past the labelled ones. */
export const OTHER_TOPICS = '_other';

/** prom-client default gauges whose `_total` suffix breaks Prometheus naming; `nodejs_active_{handles,requests,resources}` remain. */
const MISNAMED_DEFAULT_METRICS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

/** Buckets of publish durations (frame received to durable reply), in seconds. */
const PUBLISH_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
/** Buckets of delivery lag (stored to sent), in seconds: from live delivery to a subscriber catching up for minutes. */
const LAG_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300];

/** What the metrics read of the node when Prometheus scrapes. */
export interface MetricsSources {
  node: string;
  version: string;
  engine: Engine;
  connections: () => Record<string, number>;
  subscriptions: () => number;
  /** Whether the node's Redis link is up; undefined without Redis. */
  redisUp?: () => boolean;
  /** What an acknowledged publish survives with this Redis; undefined without Redis or before it is known. */
  redisSurvives?: () => { processKill: boolean; hostCrash: boolean; failover: boolean } | undefined;
  /** Nodes of the cluster that are up; undefined without a cluster. */
  clusterNodesUp?: () => number;
  /** The embedded engine's data directory, for the free space left on its disk. */
  dataDir?: string;
  /** The node's active alarms. */
  alarms?: () => Array<{ id: string; severity: string }>;
}

/**
 * Bounded `topic` labels: the first `max` topics seen keep their name for
 * the life of the process, every later one is `_other`, so a node with a
 * million topics exports a bounded number of series.
 */
class TopicLabels {
  private readonly named = new Set<string>();

  constructor(private readonly max: number) {}

  of(topic: string): string {
    if (this.named.has(topic)) return topic;
    if (this.named.size >= this.max) return OTHER_TOPICS;
    this.named.add(topic);
    return topic;
  }

  /** The topics that have their own label. */
  get topics(): Iterable<string> {
    return this.named;
  }
}

/**
 * The node's Prometheus metrics (docs/operations.md lists them all), with
 * prom-client: counters and histograms fed by the core through
 * {@link BrokerObserver}, gauges read from the node when scraped.
 */
export class NodeMetrics implements BrokerObserver {
  readonly registry = new Registry();
  private readonly labels: TopicLabels;
  private readonly publishedTotal: Counter<'topic'>;
  private readonly deliveredTotal: Counter<'kind' | 'topic'>;
  private readonly ackedTotal: Counter<'topic'>;
  private readonly nackedTotal: Counter<'topic'>;
  private readonly redeliveredTotal: Counter<'topic'>;
  private readonly deadLetteredTotal: Counter<'topic'>;
  private readonly refusedTotal: Counter<'op' | 'code'>;
  private readonly connectionsRefusedTotal: Counter<'code'>;
  private readonly publishDuration: Histogram;
  private readonly deliveryLag: Histogram<'kind'>;

  constructor(sources: MetricsSources, labelledTopics = DEFAULT_LABELLED_TOPICS) {
    this.labels = new TopicLabels(labelledTopics);
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    // Gauges named like counters fail `promtool check metrics`; each is the sum of a by-type gauge that stays.
    for (const name of MISNAMED_DEFAULT_METRICS) this.registry.removeSingleMetric(name);

    new Gauge({
      name: 'meshmq_info',
      help: 'Always 1; the labels say which node, version and engine.',
      labelNames: ['node', 'version', 'engine'],
      registers,
      collect() {
        this.set({ node: sources.node, version: sources.version, engine: sources.engine.kind }, 1);
      },
    });
    new Gauge({
      name: 'meshmq_connections',
      help: 'Open client connections, by transport.',
      labelNames: ['transport'],
      registers,
      collect() {
        this.reset();
        for (const transport of ['ws', 'socket.io']) this.set({ transport }, 0);
        for (const [transport, count] of Object.entries(sources.connections())) this.set({ transport }, count);
      },
    });
    new Gauge({
      name: 'meshmq_subscriptions',
      help: 'Fan-out subscriptions and group memberships on this node.',
      registers,
      collect() {
        this.set(sources.subscriptions());
      },
    });
    new Gauge({
      name: 'meshmq_topics',
      help: 'Topics in the store (dead-letter topics included; the same on every node of a cluster).',
      registers,
      async collect() {
        this.set(await sources.engine.topicCount().catch(() => Number.NaN));
      },
    });
    // One read of the groups of the labelled topics per scrape serves both group gauges.
    const labels = this.labels;
    let scrape: Promise<GroupInfo[]> | undefined;
    const groupsOfScrape = () => {
      scrape ??= (async () => {
        const rows: GroupInfo[] = [];
        for (const topic of labels.topics) rows.push(...(await sources.engine.listGroups(topic).catch(() => [])));
        return rows;
      })().finally(() => setImmediate(() => (scrape = undefined)));
      return scrape;
    };
    new Gauge({
      name: 'meshmq_group_pending',
      help: 'Deliveries of a group not yet acked (or waiting for redelivery), for topics with their own label.',
      labelNames: ['topic', 'group'],
      registers,
      async collect() {
        const rows = await groupsOfScrape();
        this.reset();
        for (const g of rows) this.set({ topic: g.topic, group: g.group }, g.pending);
      },
    });
    new Gauge({
      name: 'meshmq_group_oldest_pending_seconds',
      help: 'Age of the oldest pending delivery of a group, 0 when none, for topics with their own label.',
      labelNames: ['topic', 'group'],
      registers,
      async collect() {
        const rows = await groupsOfScrape();
        this.reset();
        for (const g of rows) this.set({ topic: g.topic, group: g.group }, g.pending > 0 ? g.oldestPendingMs / 1000 : 0);
      },
    });
    if (sources.redisUp) {
      const up = sources.redisUp;
      new Gauge({
        name: 'meshmq_redis_up',
        help: "1 while the node's Redis link is up, 0 while it is not.",
        registers,
        collect() {
          this.set(up() ? 1 : 0);
        },
      });
    }
    if (sources.redisSurvives) {
      const survives = sources.redisSurvives;
      new Gauge({
        name: 'meshmq_redis_survives',
        help: "1 when Redis's settings let an acknowledged publish survive the event (process_kill, host_crash, failover), else 0; absent until known.",
        labelNames: ['event'],
        registers,
        collect() {
          this.reset();
          const known = survives();
          if (!known) return;
          this.set({ event: 'process_kill' }, known.processKill ? 1 : 0);
          this.set({ event: 'host_crash' }, known.hostCrash ? 1 : 0);
          this.set({ event: 'failover' }, known.failover ? 1 : 0);
        },
      });
    }
    if (sources.clusterNodesUp) {
      const count = sources.clusterNodesUp;
      new Gauge({
        name: 'meshmq_cluster_nodes_up',
        help: 'Nodes of the cluster this node sees up, itself included.',
        registers,
        collect() {
          this.set(count());
        },
      });
    }
    if (sources.dataDir) {
      const dir = sources.dataDir;
      new Gauge({
        name: 'meshmq_storage_free_bytes',
        help: "Bytes free for the node on the disk of the embedded engine's data directory.",
        registers,
        async collect() {
          const stats = await statfs(dir).catch(() => undefined);
          this.set(stats ? stats.bavail * stats.bsize : Number.NaN);
        },
      });
      new Gauge({
        name: 'meshmq_storage_size_bytes',
        help: "Size of the disk of the embedded engine's data directory, in bytes.",
        registers,
        async collect() {
          const stats = await statfs(dir).catch(() => undefined);
          this.set(stats ? stats.blocks * stats.bsize : Number.NaN);
        },
      });
    }

    new Gauge({
      name: 'meshmq_memory_limit_bytes',
      help: "The memory the node may use: its cgroup's limit when it has one, else the machine's (the memory alarm compares the resident size to it).",
      registers,
      collect() {
        this.set(memoryLimit());
      },
    });

    if (sources.alarms) {
      const alarms = sources.alarms;
      new Gauge({
        name: 'meshmq_alarms',
        help: 'Active alarms of the node, by kind and severity (docs/operations.md).',
        labelNames: ['kind', 'severity'],
        registers,
        collect() {
          this.reset();
          for (const alarm of alarms()) this.inc({ kind: alarm.id.split(':', 1)[0]!, severity: alarm.severity });
        },
      });
    }

    this.publishedTotal = new Counter({
      name: 'meshmq_messages_published_total',
      help: 'Messages stored by publishes through this node (duplicates not counted).',
      labelNames: ['topic'],
      registers,
    });
    this.deliveredTotal = new Counter({
      name: 'meshmq_messages_delivered_total',
      help: 'Messages this node sent to subscribers (kind fanout) and group members (kind group).',
      labelNames: ['kind', 'topic'],
      registers,
    });
    this.ackedTotal = new Counter({ name: 'meshmq_messages_acked_total', help: 'Group deliveries acked through this node.', labelNames: ['topic'], registers });
    this.nackedTotal = new Counter({
      name: 'meshmq_messages_nacked_total',
      help: 'Group deliveries nacked through this node.',
      labelNames: ['topic'],
      registers,
    });
    this.redeliveredTotal = new Counter({
      name: 'meshmq_messages_redelivered_total',
      help: 'Group deliveries beyond the first of a message, sent by this node.',
      labelNames: ['topic'],
      registers,
    });
    this.deadLetteredTotal = new Counter({
      name: 'meshmq_messages_dead_lettered_total',
      help: 'Messages moved to a dead-letter topic by claims of this node (they reached maxDeliveries).',
      labelNames: ['topic'],
      registers,
    });
    this.refusedTotal = new Counter({
      name: 'meshmq_requests_refused_total',
      help: "Requests answered with an error, by request op ('unknown' for frames naming none) and error code.",
      labelNames: ['op', 'code'],
      registers,
    });
    this.connectionsRefusedTotal = new Counter({
      name: 'meshmq_connections_refused_total',
      help: 'Connections refused at the handshake (token, origin, host, limits), by error code.',
      labelNames: ['code'],
      registers,
    });
    this.publishDuration = new Histogram({
      name: 'meshmq_publish_duration_seconds',
      help: 'Time from a publish frame arriving to its reply (durable), in seconds.',
      buckets: PUBLISH_BUCKETS,
      registers,
    });
    this.deliveryLag = new Histogram({
      name: 'meshmq_delivery_lag_seconds',
      help: 'Time from a message being stored to its delivery, in seconds.',
      labelNames: ['kind'],
      buckets: LAG_BUCKETS,
      registers,
    });
  }

  /** The text Prometheus scrapes. */
  async text(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }

  published(topic: string): void {
    this.publishedTotal.inc({ topic: this.labels.of(topic) });
  }

  publishAnswered(seconds: number): void {
    this.publishDuration.observe(seconds);
  }

  delivered(kind: 'fanout' | 'group', topic: string, lagSeconds: number): void {
    this.deliveredTotal.inc({ kind, topic: this.labels.of(topic) });
    this.deliveryLag.observe({ kind }, lagSeconds);
  }

  redelivered(topic: string): void {
    this.redeliveredTotal.inc({ topic: this.labels.of(topic) });
  }

  acked(topic: string, _group: string, count: number): void {
    this.ackedTotal.inc({ topic: this.labels.of(topic) }, count);
  }

  nacked(topic: string): void {
    this.nackedTotal.inc({ topic: this.labels.of(topic) });
  }

  deadLettered(topic: string, _group: string, count: number): void {
    this.deadLetteredTotal.inc({ topic: this.labels.of(topic) }, count);
  }

  refused(op: RequestOp | 'unknown', code: ErrorCode): void {
    this.refusedTotal.inc({ op, code });
  }

  /** A handshake the gate refused. */
  connectionRefused(code: ErrorCode): void {
    this.connectionsRefusedTotal.inc({ code });
  }
}
