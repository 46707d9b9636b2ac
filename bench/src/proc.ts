/**
 * Process helpers: free ports, child processes that are always cleaned up,
 * temp dirs, CPU time from /proc, and finding who listens on a port.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

// ---- cleanup -------------------------------------------------------------------

const children = new Set<ChildProcess>();
const tempDirs = new Set<string>();
const cleanups: (() => void)[] = [];
let installed = false;

/** Kills every child we started and removes every temp dir, synchronously. Safe to call twice. */
export function cleanupAll(): void {
  for (const fn of cleanups.splice(0)) {
    try {
      fn();
    } catch {
      // best effort
    }
  }
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  children.clear();
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  tempDirs.clear();
}

/** Installs exit and signal handlers once: every child is killed and every temp dir removed. */
export function installCleanup(): void {
  if (installed) return;
  installed = true;
  process.on('exit', cleanupAll);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => {
      process.stderr.write(`\n${signal}: stopping every process the bench started\n`);
      cleanupAll();
      process.exit(130);
    });
  }
}

/** Registers a synchronous cleanup step run at exit (before children are killed). */
export function onCleanup(fn: () => void): void {
  cleanups.push(fn);
}

/** A temp dir under $TMPDIR (same disk as the peers' data here; see docs/benchmarks.md), removed at exit. */
export function makeTempDir(prefix: string): string {
  const dir = mkdtempSync(join(process.env.BENCH_TMPDIR ?? tmpdir(), `meshmq-bench-${prefix}-`));
  tempDirs.add(dir);
  return dir;
}

export function removeTempDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

// ---- child processes --------------------------------------------------------

export interface Child {
  proc: ChildProcess;
  pid: number;
  /** Last lines of stdout+stderr, for error messages. */
  output(): string;
  /** Resolves when the process has exited. */
  exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

export function startChild(command: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Child {
  const proc = spawn(command, args, { cwd: options.cwd, env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
  if (proc.pid === undefined) throw new Error(`could not start ${command}`);
  children.add(proc);
  let tail = '';
  const keep = (chunk: Buffer) => {
    tail = (tail + chunk.toString('utf8')).slice(-4000);
  };
  proc.stdout?.on('data', keep);
  proc.stderr?.on('data', keep);
  const exited = new Promise<number | null>((resolve) => {
    proc.on('exit', (code) => {
      children.delete(proc);
      resolve(code);
    });
    proc.on('error', () => resolve(null));
  });
  return {
    proc,
    pid: proc.pid,
    output: () => tail,
    exited,
    async stop(graceMs = 5000) {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** The full path of a binary on PATH (or in /usr/sbin, /usr/bin), or undefined. */
export function findBinary(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/usr/bin', '/sbin', '/usr/local/bin', '/usr/local/sbin'];
  for (const dir of dirs) {
    if (!dir) continue;
    try {
      const path = join(dir, name);
      execFileSync('test', ['-x', path]);
      return path;
    } catch {
      // not here
    }
  }
  return undefined;
}

// ---- ports --------------------------------------------------------------------

/** A TCP port free on 127.0.0.1 right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Whether something accepts TCP connections on host:port. */
export function isListening(port: number, host = '127.0.0.1', timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket();
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('error', () => done(false));
    socket.connect(port, host, () => done(true));
  });
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Polls `check` until it returns true, or throws after `timeoutMs` naming `what`. */
export async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 15_000, child?: Child): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (child && (child.proc.exitCode !== null || child.proc.signalCode !== null)) {
      throw new Error(`${what}: the process exited (${child.proc.exitCode ?? child.proc.signalCode}): ${child.output().trim().slice(-1500)}`);
    }
    if (Date.now() > deadline) throw new Error(`${what}: not ready after ${timeoutMs} ms${child ? `: ${child.output().trim().slice(-1500)}` : ''}`);
    await sleep(100);
  }
}

// ---- /proc ----------------------------------------------------------------------

/** CPU seconds (user + system, all threads) a process has used so far, or undefined if it is gone. */
export function cpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces; fields after its ')' are fixed.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(rest[11]);
    const stime = Number(rest[12]);
    return (utime + stime) / CLK_TCK;
  } catch {
    return undefined;
  }
}

/** Sum of cpuSeconds over pids (missing ones count 0). */
export function cpuSecondsOf(pids: readonly number[]): number {
  let total = 0;
  for (const pid of pids) total += cpuSeconds(pid) ?? 0;
  return total;
}

/** The command name (comm) of a process, or undefined. */
export function processName(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/**
 * Pids of the processes listening on TCP `port` (any address). Tries
 * `ss -ltnpH` first, then scans /proc/net/tcp{,6} for the socket inode and
 * /proc/<pid>/fd for its owner (needs the same user or root).
 */
export function pidsListeningOn(port: number): number[] {
  try {
    const out = execFileSync('ss', ['-ltnpH', `sport = :${port}`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const pids = new Set<number>();
    for (const match of out.matchAll(/pid=(\d+)/g)) pids.add(Number(match[1]));
    if (pids.size > 0) return [...pids];
  } catch {
    // no ss: fall back to /proc
  }
  const inodes = new Set<string>();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    try {
      for (const line of readFileSync(file, 'utf8').split('\n').slice(1)) {
        const cols = line.trim().split(/\s+/);
        const local = cols[1];
        if (!local || cols[3] !== '0A') continue; // 0A = LISTEN
        if (Number.parseInt(local.split(':')[1] ?? '', 16) === port) inodes.add(cols[9] ?? '');
      }
    } catch {
      // not readable
    }
  }
  const pids: number[] = [];
  if (inodes.size === 0) return pids;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      for (const fd of readdirSync(`/proc/${entry}/fd`)) {
        const link = readlinkSync(`/proc/${entry}/fd/${fd}`);
        const m = /^socket:\[(\d+)\]$/.exec(link);
        if (m && inodes.has(m[1] ?? '')) {
          pids.push(Number(entry));
          break;
        }
      }
    } catch {
      // gone or not ours
    }
  }
  return pids;
}

/** Runs a command and returns its trimmed stdout, or undefined when it fails. */
export function commandOutput(command: string, args: string[], timeoutMs = 5000): string | undefined {
  try {
    return execFileSync(command, args, { encoding: 'utf8', timeout: timeoutMs, stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } catch {
    return undefined;
  }
}

/**
 * The next IPC message of `type` from a load agent; rejects on an `error`
 * message (its text after `errorPrefix`) or the agent's exit before it.
 */
export function nextAgentMessage(proc: ChildProcess, type: string, errorPrefix = ''): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const onMessage = (msg: Record<string, unknown>) => {
      if (msg.type === 'error') {
        cleanup();
        reject(new Error(`${errorPrefix}${String(msg.message)}`));
      } else if (msg.type === type) {
        cleanup();
        resolve(msg);
      }
    };
    const onExit = (code: number | null, signal: string | null) => {
      cleanup();
      reject(new Error(`load agent exited (${code ?? signal}) before '${type}'`));
    };
    const cleanup = () => {
      proc.off('message', onMessage);
      proc.off('exit', onExit);
    };
    proc.on('message', onMessage);
    proc.on('exit', onExit);
  });
}
