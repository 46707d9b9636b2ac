import { existsSync, readFileSync, rmSync } from 'node:fs';
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
    const now = residentMemory(this.pid);
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

/** Live heap (bytes used after a full collection) of a process started with {@link heapProbeEnv}. */
export async function liveHeap(pid: number, file: string, timeoutMs = 10_000): Promise<number> {
  rmSync(file, { force: true });
  process.kill(pid, 'SIGUSR2');
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(file)) {
    if (Date.now() > deadline) throw new Error(`no heap probe answer from ${pid} within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return (JSON.parse(readFileSync(file, 'utf8')) as NodeJS.MemoryUsage).heapUsed;
}
