/**
 * pnpm bench: runs the workloads of src/workloads/index.ts, prints one table
 * per workload and writes every figure, raw rounds included, with the machine
 * and the git commit, to a JSON file. See docs/benchmarks.md.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, release, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { type BenchOptions, Context } from './context.js';
import { MESH_BENCH_ARGS, REPO_ROOT } from './meshmq.js';
import { cleanupAll, installCleanup } from './proc.js';
import { renderRows } from './stats.js';
import type { Row } from './workload.js';
import { WORKLOADS } from './workloads/index.js';

const HELP = `Usage: pnpm bench [-- options]     (or: node bench/dist/run.js [options])

Compares MeshMQ with RabbitMQ, NATS JetStream and Redis Streams on loopback,
each at a stated durability level, in alternating rounds; prints one table per
workload and writes the raw figures to a JSON file. See docs/benchmarks.md.

Options:
  --workloads <list>   comma-separated workloads to run (default: all): ${WORKLOADS.map((w) => w.name).join(', ') || '(none registered)'}
  --systems <filter>   comma-separated substrings; only systems whose name contains one run
                       (e.g. meshmq,redis)
  --sizes <list>       payload sizes in bytes (default 100,1024)
  --rounds <n>         alternating rounds per system (default 3; 1 with --quick)
  --window <n>         publishes in flight per publisher (default 500)
  --quick              small counts and 1 round: a smoke run of a couple of minutes
  --out <file>         results file (default bench/results/<date>-<commit>.json)
  --verbose            per-round progress
  -h, --help           show this help
`;

function parseList(value: string | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  return value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

function positiveInt(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer, got '${value}'`);
  return n;
}

function git(args: string[]): string | undefined {
  try {
    return execFileSync('git', args, { cwd: REPO_ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return undefined;
  }
}

async function main(): Promise<void> {
  // pnpm may hand the script a literal '--' before the user's options.
  const argv = process.argv.slice(2).filter((a) => a !== '--');
  const { values } = parseArgs({
    args: argv,
    options: {
      workloads: { type: 'string' },
      systems: { type: 'string' },
      sizes: { type: 'string' },
      rounds: { type: 'string' },
      window: { type: 'string' },
      quick: { type: 'boolean', default: false },
      out: { type: 'string' },
      verbose: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const quick = values.quick ?? false;
  const sizes = (parseList(values.sizes) ?? ['100', '1024']).map((s) => positiveInt('sizes', s, 0));
  const options: BenchOptions = {
    quick,
    sizes,
    rounds: positiveInt('rounds', values.rounds, quick ? 1 : 3),
    window: positiveInt('window', values.window, 500),
    systems: parseList(values.systems),
    verbose: values.verbose ?? false,
  };
  const names = parseList(values.workloads);
  const unknown = (names ?? []).filter((n) => !WORKLOADS.some((w) => w.name === n));
  if (unknown.length > 0) throw new Error(`unknown workload(s): ${unknown.join(', ')}; known: ${WORKLOADS.map((w) => w.name).join(', ')}`);
  const selected = names ? WORKLOADS.filter((w) => names.includes(w.name)) : WORKLOADS;

  installCleanup();
  const commit = git(['rev-parse', 'HEAD']) ?? 'unknown';
  const dirty = (git(['status', '--porcelain', '--untracked-files=no']) ?? '') !== '';
  const startedAt = new Date();
  const stamp = startedAt.toISOString().slice(0, 16).replace(/:/g, '');
  const out = resolve(values.out ?? join(REPO_ROOT, 'bench/results', `${stamp}-${commit.slice(0, 10)}.json`));
  const cpuList = cpus();
  const machine = {
    cpuModel: cpuList[0]?.model ?? 'unknown',
    cpus: cpuList.length,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    kernel: release(),
    node: process.version,
  };

  const ctx = new Context(options);
  process.stderr.write(
    [
      `meshmq bench: commit ${commit.slice(0, 10)}${dirty ? ' (with uncommitted changes)' : ''}, ${machine.cpus} × ${machine.cpuModel}, ${machine.memoryGiB} GiB, Linux ${machine.kernel}, Node ${machine.node}`,
      `options: rounds ${options.rounds}, sizes ${sizes.join(',')}, window ${options.window}${quick ? ', quick' : ''}${options.systems ? `, systems ${options.systems.join(',')}` : ''}`,
      `meshmq nodes get: ${MESH_BENCH_ARGS.join(' ')} (plus --port, --data-dir or --redis-url)`,
      `workloads: ${selected.map((w) => w.name).join(', ')}`,
      '',
    ].join('\n'),
  );

  const results: { workload: string; title: string; description?: string; rows: Row[]; error?: string; seconds: number }[] = [];
  const write = () => {
    mkdirSync(dirname(out), { recursive: true });
    const file = {
      date: startedAt.toISOString(),
      commit,
      dirty,
      machine: { ...machine, peers: ctx.notes },
      options: { ...options, meshmqArgs: MESH_BENCH_ARGS },
      skipped: ctx.skipped,
      nodeLogs: ctx.nodeLogs,
      workloads: results,
    };
    writeFileSync(out, `${JSON.stringify(file, null, 2)}\n`);
  };

  for (const workload of selected) {
    const started = Date.now();
    process.stderr.write(`== ${workload.name}: ${workload.title}\n`);
    let rows: Row[] = [];
    let error: string | undefined;
    ctx.workload = workload.name;
    try {
      rows = await workload.run(ctx);
    } catch (err) {
      error = err instanceof Error ? (err.stack ?? err.message) : String(err);
      process.stderr.write(`workload ${workload.name} failed: ${error}\n`);
    } finally {
      await ctx.stopAll();
    }
    const seconds = Math.round((Date.now() - started) / 100) / 10;
    results.push({
      workload: workload.name,
      title: workload.title,
      ...(workload.description ? { description: workload.description } : {}),
      rows,
      ...(error ? { error } : {}),
      seconds,
    });
    printWorkload(workload.title, workload.description, rows, workload.columns, seconds);
    write();
  }
  if (ctx.skipped.length > 0) {
    process.stdout.write(`\nSkipped:\n${ctx.skipped.map((s) => `- skipped: ${s.system} (${s.reason})`).join('\n')}\n`);
  }
  write();
  process.stdout.write(`\nResults: ${out}\n`);
}

function printWorkload(title: string, description: string | undefined, rows: Row[], columns: string[] | undefined, seconds: number): void {
  const lines = [`\n### ${title}`, ''];
  if (description) lines.push(description, '');
  lines.push(renderRows(rows, columns));
  const notes = rows.flatMap((r) => (r.notes ?? []).map((n) => `- ${r.system}${r.size === undefined ? '' : ` (${r.size} B)`}: ${n}`));
  if (notes.length > 0) lines.push('', ...notes);
  lines.push('', `(${seconds} s)`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

main().then(
  () => {
    cleanupAll();
    process.exit(0);
  },
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    cleanupAll();
    process.exit(1);
  },
);
