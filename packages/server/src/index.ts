// The node and its configuration.
export { BrokerNode } from './node.js';
export { loadConfig, authOptionsOf, parseDuration, retentionResolver, HELP, type NodeConfig, type TopicRule } from './config.js';

// The core: transport- and storage-independent, driven through a Connection.
export { Broker, resumePoint, type BrokerOptions, type BrokerStats } from './core/broker.js';
export { Session } from './core/session.js';
export type { Connection } from './core/connection.js';
export { FanoutSubscription } from './core/fanout-subscription.js';
export { GroupDispatcher, type GroupMember } from './core/group-dispatcher.js';
export { DEFAULT_CONNECTION_LIMITS, HIGH_WATER_MARK, type ConnectionLimits } from './core/limits.js';
export { ANONYMOUS, type Principal } from './core/access.js';

// Plain HTTP and what every request passes first.
export { createHttpHandler, type JsonRoute, type RouteContext } from './http-handler.js';
export { Gate, DEFAULT_ADMISSION_LIMITS, type AdmissionLimits, type GateOptions } from './gate.js';

// Storage engines.
export { EmbeddedEngine, type EmbeddedEngineOptions } from './engine/embedded-engine.js';
export { RedisEngine, type RedisEngineOptions } from './engine/redis-engine.js';
export type * from './engine/engine.js';

// Permissions and tokens.
export { Permissions, TopicPattern, MAX_PATTERN_LENGTH, MAX_PATTERNS_PER_LIST, type Action, type PermissionClaim } from '@meshmq/shared';
export {
  TokenVerifier,
  DEFAULT_CLOCK_TOLERANCE_SEC,
  DEFAULT_JWKS_COOLDOWN_MS,
  DEFAULT_JWKS_REFRESH_MS,
  MAX_TOKEN_LENGTH,
  MIN_SECRET_BYTES,
  type AuthOptions,
  type Identity,
} from './auth/token-verifier.js';
export { mintToken, runTokenCommand, TOKEN_HELP, DEFAULT_TOKEN_TTL, type MintOptions } from './auth/token-command.js';
