export { BrokerNode } from './node.js';
export { loadConfig, authOptionsOf, parseDuration, retentionResolver, HELP, type NodeConfig, type TopicRule } from './config.js';
export { Broker, type BrokerOptions, type BrokerStats } from './core/broker.js';
export { EmbeddedEngine, type EmbeddedEngineOptions } from './engine/embedded-engine.js';
export { RedisEngine, type RedisEngineOptions } from './engine/redis-engine.js';
export type * from './engine/engine.js';
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
