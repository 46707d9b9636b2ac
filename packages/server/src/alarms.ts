import { statfs } from 'node:fs/promises';
import { type Alarm, formatBytes } from '@meshmq/shared';
import type { Logger } from 'pino';
import type { Engine } from './engine/engine.js';
import { memoryLimit } from './memory-limit.js';

export type { Alarm };

/** Thresholds of the node's alarms (docs/operations.md); each is an option with this default. */
export interface AlarmThresholds {
  /** The data disk is nearly full below this share of it free. */
  diskFreeRatio: number;
  /** Memory is high past this share of the node's limit (its cgroup's, else the machine's). */
  memoryRatio: number;
  /** A group falls behind when its oldest pending delivery is older than this. */
  groupAgeMs: number;
  /** Dead letters count as arriving for this long after the last one. */
  deadLetterWindowMs: number;
}

export const DEFAULT_ALARM_THRESHOLDS: AlarmThresholds = {
  diskFreeRatio: 0.1,
  memoryRatio: 0.9,
  groupAgeMs: 5 * 60_000,
  deadLetterWindowMs: 5 * 60_000,
};

/** How often the conditions are looked at. */
const EVALUATE_MS = 2000;

/** What the alarms read of the node. */
export interface AlarmSources {
  engine: Engine;
  /** The Redis link's state; undefined without Redis. */
  redisState?: () => string;
  /** How Redis persists: AOF (every acknowledged publish), RDB snapshots only, or not at all; undefined without Redis or while unknown. */
  redisPersistence?: () => 'aof' | 'snapshots' | 'none' | undefined;
  /** The embedded engine's data directory. */
  dataDir?: string;
  /** Free bytes below which the embedded engine refuses publishes (0: none). */
  diskFreeLimit?: number;
  /** Groups with members on this node, whose age of oldest pending delivery the node watches. */
  localGroups: () => Array<{ topic: string; group: string }>;
  logger: Logger;
}

/**
 * The conditions an operator must hear about, evaluated by the node itself
 * (the same ones the shipped Prometheus rules watch): Redis unreachable or
 * keeping nothing, the data disk nearly full, memory high, dead letters
 * arriving, a group falling behind. The admin API lists the active ones and
 * the console shows them as a banner; each says what to do.
 */
export class Alarms {
  private readonly thresholds: AlarmThresholds;
  private active = new Map<string, Alarm>();
  /** Dead letters seen per topic: how many, and when the last came. */
  private readonly deadLetters = new Map<string, { count: number; last: number }>();
  private timer: NodeJS.Timeout | undefined;
  private evaluating = false;

  constructor(
    private readonly sources: AlarmSources,
    thresholds: Partial<AlarmThresholds> = {},
  ) {
    this.thresholds = { ...DEFAULT_ALARM_THRESHOLDS, ...thresholds };
  }

