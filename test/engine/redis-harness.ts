import { randomBytes } from 'node:crypto';
import { RedisEngine } from '@meshmq/server';
import { type EngineFactoryOptions, type EngineHarness, reopenable } from './conformance.js';

/** A key prefix no other engine instance uses, so instances share a Redis without seeing each other. */
export function uniqueKeyPrefix(): string {
  return `t${randomBytes(4).toString('hex')}:`;
}

/**
 * The Redis engine at `url()`, read when a case opens an engine (after the
 * file's beforeAll started the topology), each instance in its own key space.
 */
export function redisHarness(url: () => string, knownFailures: Readonly<Record<string, string>> = {}): EngineHarness {
  return {
    shared: true,
    knownFailures,
    create(options: EngineFactoryOptions = {}) {
      const keyPrefix = uniqueKeyPrefix();
      return reopenable(() => new RedisEngine({ url: url(), keyPrefix, ...options }), { shared: true });
    },
  };
}
