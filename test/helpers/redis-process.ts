import { type ChildProcess, spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { connect } from 'node:net';
import { freePort, PortInUseError, retryWhilePortInUse, tempDir } from './node-process.js';
import { sleep } from './util.js';

const START_TIMEOUT_MS = 10_000;

export interface RedisOptions {
  port?: number;
  /** AOF with appendfsync always (default true); ignored with `configFile`. */
  aof?: boolean;
  /** A redis.conf to start from, persistence settings and all; the port, bind address and dir are still the test's. */
  configFile?: string;
  /** Clients (and replicas, as masterauth) must authenticate with this; the readiness check does. */
  password?: string;
  args?: string[];
}

/** A real redis-server on a free loopback port, owned by the test so it can kill and restart it. */
export class RedisProcess {
  private child: ChildProcess | undefined;
  private output = '';

  private constructor(
    readonly port: number,
    readonly dir: string,
    private readonly options: RedisOptions,
  ) {}

  static async start(options: RedisOptions = {}): Promise<RedisProcess> {
    const redis = new RedisProcess(options.port ?? (await freePort()), tempDir('meshmq-redis-'), options);
    await redis.start();
    return redis;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get logs(): string {
    return this.output;
  }

  /**
   * Starts (or restarts) redis-server on its port and waits until it answers.
   * A restart reuses a port that was just released; if another process took
   * it meanwhile, it tries again a bounded number of times.
   */
  async start(): Promise<void> {
    await retryWhilePortInUse(() => this.startOnce());
  }

  private async startOnce(): Promise<void> {
    const aof = this.options.aof ?? true;
    const where = ['--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir];
    const persistence = ['--save', '', '--appendonly', aof ? 'yes' : 'no', '--appendfsync', 'always'];
    const { configFile, password } = this.options;
    const auth = password ? ['--requirepass', password, '--masterauth', password] : [];
    const child = spawn('redis-server', [...(configFile ? [configFile, ...where] : [...where, ...persistence]), ...auth, ...(this.options.args ?? [])], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    const startedAt = this.output.length;
    child.stdout?.on('data', (c: Buffer) => (this.output += c.toString()));
    child.stderr?.on('data', (c: Buffer) => (this.output += c.toString()));
    // 'close' comes after the child's output has been read to its end.
    const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null) {
        await closed;
        const output = this.output.slice(startedAt);
        const message = `redis-server on port ${this.port} exited with ${child.exitCode ?? child.signalCode}: ${output}`;
        throw /Address already in use/.test(output) ? new PortInUseError(message) : new Error(message);
      }
      // Ready means this child answers, not some other process that holds the port.
      if ((await this.servingPid()) === child.pid) return;
      await sleep(30);
    }
    await this.kill();
    throw new Error(`redis-server did not start: ${this.output}`);
  }

  /** The process_id of the redis-server answering on the port, or undefined while none answers or it is still loading its data. */
  private servingPid(): Promise<number | undefined> {
    return new Promise((resolve) => {
      const socket = connect(this.port, '127.0.0.1');
      let reply = '';
      const done = (pid?: number) => {
        socket.destroy();
        resolve(pid);
      };
      socket.setTimeout(500);
      const { password } = this.options;
      socket.once('connect', () => socket.write(`${password ? `AUTH ${password}\r\n` : ''}INFO server persistence\r\n`));
      socket.on('data', (d: Buffer) => {
        reply += d.toString('latin1');
        // AUTH's +OK first when there is a password.
        const info = password && reply.startsWith('+OK\r\n') ? reply.slice(5) : reply;
        // A bulk string: $<length>\r\n<INFO text>; anything else (an error) means not ready.
        const header = /^\$(\d+)\r\n/.exec(info);
        if (!header) return void (info.includes('\r\n') && done());
        if (info.length < header[0].length + Number(header[1])) return;
        const pid = /^process_id:(\d+)/m.exec(info);
        done(pid && /^loading:0/m.test(info) ? Number(pid[1]) : undefined);
      });
      socket.once('error', () => done());
      socket.once('timeout', () => done());
    });
  }

  /** SIGSTOP: the process stays alive but answers nothing (a stalled or partitioned server). */
  pause(): void {
    this.child?.kill('SIGSTOP');
  }

  resume(): void {
    this.child?.kill('SIGCONT');
  }

  async kill(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGKILL');
    await exited;
  }

  async dispose(): Promise<void> {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
