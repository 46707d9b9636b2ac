import { type Gap, MeshClient, type MeshError } from '@meshmq/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NodeProcess } from '../helpers/node-process.js';
import { RedisProcess } from '../helpers/redis-process.js';
import { sleep, uniqueTopic } from '../helpers/util.js';
import { type AckedPublish, checkGroup, checkLog, checkSubscriber, type GroupDelivery, type LogEntry, type Payload, seededRandom } from './chaos-check.js';

/**
 * Cluster chaos: three nodes over one Redis (AOF, appendfsync always),
 * publishers, fan-out subscribers and a consumer group, all through the SDK
 * with every node URL. While they run, a random node is kill -9'd and
 * restarted every few seconds, and Redis is kill -9'd and restarted once.
 * After a quiet phase the checker compares what was acknowledged, what the
 * log holds and what every subscriber and group member received.
 *
 * The chaos schedule comes from a seed (printed; replay with CHAOS_SEED=<n>).
 */

const NODE_IDS = ['a', 'b', 'c'] as const;
const PUBLISHERS = 3;
const SUBSCRIBERS = 3;
const MEMBERS = 3;
const GROUP = 'workers';
const ACK_WAIT_MS = 3000;
const MAX_DELIVERIES = 50;
const PREFETCH = 10;
/** Length of the chaos phase. */
const CHAOS_MS = 65_000;
/** Pause between two publishes of one publisher. */
const PUBLISH_PACE_MS = 10;
/** A publisher retries one message with the same key for this long before giving up on it (then the test fails). */
const PUBLISH_GIVE_UP_MS = 30_000;
/** Longest quiet phase: everything must have drained by then. */
const QUIET_MS = 40_000;

const SEED = process.env.CHAOS_SEED ? Number(process.env.CHAOS_SEED) : Math.floor(Math.random() * 2 ** 31);

interface TopicView {
  topic: { last: number; count: number; epoch: string; deadLetters: number };
  groups: Array<{ group: string; cursor: number; pending: number; redeliveries: number; deadLettered: number }>;
}

