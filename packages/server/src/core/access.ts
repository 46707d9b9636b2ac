import { type Action, MeshError, Permissions } from '@meshmq/shared';

export type { Action };

/** Who a connection or an admin API request acts as. */
export interface Principal {
  /** The token's subject; null for anonymous access on a node without authentication. */
  readonly sub: string | null;
  readonly grants: Permissions;
  /** When the token expires (ms since the Unix epoch); null when it does not. */
  readonly expiresAt: number | null;
}

/** A node without authentication (loopback, or --insecure): everything is allowed. */
export const ANONYMOUS: Principal = Object.freeze({ sub: null, expiresAt: null, grants: Permissions.ALL });

/** How a denial names what was asked, by action. */
const VERB: Record<Action, string> = {
  publish: 'publish to',
  subscribe: 'read',
  consume: 'consume from',
  admin: 'administer',
};

/**
 * The one authorisation check of the node: every operation that reads,
 * writes or settles, whatever its caller (either transport, the admin API),
 * passes here before it touches anything. Throws `forbidden` naming the
 * operation and topic, so a denial changes nothing.
 */
export function authorize(principal: Principal, action: Action, topic?: string, operation: string = action): void {
  if (principal.grants.can(action, topic)) return;
  const who = principal.sub === null ? 'anonymous access' : `token '${principal.sub}'`;
  const what = topic === undefined ? 'the node (the admin permission is required)' : `topic '${topic}'`;
  throw new MeshError('forbidden', `${operation}: ${who} may not ${VERB[action]} ${what}`);
}
