// The node and its configuration.

// Permissions and tokens.
export { type Action, MAX_PATTERN_LENGTH, MAX_PATTERNS_PER_LIST, type PermissionClaim, Permissions, TopicPattern } from '@meshmq/shared';
export { DEFAULT_TOKEN_TTL, type MintOptions, mintToken, runTokenCommand, TOKEN_HELP } from './auth/token-command.js';
export {
  type AuthOptions,
  DEFAULT_CLOCK_TOLERANCE_SEC,
  DEFAULT_JWKS_COOLDOWN_MS,
  DEFAULT_JWKS_REFRESH_MS,
  type Identity,
  MAX_TOKEN_LENGTH,
  MIN_SECRET_BYTES,
  TokenVerifier,
} from './auth/token-verifier.js';
export {
  authOptionsOf,
  HELP,
  loadConfig,
  type NodeConfig,
  OPTION_NAMES,
  type OptionName,
  parseDuration,
  retentionResolver,
  type TopicRule,
} from './config.js';
export { ANONYMOUS, type Principal } from './core/access.js';
// The core: transport- and storage-independent, driven through a Connection.
export { Broker, type BrokerOptions, type BrokerStats, resumePoint } from './core/broker.js';
export type { Connection } from './core/connection.js';
export { FanoutSubscription } from './core/fanout-subscription.js';
export { GroupDispatcher, type GroupMember } from './core/group-dispatcher.js';
export { type ConnectionLimits, DEFAULT_CONNECTION_LIMITS, HIGH_WATER_MARK } from './core/limits.js';
export { Session } from './core/session.js';

// Storage engines.
export { EmbeddedEngine, type EmbeddedEngineOptions } from './engine/embedded-engine.js';
export type * from './engine/engine.js';
export { RedisEngine, type RedisEngineOptions } from './engine/redis-engine.js';
export { type AdmissionLimits, DEFAULT_ADMISSION_LIMITS, Gate, type GateOptions } from './gate.js';
// Plain HTTP and what every request passes first.
export { createHttpHandler, type JsonRoute, type RouteContext } from './http-handler.js';
export { BrokerNode } from './node.js';
