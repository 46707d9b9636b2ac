/** Turns the results of one round of pipelines into the figures a table prints. */
import type { BenchContext, PipelineJob, PipelineRun } from './context.js';
import { mergeHistograms, percentileMs } from './hist.js';
import { medianMetrics } from './stats.js';

export type Metrics = Record<string, number | string | null>;

export interface RoundSummary {
  metrics: Metrics;
  /** Refusals and failures by code, duplicates, losses: for the notes. */
  errors: Record<string, number>;
  /** One verbatim message per error code. */
  errorSamples: Record<string, string>;
  stalled: boolean;
}

/**
 * Figures of one round: msg/s (messages the consumers had, over the time until
 * the last pair had all of its own), latency percentiles of all pairs' merged
 * histograms, p50 of the first and last 10 % of messages, server and client
 * CPU-seconds per million messages, and the correctness counts.
 */
export function summarizeRound(run: PipelineRun, percentiles: number[] = [50, 99]): RoundSummary {
  const results = run.results;
  const unique = results.reduce((n, r) => n + r.unique, 0);
  const elapsedMs = Math.max(...results.map((r) => r.elapsedMs));
  const all = mergeHistograms(results.map((r) => r.latency));
  const first = mergeHistograms(results.map((r) => r.latencyFirst));
  const last = mergeHistograms(results.map((r) => r.latencyLast));
  const errors: Record<string, number> = {};
  for (const r of results) for (const [code, n] of Object.entries(r.errors)) errors[code] = (errors[code] ?? 0) + n;
  const errorSamples: Record<string, string> = {};
  for (const r of results) for (const [code, m] of Object.entries(r.errorSamples)) errorSamples[code] ??= m;
  const metrics: Metrics = { 'msg/s': elapsedMs > 0 ? (unique / elapsedMs) * 1000 : null };
  for (const p of percentiles) metrics[`p${p} ms`] = percentileMs(all, p);
  metrics['p50 first 10% ms'] = percentileMs(first, 50);
  metrics['p50 last 10% ms'] = percentileMs(last, 50);
  metrics['server CPU-s/M'] = unique > 0 ? (run.serverCpuS / unique) * 1e6 : null;
  metrics['client CPU-s/M'] = unique > 0 ? (results.reduce((s, r) => s + r.clientCpuS, 0) / unique) * 1e6 : null;
  metrics.refused = results.reduce((n, r) => n + r.publishErrors, 0);
  metrics.dup = results.reduce((n, r) => n + r.duplicates, 0);
  metrics.lost = results.reduce((n, r) => n + r.missing, 0);
  return { metrics, errors, errorSamples, stalled: results.some((r) => r.stalled) };
}

/** Median over rounds, plus notes naming every refusal code, duplicates and losses seen in any round. */
export function combineRounds(rounds: RoundSummary[]): { metrics: Metrics; notes: string[]; raw: Metrics[] } {
  const raw = rounds.map((r) => r.metrics);
  const metrics = medianMetrics(raw);
  // Counts of problems are totals over the rounds, not medians: one loss in one round matters.
  for (const key of ['refused', 'dup', 'lost']) metrics[key] = raw.reduce((n, m) => n + (typeof m[key] === 'number' ? (m[key] as number) : 0), 0);
  const notes: string[] = [];
  const errors: Record<string, number> = {};
  for (const r of rounds) for (const [code, n] of Object.entries(r.errors)) errors[code] = (errors[code] ?? 0) + n;
  const samples: Record<string, string> = {};
  for (const r of rounds) for (const [code, m] of Object.entries(r.errorSamples)) samples[code] ??= m;
  const codes = Object.entries(errors);
  if (codes.length > 0) {
    notes.push(`errors over ${rounds.length} round(s): ${codes.map(([c, n]) => `${c} ×${n} ("${(samples[c] ?? '').slice(0, 200)}")`).join(', ')}`);
  }
  const stalled = rounds.filter((r) => r.stalled).length;
  if (stalled > 0) notes.push(`${stalled} round(s) stalled: the consumer stopped receiving before it had every acknowledged message`);
  return { metrics, notes, raw };
}

/**
 * Warm-up that also sizes the measured runs: runs `jobs` (each with `count`
 * = the warm-up's messages) once, discards the figures, and returns how many
 * messages each pair should send for a measured run of about `targetS`
 * seconds at the rate seen (at least `min`, at most `max`, in thousands).
 */
export async function calibrate(
  ctx: BenchContext,
  jobs: PipelineJob[],
  pids: readonly number[],
  targetS: number,
  min: number,
  max: number,
): Promise<{ perPair: number; rate: number }> {
  const run = await ctx.runPipelines(jobs, pids);
  const failed = run.results.filter((r) => r.stalled || r.unique < r.acked);
  if (failed.length > 0) throw new Error(`warm-up stalled: ${JSON.stringify(failed.map((r) => ({ unique: r.unique, acked: r.acked, errors: r.errors })))}`);
  const unique = run.results.reduce((n, r) => n + r.unique, 0);
  const elapsedMs = Math.max(...run.results.map((r) => r.elapsedMs));
  const rate = (unique / elapsedMs) * 1000;
  const perPair = Math.min(max, Math.max(min, Math.round((rate * targetS) / jobs.length / 1000) * 1000));
  ctx.debug(`warm-up: ${Math.round(rate)} msg/s over ${jobs.length} pair(s) → ${perPair} messages per pair`);
  return { perPair, rate };
}
