import { AbortError } from 'redis';

/** What a write that waits for replicas resolves to: its own reply, and WAIT's count for it. */
export interface ReplicatedWrite {
  written: Promise<unknown>;
  replicated: Promise<unknown>;
}

interface Deferred {
  promise: Promise<unknown>;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

function deferred(): Deferred {
  const d = {} as Deferred;
  d.promise = new Promise((resolve, reject) => Object.assign(d, { resolve, reject }));
  return d;
}

interface Pending {
  write: string[];
  replicas: number;
  timeoutMs: number;
  written: Deferred;
  replicated: Deferred;
}

interface Sender {
  sendCommand(args: string[], options?: object): Promise<unknown>;
}

/**
 * Writes that wait for replicas (Redis WAIT), on a connection of their own.
 * WAIT blocks its connection until enough replicas confirm or its timeout
 * passes, so on the shared connection it would hold up every other command
 * (heartbeats, reads) for as long as a replica is missing. Writes that
 * arrive while a WAIT is out are sent together once it returns, followed by
 * one WAIT: WAIT counts the replicas that have every write sent before it on
 * its connection, so one covers the whole batch, as one fsync covers a group
 * commit.
 */
export class ReplicatedWrites {
  private queue: Pending[] = [];
  private waiting = false;

  constructor(private readonly connection: Sender) {}

  /** Queues a write; aborting `signal` withdraws it while it has not been sent. */
  add(write: string[], replicas: number, timeoutMs: number, signal: AbortSignal): ReplicatedWrite {
    const entry: Pending = { write, replicas, timeoutMs, written: deferred(), replicated: deferred() };
    const withdraw = () => {
      const i = this.queue.indexOf(entry);
      if (i < 0) return;
      this.queue.splice(i, 1);
      reject(entry, new AbortError());
    };
    if (signal.aborted) {
      reject(entry, new AbortError());
    } else {
      signal.addEventListener('abort', withdraw, { once: true });
      this.queue.push(entry);
      this.flush();
    }
    return { written: entry.written.promise, replicated: entry.replicated.promise };
  }

  /** Fails every write not sent yet: the connection is gone. (Sent ones fail with it.) */
  fail(err: Error): void {
    for (const entry of this.queue.splice(0)) reject(entry, err);
  }

  private flush(): void {
    if (this.waiting || this.queue.length === 0) return;
    const batch = this.queue.splice(0);
    this.waiting = true;
    for (const { write, written } of batch) this.connection.sendCommand(write).then(written.resolve, written.reject);
    const replicas = Math.max(...batch.map((e) => e.replicas));
    const timeoutMs = Math.max(...batch.map((e) => e.timeoutMs));
    this.connection
      .sendCommand(['WAIT', String(replicas), String(timeoutMs)])
      .then(
        (count) => {
          for (const e of batch) e.replicated.resolve(count);
        },
        (err) => {
          for (const e of batch) e.replicated.reject(err);
        },
      )
      .finally(() => {
        this.waiting = false;
        this.flush();
      });
  }
}

function reject(entry: Pending, err: Error): void {
  entry.written.reject(err);
  entry.replicated.reject(err);
}
