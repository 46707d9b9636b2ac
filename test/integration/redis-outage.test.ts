import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NodeProcess } from '../helpers/node-process.js';
import { RawClient } from '../helpers/raw-client.js';
import { RedisProcess } from '../helpers/redis-process.js';
import { eventually, range, sleep } from '../helpers/util.js';

/**
 * Work that was due while Redis was down must happen once it is back, even
 * on a topic where nothing else happens (no new publish to wake it).
 */
describe('after a Redis outage, on an idle topic', () => {
  let redis: RedisProcess;
  let node: NodeProcess;
  beforeAll(async () => {
    redis = await RedisProcess.start();
    node = await NodeProcess.start({ env: { REDIS_URL: redis.url, NODE_ID: 'solo', HEARTBEAT: '300ms' } });
  });
  afterAll(async () => {
    await node?.dispose();
    await redis?.dispose();
  });

  it('redelivers a group lease that ended while Redis was down', async () => {
    const topic = 'outage.group';
    const holder = await RawClient.connect(node.wsUrl);
    await holder.ok({ op: 'subscribe', topic, group: 'g', ackWait: 1000, from: 1 });
    const pub = await RawClient.connect(node.wsUrl);
    await pub.ok({ op: 'publish', topic, data: 'job' });
    await holder.waitForMessages(1, topic, 'g');
    await sleep(300);
    await redis.kill();
    await sleep(2000);
    await redis.start();
    const again = await holder.waitFor((f) => f.op === 'message' && f.topic === topic && f.delivery === 2, 15_000);
    expect(again.offset).toBe(1);
    await Promise.all([holder.close(), pub.close()]);
  });

  it('finishes a fan-out catch-up that a Redis outage interrupted', async () => {
    const topic = 'outage.fanout';
    const pub = await RawClient.connect(node.wsUrl);
    const big = 'x'.repeat(20_000);
    for (const i of range(1, 600)) await pub.ok({ op: 'publish', topic, data: { i, big } });
    const sub = await RawClient.connect(node.wsUrl);
    // Stop reading so the node's send buffer fills and it pauses the catch-up mid-way.
    sub.ws.pause();
    sub.sendRaw(JSON.stringify({ op: 'subscribe', id: 1, topic, from: 1 }));
    await sleep(1000);
    await redis.kill();
    sub.ws.resume();
    await sleep(1500);
    expect(sub.messages(topic).length).toBeLessThan(600);
    await redis.start();
    await eventually(() => sub.messages(topic).length === 600, 20_000, 'the rest of the catch-up');
    expect(sub.messages(topic).map((m) => m.offset)).toEqual(range(1, 600));
    await Promise.all([sub.close(), pub.close()]);
  }, 60_000);
});

describe('after Redis restarts empty (no persistence)', () => {
  let redis: RedisProcess;
  let node: NodeProcess;
  beforeAll(async () => {
    redis = await RedisProcess.start({ aof: false });
    node = await NodeProcess.start({ env: { REDIS_URL: redis.url, NODE_ID: 'solo', HEARTBEAT: '300ms' } });
  });
  afterAll(async () => {
    await node?.dispose();
    await redis?.dispose();
  });

  it('tells live subscribers their messages are gone and goes on with the new log; groups come back', async () => {
    const topic = 'amnesia';
    const sub = await RawClient.connect(node.wsUrl);
    const subscribed = await sub.ok({ op: 'subscribe', topic });
    const member = await RawClient.connect(node.wsUrl);
    await member.ok({ op: 'subscribe', topic, group: 'g' });
    const pub = await RawClient.connect(node.wsUrl);
    for (const n of [1, 2]) await pub.ok({ op: 'publish', topic, data: `old ${n}` });
    await sub.waitForMessages(2, topic);
    await member.waitForMessages(2, topic, 'g');
    await redis.kill();
    await redis.start();
    const after = await eventually(async () => {
      const reply = await pub.request({ op: 'publish', topic, data: 'new 1' });
      return reply.op === 'ok' && reply;
    }, 15_000);
    expect(after.offset).toBe(1);
    expect(after.epoch).not.toBe(subscribed.epoch);
    const reset = await sub.waitFor((f) => f.op === 'reset', 15_000);
    expect(reset).toMatchObject({ topic, from: 1, missing: { from: 1, to: 2 }, epoch: after.epoch });
    const fresh = await sub.waitFor((f) => f.op === 'message' && f.epoch === after.epoch, 15_000);
    expect(fresh).toMatchObject({ offset: 1, data: 'new 1' });
    const again = await member.waitFor((f) => f.op === 'message' && f.data === 'new 1', 15_000);
    expect(again).toMatchObject({ group: 'g', delivery: 1 });
    await Promise.all([sub.close(), member.close(), pub.close()]);
  }, 60_000);
});
