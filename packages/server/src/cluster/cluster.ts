import type { ClusterStats, NodeActivity, NodeRecord } from '@meshmq/shared';
import type { Logger } from 'pino';
import type { ServerOptions } from 'socket.io';
import type { Engine } from '../engine/engine.js';
import { RedisLink, type RedisLinkState } from '../engine/redis-link.js';
import { ClusterActivity } from './activity.js';
import { Membership } from './membership.js';
import { describeRedisDurability, type RedisDurability } from './redis-durability.js';
import { socketIoAdapter } from './socketio-adapter.js';
import { takeOverLeases } from './takeover.js';

export interface ClusterOptions {
  /** redis://, redis+sentinel:// or redis+cluster:// */
  url: string;
  /** Prefix of every key and channel the cluster uses, shared with the engine. */
  keyPrefix: string;
  nodeId: string;
  /** Replicas each publish waits for (for the durability report). */
  waitReplicas: number;
  heartbeatMs: number;
  downAfterMs: number;
  /** How long Redis may answer nothing on a connection that owes answers before the commands waiting on it fail (RedisLink). */
  commandTimeoutMs: number;
  logger: Logger;
}

/** How often the Redis durability report is read again (Redis settings change, a failover brings another Redis). */
const DURABILITY_REFRESH_MS = 30_000;

/** What `/readyz` reports of the cluster. */
export interface ClusterReport {
  state: RedisLinkState;
  /** Null until the node has read Redis's settings. */
  durability: RedisDurability | null;
}

/**
 * A node's part in a cluster over Redis: the Redis link (shared with the
 * engine), membership with heartbeats, takeover of a departed node's
 * leases, the durability report, cluster-wide activity, and Socket.IO's
 * adapter. The node wires it in without knowing which engine runs over it.
 */
export class Cluster {
  readonly link: RedisLink;
  private readonly membership: Membership<NodeRecord>;
  private readonly activity: ClusterActivity;
  private durability: RedisDurability | undefined;
  private durabilityTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly options: ClusterOptions,
    self: () => NodeRecord,
    local: () => NodeActivity,
  ) {
    this.link = new RedisLink({
      url: options.url,
      logger: options.logger,
      commandTimeoutMs: options.commandTimeoutMs,
      replicatedWrites: options.waitReplicas > 0,
    });
    this.membership = new Membership<NodeRecord>({
      link: this.link,
      keyPrefix: options.keyPrefix,
      self,
      heartbeatMs: options.heartbeatMs,
      downAfterMs: options.downAfterMs,
      logger: options.logger,
    });
    this.activity = new ClusterActivity(this.link, `${options.keyPrefix}cluster`, options.nodeId, local, options.logger);
  }

  /** Connects to Redis; the engine over this link can open after it. */
  connect(): Promise<void> {
    return this.link.connect();
  }

  /**
   * Joins the cluster: reports what an acknowledged publish survives, hands
   * back the leases of this node's previous life, starts the heartbeat and
   * takes over the leases of nodes that go down.
   */
  async start(engine: Engine): Promise<void> {
    const { logger, nodeId } = this.options;
    this.durability = await describeRedisDurability(this.link, this.options.waitReplicas);
    logger[this.durability.survives.hostCrash ? 'info' : 'warn']({ durability: this.durability }, `Redis durability: ${this.durability.summary}`);
    this.durabilityTimer = setInterval(() => void this.refreshDurability(), DURABILITY_REFRESH_MS);
    this.durabilityTimer.unref();
    // Leases held by this node's previous life (same node id) go back to their groups.
    await takeOverLeases(engine, this.link, nodeId, logger);
    this.membership.on('down', (record: NodeRecord) => {
      logger.warn({ peer: record.id, url: record.url }, 'node is down; taking over its leases');
      this.takeOver(engine, record);
    });
    // A node that stopped cleanly released what it held itself; anything left goes back all the same.
    this.membership.on('left', (record: NodeRecord) => {
      logger.info({ peer: record.id, url: record.url }, 'node left the cluster');
      this.takeOver(engine, record);
    });
    this.membership.on('up', (record: NodeRecord) => logger.info({ peer: record.id, url: record.url }, 'node is up'));
    await this.activity.start();
    await this.membership.start();
  }

  private takeOver(engine: Engine, record: NodeRecord): void {
    const { logger, keyPrefix } = this.options;
    const claim = `${keyPrefix}takeover:${record.id}:${record.startedAt}`;
    takeOverLeases(engine, this.link, record.id, logger, claim).catch((err) =>
      logger.error({ err, peer: record.id }, 'taking over the leases of a down node failed'),
    );
  }

  /** Every known node, this one first, as last seen. */
  nodes(): NodeRecord[] {
    return this.membership.nodes();
  }

  /** Public URLs of the nodes that are up, this one included. */
  liveUrls(): string[] {
    return this.membership.liveUrls();
  }

  /** Writes a heartbeat now (to announce draining). */
  beatNow(): Promise<void> {
    return this.membership.beatNow();
  }

  /** Activity of every live node that answers in time (see ClusterActivity). */
  stats(timeoutMs?: number): Promise<ClusterStats> {
    const live = this.membership
      .nodes()
      .filter((n) => n.status !== 'down')
      .map((n) => n.id);
    return this.activity.gather(live, timeoutMs);
  }

  /** Socket.IO's adapter over this cluster's Redis, so rooms span the nodes. */
  socketIoAdapter(): ServerOptions['adapter'] {
    return socketIoAdapter(this.link, `${this.options.keyPrefix}sio`, this.options.logger);
  }

  /** Reads the durability report again while Redis is reachable; a change is logged. */
  private async refreshDurability(): Promise<void> {
    if (this.link.state !== 'up') return;
    const next = await describeRedisDurability(this.link, this.options.waitReplicas);
    if (this.link.state !== 'up' || next.summary === this.durability?.summary) return;
    this.durability = next;
    this.options.logger[next.survives.hostCrash ? 'info' : 'warn']({ durability: next }, `Redis durability changed: ${next.summary}`);
  }

  report(): ClusterReport {
    return { state: this.link.state, durability: this.durability ?? null };
  }

  /** Leaves the cluster (marked down at once); the link stays open for the engine to close. */
  async leave(): Promise<void> {
    clearInterval(this.durabilityTimer);
    await this.membership.stop();
    await this.activity.stop();
  }

  /** Closes the Redis link; after the engine over it has closed. */
  close(): Promise<void> {
    return this.link.close();
  }
}
