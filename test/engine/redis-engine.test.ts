import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll } from 'vitest';
import { RedisEngine } from '@meshmq/server';
import { RedisProcess } from '../helpers/redis-process.js';
import { engineConformance, reopenable, type EngineFactoryOptions } from './conformance.js';

let redis: RedisProcess;
beforeAll(async () => {
  redis = await RedisProcess.start();
});
afterAll(async () => {
  await redis?.dispose();
});

engineConformance('redis', {
  create(options: EngineFactoryOptions = {}) {
    // Each instance gets its own key space in the shared redis-server.
    const keyPrefix = `t${randomBytes(4).toString('hex')}:`;
    return reopenable(() => new RedisEngine({ url: redis.url, keyPrefix, ...options }));
  },
});
