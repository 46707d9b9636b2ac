export { BrokerNode } from './node.js';
export { loadConfig, parseDuration, retentionResolver, HELP, type NodeConfig, type TopicRule } from './config.js';
export { Broker, type BrokerOptions, type BrokerStats } from './core/broker.js';
export { EmbeddedEngine, type EmbeddedEngineOptions } from './engine/embedded-engine.js';
export { RedisEngine, type RedisEngineOptions } from './engine/redis-engine.js';
export type * from './engine/engine.js';
