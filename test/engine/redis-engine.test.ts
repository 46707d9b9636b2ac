import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
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

it('redis: a quick unwatch and watch again of a topic keeps it live', async () => {
  const engine = new RedisEngine({ url: redis.url, keyPrefix: `t${randomBytes(4).toString('hex')}:` });
  await engine.open();
  try {
    const seen: number[] = [];
    engine.onMessage((m) => seen.push(m.offset));
    await engine.watch('churn');
    // Not awaited in between: the unsubscribe must not land after the second subscribe.
    const steps = [engine.unwatch('churn'), engine.watch('churn'), engine.unwatch('churn'), engine.watch('churn')];
    await Promise.all(steps);
    await engine.publish('churn', 1);
    await engine.publish('churn', 2);
    for (let i = 0; i < 100 && seen.length < 2; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(seen).toEqual([1, 2]);
  } finally {
    await engine.close();
  }
});
