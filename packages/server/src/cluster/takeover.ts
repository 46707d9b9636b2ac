import type { Logger } from 'pino';
import type { RedisEngine } from '../engine/redis-engine.js';

/**
 * Consumer names start with the node id and a slash (`<node>/<session>/<group>`),
 * so a node's leases can be found by that prefix. This hands every lease a
 * departed node held back to its groups, due at once, so that the surviving
 * members get those messages without waiting for ackWait.
 *
 * Idempotent and safe to run from several nodes at once; `claimKey` makes
 * sure normally only one does the scan.
 */
export async function takeOverLeases(
  engine: RedisEngine,
  nodeId: string,
  logger: Logger,
  claimKey?: string,
): Promise<number> {
  if (claimKey) {
    const won = await engine.link.command(['SET', claimKey, '1', 'NX', 'PX', 30_000]);
    if (won === null) return 0;
  }
  let released = 0;
  for (const topic of await engine.listTopics()) {
    for (const group of await engine.listGroups(topic.topic)) {
      released += await engine.releaseByPrefix(topic.topic, group.group, `${nodeId}/`);
    }
  }
  if (released > 0) logger.info({ node: nodeId, released }, 'took over the leases of a departed node');
  return released;
}
