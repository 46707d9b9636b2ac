import { MeshError, type PermissionSet } from '@meshmq/shared';

/** What a permission is needed for (docs/security.md). */
export type Action = 'publish' | 'subscribe' | 'consume' | 'admin';

/** A principal's permissions: which actions it may take on which topics. */
export interface Grants {
  can(action: Action, topic?: string): boolean;
  toJSON(): PermissionSet;
}

/** Who a connection or an admin API request acts as. */
export interface Principal {
  /** The token's subject; null for anonymous access on a node without authentication. */
  readonly sub: string | null;
  readonly grants: Grants;
  /** When the token expires (ms since the Unix epoch); null when it does not. */
  readonly expiresAt: number | null;
}

const EVERYTHING: PermissionSet = { publish: ['>'], subscribe: ['>'], consume: ['>'], admin: true };

/** A node without authentication (loopback, or --insecure): everything is allowed. */
export const ANONYMOUS: Principal = Object.freeze({
  sub: null,
  expiresAt: null,
  grants: { can: () => true, toJSON: () => ({ ...EVERYTHING }) },
});

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
