import { afterEach, describe, expect, it } from 'vitest';
import { NodeProcess } from '../helpers/node-process.js';
import { RawClient, type Frame } from '../helpers/raw-client.js';
import { SentinelSetup } from '../helpers/redis-topologies.js';
import { eventually, sleep } from '../helpers/util.js';

interface FailoverFigures {
  level: string;
  acked: number;
  lost: number;
  failedDuringFailover: number;
}

/**
 * Publishes through a node on Sentinel, cuts the replication link for a
 * moment (the replicas lag, as over a slow or broken network), kill -9s the
 * primary, and counts acknowledged publishes missing after Sentinel promoted
 * a replica.
 */
async function runFailover(replicas: number): Promise<FailoverFigures> {
  const setup = await SentinelSetup.start();
  const node = await NodeProcess.start({ env: { REDIS_URL: setup.url(), REDIS_REPLICAS: String(replicas), REDIS_REPLICA_TIMEOUT: '500ms' } });
  try {
    const client = await RawClient.connect(node.wsUrl);
    const topic = `failover.${replicas}`;
    // (offset, payload) pairs: after a lossy failover the same offset is acknowledged twice, for different payloads.
    const acked: Array<[number, number]> = [];
    let failed = 0;
    let n = 0;
    let stop = false;
    const publisher = async () => {
      while (!stop) {
        const i = n++;
        const reply: Frame = await client.request({ op: 'publish', topic, data: { i }, key: `k${i}` }).catch(() => ({ op: 'error' }) as Frame);
        if (reply.op === 'ok') acked.push([reply.offset as number, i]);
        else {
          failed++;
          await sleep(20);
        }
      }
    };
    const publishers = [publisher(), publisher(), publisher(), publisher()];
    await eventually(() => acked.length >= 300, 20_000, 'publishes before failover');
    const oldPrimary = setup.originalPrimaryPort;
    setup.cutReplicationLink();
    await sleep(400);
    await setup.primary.kill();
    await eventually(async () => (await setup.primaryPort()) !== oldPrimary, 20_000, 'Sentinel failover');
    const ackedAtFailover = acked.length;
    await eventually(() => acked.length >= ackedAtFailover + 200, 30_000, 'publishes after failover');
    stop = true;
    await Promise.all(publishers);

    const stored = new Map<number, number>();
    for (let from = 1; ; ) {
      const page = await client.ok({ op: 'history', topic, from, limit: 1000 });
      const messages = page.messages as Array<{ offset: number; data: { i: number } }>;
      if (messages.length === 0) break;
      for (const m of messages) stored.set(m.offset, m.data.i);
      from = messages.at(-1)!.offset + 1;
    }
    // Lost: acknowledged, but not in the log at its offset (a failover can reassign lost offsets).
    let lost = 0;
    for (const [offset, i] of acked) if (stored.get(offset) !== i) lost++;
    // The log itself stays gap-free through the failover.
    expect([...stored.keys()]).toEqual(Array.from({ length: stored.size }, (_, k) => k + 1));
    await client.close();
    return { level: replicas === 0 ? 'primary (default)' : `WAIT ${replicas} replica`, acked: acked.length, lost, failedDuringFailover: failed };
  } finally {
    await node.dispose();
    await setup.dispose();
  }
}

describe('Sentinel failover', () => {
  const figures: FailoverFigures[] = [];
  afterEach(() => {
    for (const f of figures.splice(0)) {
      console.log(`sentinel failover: level=${f.level} acked=${f.acked} lost=${f.lost} failed-during-failover=${f.failedDuringFailover}`);
    }
  });

  it('keeps publishing through a failover, but the default level loses what the replicas had not received', async () => {
    const result = await runFailover(0);
    figures.push(result);
    expect(result.acked).toBeGreaterThan(500);
    // The scenario must bite: acknowledged on the primary alone, then gone with it.
    expect(result.lost).toBeGreaterThan(0);
  }, 90_000);

  it('loses no acknowledged publish when each publish waits for a replica', async () => {
    const result = await runFailover(1);
    figures.push(result);
    expect(result.acked).toBeGreaterThan(500);
    expect(result.lost).toBe(0);
  }, 90_000);
});
