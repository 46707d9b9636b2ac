import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { fieldsOf, type RedisLink } from '../engine/redis-link.js';

/** What membership needs of a node's record; the admin API's NodeRecord carries more. */
export interface MemberRecord {
  id: string;
  url: string;
  status: 'up' | 'draining' | 'down';
  startedAt: number;
  lastSeen: number | null;
}

export interface MembershipOptions<R extends MemberRecord> {
  link: RedisLink;
  /** Key prefix shared with the engine. */
  keyPrefix: string;
  /** This node's current record. */
  self: () => R;
  /** How often the node writes its heartbeat. Default 1 s. */
  heartbeatMs?: number;
  /** A node whose heartbeat is older than this is down. Default 5 s. */
  downAfterMs?: number;
  /** A down node is listed for this long, then forgotten. Default 10 min. */
  forgetAfterMs?: number;
  logger?: Logger;
}

/**
 * Cluster membership through Redis. Each node writes its record (a
 * NodeRecord, as the admin API shows it) every heartbeat, plus a liveness key
 * that expires after `downAfterMs`. A node whose liveness key is gone is
 * down, but only once this node itself has beaten without a break, over one
 * unbroken link, for `downAfterMs` plus a heartbeat: the other node then
 * wrote nothing for `downAfterMs` while Redis was reachable. Until then a
 * missing key proves nothing (Redis was away, or a promoted replica lacks
 * the newest keys) and the node keeps its last status. The last record a
 * down node wrote stays listed, marked down, until it is forgotten.
 *
 * Events: `down` (R) when a node that was up stops beating, `left` (R)
 * when one stops cleanly (it marked itself down), `up` (R) when one appears
 * or comes back.
 */
export class Membership<R extends MemberRecord = MemberRecord> extends EventEmitter {
  private readonly heartbeatMs: number;
  private readonly downAfterMs: number;
  private readonly forgetAfterMs: number;
  private timer: NodeJS.Timeout | undefined;
  private view = new Map<string, R>();
  /** Nodes whose last record says they stopped (written by their own stop()). */
  private readonly leftCleanly = new Set<string>();
  private beating: Promise<void> | undefined;
  /**
   * Since when this node's own heartbeats have all succeeded, over one
   * unbroken Redis link (`connection`): a node is only declared down on
   * evidence gathered while Redis was reachable, never because Redis, or
   * this node's way to it, was away (an outage, a failover).
   */
  private steady: { since: number; connection: number } | undefined;

  constructor(private readonly options: MembershipOptions<R>) {
    super();
    this.heartbeatMs = options.heartbeatMs ?? 1000;
    this.downAfterMs = options.downAfterMs ?? 5000;
    this.forgetAfterMs = options.forgetAfterMs ?? 10 * 60_000;
  }

  private get recordsKey(): string {
    return `${this.options.keyPrefix}nodes`;
  }

  private aliveKey(id: string): string {
    return `${this.options.keyPrefix}node-alive:${id}`;
  }

  async start(): Promise<void> {
    await this.tick();
    this.timer = setInterval(() => void this.tick(), this.heartbeatMs);
    this.timer.unref();
  }

  /** Writes a heartbeat now (e.g. to announce draining) instead of at the next tick. */
  async beatNow(): Promise<void> {
    await this.beating;
    await this.tick();
  }

  /** Marks this node down at once, so the others do not wait for the heartbeat to expire. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.beating;
    const self = this.options.self();
    try {
      await this.options.link.command(['DEL', this.aliveKey(self.id)]);
      await this.options.link.command(['HSET', this.recordsKey, self.id, JSON.stringify({ ...self, status: 'down' })]);
    } catch (err) {
      this.options.logger?.warn({ err }, 'could not mark this node down in the cluster');
    }
  }

  /** Every known node, this one first, as last seen. */
  nodes(): R[] {
    const self = this.options.self();
    const others = [...this.view.values()].filter((n) => n.id !== self.id).sort((a, b) => a.id.localeCompare(b.id));
    return [self, ...others];
  }

  /** Public URLs of the nodes that are up (this one included), for clients to spread over. */
  liveUrls(): string[] {
    return this.nodes()
      .filter((n) => n.status === 'up')
      .map((n) => n.url);
  }

  private tick(): Promise<void> {
    this.beating ??= this.beat()
      .catch((err) => this.options.logger?.debug({ err }, 'heartbeat failed'))
      .finally(() => {
        this.beating = undefined;
      });
    return this.beating;
  }

  private async beat(): Promise<void> {
    const { link } = this.options;
    const self = this.options.self();
    const startedAt = Date.now();
    const connection = link.connection;
    let entries: Array<[string, string]>;
    let alive: Array<string | null>;
    try {
      await link.command(['SET', this.aliveKey(self.id), String(self.startedAt), 'PX', this.downAfterMs]);
      await link.command(['HSET', this.recordsKey, self.id, JSON.stringify(self)]);
      entries = Object.entries(fieldsOf(await link.command(['HGETALL', this.recordsKey])));
      // One GET per node rather than MGET: on Redis Cluster the keys live in different slots.
      alive = await Promise.all(entries.map(([id]) => link.command<string | null>(['GET', this.aliveKey(id)])));
    } catch (err) {
      this.steady = undefined;
      throw err;
    }
    if (this.steady === undefined || this.steady.connection !== connection || link.connection !== connection) {
      this.steady = { since: startedAt, connection: link.connection };
    }
    const now = Date.now();
    // A missing liveness key shows a node stopped beating only if Redis was reachable, by this node, all along.
    const trusted = now - this.steady.since >= this.downAfterMs + this.heartbeatMs;
    const previous = this.view;
    const next = new Map<string, R>();
    this.leftCleanly.clear();
    for (const [i, [id, json]] of entries.entries()) {
      let record: R;
      try {
        record = JSON.parse(json) as R;
      } catch {
        continue;
      }
      if (record.status === 'down') this.leftCleanly.add(id);
      if (alive[i] === null || alive[i] === undefined) {
        const before = previous.get(id);
        if (!trusted && before && before.status !== 'down') {
          // Redis was away (or changed primary) too recently to tell a silent node from one that could not write.
          next.set(id, before);
          continue;
        }
        record = { ...record, status: 'down' };
        if (trusted && record.lastSeen !== null && now - record.lastSeen > this.forgetAfterMs) {
          await link.command(['HDEL', this.recordsKey, id]);
          continue;
        }
      }
      next.set(id, record);
    }
    this.view = next;
    for (const record of next.values()) {
      if (record.id === self.id) continue;
      const before = previous.get(record.id);
      // A node that stopped cleanly wrote its own record down (stop()); one that died just stopped beating.
      const left = this.leftCleanly.has(record.id);
      if (record.status === 'down' && before && before.status !== 'down') this.emit(left ? 'left' : 'down', record);
      if (record.status !== 'down' && (!before || before.status === 'down')) this.emit('up', record);
    }
  }
}
