/**
 * The systems the queue workloads (durable, latency, scaling) compare, each
 * at its durability level, and how to start each. A system is set up once per
 * workload, when first used, and stopped when the workload ends.
 */
import type { BenchContext, DriverSpec } from './context.js';
import { natsVersion, rabbitVersion } from './drivers.js';
import { DURABILITY } from './durability.js';
import { natsBinaryVersion, natsDefaultSyncInterval, SkipError } from './peers.js';

export interface SystemHandle {
  /** The driver of pair `i` (publisher and consumer); MeshMQ clusters spread pairs over nodes. */
  driver(pair: number): DriverSpec;
  /** Every server process whose CPU counts: MeshMQ nodes, their Redis, the peer broker. */
  pids: number[];
  /** What to print under the table about this system's setup. */
  notes: string[];
}

export interface PipelineSystem {
  /** Printed in the table, matched by --systems. */
  name: string;
  durability: string;
  setup(ctx: BenchContext): Promise<SystemHandle>;
}

export interface MeshOverRedis {
  nodes: number;
  persistence: 'everysec' | 'always';
  /** 'same': publisher and consumer on one node (pair i on node i mod n); 'cross': publisher on node i, consumer on node i+1. */
  placement: 'same' | 'cross';
}

/** A MeshMQ cluster of `nodes` nodes over a Redis of its own with the given AOF fsync policy. */
export async function setupMeshOverRedis(ctx: BenchContext, o: MeshOverRedis, transport: 'meshmq-ws' | 'meshmq-sdk' = 'meshmq-ws'): Promise<SystemHandle> {
  const redis = await ctx.startRedis(o.persistence);
  const cluster = await ctx.startMeshNodes({ engine: 'redis', count: o.nodes, redis: redis.url });
  const urls = cluster.wsUrls;
  return {
    driver: (pair) => {
      const a = pair % urls.length;
      const b = o.placement === 'cross' ? (a + 1) % urls.length : a;
      return { kind: transport, publishUrl: urls[a]!, consumeUrl: urls[b]! };
    },
    pids: [...cluster.pids, ...redis.pids],
    notes: [],
  };
}

/**
 * MeshMQ's embedded engine on one node: over plain WebSocket with one ack frame
 * per delivery (`ws`) or with multi-offset acks (`ws-batch`), or through the SDK
 * (which batches its acks by itself).
 */
export function meshEmbeddedSystem(transport: 'ws' | 'ws-batch' | 'sdk'): PipelineSystem {
  const label = transport === 'ws-batch' ? 'ws, multi-offset ack' : transport;
  return {
    name: `meshmq embedded (${label})`,
    durability: DURABILITY.fsync,
    async setup(ctx) {
      const cluster = await ctx.startMeshNodes({ engine: 'embedded', count: 1 });
      const url = cluster.wsUrls[0]!;
      const driver = (): DriverSpec =>
        transport === 'sdk'
          ? { kind: 'meshmq-sdk', publishUrl: url, consumeUrl: url }
          : { kind: 'meshmq-ws', publishUrl: url, consumeUrl: url, ackBatch: transport === 'ws-batch' };
      return { driver, pids: cluster.pids, notes: [] };
    },
  };
}

export function meshRedisSystem(nodes: 1 | 2, persistence: 'everysec' | 'always'): PipelineSystem {
  const where = nodes === 1 ? '1 node' : '2 nodes, pub A → sub B';
  return {
    name: `meshmq redis engine, ${where} (ws), AOF ${persistence}`,
    durability: persistence === 'always' ? DURABILITY.fsync : DURABILITY.everysec,
    setup: (ctx) => setupMeshOverRedis(ctx, { nodes, persistence, placement: nodes === 1 ? 'same' : 'cross' }),
  };
}

export function redisStreamsSystem(persistence: 'everysec' | 'always'): PipelineSystem {
  return {
    name: `redis streams, AOF ${persistence}`,
    durability: persistence === 'always' ? DURABILITY.fsync : DURABILITY.everysec,
    async setup(ctx) {
      const redis = await ctx.startRedis(persistence);
      return { driver: () => ({ kind: 'redis-streams', url: redis.url }), pids: redis.pids, notes: [] };
    },
  };
}

export function rabbitSystem(): PipelineSystem {
  return {
    name: 'rabbitmq (durable queue, confirms)',
    durability: DURABILITY.fsync,
    async setup(ctx) {
      const rabbit = await ctx.startRabbit();
      try {
        const version = await rabbitVersion(rabbit.url);
        if (version) ctx.note('rabbitmq-server', version);
      } catch (err) {
        throw new SkipError(`cannot connect to ${rabbit.url.replace(/\/\/[^@]*@/, '//')}: ${err instanceof Error ? err.message : String(err)}`);
      }
      const notes = rabbit.pids.length === 0 ? ['server CPU unknown: the pid listening on the AMQP port could not be found'] : [];
      return { driver: () => ({ kind: 'rabbitmq', url: rabbit.url }), pids: rabbit.pids, notes };
    },
  };
}

/**
 * NATS JetStream, file storage. `default` is the server's own fsync schedule
 * (60 s up to 2.9, 2 min from 2.10); `everysec` and `always` set
 * `sync_interval` (nats-server 2.10+ only; skipped on older servers).
 */
export function natsSystem(sync: 'default' | 'everysec' | 'always'): PipelineSystem {
  const label = sync === 'default' ? 'default sync' : sync === 'always' ? 'sync_interval always' : 'sync_interval 1s';
  const durability =
    sync === 'always' ? DURABILITY.fsync : sync === 'everysec' ? DURABILITY.everysec : DURABILITY.osWrite(natsDefaultSyncInterval(natsBinaryVersion()));
  return {
    name: `nats jetstream (file, ${label})`,
    durability,
    async setup(ctx) {
      const nats = await ctx.startNats(sync);
      try {
        const v = await natsVersion(nats.url);
        if (v) ctx.note('nats-server', v);
      } catch (err) {
        throw new SkipError(`cannot connect to ${nats.url}: ${err instanceof Error ? err.message : String(err)}`);
      }
      return { driver: () => ({ kind: 'nats', url: nats.url }), pids: nats.pids, notes: [] };
    },
  };
}
