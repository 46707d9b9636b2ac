import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, PortInUseError, retryWhilePortInUse } from './node-process.js';
import { sleep } from './util.js';

/** Debian's Prometheus (package `prometheus`, which .ci/run installs). */
export const PROMETHEUS = 'prometheus';
const START_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 5000;

/** An answer of Prometheus's HTTP API (/api/v1/...). */
export interface ApiResponse<T> {
  status: 'success' | 'error';
  data: T;
  errorType?: string;
  error?: string;
  warnings?: string[];
}

export interface PrometheusAlert {
  labels: Record<string, string>;
  annotations: Record<string, string>;
  state: 'pending' | 'firing';
  value: string;
}

/**
 * A real Prometheus server on a free loopback port, reading the
 * configuration in `dir/prometheus.yml` (relative paths in it resolve from
 * `dir`) and keeping its data in `dir/data`.
 */
export class PrometheusProcess {
  private child: ChildProcess | undefined;
  private output = '';
  private port = 0;

  private constructor(private readonly dir: string) {}

  static async start(dir: string): Promise<PrometheusProcess> {
    const prometheus = new PrometheusProcess(dir);
    await retryWhilePortInUse(
      () => prometheus.startOnce(),
      async () => (prometheus.port = await freePort()),
    );
    return prometheus;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get logs(): string {
    return this.output;
  }

  private async startOnce(): Promise<void> {
    this.port ||= await freePort();
    const data = join(this.dir, 'data');
    mkdirSync(data, { recursive: true });
    const child = spawn(
      PROMETHEUS,
      [`--config.file=${join(this.dir, 'prometheus.yml')}`, `--storage.tsdb.path=${data}`, `--web.listen-address=127.0.0.1:${this.port}`, '--log.level=warn'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.child = child;
    const startedAt = this.output.length;
    child.stdout?.on('data', (c: Buffer) => (this.output += c.toString()));
    child.stderr?.on('data', (c: Buffer) => (this.output += c.toString()));
    // A missing binary is an error event, not an exit: the test must fail saying so.
    let spawnError: Error | undefined;
    child.once('error', (err) => (spawnError = err));
    const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (spawnError) throw new Error(`cannot run ${PROMETHEUS} (apt-get install prometheus): ${spawnError.message}`);
      if (child.exitCode !== null || child.signalCode !== null) {
        await closed;
        const output = this.output.slice(startedAt);
        const message = `prometheus on port ${this.port} exited with ${child.exitCode ?? child.signalCode}:\n${output}`;
        throw /address already in use/.test(output) ? new PortInUseError(message) : new Error(message);
      }
      if (await this.ready()) return;
      await sleep(50);
    }
    await this.stop();
    throw new Error(`prometheus did not become ready:\n${this.output}`);
  }

  private async ready(): Promise<boolean> {
    try {
      return (await fetch(`${this.url}/-/ready`, { signal: AbortSignal.timeout(1000) })).ok;
    } catch {
      return false;
    }
  }

  /** GET /api/v1/<path>, with the query parameters given. */
  async api<T>(path: string, params: Record<string, string> = {}): Promise<ApiResponse<T>> {
    const res = await fetch(`${this.url}/api/v1/${path}?${new URLSearchParams(params)}`);
    return (await res.json()) as ApiResponse<T>;
  }

  /** An instant query, evaluated now. */
  query(expr: string): Promise<ApiResponse<{ resultType: string; result: Array<{ metric: Record<string, string>; value: [number, string] }> }>> {
    return this.api('query', { query: expr });
  }

  async alerts(): Promise<PrometheusAlert[]> {
    return (await this.api<{ alerts: PrometheusAlert[] }>('alerts')).data.alerts;
  }

  /** SIGTERM, then SIGKILL if it has not exited in time. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    await exited;
    clearTimeout(timer);
  }

  /** Stops the server and removes its directory. */
  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
