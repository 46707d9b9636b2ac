import type { NodeActivity, NodeRecord, RetentionPolicy } from '@meshmq/shared';
import type { Logger } from 'pino';
import { Cluster } from './cluster/cluster.js';
import type { NodeConfig } from './config.js';
import { EmbeddedEngine } from './engine/embedded-engine.js';
import type { Engine } from './engine/engine.js';
import { RedisEngine } from './engine/redis-engine.js';

/** What the cluster asks of the node it runs in. */
export interface ClusterMember {
  /** The node's record, as its heartbeat publishes it. */
  self: () => NodeRecord;
  /** The node's connections and activity per topic. */
  activity: () => NodeActivity;
}

/**
 * The one place that chooses the storage from the config: the embedded
 * engine over the data directory, or, with a Redis URL, a cluster whose
 * Redis link the Redis engine shares. The node wires what it gets without
 * knowing which.
 */
export function createStorage(
  config: NodeConfig,
  logger: Logger,
  retention: (topic: string) => RetentionPolicy,
  member: ClusterMember,
): { engine: Engine; cluster: Cluster | undefined } {
  const common = { retention, dedupeWindowMs: config.dedupeWindowMs, maxTopics: config.maxTopics };
  if (!config.redisUrl) return { engine: new EmbeddedEngine({ dataDir: config.dataDir, diskFreeLimit: config.diskFreeLimit, ...common }), cluster: undefined };
  const cluster = new Cluster(
    {
      url: config.redisUrl,
      keyPrefix: config.redisPrefix,
      nodeId: config.nodeId,
      waitReplicas: config.redisReplicas,
      heartbeatMs: config.heartbeatMs,
      downAfterMs: config.nodeDownAfterMs,
      commandTimeoutMs: config.redisCommandTimeoutMs,
      logger,
    },
    member.self,
    member.activity,
  );
  const engine = new RedisEngine({
    link: cluster.link,
    keyPrefix: config.redisPrefix,
    replicas: config.redisReplicas,
    replicaTimeoutMs: config.redisReplicaTimeoutMs,
    logger,
    ...common,
  });
  return { engine, cluster };
}
