import { existsSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const MiB = 1024 * 1024;

/** A process's resident memory from /proc/<pid>/status, in bytes: all of it, and the anonymous part (heap, buffers). */
export interface Resident {
  rss: number;
  anon: number;
}

export function residentMemory(pid: number): Resident {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { rss: kib('VmRSS'), anon: kib('RssAnon') };
}

/** CPU time (user + system) the process has used, in ms, from /proc/<pid>/stat. */
export function cpuTimeMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  // utime and stime are fields 14 and 15 of stat (11 and 12 after the command), in clock ticks of 10 ms.
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** True while the process exists. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Samples a process's resident memory every `everyMs` and keeps the peak. */
export class MemorySampler {
  peak: Resident;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly pid: number,
    everyMs = 50,
  ) {
    this.peak = residentMemory(pid);
    this.timer = setInterval(() => this.sample(), everyMs);
  }

  sample(): Resident {
    let now: Resident;
    try {
      now = residentMemory(this.pid);
    } catch {
      // The process is gone (a test that failed stopped it): nothing more to sample.
      clearInterval(this.timer);
      return this.peak;
    }
    this.peak = { rss: Math.max(this.peak.rss, now.rss), anon: Math.max(this.peak.anon, now.anon) };
    return now;
  }

  stop(): Resident {
    clearInterval(this.timer);
    return this.sample();
  }
}

export const mib = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`;

/** Preload that answers SIGUSR2 with the process's memory after a full garbage collection (see the file). */
export const HEAP_PROBE = fileURLToPath(new URL('./heap-probe.cjs', import.meta.url));

/** Environment that loads {@link HEAP_PROBE} into a node process, writing to `file`. */
export function heapProbeEnv(file: string): Record<string, string> {
  return { NODE_OPTIONS: `--require=${HEAP_PROBE}`, HEAP_PROBE_FILE: file };
}

/**
 * Memory a process started with {@link heapProbeEnv} still uses after a full
 * collection: live heap objects plus the Buffers they hold (array buffers live
 * outside the heap), in bytes.
 */
export async function liveMemory(pid: number, file: string, timeoutMs = 10_000): Promise<number> {
  rmSync(file, { force: true });
  process.kill(pid, 'SIGUSR2');
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(file)) {
    if (Date.now() > deadline) throw new Error(`no heap probe answer from ${pid} within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const usage = JSON.parse(readFileSync(file, 'utf8')) as NodeJS.MemoryUsage;
  return usage.heapUsed + usage.arrayBuffers;
}

/** Sockets of the process that are TCP connections on its local `port` (accepted ones; not the listener). */
export function openConnections(pid: number, port: number): number {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const target = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (target) inodes.add(target[1]!);
    } catch {
      // closed meanwhile
    }
  }
  let count = 0;
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const lines = existsSync(table) ? readFileSync(table, 'utf8').split('\n').slice(1) : [];
    for (const line of lines) {
      // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
      const fields = line.trim().split(/\s+/);
      if (fields.length < 10) continue;
      const localPort = parseInt(fields[1]!.split(':')[1]!, 16);
      const listening = fields[3] === '0A';
      if (localPort === port && !listening && inodes.has(fields[9]!)) count++;
    }
  }
  return count;
}

/**
 * Bytes the kernel holds for the TCP connection from local port `localPort`
 * to `remotePort` on this machine: `tx` sent but not yet acknowledged by the
 * peer, `rx` received but not yet read by the process.
 */
export function socketQueues(localPort: number, remotePort: number): { tx: number; rx: number } {
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const lines = existsSync(table) ? readFileSync(table, 'utf8').split('\n').slice(1) : [];
    for (const line of lines) {
      const fields = line.trim().split(/\s+/);
      if (fields.length < 10) continue;
      const local = parseInt(fields[1]!.split(':').at(-1)!, 16);
      const remote = parseInt(fields[2]!.split(':').at(-1)!, 16);
      if (local !== localPort || remote !== remotePort) continue;
      const [tx, rx] = fields[4]!.split(':').map((hex) => parseInt(hex, 16));
      return { tx: tx!, rx: rx! };
    }
  }
  return { tx: 0, rx: 0 };
}
