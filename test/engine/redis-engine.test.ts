import { RedisEngine } from '@meshmq/server';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { RedisProcess } from '../helpers/redis-process.js';
import { redisCli } from '../helpers/redis-topologies.js';
import { waitUntil } from '../helpers/wait.js';
import { engineConformance } from './conformance.js';
import { redisHarness, uniqueKeyPrefix } from './redis-harness.js';

let redis: RedisProcess;
beforeAll(async () => {
  redis = await RedisProcess.start();
});
afterAll(async () => {
  await redis?.dispose();
});

// Left out on standalone Redis, for the product bug each names.
engineConformance(
  'redis',
  redisHarness(() => redis.url),
);

it('redis: a quick unwatch and watch again of a topic keeps it live', async () => {
  const engine = new RedisEngine({ url: redis.url, keyPrefix: uniqueKeyPrefix() });
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
    await waitUntil(() => seen.includes(2), 'offset 2 to reach the listener');
    expect(seen).toEqual([1, 2]);
  } finally {
    await engine.close();
  }
});

it('redis: a log found behind what this node acknowledged starts a new epoch at the first lost offset', async () => {
  const keyPrefix = uniqueKeyPrefix();
  const engine = new RedisEngine({ url: redis.url, keyPrefix });
  await engine.open();
  try {
    const topic = 'failover';
    await engine.ensureGroup(topic, 'g', { startAt: 1 });
    let epoch = '';
    for (let n = 1; n <= 5; n++) epoch = (await engine.publish(topic, n)).epoch;
    const claimed = await engine.claim(topic, 'g', 'A', 5);
    expect(claimed.deliveries.map((d) => d.message.offset)).toEqual([1, 2, 3, 4, 5]);
    // What a failover to a replica that lacked the newest writes leaves: the log ends at 3.
    const meta = `${keyPrefix}{${topic}}:topic:meta`;
    const log = `${keyPrefix}{${topic}}:topic:log`;
    await redisCli(redis.port, 'XDEL', log, '4-0', '5-0');
    await redisCli(redis.port, 'XSETID', log, '3-0');
    await redisCli(redis.port, 'HSET', meta, 'last', '3');
    const info = await engine.topicInfo(topic);
    expect(info?.epoch).not.toBe(epoch);
    expect(info?.epochs).toEqual([
      { epoch, start: 1 },
      { epoch: info!.epoch, start: 4 },
    ]);
    expect(await engine.publish(topic, 'new 4')).toMatchObject({ offset: 4, epoch: info!.epoch });
    // Seen again, the same loss changes nothing more.
    expect((await engine.topicInfo(topic))?.epochs).toHaveLength(2);
    // Offsets before the loss still hold in the old epoch; the lost ones do not.
    await engine.ack(topic, 'g', 2, { consumer: 'A', epoch });
    await expect(engine.ack(topic, 'g', 4, { consumer: 'A', epoch })).rejects.toMatchObject({ code: 'not_found' });
    await expect(engine.nack(topic, 'g', 5, 0, { consumer: 'A', epoch })).rejects.toMatchObject({ code: 'not_found' });
  } finally {
    await engine.close();
  }
});
