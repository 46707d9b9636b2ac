import { randomBytes } from 'node:crypto';
import { RedisEngine } from '@meshmq/server';
import type { MeshError } from '@meshmq/shared';
import { afterEach, describe, expect, it } from 'vitest';
import { RedisProcess } from '../helpers/redis-process.js';
import { redisCli } from '../helpers/redis-topologies.js';
import { eventually } from '../helpers/util.js';

/**
 * The failover fence (docs/architecture.md) on real redis-servers, without
 * Sentinel's timing: a replica promoted by hand stands for a failover in
 * which it lacked the newest writes.
 */
describe('Redis engine: epochs across a change of primary', () => {
  const owned: Array<{ dispose(): Promise<void> }> = [];
  afterEach(async () => {
    for (const thing of owned.splice(0).reverse()) await thing.dispose();
  });
  const redis = async (args: string[] = []) => {
    const r = await RedisProcess.start({ args });
    owned.push(r);
    return r;
  };
  const engine = async (url: string, keyPrefix: string, replicas = 0) => {
    const e = new RedisEngine({ url, keyPrefix, replicas, replicaTimeoutMs: 1000 });
    await e.open();
    owned.push({ dispose: () => e.close() });
    return e;
  };
  const inSync = (replica: RedisProcess) =>
    eventually(async () => (await redisCli(replica.port, 'INFO', 'replication')).includes('master_link_status:up'), 15_000, 'replica in sync');

  it('opens a new epoch at the promoted replica’s last + 1, whoever touches the topic first', async () => {
    const primary = await redis();
    const replica = await redis(['--replicaof', '127.0.0.1', String(primary.port)]);
    await inSync(replica);
    const prefix = `t${randomBytes(3).toString('hex')}:`;
    // `saw` writes to the old primary; `late` meets the topic only on the promoted replica and saw none of it.
    const saw = await engine(primary.url, prefix);
    const first = await saw.publish('orders', 1);
    for (let n = 2; n <= 10; n++) await saw.publish('orders', n);
    await eventually(async () => (await redisCli(replica.port, 'HGET', `${prefix}{orders}:topic:meta`, 'last')) === '10', 10_000, 'replica has offset 10');
    await redisCli(replica.port, 'REPLICAOF', 'NO', 'ONE');
    // Acknowledged by the old primary, never seen by the new one.
    for (let n = 11; n <= 15; n++) expect((await saw.publish('orders', n)).epoch).toBe(first.epoch);

    const late = await engine(replica.url, prefix);
    // A read is fenced as a write is: a resume learns the lost range before anything takes those offsets.
    const info = await late.topicInfo('orders');
    expect(info).toMatchObject({ last: 10, epochs: [{ epoch: first.epoch, start: 1 }, { start: 11 }] });
    expect(info!.epoch).not.toBe(first.epoch);
    const next = await late.publish('orders', 'after the failover');
    expect(next).toMatchObject({ offset: 11, epoch: info!.epoch });
    // One promotion, one new epoch: the next write does not open another.
    expect((await late.publish('orders', 'again')).epoch).toBe(info!.epoch);
    expect((await late.topicInfo('orders'))!.epochs).toHaveLength(2);
  });

  it('keeps the epoch when a primary restarts from its AOF (new replication id, not promoted, nothing lost)', async () => {
    const primary = await redis();
    const prefix = `t${randomBytes(3).toString('hex')}:`;
    const e = await engine(primary.url, prefix);
    const first = await e.publish('orders', 1);
    const before = await redisCli(primary.port, 'INFO', 'replication');
    await primary.kill();
    await primary.start();
    // Redis 7.0 starts with a new replication id, and no master_replid2.
    const after = await redisCli(primary.port, 'INFO', 'replication');
    expect(/master_replid:(\w+)/.exec(after)![1]).not.toBe(/master_replid:(\w+)/.exec(before)![1]);
    const next = await eventually(() => e.publish('orders', 2).catch(() => undefined), 15_000, 'a publish after the restart');
    expect(next).toMatchObject({ offset: 2, epoch: first.epoch });
  });

  it('counts replicas on the write’s own connection, and a WAIT that cannot be met holds up no other command', async () => {
    const primary = await redis();
    const replica = await redis(['--replicaof', '127.0.0.1', String(primary.port)]);
    await inSync(replica);
    const prefix = `t${randomBytes(3).toString('hex')}:`;
    const e = await engine(primary.url, prefix, 1);
    expect(await e.publish('orders', 1)).toMatchObject({ offset: 1 });
    // The replica stops answering: WAIT 1 waits for its timeout, then the publish is uncertain.
    replica.pause();
    try {
      const settled: string[] = [];
      const waiting = e.publish('orders', 2).then(
        () => settled.push('publish ok'),
        (err: MeshError) => settled.push(`publish ${err.code}`),
      );
      // Once the write ran (its WAIT is out), a read goes on the shared connection, answered before the WAIT's timeout ends.
      await eventually(async () => (await redisCli(primary.port, 'HGET', `${prefix}{orders}:topic:meta`, 'last')) === '2', 5000, 'the write to run');
      await e.topicInfo('orders').then(() => settled.push('read'));
      await waiting;
      expect(settled).toEqual(['read', 'publish maybe_stored']);
      // It was stored on the primary: the same offset, in the log.
      expect((await e.read('orders', 2, 1)).map((m) => m.data)).toEqual([2]);
    } finally {
      replica.resume();
    }
  });
});
