import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sleep } from './util.js';

const CLI = fileURLToPath(new URL('../../packages/server/dist/cli.js', import.meta.url));

/** A free TCP port on 127.0.0.1, found by binding port 0. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

export function tempDir(prefix = 'meshmq-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** How often a start is tried again when the port is still held by another process, and how long to wait in between. */
export const PORT_IN_USE_ATTEMPTS = 10;
export const PORT_IN_USE_DELAY_MS = 250;
const START_TIMEOUT_MS = 15_000;

/** The child exited because its port was taken (EADDRINUSE): a released port someone else grabbed in the meantime. */
export class PortInUseError extends Error {}

/**
 * Runs `start` until it does not fail with PortInUseError, at most
 * PORT_IN_USE_ATTEMPTS times; before each new attempt, `beforeRetry` (by
 * default: wait PORT_IN_USE_DELAY_MS for the holder to let go).
 */
export async function retryWhilePortInUse(start: () => Promise<void>, beforeRetry: () => Promise<unknown> = () => sleep(PORT_IN_USE_DELAY_MS)): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await start();
    } catch (err) {
      if (!(err instanceof PortInUseError) || attempt >= PORT_IN_USE_ATTEMPTS) throw err;
      await beforeRetry();
    }
  }
}

export interface NodeOptions {
  port?: number;
  dataDir?: string;
  env?: Record<string, string>;
  args?: string[];
}

/** A broker node running as a child process, as a user would run it. */
export class NodeProcess {
  private child: ChildProcess | undefined;
  private output = '';
  private currentPort: number;
  readonly dataDir: string;

  private constructor(
    port: number,
    dataDir: string,
    private readonly options: NodeOptions,
  ) {
    this.currentPort = port;
    this.dataDir = dataDir;
  }

  static async start(options: NodeOptions = {}): Promise<NodeProcess> {
    const node = new NodeProcess(options.port ?? (await freePort()), options.dataDir ?? tempDir(), options);
    // A port this helper picked can be swapped for another free one; a port the test chose is kept.
    const takeAnotherPort = async () => (node.currentPort = await freePort());
    await retryWhilePortInUse(() => node.startOnce(), options.port === undefined ? takeAnotherPort : undefined);
    return node;
  }

  get port(): number {
    return this.currentPort;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get wsUrl(): string {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  get logs(): string {
    return this.output;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** The child process is alive (it may be paused). */
  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /**
   * Starts (or restarts) the process on its port and waits until /healthz
   * answers from it. A restart reuses a port that was just released; if
   * another process took it meanwhile, it tries again a bounded number of times.
   */
  async start(): Promise<void> {
    await retryWhilePortInUse(() => this.startOnce());
  }

  private async startOnce(): Promise<void> {
    const child = spawn(process.execPath, [CLI, ...(this.options.args ?? [])], {
      env: {
        ...process.env,
        PORT: String(this.port),
        HOST: '127.0.0.1',
        DATA_DIR: this.dataDir,
        LOG_LEVEL: 'warn',
        ...this.options.env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    const startedAt = this.output.length;
    child.stdout?.on('data', (chunk: Buffer) => (this.output += chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => (this.output += chunk.toString()));
    // 'close' comes after the child's output has been read to its end.
    const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null) {
        await closed;
        const output = this.output.slice(startedAt);
        const message = `node on port ${this.port} exited with ${child.exitCode ?? child.signalCode}:\n${output}`;
        throw output.includes('EADDRINUSE') ? new PortInUseError(message) : new Error(message);
      }
      // Healthy means this child answers, not some other process that holds the port.
      if ((await this.healthyPid()) === child.pid) return;
      await sleep(50);
    }
    await this.kill();
    throw new Error(`node did not become healthy:\n${this.output}`);
  }

  /** The pid /healthz reports, or undefined while nothing healthy answers on the port. */
  private async healthyPid(): Promise<number | undefined> {
    try {
      const res = await fetch(`${this.url}/healthz`, { signal: AbortSignal.timeout(2000) });
      if (!res.ok) return undefined;
      return ((await res.json()) as { pid?: number }).pid;
    } catch {
      return undefined; // not listening yet
    }
  }

  /** SIGSTOP: the process stays alive but does nothing (a stuck node). */
  pause(): void {
    this.child?.kill('SIGSTOP');
  }

  resume(): void {
    this.child?.kill('SIGCONT');
  }

  /** kill -9: no shutdown hook runs. */
  async kill(): Promise<void> {
    await this.signal('SIGKILL');
  }

  /** Graceful stop with SIGTERM. */
  async stop(): Promise<void> {
    await this.signal('SIGTERM');
  }

  private async signal(signal: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill(signal);
    await exited;
  }

  /** Stops the process and removes its data directory. */
  async dispose(): Promise<void> {
    await this.kill();
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}
