import { mintToken } from '@meshmq/server';
import type { Alarm, AlarmsResponse, ApiErrorBody, ClusterAlarms } from '@meshmq/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NodeProcess } from '../helpers/node-process.js';
import { RawClient } from '../helpers/raw-client.js';
import { RedisProcess } from '../helpers/redis-process.js';
import { eventually, uniqueTopic } from '../helpers/util.js';

const SECRET = 'a-test-secret-that-is-long-enough-for-hs256';

async function getJson<T>(url: string, token?: string): Promise<{ status: number; body: T }> {
  const res = await fetch(url, token ? { headers: { authorization: `Bearer ${token}` } } : {});
  return { status: res.status, body: (await res.json()) as T };
}

const alarmsOf = async (node: NodeProcess) => (await getJson<AlarmsResponse>(`${node.url}/api/alarms`)).body;
const clusterAlarmsOf = async (node: NodeProcess) => (await getJson<ClusterAlarms>(`${node.url}/api/cluster/alarms`)).body;
const ids = (alarms: Alarm[]) => alarms.map((a) => a.id);

describe('alarms: access', () => {
  let node: NodeProcess;

  beforeAll(async () => {
    node = await NodeProcess.start({ env: { AUTH_SECRET: SECRET, NODE_ID: 'guarded' } });
  });

  afterAll(async () => {
    await node?.dispose();
  });

  it.each(['/api/alarms', '/api/cluster/alarms'])('%s answers 401 without a token and 403 to a token without admin', async (path) => {
    const anonymous = await getJson<ApiErrorBody>(`${node.url}${path}`);
    expect(anonymous.status).toBe(401);
    expect(anonymous.body.error.code).toBe('unauthorized');

    const publisher = await mintToken({ secret: SECRET, sub: 'pub', permissions: { publish: ['>'] }, ttlMs: 60_000 });
    const forbidden = await getJson<ApiErrorBody>(`${node.url}${path}`, publisher);
    expect(forbidden.status).toBe(403);
    expect(forbidden.body.error.code).toBe('forbidden');
  });

  it('answers an admin with the node and its alarms', async () => {
    const admin = await mintToken({ secret: SECRET, sub: 'ops', permissions: { admin: true }, ttlMs: 60_000 });
    const own = await getJson<AlarmsResponse>(`${node.url}/api/alarms`, admin);
    expect(own.status).toBe(200);
    expect(own.body).toEqual({ node: 'guarded', alarms: [] });
    // Without a cluster, the node answers for itself alone.
    const cluster = await getJson<ClusterAlarms>(`${node.url}/api/cluster/alarms`, admin);
    expect(cluster.status).toBe(200);
    expect(cluster.body).toEqual({ nodes: [{ node: 'guarded', alarms: [] }], missing: [] });
  });
});

/**
 * Two nodes over one Redis: each raises its own alarms, and either answers
 * for both through the cluster's Redis channel while Redis is up.
 */
describe('alarms of a cluster over Redis', () => {
  let redis: RedisProcess;
  let a: NodeProcess;
  let b: NodeProcess;

  beforeAll(async () => {
    redis = await RedisProcess.start();
    const env = (id: string) => ({ REDIS_URL: redis.url, NODE_ID: id, HEARTBEAT: '300ms', NODE_DOWN_AFTER: '1500ms' });
    [a, b] = await Promise.all([NodeProcess.start({ env: env('node-a') }), NodeProcess.start({ env: env('node-b') })]);
    // Each node must know the other before a cluster-wide request expects its answer.
    await eventually(async () => {
      for (const node of [a, b]) {
        const body = (await (await fetch(`${node.url}/api/nodes`)).json()) as { nodes: Array<{ status: string }> };
        if (body.nodes.filter((n) => n.status === 'up').length !== 2) return false;
      }
      return true;
    });
  });

  afterAll(async () => {
    await Promise.all([a?.dispose(), b?.dispose()]);
    await redis?.dispose();
  });

  it('lists every node, none with an alarm, while all is well', async () => {
    const cluster = await clusterAlarmsOf(a);
    expect(cluster.missing).toEqual([]);
    expect(cluster.nodes).toEqual([
      { node: 'node-a', alarms: [] },
      { node: 'node-b', alarms: [] },
    ]);
  });

  it('raises dead_letters:<topic> on the node whose member failed, seen from the other node too', async () => {
    const topic = uniqueTopic('alarms');
    const member = await RawClient.connect(b.wsUrl);
    const publisher = await RawClient.connect(a.wsUrl);
    try {
      await member.ok({ op: 'subscribe', topic, group: 'g', maxDeliveries: 1 });
      await publisher.ok({ op: 'publish', topic, data: { job: 1 } });
      const [message] = await member.waitForMessages(1, topic, 'g');
      await member.ok({ op: 'nack', topic, group: 'g', offset: message!.offset });

      const alarm = await eventually(async () => (await alarmsOf(b)).alarms.find((x) => x.id === `dead_letters:${topic}`), 10_000, 'the dead-letter alarm');
      expect(alarm).toMatchObject({ severity: 'warning' });
      expect(alarm.summary).toContain(`'${topic}'`);
      expect(alarm.action).toContain(`$dlq.${topic}`);
      expect(alarm.since).toBeGreaterThan(0);

      const seenFromA = await clusterAlarmsOf(a);
      expect(seenFromA.missing).toEqual([]);
      expect(seenFromA.nodes.find((n) => n.node === 'node-b')?.alarms).toContainEqual(alarm);
    } finally {
      await Promise.all([member.close(), publisher.close()]);
    }
  });

  it('raises redis_down on every node while Redis is stopped, and clears it when Redis is back', async () => {
    await redis.kill();
    for (const node of [a, b]) {
      const alarms = await eventually(
        async () => {
          const { alarms } = await alarmsOf(node);
          return ids(alarms).includes('redis_down') && alarms;
        },
        10_000,
        'redis_down',
      );
      expect(alarms.find((x) => x.id === 'redis_down')).toMatchObject({ severity: 'critical', summary: expect.stringContaining('Redis is unreachable') });
    }
    // The other node's answer travels over Redis: without it, a node answers for itself and names the other missing.
    const cluster = await clusterAlarmsOf(a);
    expect(cluster.nodes.map((n) => n.node)).toEqual(['node-a']);
    expect(ids(cluster.nodes[0]!.alarms)).toContain('redis_down');
    expect(cluster.missing).toEqual(['node-b']);

    await redis.start();
    for (const node of [a, b]) await eventually(async () => !ids((await alarmsOf(node)).alarms).includes('redis_down'), 15_000, 'redis_down to clear');
    const healed = await eventually(
      async () => {
        const body = await clusterAlarmsOf(a);
        return body.missing.length === 0 && body;
      },
      10_000,
      'both nodes to answer again',
    );
    expect(healed.nodes.map((n) => n.node)).toEqual(['node-a', 'node-b']);
    for (const node of healed.nodes) expect(ids(node.alarms)).not.toContain('redis_down');
  });
});
