/**
 * BenchContext: what a workload gets from the harness. Everything it starts
 * through here is stopped when the workload (or the whole run) ends, also on
 * Ctrl-C.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHistogram, type Histogram } from './hist.js';
import { type MeshCluster, type MeshNodesOptions, startMeshNodes } from './meshmq.js';
import { type NatsSync, type RedisPersistence, type Service, SkipError, startNats, startRabbit, startRedis } from './peers.js';
import type { PipelineJob, PipelineResult } from './pipeline-types.js';
import { cpuSecondsOf, nextAgentMessage, onCleanup } from './proc.js';

export type { MeshCluster, MeshNode, MeshNodesOptions } from './meshmq.js';
export type { NatsSync, RedisPersistence, Service } from './peers.js';
export { SkipError } from './peers.js';
export type { DriverSpec, PipelineJob, PipelineResult } from './pipeline-types.js';

export interface BenchOptions {
  /** --quick: small counts and one round, a smoke run of a couple of minutes. */
  quick: boolean;
  /** --sizes: payload sizes in bytes (default 100 and 1024). */
  sizes: number[];
  /** --rounds: alternating rounds per system (default 3; 1 with --quick). */
  rounds: number;
  /** --window: publishes in flight per publisher (default 500). */
  window: number;
  /** --systems: substrings; a system runs when its name contains one of them (default: all). */
  systems: string[] | undefined;
  /** --verbose: per-round progress lines. */
  verbose: boolean;
}

/** Server CPU measured between two points: `stop()` returns CPU-seconds used by the pids meanwhile. */
export interface CpuMeter {
  stop(): number;
}

export interface PipelineRun {
  results: PipelineResult[];
  /** Server CPU-seconds of the given pids during the measured part (after warm-up). */
  serverCpuS: number;
  /** ms from 'go' until the last agent reported. */
  wallMs: number;
}

export interface BenchContext {
  readonly options: BenchOptions;
  /** Progress line on stderr (tables go to stdout). */
  log(message: string): void;
  /** Per-round detail, printed with --verbose only. */
  debug(message: string): void;
  /** Prints `skipped: <system> (<reason>)` and records it in the results file. */
  skip(system: string, reason: string): void;
  /** Whether --systems lets `system` run (case-insensitive substring match). */
  wants(system: string): boolean;
  /** Records a peer's version (or a MeshMQ node's command line) for the results file. */
  note(key: string, value: string): void;

  /** Starts MeshMQ nodes from packages/server/dist/cli.js, bound to 127.0.0.1, with the bench limits (see meshmq.ts). */
  startMeshNodes(options: MeshNodesOptions): Promise<MeshCluster>;
  /** Starts a redis-server of the bench's own on a free port with the persistence asked. Throws SkipError without the binary. */
  startRedis(persistence: RedisPersistence): Promise<Service>;
  /** A JetStream nats-server (started from the binary, or found on 4222). Throws SkipError when impossible. */
  startNats(sync?: NatsSync): Promise<Service>;
  /** RabbitMQ on 127.0.0.1:5672 (or started). Throws SkipError when impossible. */
  startRabbit(): Promise<Service>;
  /** Stops a service or cluster now (everything is stopped at the end anyway). */
  stop(thing: { stop(): Promise<void> }): Promise<void>;

  /** Starts measuring the CPU time (user + system) of `pids`. */
  cpu(pids: readonly number[]): CpuMeter;
  /** An hdr histogram (µs, 3 significant digits, pure JS). */
  createHistogram(): Histogram;
  /**
   * Runs `fn` for every case in alternating rounds (round 1: every case once,
   * round 2: every case again, …) and returns each case's results in round order.
   * A case that throws is reported once and left out of later rounds.
   */
  alternate<C, R>(cases: readonly C[], label: (c: C) => string, fn: (c: C, round: number) => Promise<R>, rounds?: number): Promise<Map<C, R[]>>;
  /**
   * Runs pipelines (one publisher + one consumer each) in separate load-agent
   * processes at the same time: each agent connects and warms up, then all
   * start together; server CPU of `serverPids` is measured from the start
   * until the last agent is done.
   */
  runPipelines(jobs: readonly PipelineJob[], serverPids: readonly number[]): Promise<PipelineRun>;
}

const AGENT = join(dirname(fileURLToPath(import.meta.url)), 'agent.js');

export class Context implements BenchContext {
  readonly skipped: { system: string; reason: string }[] = [];
  readonly notes: Record<string, string> = {};
  /** What MeshMQ nodes printed (warnings and errors), per workload, kept in the results file. */
  readonly nodeLogs: { workload: string; port: number; tail: string }[] = [];
  private readonly clusters = new Set<MeshCluster>();
  /** The workload running now, for nodeLogs. */
  workload = '';
  private readonly owned = new Set<{ stop(): Promise<void> }>();

  constructor(readonly options: BenchOptions) {}

  log(message: string): void {
    process.stderr.write(`${message}\n`);
  }

  debug(message: string): void {
    if (this.options.verbose) process.stderr.write(`  ${message}\n`);
  }

  skip(system: string, reason: string): void {
    // Printed once per system and reason, however many workloads meet it.
    if (this.skipped.some((s) => s.system === system && s.reason === reason)) return;
    this.skipped.push({ system, reason });
    process.stderr.write(`skipped: ${system} (${reason})\n`);
  }

