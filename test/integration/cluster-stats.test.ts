import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NodeProcess } from '../helpers/node-process.js';
import { RawClient } from '../helpers/raw-client.js';
import { RedisProcess } from '../helpers/redis-process.js';
import { eventually, uniqueTopic } from '../helpers/util.js';

/**
 * Cluster-wide counts travel over the cluster's own Redis channel: they work
 * on nodes that serve no Socket.IO at all.
 */
describe('cluster stats without Socket.IO', () => {
  let redis: RedisProcess;
  const nodes: NodeProcess[] = [];
  const clients: RawClient[] = [];

  beforeAll(async () => {
    redis = await RedisProcess.start();
    for (const id of ['a', 'b']) {
      nodes.push(await NodeProcess.start({ env: { REDIS_URL: redis.url, NODE_ID: id, HEARTBEAT: '300ms', TRANSPORTS: 'ws' } }));
    }
  });

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(nodes.map((n) => n.dispose()));
    await redis?.dispose();
  });

  it('serves no Socket.IO', async () => {
    const res = await fetch(`${nodes[0]!.url}/socket.io/?EIO=4&transport=polling`);
    expect(res.status).toBe(404);
  });

  it('sums connections, subscribers and members of every node', async () => {
    const topic = uniqueTopic();
    for (const node of [nodes[1]!, nodes[1]!, nodes[0]!]) {
      const client = await RawClient.connect(node.wsUrl);
      clients.push(client);
      await client.ok({ op: 'subscribe', topic });
    }
    const member = await RawClient.connect(nodes[1]!.wsUrl);
    clients.push(member);
    await member.ok({ op: 'subscribe', topic, group: 'g' });
    // Both nodes must see each other in the membership before a request can expect the other's answer.
    await eventually(async () => {
      const body = (await (await fetch(`${nodes[0]!.url}/api/nodes`)).json()) as { nodes: Array<{ status: string }> };
      return body.nodes.filter((n) => n.status === 'up').length === 2;
    });
    const stats = (await (await fetch(`${nodes[0]!.url}/api/cluster/stats`)).json()) as {
      nodes: Array<{ node: string; connections: number }>;
      missing: string[];
      totals: { connections: number; subscribers: Record<string, number>; members: Record<string, number> };
    };
    expect(stats.missing).toEqual([]);
    expect(stats.nodes.map((n) => n.node).sort()).toEqual(['a', 'b']);
    expect(stats.totals.subscribers[topic]).toBe(3);
    expect(stats.totals.members[`${topic}\u0000g`]).toBe(1);
    expect(stats.totals.connections).toBe(4);
  });
});