  start(): void {
    void this.evaluate();
    this.timer = setInterval(() => void this.evaluate(), EVALUATE_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** The alarms active now, oldest first. */
  list(): Alarm[] {
    return [...this.active.values()].sort((a, b) => a.since - b.since);
  }

  /** Messages a claim of this node moved to a dead-letter topic. */
  deadLettered(topic: string, count: number): void {
    const seen = this.deadLetters.get(topic) ?? { count: 0, last: 0 };
    seen.count += count;
    seen.last = Date.now();
    this.deadLetters.set(topic, seen);
  }

  /** Looks at every condition once; raises what holds, clears what no longer does. */
  async evaluate(now = Date.now()): Promise<void> {
    if (this.evaluating) return;
    this.evaluating = true;
    try {
      const raised: Array<Omit<Alarm, 'since'>> = [];
      const { sources, thresholds } = this;
      const redis = sources.redisState?.();
      if (redis !== undefined && redis !== 'up') {
        raised.push({
          id: 'redis_down',
          severity: 'critical',
          summary: `Redis is unreachable (link ${redis}): publishes fail with unavailable`,
          action: 'Check that Redis (or its Sentinels) runs and that this node reaches it; the node reconnects by itself.',
        });
      }
      const persistence = sources.redisPersistence?.();
      if (persistence && persistence !== 'aof') {
        raised.push({
          id: 'redis_not_persistent',
          severity: 'critical',
          summary:
            persistence === 'snapshots'
              ? 'Redis persists by RDB snapshots only: a Redis restart loses every publish since the last snapshot'
              : 'Redis keeps nothing on disk: a Redis restart loses every message',
          action: 'Turn on AOF in Redis (appendonly yes, appendfsync always); see /readyz for what publishes survive.',
        });
      }
      if (sources.dataDir) {
        const disk = await statfs(sources.dataDir).catch(() => undefined);
        const free = disk ? disk.bavail * disk.bsize : Number.POSITIVE_INFINITY;
        const limit = sources.diskFreeLimit ?? 0;
        if (disk && disk.blocks > 0 && (disk.bavail / disk.blocks < thresholds.diskFreeRatio || free < limit)) {
          const share = `${((disk.bavail / disk.blocks) * 100).toFixed(1)}%`;
          raised.push({
            id: 'disk_nearly_full',
            severity: 'critical',
            summary:
              free < limit
                ? `The data disk has ${formatBytes(free)} free (${share}), below --disk-free-limit (${formatBytes(limit)}): publishes are refused`
                : `The data disk has ${formatBytes(free)} free (${share}); ${limit > 0 ? `below ${formatBytes(limit)} publishes are refused` : 'when it is full, publishes fail'}`,
            action: 'Free space on the disk of the data directory or grow it; lower retention (--retention-messages, --retention-age) so less is kept.',
          });
        }
      }
      const limit = memoryLimit();
      const rss = process.memoryUsage.rss();
      if (rss > limit * thresholds.memoryRatio) {
        raised.push({
          id: 'memory_high',
          severity: 'warning',
          summary: `The node uses ${formatBytes(rss)} of its ${formatBytes(limit)} limit`,
          action: 'Look for clients that do not read (closed with 4008 past 64 MiB), many connections or subscriptions; add nodes or memory.',
        });
      }
      for (const [topic, seen] of this.deadLetters) {
        if (now - seen.last > thresholds.deadLetterWindowMs) {
          this.deadLetters.delete(topic);
          continue;
        }
        raised.push({
          id: `dead_letters:${topic}`,
          severity: 'warning',
          summary: `Messages of topic '${topic}' are arriving in its dead letters (${seen.count} lately)`,
          action: `A consumer keeps failing on them: look at $dlq.${topic} in the console (Dead letters), fix the consumer, then replay them.`,
        });
      }
      for (const { topic, group } of sources.localGroups()) {
        const info = await sources.engine.groupInfo(topic, group).catch(() => undefined);
        if (info && info.pending > 0 && info.oldestPendingMs > thresholds.groupAgeMs) {
          raised.push({
            id: `group_behind:${topic}:${group}`,
            severity: 'warning',
            summary: `Group '${group}' of topic '${topic}' has a delivery pending for ${Math.round(info.oldestPendingMs / 1000)} s`,
            action: 'Its members are slow, stuck or failing: look at its pending entries in the console; add members or fix the consumer.',
          });
        }
      }
      this.settle(raised, now);
    } catch (err) {
      this.sources.logger.warn({ err }, 'evaluating alarms failed');
    } finally {
      this.evaluating = false;
    }
  }

  /** Keeps the `since` of alarms that stay, logs the ones that come and go. */
  private settle(raised: Array<Omit<Alarm, 'since'>>, now: number): void {
    const next = new Map<string, Alarm>();
    for (const alarm of raised) {
      const before = this.active.get(alarm.id);
      next.set(alarm.id, { ...alarm, since: before?.since ?? now });
      if (!before) this.sources.logger.warn({ alarm: alarm.id, severity: alarm.severity }, `alarm raised: ${alarm.summary}`);
    }
    for (const id of this.active.keys()) if (!next.has(id)) this.sources.logger.info({ alarm: id }, 'alarm cleared');
    this.active = next;
  }
}
