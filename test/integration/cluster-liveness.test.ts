import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NodeProcess } from '../helpers/node-process.js';
import { RawClient } from '../helpers/raw-client.js';
import { RedisProcess } from '../helpers/redis-process.js';
import { eventually, sleep, uniqueTopic } from '../helpers/util.js';

const HEARTBEAT_MS = 300;
const NODE_DOWN_AFTER_MS = 1500;
/** Longer than --node-down-after: every liveness key expires while Redis is away. */
const OUTAGE_MS = 3000;

/**
 * A Redis outage is not a node death (issue 11): while a node cannot reach
 * Redis its heartbeats stop through no fault of its own. Two live nodes over
 * one real redis-server go through Redis paused (SIGSTOP: connections stay
 * open, nothing answers) and Redis killed and restarted, each for longer than
 * --node-down-after, and neither logs the other down; a node that really
 * dies is still declared down and its leases handed over.
 */
describe('node liveness through Redis outages', () => {
  let redis: RedisProcess;
  const nodes: NodeProcess[] = [];
  const clients: RawClient[] = [];
  const env = (id: string) => ({ REDIS_URL: redis.url, NODE_ID: id, HEARTBEAT: `${HEARTBEAT_MS}ms`, NODE_DOWN_AFTER: `${NODE_DOWN_AFTER_MS}ms` });
  const downLines = () => nodes.flatMap((n) => n.logs.split('\n').filter((line) => line.includes('node is down')));
  const connect = async (node: NodeProcess) => {
    const client = await RawClient.connect(node.wsUrl);
    clients.push(client);
    return client;
  };

  /** Both nodes serve again and list each other as up. */
  const bothUp = async () => {
    for (const node of nodes) {
      await eventually(async () => (await fetch(`${node.url}/readyz`)).status === 200, 20_000, `${node.url} ready`);
      const client = await connect(node);
      await eventually(async () => ((await client.ok({ op: 'hello' })).nodes as string[]).length === 2, 20_000, 'both nodes listed');
    }
  };

  /**
   * After Redis is back, the nodes had time to declare each other down had
   * they taken a missing liveness key for a death: down-after plus a few
   * heartbeats of working Redis.
   */
  const observeAfterRecovery = () => sleep(NODE_DOWN_AFTER_MS + 4 * HEARTBEAT_MS);

  beforeAll(async () => {
    redis = await RedisProcess.start();
    nodes.push(await NodeProcess.start({ env: env('a') }), await NodeProcess.start({ env: env('b') }));
    await bothUp();
  });

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
    await Promise.all(nodes.map((n) => n.dispose()));
    await redis?.dispose();
  });

  it('declares no live node down while Redis is paused for longer than down-after', async () => {
    redis.pause();
    await sleep(OUTAGE_MS);
    redis.resume();
    await bothUp();
    await observeAfterRecovery();
    expect(downLines(), "live nodes logged as 'node is down'").toEqual([]);
    await bothUp();
  }, 60_000);

  it('declares no live node down while Redis is killed and restarted later than down-after', async () => {
    await redis.kill();
    await sleep(OUTAGE_MS);
    await redis.start();
    await bothUp();
    await observeAfterRecovery();
    expect(downLines(), "live nodes logged as 'node is down'").toEqual([]);
    await bothUp();
  }, 60_000);

  it('still declares a node that died down, and hands its leases to a live member', async () => {
    const topic = uniqueTopic();
    const [a, b] = nodes as [NodeProcess, NodeProcess];
    const holder = await connect(b);
    await holder.ok({ op: 'subscribe', topic, group: 'g', ackWait: 120_000, prefetch: 1 });
    const pub = await connect(a);
    await pub.ok({ op: 'publish', topic, data: 'job' });
    await holder.waitForMessages(1, topic, 'g');
    const survivor = await connect(a);
    await survivor.ok({ op: 'subscribe', topic, group: 'g' });
    await b.kill();
    const redelivered = await survivor
      .waitFor((f) => f.op === 'message' && f.topic === topic && f.offset === 1, 15_000)
      .catch((err: Error) => {
        const lines = a.logs.split('\n').filter((line) => /node is|redis link|lease/.test(line));
        throw new Error(`${err.message}; node a logged:\n${lines.slice(-10).join('\n')}`);
      });
    expect(redelivered).toMatchObject({ delivery: 2, data: 'job' });
    expect(a.logs).toContain('node is down');
  }, 60_000);
});
