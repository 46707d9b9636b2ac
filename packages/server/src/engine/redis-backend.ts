import { performance } from 'node:perf_hooks';
import { MeshError } from '@meshmq/shared';
import type { Logger } from 'pino';
import { ErrorReply } from 'redis';
import type { ReplicatedWrite } from './redis-replicated-writes.js';

export type Listener = (message: string, channel: string) => void;

/**
 * What the link needs of a connection to Redis, whatever the topology. A
 * backend never queues a command while it has no connection and never
 * sends one again by itself: a command is written once, to one server.
 */
export interface Backend {
  /** True while commands can be written to the primary (each shard's, on Redis Cluster). */
  readonly ready: boolean;
  connect(): Promise<void>;
  close(): Promise<void>;
  /** Aborting `signal` withdraws the command while it waits to be written; once written it is ignored. */
  send(args: Array<string | Buffer>, routeKey: string | undefined, signal: AbortSignal): Promise<unknown>;
  /**
   * Writes `write`, then waits for `replicas` replicas to confirm it (Redis
   * WAIT, at most `timeoutMs`) on the same connection as the write, so the
   * count is of replicas that have this write of this server. Aborting
   * `signal` withdraws it while it waits to be sent.
   */
  writeReplicated(write: string[], routeKey: string | undefined, replicas: number, timeoutMs: number, signal: AbortSignal): ReplicatedWrite;
  sSubscribe(channel: string, listener: Listener, buffers?: boolean): Promise<unknown>;
  sUnsubscribe(channel: string): Promise<unknown>;
  /**
   * For how many ms the connection that `routeKey`'s commands go to (with
   * `replicated`, the connection of writes that wait for replicas) has owed
   * an answer without giving any; 0 while it owes none. See {@link Pipeline}.
   */
  silence(routeKey: string | undefined, replicated?: boolean): number;
  /** Calls `changed` on every event that may change readiness. */
  watch(changed: (err?: Error) => void): void;
  /**
   * The link saw a sign that the server it writes to may be gone or no
   * longer the primary: a command got no answer in time, or a write was
   * refused with READONLY. The backend checks and drops the connection if so.
   */
  suspect(sign: 'no-answer' | 'readonly'): void;
}

export interface RedisAddress {
  host: string;
  port: number;
}

/**
 * Parses the Redis URL forms MeshMQ accepts:
 * `redis://host:port[/db]` (standalone), `redis+sentinel://host:port[,host:port...]/<master-name>`
 * and `redis+cluster://host:port[,host:port...]` (credentials as in redis://).
 */
export function parseRedisUrl(url: string): { mode: 'standalone' | 'sentinel' | 'cluster'; nodes: RedisAddress[]; name?: string; auth: string } {
  const match = /^(redis|rediss|redis\+sentinel|redis\+cluster):\/\/(?:([^@/]*)@)?([^/]+)(?:\/(.*))?$/.exec(url);
  if (!match)
    throw new MeshError(
      'bad_request',
      `REDIS_URL: cannot read '${url}'; expected redis://host:port, redis+sentinel://host:port,.../master or redis+cluster://host:port,...`,
    );
  const [, scheme, auth = '', hosts = '', path = ''] = match;
  const nodes = hosts.split(',').map((h) => {
    const i = h.lastIndexOf(':');
    return i > 0 ? { host: h.slice(0, i), port: Number(h.slice(i + 1)) } : { host: h, port: scheme === 'redis+sentinel' ? 26379 : 6379 };
  });
  if (scheme === 'redis+sentinel') {
    if (!path) throw new MeshError('bad_request', 'REDIS_URL: redis+sentinel:// needs the master name as its path');
    return { mode: 'sentinel', nodes, name: path, auth };
  }
  return { mode: scheme === 'redis+cluster' ? 'cluster' : 'standalone', nodes, auth };
}

export interface BackendOptions {
  /** node-redis client options every connection gets. */
  clientOptions: Record<string, unknown>;
  /** Longest wait between reconnect attempts. */
  maxReconnectDelayMs: number;
  /** How long a PING that checks a suspect connection may take. */
  probeTimeoutMs: number;
  /** Open a connection of its own for writes that wait for replicas (publishes with `--redis-replicas`). */
  replicatedWrites: boolean;
  logger?: Logger;
}

/** How often the running clock ticks, and the most one of its ticks may add. */
const CLOCK_TICK_MS = 50;
const CLOCK_TICK_CAP_MS = 100;

/**
 * A clock of the node's own running time, in ms: it follows the wall clock
 * while the event loop turns, but adds at most CLOCK_TICK_CAP_MS across a
 * stretch in which the loop did not come round to tick (the node was busy
 * with something else, or stopped), since the node read no answer then
 * either: Redis cannot be blamed for that time. Its timer does not keep the
 * process alive.
 */
class RunningClock {
  private at = performance.now();
  private running = 0;
  private timer: NodeJS.Timeout | undefined;

  now(): number {
    if (!this.timer) {
      this.timer = setInterval(() => this.tick(), CLOCK_TICK_MS);
      this.timer.unref();
    }
    return this.running + Math.min(performance.now() - this.at, CLOCK_TICK_CAP_MS);
  }

  private tick(): void {
    const now = performance.now();
    this.running += Math.min(now - this.at, CLOCK_TICK_CAP_MS);
    this.at = now;
  }
}

const runningClock = new RunningClock();

/**
 * How one connection's pipeline of commands moves. Redis answers the
 * commands of a connection in the order they were sent, so any answer (a
 * reply or an error reply) shows that it is alive and working through what
 * it was sent; only a connection that owes answers and gives none is silent.
 * This is what a command deadline measures (RedisLink): the time a command
 * waits behind the ones sent before it, on a busy but answering Redis or in
 * the node's own write queue, is not silence, and neither is time in which
 * the node's own event loop was held up (it measures the node's running
 * time, see RunningClock).
 */
export class Pipeline {
  private owed = 0;
  /** When (running time) the pipeline last answered, or started to owe after owing nothing. */
  private since = 0;

  constructor(private readonly idle?: () => void) {}

  /** Counts `reply` as owed until it settles. A withdrawal (never sent) or a dropped connection is no answer. */
  track<T>(reply: Promise<T>): Promise<T> {
    if (this.owed++ === 0) this.since = runningClock.now();
    reply.then(
      () => this.settled(true),
      (err: unknown) => this.settled(err instanceof ErrorReply),
    );
    return reply;
  }

  /** Ms of the node's running time since the pipeline last answered, while it owes answers; 0 when it owes none. */
  silence(): number {
    return this.owed === 0 ? 0 : runningClock.now() - this.since;
  }

  private settled(answered: boolean): void {
    this.owed--;
    if (answered) this.since = runningClock.now();
    if (this.owed === 0) this.idle?.();
  }
}