describe('cluster chaos', () => {
  let redis: RedisProcess | undefined;
  const nodes: NodeProcess[] = [];
  const clients: MeshClient[] = [];
  const timeline: string[] = [];
  let t0 = Date.now();
  let passed = false;
  const mark = (event: string) => timeline.push(`${((Date.now() - t0) / 1000).toFixed(1)}s ${event}`);

  beforeAll(async () => {
    redis = await RedisProcess.start();
    for (const id of NODE_IDS) {
      const node = await NodeProcess.start({
        env: { REDIS_URL: redis.url, NODE_ID: id, HEARTBEAT: '300ms', NODE_DOWN_AFTER: '1500ms' },
      });
      nodes.push(node);
    }
  }, 60_000);

  afterAll(async () => {
    await Promise.allSettled(clients.map((c) => c.close()));
    if (!passed) {
      console.log(`chaos: seed=${SEED} timeline:\n  ${timeline.join('\n  ')}`);
      for (const [i, node] of nodes.entries()) {
        const lines = node.logs.trim().split('\n').filter(Boolean);
        console.log(`chaos: node ${NODE_IDS[i]} log (last 40 of ${lines.length} lines):\n${lines.slice(-40).join('\n')}`);
      }
    }
    await Promise.allSettled(nodes.map((n) => n.dispose()));
    await redis?.dispose();
  }, 60_000);

  it('keeps every acknowledged message through node and Redis kill -9s', async () => {
    const topic = uniqueTopic('chaos');
    const urls = nodes.map((n) => n.url);
    const errors: Array<{ who: string; error: MeshError }> = [];
    const gaps: Array<{ who: string; gap: Gap }> = [];
    let reconnects = 0;

    // Every client gets every node URL, each in one of the six orders: after losing its node a
    // client goes on to the next URL of its list, so with one shared order all clients of a killed
    // node would move together and soon sit on one node, and most kills would hit no client.
    const orders = [
      [0, 1, 2],
      [0, 2, 1],
      [1, 0, 2],
      [1, 2, 0],
      [2, 0, 1],
      [2, 1, 0],
    ];
    const newClient = (who: string): MeshClient => {
      const client = new MeshClient({
        urls: orders[clients.length % orders.length]!.map((i) => urls[i]!),
        name: `chaos-${who}`,
        reconnect: { initialDelayMs: 50, maxDelayMs: 1000 },
        requestTimeoutMs: 5000,
        connectTimeoutMs: 3000,
        heartbeatMs: 5000,
      });
      client.on('error', (error) => errors.push({ who, error }));
      client.on('gap', (gap) => gaps.push({ who, gap }));
      client.on('connected', ({ reconnect }) => {
        if (reconnect) reconnects++;
      });
      clients.push(client);
      return client;
    };

    const adminTopic = async (): Promise<TopicView> => {
      let lastError: unknown;
      for (const node of nodes) {
        try {
          const res = await fetch(`${node.url}/api/topics/${encodeURIComponent(topic)}`);
          if (res.ok) return (await res.json()) as TopicView;
          lastError = new Error(`${res.status} ${await res.text()}`);
        } catch (err) {
          lastError = err;
        }
      }
      throw lastError;
    };

    // ---- actors ----------------------------------------------------------------
    const epochs = new Set<string>();

    const subscribed: Array<Array<{ offset: number; data: unknown }>> = [];
    for (let s = 0; s < SUBSCRIBERS; s++) {
      const got: Array<{ offset: number; data: unknown }> = [];
      subscribed.push(got);
      await newClient(`sub${s}`).subscribe(
        topic,
        (m) => {
          got.push({ offset: m.offset, data: m.data });
          epochs.add(m.epoch);
        },
        { from: 1 },
      );
    }

    const groupDeliveries: GroupDelivery[] = [];
    for (let g = 0; g < MEMBERS; g++) {
      await newClient(`member${g}`).consume(
        topic,
        GROUP,
        async (m) => {
          groupDeliveries.push({ member: g, offset: m.offset, delivery: m.delivery, data: m.data });
          epochs.add(m.epoch);
          // A little work, so that deliveries overlap kills.
          await sleep(Math.floor(Math.random() * 4));
        },
        { from: 1, ackWait: ACK_WAIT_MS, maxDeliveries: MAX_DELIVERIES, prefetch: PREFETCH },
      );
    }

    const acked: AckedPublish[] = [];
    const sent = Array.from({ length: PUBLISHERS }, () => 0);
    const publishErrors = new Map<string, number>();
    const abandoned: string[] = [];
    let retries = 0;
    let duplicateReplies = 0;
    let publishing = true;

    const publisher = async (p: number): Promise<void> => {
      const client = newClient(`pub${p}`);
      for (let n = 0; publishing; n++) {
        sent[p] = n + 1;
        const key = `p${p}-${n}`;
        const payload: Payload = { p, n };
        const started = Date.now();
        for (let attempt = 0; ; attempt++) {
          try {
            const reply = await client.publish(topic, payload, { key });
            acked.push({ p, n, offset: reply.offset, duplicate: reply.duplicate });
            epochs.add(reply.epoch);
            if (reply.duplicate) duplicateReplies++;
            break;
          } catch (err) {
            const code = (err as MeshError).code ?? 'exception';
            publishErrors.set(code, (publishErrors.get(code) ?? 0) + 1);
            if (Date.now() - started > PUBLISH_GIVE_UP_MS) {
              abandoned.push(`${key} (${code}: ${(err as Error).message})`);
              break;
            }
            retries++;
            await sleep(Math.min(50 * 2 ** attempt, 1000));
          }
        }
        await sleep(PUBLISH_PACE_MS);
      }
    };

    // ---- chaos -----------------------------------------------------------------
    const rng = seededRandom(SEED);
    let nodeKills = 0;
    let redisKills = 0;
    const restart = async (what: string, start: () => Promise<void>) => {
      // The port may be briefly taken by someone else's freePort(); try a few times.
      for (let attempt = 1; ; attempt++) {
        try {
          await start();
          mark(`${what} up`);
          return;
        } catch (err) {
          mark(`${what} restart attempt ${attempt} failed: ${String(err).split('\n')[0]}`);
          if (attempt >= 5) throw err;
          await sleep(500);
        }
      }
    };
    const killRedis = async () => {
      mark('kill -9 redis');
      await redis!.kill();
      redisKills++;
      await sleep(2000);
      await restart('redis', () => redis!.start());
    };

    const chaos = async () => {
      const redisAt = rng.between(20_000, 40_000);
      const end = t0 + CHAOS_MS;
      while (Date.now() < end - 3000) {
        await sleep(rng.between(3000, 6000));
        if (redisKills === 0 && Date.now() - t0 >= redisAt) {
          await killRedis();
          continue;
        }
        const i = rng.between(0, NODE_IDS.length - 1);
        mark(`kill -9 node ${NODE_IDS[i]}`);
        await nodes[i]!.kill();
        nodeKills++;
        await sleep(rng.between(200, 1500));
        await restart(`node ${NODE_IDS[i]}`, () => nodes[i]!.start());
      }
      if (redisKills === 0) await killRedis();
    };

    t0 = Date.now();
    mark(`start seed=${SEED} topic=${topic}`);
    const publishers = Array.from({ length: PUBLISHERS }, (_, p) => publisher(p));
    try {
      await chaos();
    } finally {
      publishing = false;
      mark('chaos over; publishers finishing');
      await Promise.all(publishers);
    }
    mark(`publishers done: ${acked.length} acked`);

    // ---- quiet phase: let everything drain ---------------------------------------
    const quietUntil = Date.now() + QUIET_MS;
    let view: TopicView | undefined;
    const groupDone = (v: TopicView) => {
      const g = v.groups.find((x) => x.group === GROUP);
      return g !== undefined && g.pending === 0 && g.cursor === v.topic.last + 1;
    };
    for (;;) {
      try {
        view = await adminTopic();
        const last = view.topic.last;
        const subsDone = subscribed.every((got) => got.length > 0 && got[got.length - 1]!.offset >= last);
        const delivered = new Set(groupDeliveries.map((d) => d.offset));
        if (subsDone && groupDone(view) && delivered.size >= last) break;
      } catch (err) {
        mark(`admin API: ${String(err)}`);
      }
      if (Date.now() > quietUntil) {
        mark('quiet phase timed out');
        break;
      }
      await sleep(250);
    }
    mark('quiet phase over');

    // ---- checker -----------------------------------------------------------------
    const reader = newClient('reader');
    const log: LogEntry[] = [];
    for (let from = 1; ; ) {
      const page = await reader.history<unknown>(topic, { from, limit: 1000 });
      for (const m of page.messages) log.push(m.key === undefined ? { offset: m.offset, data: m.data } : { offset: m.offset, data: m.data, key: m.key });
      epochs.add(page.epoch);
      if (page.messages.length === 0 || log[log.length - 1]!.offset >= page.last) break;
      from = log[log.length - 1]!.offset + 1;
    }
    view = await adminTopic();

    const logFigures = checkLog(log, acked, PUBLISHERS, sent);
    const ackedOffsets = acked.map((a) => a.offset);
    const subFigures = subscribed.map((got, s) => checkSubscriber(`sub${s}`, got, log, ackedOffsets));
    const groupFigures = checkGroup(groupDeliveries, log);
    const group = view.groups.find((g) => g.group === GROUP);
    const ackFailures = errors.filter((e) => e.error.message.includes('auto-ack')).length;
    const unexpectedErrors = errors.filter((e) => e.error.code === 'internal');

    const subGaps = subFigures.reduce((n, f) => n + f.missing + f.outOfOrder, 0);
    const subDuplicates = subFigures.reduce((n, f) => n + f.duplicates, 0);
    console.log(
      `chaos: seed=${SEED} acked=${acked.length} lost=${logFigures.lost} reordered=${logFigures.reordered} ` +
        `duplicated=${logFigures.duplicated} redelivered=${groupFigures.redelivered} node kills=${nodeKills} redis kills=${redisKills} | ` +
        `log=${logFigures.last} publish retries=${retries} (${[...publishErrors].map(([c, n]) => `${c}:${n}`).join(',') || 'none'}) ` +
        `duplicate replies=${duplicateReplies} abandoned=${abandoned.length} | subscribers gaps=${subGaps} duplicates=${subDuplicates} ` +
        `missed acked=${subFigures.reduce((n, f) => n + f.missedAcked, 0)} | group deliveries=${groupFigures.deliveries} ` +
        `duplicates to app=${groupFigures.duplicatesToApp} undelivered=${groupFigures.undelivered} pending=${group?.pending} ` +
        `dead-lettered=${group?.deadLettered} ack failures=${ackFailures} | client reconnects=${reconnects} ` +
        `sdk errors=${errors.length} gaps=${gaps.length} | ${((Date.now() - t0) / 1000).toFixed(0)}s`,
    );

    const failures: string[] = [];
    const fail = (what: string, count: number, evidence: string[] = []) => {
      if (count > 0) failures.push(`${what}: ${count}${evidence.length > 0 ? `\n    ${evidence.slice(0, 10).join('\n    ')}` : ''}`);
    };
    fail(
      'acknowledged publishes lost',
      logFigures.lost,
      logFigures.problems.filter((p) => p.startsWith('lost')),
    );
    fail(
      'reordered',
      logFigures.reordered,
      logFigures.problems.filter((p) => p.startsWith('reordered')),
    );
    fail(
      'payloads stored twice',
      logFigures.duplicated,
      logFigures.problems.filter((p) => p.startsWith('duplicated')),
    );
    fail(
      'log gaps',
      logFigures.logGaps,
      logFigures.problems.filter((p) => p.startsWith('log gap')),
    );
    fail(
      'foreign log entries',
      logFigures.foreign,
      logFigures.problems.filter((p) => p.startsWith('foreign')),
    );
    fail('log epochs (the log was replaced)', epochs.size - 1, [...epochs]);
    fail('publishes abandoned after retrying', abandoned.length, abandoned);
    for (const [s, f] of subFigures.entries()) {
      fail(
        `sub${s} missing offsets`,
        f.missing,
        f.problems.filter((p) => p.includes('missing')),
      );
      fail(
        `sub${s} duplicate deliveries`,
        f.duplicates,
        f.problems.filter((p) => p.includes('duplicate')),
      );
      fail(
        `sub${s} out-of-order deliveries`,
        f.outOfOrder,
        f.problems.filter((p) => p.includes('out of order')),
      );
      fail(
        `sub${s} deliveries unlike the log`,
        f.mismatched,
        f.problems.filter((p) => p.includes('mismatch')),
      );
      fail(`sub${s} acknowledged offsets never seen`, f.missedAcked);
    }
    fail(
      'group: offsets never delivered',
      groupFigures.undelivered,
      groupFigures.problems.filter((p) => p.includes('never delivered')),
    );
    fail(
      'group: deliveries unlike the log',
      groupFigures.mismatched,
      groupFigures.problems.filter((p) => p.includes('mismatch')),
    );
    if (!group) failures.push(`group '${GROUP}' missing from the admin API: ${JSON.stringify(view)}`);
    else {
      fail('group: still pending at the end', group.pending, [JSON.stringify(group)]);
      fail('group: cursor short of the log end', Math.max(0, view.topic.last + 1 - group.cursor), [JSON.stringify(group)]);
      fail('group: dead-lettered', group.deadLettered);
    }
    fail('dead letters in $dlq', view.topic.deadLetters);
    fail('log end: admin API and history disagree', view.topic.last === logFigures.last ? 0 : 1, [
      `admin last=${view.topic.last}, history last=${logFigures.last}`,
    ]);
    fail(
      'SDK gap events',
      gaps.length,
      gaps.map((g) => `${g.who}: ${JSON.stringify(g.gap)}`),
    );
    fail(
      'SDK internal errors',
      unexpectedErrors.length,
      unexpectedErrors.map((e) => `${e.who}: ${e.error.message}`),
    );
    if (acked.length < 100) failures.push(`only ${acked.length} publishes acknowledged: the run did too little to mean anything`);

    if (failures.length > 0) {
      const byMessage = new Map<string, number>();
      for (const e of errors) {
        const text = `${e.error.code}: ${e.error.message.replace(/\d+/g, '#')}`;
        byMessage.set(text, (byMessage.get(text) ?? 0) + 1);
      }
      console.log(`chaos: SDK errors by kind:\n  ${[...byMessage].map(([m, n]) => `${n}× ${m}`).join('\n  ')}`);
    }
    expect(failures).toEqual([]);
    passed = true;
  }, 180_000);
});
