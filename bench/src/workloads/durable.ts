/**
 * Durable pipeline: one publisher keeping `--window` (500) publishes in flight,
 * one consumer acking each message, for each payload size, every system at its
 * stated durability level. Figures: msg/s end to end, publish→delivery p50/p99,
 * whether latency grows through the run (p50 of the first vs last 10 % of
 * messages), server and client CPU-seconds per million messages, refusals,
 * duplicates and losses.
 */
import type { BenchContext } from '../context.js';
import { durabilityRank } from '../durability.js';
import { calibrate, combineRounds, type RoundSummary, summarizeRound } from '../pipeline-metrics.js';
import { meshEmbeddedSystem, meshRedisSystem, natsSystem, type PipelineSystem, rabbitSystem, redisStreamsSystem, type SystemHandle } from '../systems.js';
import type { Row, Workload } from '../workload.js';

/**
 * Every system of the queue workloads, strongest durability first. MeshMQ's
 * variants with a protocol batching feature sit next to their plain form:
 * `ws, multi-offset ack` next to `ws` (see drivers.ts); a batched publish, once
 * the protocol has one, goes here the same way.
 */
export function queueSystems(): PipelineSystem[] {
  return [
    rabbitSystem(),
    natsSystem('always'),
    redisStreamsSystem('always'),
    meshEmbeddedSystem('ws'),
    meshEmbeddedSystem('ws-batch'),
    meshEmbeddedSystem('sdk'),
    meshRedisSystem(1, 'always'),
    meshRedisSystem(2, 'always'),
    natsSystem('everysec'),
    redisStreamsSystem('everysec'),
    meshRedisSystem(1, 'everysec'),
    meshRedisSystem(2, 'everysec'),
    natsSystem('default'),
  ].sort((a, b) => durabilityRank(a.durability) - durabilityRank(b.durability));
}

/** Sets systems up lazily, once each; a system that cannot start is skipped (printed) and remembered. */
export class SystemPool {
  private readonly handles = new Map<PipelineSystem, Promise<SystemHandle>>();
  constructor(private readonly ctx: BenchContext) {}
  get(system: PipelineSystem): Promise<SystemHandle> {
    let h = this.handles.get(system);
    if (!h) {
      h = system.setup(this.ctx);
      this.handles.set(system, h);
    }
    return h;
  }
}

let runSeq = 0;
export const queueName = (prefix: string) => `bench-${prefix}-${process.pid}-${++runSeq}`;

export const durable: Workload = {
  name: 'durable',
  title: 'Durable pipeline: 1 publisher (window of in-flight publishes), 1 consumer acking each message',
  description:
    'msg/s until the consumer had every message; latency publish→delivery; CPU-s per million messages of every server process involved (MeshMQ nodes + their Redis; the peer broker); refused/dup/lost summed over rounds, other figures are medians over rounds.',
  columns: ['msg/s', 'p50 ms', 'p99 ms', 'p50 first 10% ms', 'p50 last 10% ms', 'server CPU-s/M', 'client CPU-s/M', 'refused', 'dup', 'lost'],
  async run(ctx) {
    const { quick, window } = ctx.options;
    // Each system's measured run lasts about targetS at the rate its warm-up showed, within [min, max] messages.
    const targetS = quick ? 1 : 3;
    const [min, max] = quick ? [1_000, 5_000] : [2_000, 60_000];
    const warmup = quick ? 500 : 2_000;
    const counts = new Map<unknown, number>();
    const systems = queueSystems().filter((s) => ctx.wants(s.name));
    const pool = new SystemPool(ctx);
    const cases = ctx.options.sizes.flatMap((size) => systems.map((system) => ({ system, size })));
    const results = await ctx.alternate(
      cases,
      (c) => c.system.name,
      async (c, round): Promise<RoundSummary> => {
        const handle = await pool.get(c.system);
        const job = { driver: handle.driver(0), size: c.size, window };
        if (round === 1 || !counts.has(c)) {
          const { perPair } = await calibrate(ctx, [{ ...job, queue: queueName('warmup'), count: warmup }], handle.pids, targetS, min, max);
          counts.set(c, perPair);
        }
        const run = await ctx.runPipelines([{ ...job, queue: queueName('durable'), count: counts.get(c)! }], handle.pids);
        const summary = summarizeRound(run);
        ctx.debug(`${c.system.name} ${c.size} B: ${Math.round(Number(summary.metrics['msg/s']))} msg/s`);
        return summary;
      },
    );
    const rows: Row[] = [];
    for (const c of cases) {
      const rounds = results.get(c) ?? [];
      if (rounds.length === 0) continue;
      const { metrics, notes, raw } = combineRounds(rounds);
      const handle = await pool.get(c.system);
      rows.push({
        workload: 'durable',
        system: c.system.name,
        durability: c.system.durability,
        size: c.size,
        params: { window, messages: counts.get(c) ?? null },
        metrics,
        rounds: raw,
        notes: [...handle.notes, ...notes],
      });
    }
    return rows;
  },
};