  wants(system: string): boolean {
    const filter = this.options.systems;
    if (!filter || filter.length === 0) return true;
    const name = system.toLowerCase();
    return filter.some((f) => name.includes(f.toLowerCase()));
  }

  note(key: string, value: string): void {
    this.notes[key] = value;
  }

  private own<T extends { stop(): Promise<void> }>(thing: T): T {
    this.owned.add(thing);
    return thing;
  }

  async startMeshNodes(options: MeshNodesOptions): Promise<MeshCluster> {
    const cluster = this.own(await startMeshNodes(options));
    this.clusters.add(cluster);
    this.note(`meshmq ${options.engine} node`, `node ${cluster.args.join(' ')}`);
    return cluster;
  }

  async startRedis(persistence: RedisPersistence): Promise<Service> {
    const service = this.own(await startRedis(persistence));
    if (service.version) this.note('redis-server', service.version);
    return service;
  }

  async startNats(sync: NatsSync = 'default'): Promise<Service> {
    const service = this.own(await startNats(sync));
    if (service.version) this.note('nats-server', service.version);
    return service;
  }

  async startRabbit(): Promise<Service> {
    return this.own(await startRabbit());
  }

  async stop(thing: { stop(): Promise<void> }): Promise<void> {
    this.owned.delete(thing);
    await thing.stop();
  }

  /** Stops everything still running that was started through this context. */
  async stopAll(): Promise<void> {
    // Keep what the nodes said: at --log-level warn that is their warnings and errors.
    for (const cluster of this.clusters) {
      for (const [port, tail] of Object.entries(cluster.output())) {
        this.nodeLogs.push({ workload: this.workload, port: Number(port), tail });
        this.log(`meshmq node on ${port} printed (last lines):\n${tail.split('\n').slice(-5).join('\n')}`);
      }
    }
    this.clusters.clear();
    const things = [...this.owned];
    this.owned.clear();
    await Promise.allSettled(things.map((t) => t.stop()));
  }

  cpu(pids: readonly number[]): CpuMeter {
    const list = [...pids];
    const before = cpuSecondsOf(list);
    return { stop: () => cpuSecondsOf(list) - before };
  }

  createHistogram(): Histogram {
    return createHistogram();
  }

  async alternate<C, R>(
    cases: readonly C[],
    label: (c: C) => string,
    fn: (c: C, round: number) => Promise<R>,
    rounds = this.options.rounds,
  ): Promise<Map<C, R[]>> {
    const out = new Map<C, R[]>();
    const failed = new Set<C>();
    for (const c of cases) out.set(c, []);
    for (let round = 1; round <= rounds; round++) {
      for (const c of cases) {
        if (failed.has(c)) continue;
        const started = Date.now();
        try {
          out.get(c)!.push(await fn(c, round));
          this.debug(`round ${round}/${rounds} ${label(c)}: ${((Date.now() - started) / 1000).toFixed(1)} s`);
        } catch (err) {
          failed.add(c);
          if (err instanceof SkipError) this.skip(label(c), err.message);
          else this.skip(label(c), `failed in round ${round}: ${err instanceof Error ? err.message : String(err)}`);
        }
      }
    }
    return out;
  }

  async runPipelines(jobs: readonly PipelineJob[], serverPids: readonly number[]): Promise<PipelineRun> {
    const agents = jobs.map((job) => new Agent(job));
    try {
      await Promise.all(agents.map((a) => a.ready));
      const meter = this.cpu(serverPids);
      const started = performance.now();
      const results = await Promise.all(agents.map((a) => a.go()));
      const wallMs = performance.now() - started;
      return { results, serverCpuS: meter.stop(), wallMs };
    } finally {
      // Agents remove their queues and close after reporting; give them a moment, then kill.
      await Promise.all(agents.map((a) => a.finish(10_000)));
    }
  }
}

/** One load-agent process (dist/agent.js) running one pipeline. */
class Agent {
  private readonly proc: ChildProcess;
  readonly ready: Promise<void>;
  private result: Promise<PipelineResult>;
  private readonly unregister: () => void;
  private readonly exited: Promise<void>;

  constructor(job: PipelineJob) {
    this.proc = fork(AGENT, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: [] });
    const proc = this.proc;
    const kill = () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    };
    onCleanup(kill);
    this.unregister = kill;
    this.exited = new Promise((resolve) => {
      if (proc.exitCode !== null || proc.signalCode !== null) resolve();
      else proc.once('exit', () => resolve());
    });
    const wait = (type: string) => nextAgentMessage(proc, type);
    this.ready = wait('ready').then(() => undefined);
    this.result = this.ready.then(() => wait('result')).then((msg) => msg.result as PipelineResult);
    // Avoid unhandled rejections before go() is awaited.
    this.result.catch(() => {});
    proc.send({ type: 'prepare', job });
  }

  go(): Promise<PipelineResult> {
    this.proc.send({ type: 'go' });
    return this.result;
  }

  /** Waits up to `ms` for the agent to exit by itself, then kills it. */
  async finish(ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.exited, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
    clearTimeout(timer);
    this.unregister();
  }
}
