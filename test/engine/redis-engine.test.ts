import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll } from 'vitest';
import { RedisEngine, type Engine } from '@meshmq/server';
import { RedisProcess } from '../helpers/redis-process.js';
import { engineConformance, type EngineFactoryOptions } from './conformance.js';

let redis: RedisProcess;
beforeAll(async () => {
  redis = await RedisProcess.start();
});
afterAll(async () => {
  await redis?.dispose();
});

engineConformance('redis', {
  async create(options: EngineFactoryOptions = {}) {
    // Each instance gets its own key space in the shared redis-server.
    const keyPrefix = `t${randomBytes(4).toString('hex')}:`;
    const make = () => new RedisEngine({ url: redis.url, keyPrefix, ...options });
    let engine: Engine = make();
    await engine.open();
    return {
      get engine() {
        return engine;
      },
      async reopen() {
        await engine.close();
        engine = make();
        await engine.open();
        return engine;
      },
      async dispose() {
        await engine.close();
      },
    };
  },
});
