/**
 * Scaling: the durable pipeline with 1, 2 and 4 publisher/consumer pairs (each
 * pair its own topic, each in its own load-agent process) on 1, 2 and 3 MeshMQ
 * nodes over one Redis (AOF appendfsync always, what `pnpm cluster` starts;
 * pair i publishes and consumes on node i mod n), and on the embedded engine
 * (1 node). Prints how throughput grows against 1 pair and against 1 node.
 */
import type { BenchContext } from '../context.js';
import { DURABILITY } from '../durability.js';
import { calibrate, combineRounds, type RoundSummary, summarizeRound } from '../pipeline-metrics.js';
import { type SystemHandle, setupMeshOverRedis } from '../systems.js';
import type { Row, Workload } from '../workload.js';
import { queueName } from './durable.js';

interface Case {
  engine: 'embedded' | 'redis';
  nodes: number;
  pairs: number;
}

const PAIRS = [1, 2, 4];
const NODES = [1, 2, 3];
/** --quick: the corners only. */
const QUICK_PAIRS = [1, 4];
const QUICK_NODES = [1, 3];

export const scaling: Workload = {
  name: 'scaling',
  title: 'Scaling: the durable pipeline with 1, 2, 4 pairs (own topic each) on 1, 2, 3 MeshMQ nodes',
  description:
    'msg/s summed over pairs (median of rounds); "× 1 pair" compares with 1 pair on the same nodes, "× 1 node" with the same pairs on 1 node. Redis engine over one Redis with AOF appendfsync always.',
  columns: [
    'msg/s',
    '× 1 pair',
    '× 1 node',
    'p50 ms',
    'p99 ms',
    'p50 first 10% ms',
    'p50 last 10% ms',
    'server CPU-s/M',
    'client CPU-s/M',
    'refused',
    'dup',
    'lost',
  ],
  async run(ctx) {
    const { quick, window } = ctx.options;
    const size = ctx.options.sizes.includes(1024) ? 1024 : ctx.options.sizes[0]!;
    const targetS = quick ? 1 : 3;
    const [min, max] = quick ? [500, 5_000] : [1_000, 60_000];
    const cases: Case[] = [];
    const pairsList = quick ? QUICK_PAIRS : PAIRS;
    const nodesList = quick ? QUICK_NODES : NODES;
    if (ctx.wants('meshmq embedded (ws)')) for (const pairs of pairsList) cases.push({ engine: 'embedded', nodes: 1, pairs });
    if (ctx.wants('meshmq redis engine (ws), AOF always'))
      for (const nodes of nodesList) for (const pairs of pairsList) cases.push({ engine: 'redis', nodes, pairs });
    const clusters = new Map<string, Promise<SystemHandle>>();
    const clusterOf = (c: Case) => {
      const key = `${c.engine}/${c.nodes}`;
      let h = clusters.get(key);
      if (!h) {
        h = c.engine === 'embedded' ? embedded(ctx) : setupMeshOverRedis(ctx, { nodes: c.nodes, persistence: 'always', placement: 'same' });
        clusters.set(key, h);
      }
      return h;
    };
    const counts = new Map<Case, number>();
    const label = (c: Case) => `meshmq ${c.engine} ${c.nodes} node(s) ${c.pairs} pair(s)`;
    const results = await ctx.alternate(cases, label, async (c, round): Promise<RoundSummary> => {
      const handle = await clusterOf(c);
      const jobs = (count: number, prefix: string) =>
        Array.from({ length: c.pairs }, (_, i) => ({ driver: handle.driver(i), queue: queueName(prefix), count, size, window }));
      if (round === 1 || !counts.has(c)) {
        const { perPair } = await calibrate(ctx, jobs(quick ? 300 : 1_500, 'warmup'), handle.pids, targetS, min, max);
        counts.set(c, perPair);
      }
      const summary = summarizeRound(await ctx.runPipelines(jobs(counts.get(c)!, 'scaling'), handle.pids));
      ctx.debug(`${label(c)}: ${Math.round(Number(summary.metrics['msg/s']))} msg/s`);
      return summary;
    });
    const combined = new Map<Case, ReturnType<typeof combineRounds>>();
    for (const c of cases) {
      const rs = results.get(c) ?? [];
      if (rs.length > 0) combined.set(c, combineRounds(rs));
    }
    const rate = (engine: string, nodes: number, pairs: number) => {
      const c = cases.find((x) => x.engine === engine && x.nodes === nodes && x.pairs === pairs);
      const v = c ? combined.get(c)?.metrics['msg/s'] : undefined;
      return typeof v === 'number' ? v : undefined;
    };
    const ratio = (a: number | undefined, b: number | undefined) => (a !== undefined && b !== undefined && b > 0 ? `${(a / b).toFixed(2)}×` : null);
    const rows: Row[] = [];
    for (const c of cases) {
      const comb = combined.get(c);
      if (!comb) continue;
      const own = rate(c.engine, c.nodes, c.pairs);
      const { 'msg/s': _msgs, ...rest } = comb.metrics;
      rows.push({
        workload: 'scaling',
        system: c.engine === 'embedded' ? 'meshmq embedded (ws)' : 'meshmq redis engine (ws), AOF always',
        durability: DURABILITY.fsync,
        size,
        params: { nodes: c.nodes, pairs: c.pairs, 'msgs/pair': counts.get(c) ?? null },
        metrics: {
          'msg/s': own ?? null,
          '× 1 pair': ratio(own, rate(c.engine, c.nodes, 1)),
          '× 1 node': c.engine === 'redis' ? ratio(own, rate(c.engine, 1, c.pairs)) : null,
          ...rest,
        },
        rounds: comb.raw,
        notes: comb.notes,
      });
    }
    return rows;
  },
};

async function embedded(ctx: BenchContext): Promise<SystemHandle> {
  const cluster = await ctx.startMeshNodes({ engine: 'embedded', count: 1 });
  const url = cluster.wsUrls[0]!;
  return { driver: () => ({ kind: 'meshmq-ws', publishUrl: url, consumeUrl: url }), pids: cluster.pids, notes: [] };
}
