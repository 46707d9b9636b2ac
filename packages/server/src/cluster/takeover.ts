import type { Logger } from 'pino';
import type { Engine } from '../engine/engine.js';
import type { RedisLink } from '../engine/redis-link.js';

/** How long one node's claim to take over a departed node's leases keeps the others from repeating the scan. */
const CLAIM_MS = 30_000;

/**
 * Consumer names start with the node id and a slash (`<node>/<session>/<group>`),
 * so a node's leases can be found by that prefix. This hands every lease a
 * departed node held back to its groups, due at once, so that the surviving
 * members get those messages without waiting for ackWait.
 *
 * Idempotent and safe to run from several nodes at once; `claimKey` makes
 * sure normally only one does the scan.
 */
export async function takeOverLeases(engine: Engine, link: RedisLink, nodeId: string, logger: Logger, claimKey?: string): Promise<number> {
  if (claimKey) {
    const won = await link.command(['SET', claimKey, '1', 'NX', 'PX', CLAIM_MS]);
    if (won === null) return 0;
  }
  const released = await engine.releaseConsumers(`${nodeId}/`);
  if (released > 0) logger.info({ peer: nodeId, released }, 'took over the leases of a departed node');
  return released;
}
