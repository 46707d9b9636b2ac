import { MeshError } from '@meshmq/shared';
import type { Logger } from 'pino';
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
