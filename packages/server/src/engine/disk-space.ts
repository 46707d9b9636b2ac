import { statfsSync } from 'node:fs';
import { formatBytes, MeshError } from '@meshmq/shared';

/** Free bytes below which a publish is refused before it is written, by default: room left for acks, leases and dead letters. */
export const DEFAULT_DISK_FREE_LIMIT = 64 * 1024 * 1024;
/** A failed write with less than this free is taken for a full disk (a write needs its pages plus LMDB's copies of the tree above them). */
const FULL_BELOW_BYTES = 8 * 1024 * 1024;
/** Free space is read again at most this often (one statfs). */
const REFRESH_MS = 1000;
/** What a refused publish is told to wait before trying again. */
const RETRY_AFTER_MS = 1000;

/**
 * The free space of the disk under the embedded engine's data directory. A
 * publish is refused while less than the limit is free, so the node never
 * fills its disk with new messages and keeps room for the writes that free
 * space (acks, retention) and move it (dead letters). When the disk fills
 * anyway (another process wrote to it), a failed write is reported as a
 * full disk rather than as an opaque storage error.
 */
export class DiskSpace {
  private free = Number.POSITIVE_INFINITY;
  private readAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly dir: string,
    private readonly limitBytes: number = DEFAULT_DISK_FREE_LIMIT,
  ) {}

  /** Throws `unavailable` while less than the limit is free; the message was not written. */
  assertRoomForPublish(): void {
    if (this.limitBytes === 0) return;
    const free = this.freeBytes();
    if (free < this.limitBytes) {
      throw new MeshError(
        'unavailable',
        `the node's data disk has ${formatBytes(free)} free, below its limit of ${formatBytes(this.limitBytes)} (--disk-free-limit): the message was not written; publishing resumes once space is freed`,
        { retryAfterMs: RETRY_AFTER_MS },
      );
    }
  }

  /** The error for a write that failed: a full disk when it is one, else the storage's own reason. */
  writeFailed(err: unknown): MeshError {
    if (err instanceof MeshError) return err;
    // lmdb rejects a failed commit with a generic error; its `commitError` promise carries the cause and is
    // rejected right after. Nothing else awaits it: handle it here so it is not an unhandled rejection.
    const commitError = (err as { commitError?: unknown } | null)?.commitError;
    if (commitError instanceof Promise) commitError.catch(() => undefined);
    const free = this.freeBytes(true);
    if (free < FULL_BELOW_BYTES) {
      return new MeshError('unavailable', `the node's data disk is full (${formatBytes(free)} free): nothing was written; writes resume once space is freed`, {
        cause: err,
        retryAfterMs: RETRY_AFTER_MS,
      });
    }
    const reason = err instanceof Error ? err.message : String(err);
    return new MeshError('unavailable', `storage write failed: ${reason}`, { cause: err });
  }

  private freeBytes(fresh = false): number {
    const now = Date.now();
    if (fresh || now - this.readAt >= REFRESH_MS) {
      try {
        const stats = statfsSync(this.dir);
        this.free = stats.bavail * stats.bsize;
      } catch {
        this.free = Number.POSITIVE_INFINITY; // cannot tell: let the write itself decide
      }
      this.readAt = now;
    }
    return this.free;
  }
}
