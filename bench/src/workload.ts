/**
 * The contract between the harness (run.ts) and a workload.
 *
 * A workload is one file in `src/workloads/` exporting a `Workload`, listed
 * once in `src/workloads/index.ts`. The harness calls `run(ctx)` once; the
 * workload starts what it needs through `ctx` (MeshMQ nodes, a Redis with
 * stated persistence, the peers found on this machine), runs every system
 * it compares in **alternating rounds** (round 1: every system once, round
 * 2: every system again, …; `ctx.alternate` does this) and returns one
 * `Row` per system and parameter set. The harness prints one table per
 * workload from the rows and writes them, raw rounds included, to the JSON
 * results file.
 *
 * Rules every workload keeps:
 * - compare systems only at the same durability level, and say which in
 *   `Row.durability` (use the `DURABILITY` labels of `durability.ts`);
 * - say what a system could not do in `notes`, or skip it with
 *   `ctx.skip(system, reason)`, never silently;
 * - everything started through `ctx` is stopped by the harness at exit
 *   (also on Ctrl-C), so a workload may throw at any point.
 */
import type { BenchContext } from './context.js';

export type { BenchContext } from './context.js';

/** One line of a workload's table. */
export interface Row {
  /** The workload's `name`. */
  workload: string;
  /** Who was measured, e.g. `meshmq embedded (ws)`, `rabbitmq`, `redis streams`. */
  system: string;
  /** What an acknowledged publish survives here (a `DURABILITY` label). */
  durability: string;
  /** Message payload size in bytes, when the workload varies it. */
  size?: number;
  /** What else was fixed for this row (window, pairs, nodes, rate…). */
  params: Record<string, unknown>;
  /**
   * The figures, by column name: medians over the rounds for throughput-like
   * metrics, or percentiles of the merged histogram for latencies. Keys are
   * printed as column headers in insertion order; `null` prints as `-`.
   */
  metrics: Record<string, number | string | null>;
  /** Each round's own metrics, kept in the JSON file (not printed). */
  rounds?: Record<string, number | string | null>[];
  /** Anything a reader must know: errors, duplicates, refusals, caveats. */
  notes?: string[];
}

export interface Workload {
  /** Short id used by `--workloads`, e.g. `durable`. */
  name: string;
  /** Heading printed above the table. */
  title: string;
  /** One or two sentences printed under the heading: what is measured and how. */
  description?: string;
  /** Column order for the table (metric keys); default: the first row's key order. */
  columns?: string[];
  run(ctx: BenchContext): Promise<Row[]>;
}
