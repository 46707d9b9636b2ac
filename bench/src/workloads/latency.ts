/**
 * Latency at a fixed rate: 1,000 msg/s of 1 KiB, durable, one publisher and
 * one consumer, for 20 s per system (5 s with --quick), split into `--rounds`
 * alternating slices. Latency is publish→delivery from when each message was
 * due by the schedule (so a stalled publisher cannot hide its backlog), read
 * from all slices' merged histogram.
 */
import type { PipelineRun } from '../context.js';
import { mergeHistograms, percentileMs } from '../hist.js';
import { combineRounds, type RoundSummary, summarizeRound } from '../pipeline-metrics.js';
import type { Row, Workload } from '../workload.js';
import { queueName, queueSystems, SystemPool } from './durable.js';

const RATE = 1_000;
const SIZE = 1_024;

export const latency: Workload = {
  name: 'latency',
  title: `Latency at a fixed rate: ${RATE.toLocaleString('en-US')} msg/s of ${SIZE} B, 1 publisher, 1 consumer`,
  description:
    'p50/p99/p99.9/max publish→delivery over all slices merged (latency counted from when each message was due); msg/s achieved; server CPU-s per million messages (median of slices).',
  columns: ['msg/s', 'p50 ms', 'p99 ms', 'p99.9 ms', 'max ms', 'server CPU-s/M', 'refused', 'dup', 'lost'],
  async run(ctx) {
    const { quick, rounds } = ctx.options;
    const totalS = quick ? 5 : 20;
    const sliceCount = Math.max(1, Math.round((RATE * totalS) / rounds));
    const systems = queueSystems().filter((s) => ctx.wants(s.name));
    const pool = new SystemPool(ctx);
    // Window: far above what 1,000 msg/s needs at any sane latency, so the pacer, not the window, sets the rate.
    const window = Math.max(ctx.options.window, 1_000);
    const results = await ctx.alternate(
      systems,
      (s) => s.name,
      async (system, round): Promise<{ run: PipelineRun; summary: RoundSummary }> => {
        const handle = await pool.get(system);
        const run = await ctx.runPipelines(
          [
            {
              driver: handle.driver(0),
              queue: queueName('latency'),
              count: sliceCount,
              size: SIZE,
              window,
              rate: RATE,
              warmup: round === 1 ? (quick ? 300 : 1_000) : 0,
            },
          ],
          handle.pids,
        );
        return { run, summary: summarizeRound(run, [50, 99, 99.9]) };
      },
    );
    const rows: Row[] = [];
    for (const system of systems) {
      const rs = results.get(system) ?? [];
      if (rs.length === 0) continue;
      const { metrics, notes, raw } = combineRounds(rs.map((r) => r.summary));
      const merged = mergeHistograms(rs.flatMap((r) => r.run.results.map((x) => x.latency)));
      const handle = await pool.get(system);
      rows.push({
        workload: 'latency',
        system: system.name,
        durability: system.durability,
        size: SIZE,
        params: { rate: RATE, seconds: totalS },
        metrics: {
          'msg/s': metrics['msg/s'] ?? null,
          'p50 ms': percentileMs(merged, 50),
          'p99 ms': percentileMs(merged, 99),
          'p99.9 ms': percentileMs(merged, 99.9),
          'max ms': merged.totalCount > 0 ? merged.maxValue / 1000 : null,
          'server CPU-s/M': metrics['server CPU-s/M'] ?? null,
          refused: metrics.refused ?? 0,
          dup: metrics.dup ?? 0,
          lost: metrics.lost ?? 0,
        },
        rounds: raw,
        notes: [...handle.notes, ...notes],
      });
    }
    return rows;
  },
};
