import { RedisEngine, type StoredMessage } from '@meshmq/server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClusterSetup, SentinelSetup } from '../helpers/redis-topologies.js';
import { range, uniqueTopic } from '../helpers/util.js';
import { waitUntil } from '../helpers/wait.js';
import { engineConformance } from './conformance.js';
import { redisHarness, uniqueKeyPrefix } from './redis-harness.js';

/** The Redis engine over real Sentinel and Cluster topologies. */
async function exercise(url: string): Promise<void> {
  const engine = new RedisEngine({ url, keyPrefix: uniqueKeyPrefix() });
  await engine.open();
  try {
    const topics = range(1, 6).map(() => uniqueTopic());
    const seen: StoredMessage[] = [];
    engine.onMessage((m) => seen.push(m));
    for (const topic of topics) await engine.watch(topic);
    for (const topic of topics) {
      const outcomes = await Promise.all(range(1, 20).map((n) => engine.publish(topic, n)));
      expect(outcomes.map((o) => o.offset).sort((a, b) => a - b)).toEqual(range(1, 20));
      await engine.ensureGroup(topic, 'g', { startAt: 1, maxDeliveries: 1 });
      const claimed = await engine.claim(topic, 'g', 'c', 5);
      expect(claimed.deliveries.map((d) => d.message.offset)).toEqual(range(1, 5));
      await engine.ack(topic, 'g', 1, { consumer: 'c' });
      await engine.nack(topic, 'g', 2, 0, { consumer: 'c' });
      // maxDeliveries 1: the nacked message goes to the dead-letter log in the same slot.
      await engine.claim(topic, 'g', 'c', 1);
    }
    // Listeners hear each topic in offset order: once offset 20 of every topic has come, all of them have.
    const heardLast = (topic: string) => seen.some((m) => m.topic === topic && m.offset === 20);
    await waitUntil(() => topics.every(heardLast), 'offset 20 of every topic to reach the listener');
    for (const topic of topics) {
      expect(seen.filter((m) => m.topic === topic).map((m) => m.offset)).toEqual(range(1, 20));
      expect((await engine.read(`$dlq.${topic}`, 1, 10)).map((m) => (m.data as { offset: number }).offset)).toEqual([2]);
    }
    expect((await engine.listTopics()).map((t) => t.topic)).toEqual(expect.arrayContaining(topics));
  } finally {
    await engine.close();
  }
}

describe('Redis engine on Sentinel', () => {
  let setup: SentinelSetup;
  beforeAll(async () => {
    setup = await SentinelSetup.start();
  }, 30_000);
  afterAll(async () => {
    await setup?.dispose();
  });

  // Left out on Sentinel, for the product bug each names.
  engineConformance(
    'redis+sentinel',
    redisHarness(() => setup.url()),
  );

  it('publishes, notifies and runs groups through the Sentinel-discovered primary', async () => {
    await exercise(setup.url());
  });
});

describe('Redis engine on Redis Cluster', () => {
  let setup: ClusterSetup;
  beforeAll(async () => {
    setup = await ClusterSetup.start();
  }, 30_000);
  afterAll(async () => {
    await setup?.dispose();
  });

  // Left out on Redis Cluster, for the product bug each names.
  engineConformance(
    'redis+cluster',
    redisHarness(() => setup.url()),
  );

  it('spreads topics over shards with sharded pub/sub and same-slot scripts', async () => {
    await exercise(setup.url());
  });
});
