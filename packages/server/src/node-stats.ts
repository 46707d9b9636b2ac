import { type IntervalHistogram, monitorEventLoopDelay } from 'node:perf_hooks';
import type { NodeRecord, NodeStatus, RateSeries } from '@meshmq/shared';

export type { NodeRecord, NodeStatus, RateSeries };

/** Cumulative counters the sampler reads (the broker's). */
export interface CounterSource {
  connections: number;
  subscriptions: number;
  messagesIn: number;
  messagesOut: number;
}

export interface NodeStatsOptions {
  id: string;
  url: string;
  version: string;
  startedAt?: number;
  counters: () => CounterSource;
  /** Cumulative messages published per topic. */
  topicCounters?: () => ReadonlyMap<string, number>;
  status: () => NodeStatus;
  redis?: () => { state: string } | null;
  /** Sampling interval. Default 1000 ms. */
  sampleMs?: number;
  /** Intervals kept for the rate series. Default 300 (5 minutes at 1 s). */
  historySize?: number;
  /** Window of the per-second rates. Default 5000 ms. */
  rateWindowMs?: number;
}

interface Sample {
  t: number;
  in: number;
  out: number;
}

/** Resolution of the event-loop delay histogram; the lag reported is what exceeds it. */
const EVENT_LOOP_RESOLUTION_MS = 10;

const round1 = (n: number) => Math.round(n * 10) / 10;

/**
 * Samples one node: message rates over a sliding window, a series of rates
 * for charts, per-topic publish rates, event-loop lag and memory. Used by the
 * admin API for this node's record; the cluster heartbeat publishes the same
 * record.
 */
export class NodeStats {
  readonly startedAt: number;
  private readonly sampleMs: number;
  private readonly historySize: number;
  private readonly rateWindowMs: number;
  private readonly samples: Sample[] = [];
  private readonly topicSnapshots: Array<{ t: number; counts: Map<string, number> }> = [];
  private histogram: IntervalHistogram | undefined;
  private lagMs = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly options: NodeStatsOptions) {
    this.startedAt = options.startedAt ?? Date.now();
    this.sampleMs = options.sampleMs ?? 1000;
    this.historySize = options.historySize ?? 300;
    this.rateWindowMs = options.rateWindowMs ?? 5000;
  }

  start(): void {
    if (this.timer) return;
    this.histogram = monitorEventLoopDelay({ resolution: EVENT_LOOP_RESOLUTION_MS });
    this.histogram.enable();
    this.sample();
    this.timer = setInterval(() => this.sample(), this.sampleMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.histogram?.disable();
  }

  /** This node's record now. */
  record(now = Date.now()): NodeRecord {
    const counters = this.options.counters();
    const memory = process.memoryUsage();
    return {
      id: this.options.id,
      url: this.options.url,
      status: this.options.status(),
      version: this.options.version,
      startedAt: this.startedAt,
      uptimeMs: now - this.startedAt,
      connections: counters.connections,
      subscriptions: counters.subscriptions,
      messagesInPerSec: this.rate(now, counters.messagesIn, (s) => s.in),
      messagesOutPerSec: this.rate(now, counters.messagesOut, (s) => s.out),
      eventLoopLagMs: this.lagMs,
      memory: { rss: memory.rss, heapUsed: memory.heapUsed },
      redis: this.options.redis?.() ?? null,
      lastSeen: now,
      rates: this.series(),
    };
  }

  /** Messages published per second to each topic over the rate window; topics without recent publishes are absent. */
  topicRates(now = Date.now()): Map<string, number> {
    const rates = new Map<string, number>();
    const current = this.options.topicCounters?.();
    if (!current) return rates;
    const base = this.topicSnapshots.find((s) => s.t >= now - this.rateWindowMs - this.sampleMs / 2);
    const since = base?.t ?? this.startedAt;
    const seconds = Math.max(now - since, this.sampleMs) / 1000;
    for (const [topic, count] of current) {
      const delta = count - (base?.counts.get(topic) ?? 0);
      if (delta > 0) rates.set(topic, round1(delta / seconds));
    }
    return rates;
  }

  private rate(now: number, current: number, pick: (s: Sample) => number): number {
    const base = this.samples.find((s) => s.t >= now - this.rateWindowMs - this.sampleMs / 2);
    const since = base?.t ?? this.startedAt;
    const seconds = Math.max(now - since, this.sampleMs) / 1000;
    return round1((current - (base ? pick(base) : 0)) / seconds);
  }

  private series(): RateSeries {
    const rates: RateSeries = { intervalMs: this.sampleMs, endAt: this.samples.at(-1)?.t ?? this.startedAt, in: [], out: [] };
    for (let i = 1; i < this.samples.length; i++) {
      const a = this.samples[i - 1]!;
      const b = this.samples[i]!;
      const seconds = Math.max(b.t - a.t, 1) / 1000;
      rates.in.push(round1((b.in - a.in) / seconds));
      rates.out.push(round1((b.out - a.out) / seconds));
    }
    return rates;
  }

  private sample(): void {
    const now = Date.now();
    const counters = this.options.counters();
    this.samples.push({ t: now, in: counters.messagesIn, out: counters.messagesOut });
    while (this.samples.length > this.historySize + 1) this.samples.shift();
    const topicCounters = this.options.topicCounters?.();
    if (topicCounters) {
      this.topicSnapshots.push({ t: now, counts: new Map(topicCounters) });
      const keep = Math.ceil(this.rateWindowMs / this.sampleMs) + 2;
      while (this.topicSnapshots.length > keep) this.topicSnapshots.shift();
    }
    if (this.histogram && this.histogram.count > 0) {
      this.lagMs = round1(Math.max(0, this.histogram.max / 1e6 - EVENT_LOOP_RESOLUTION_MS));
      this.histogram.reset();
    }
  }
}
