import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

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
  readonly port: number;
  readonly dataDir: string;

  private constructor(
    port: number,
    dataDir: string,
    private readonly options: NodeOptions,
  ) {
    this.port = port;
    this.dataDir = dataDir;
  }

  static async start(options: NodeOptions = {}): Promise<NodeProcess> {
    const node = new NodeProcess(options.port ?? (await freePort()), options.dataDir ?? tempDir(), options);
    await node.start();
    return node;
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

  /** Starts (or restarts) the process and waits until /healthz answers. */
  async start(): Promise<void> {
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
    child.stdout?.on('data', (chunk: Buffer) => (this.output += chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => (this.output += chunk.toString()));
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`node exited with ${child.exitCode}:\n${this.output}`);
      try {
        const res = await fetch(`${this.url}/healthz`);
        if (res.ok) return;
      } catch {
        // not listening yet
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error(`node did not become healthy:\n${this.output}`);
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
