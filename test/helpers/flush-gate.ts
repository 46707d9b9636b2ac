import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { tempDir } from './node-process.js';
import { eventually } from './util.js';

const run = promisify(execFile);

/**
 * A small LD_PRELOAD library around fsync and fdatasync, the calls by which
 * LMDB asks the disk to confirm a write. While the file `closed` exists in
 * the gate's directory, each call waits (its thread only) until it is gone,
 * and the file `held` says that one is waiting. Every call appends a byte to
 * `syncs`, so the file's size counts them.
 */
const SHIM_SOURCE = `
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void path_of(char *out, size_t size, const char *dir, const char *name) {
  snprintf(out, size, "%s/%s", dir, name);
}

static void pass_gate(void) {
  const char *dir = getenv("MESHMQ_FLUSH_GATE");
  if (!dir) return;
  char syncs[4096], closed[4096], held[4096];
  path_of(syncs, sizeof syncs, dir, "syncs");
  path_of(closed, sizeof closed, dir, "closed");
  path_of(held, sizeof held, dir, "held");
  int fd = open(syncs, O_CREAT | O_WRONLY | O_APPEND, 0644);
  if (fd >= 0) {
    (void)!write(fd, "s", 1);
    close(fd);
  }
  if (access(closed, F_OK) != 0) return;
  fd = open(held, O_CREAT | O_WRONLY, 0644);
  if (fd >= 0) close(fd);
  struct timespec pause = {0, 5 * 1000 * 1000};
  while (access(closed, F_OK) == 0) nanosleep(&pause, NULL);
  unlink(held);
}

int fdatasync(int fd) {
  static int (*real)(int);
  if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
  pass_gate();
  return real(fd);
}

int fsync(int fd) {
  static int (*real)(int);
  if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
  pass_gate();
  return real(fd);
}
`;

/** Compiles the library once per source version (gcc must be installed); returns its path. */
async function shimLibrary(): Promise<string> {
  const hash = createHash('sha256').update(SHIM_SOURCE).digest('hex').slice(0, 12);
  const library = join(tmpdir(), `meshmq-flush-gate-${hash}.so`);
  if (existsSync(library)) return library;
  const dir = tempDir('meshmq-flush-gate-src-');
  const source = join(dir, 'flush-gate.c');
  writeFileSync(source, SHIM_SOURCE);
  // Built next to the source, then moved into place (same file system), so a concurrent test never loads half a file.
  const built = join(dir, 'flush-gate.so');
  await run('gcc', ['-shared', '-fPIC', '-O2', '-o', built, source, '-ldl']);
  renameSync(built, library);
  rmSync(dir, { recursive: true, force: true });
  return library;
}

/**
 * Holds a node's disk flushes: with the gate closed, the node's writes stay
 * unconfirmed by the disk (LMDB's fdatasync waits) until it opens again. The
 * node runs with the library preloaded (`env`); nothing else in it changes.
 * This is how a test sees what the node does while a write is not yet
 * durable, which a process kill cannot show (the page cache survives it).
 */
export class FlushGate {
  private constructor(
    readonly dir: string,
    private readonly library: string,
  ) {}

  static async create(): Promise<FlushGate> {
    return new FlushGate(tempDir('meshmq-flush-gate-'), await shimLibrary());
  }

  /** Environment for NodeProcess.start. */
  get env(): Record<string, string> {
    return { LD_PRELOAD: this.library, MESHMQ_FLUSH_GATE: this.dir };
  }

  /** From now on every flush waits until open(). */
  close(): void {
    writeFileSync(join(this.dir, 'closed'), '');
  }

  open(): void {
    rmSync(join(this.dir, 'closed'), { force: true });
  }

  /** Resolves once a flush is waiting at the closed gate. */
  async waitHeld(timeoutMs = 10_000): Promise<void> {
    await eventually(() => existsSync(join(this.dir, 'held')), timeoutMs, 'a flush held at the gate');
  }

  /** Flushes (fsync and fdatasync calls) the node made so far. */
  get flushes(): number {
    const file = join(this.dir, 'syncs');
    return existsSync(file) ? statSync(file).size : 0;
  }

  dispose(): void {
    this.open();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
