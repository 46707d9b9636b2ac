import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import {
  AbortError,
  ClientClosedError,
  ClientOfflineError,
  CommandTimeoutDuringMaintenanceError,
  ConnectionTimeoutError,
  ErrorReply,
  RootNodesUnavailableError,
  createClient,
  createCluster,
  createSentinel,
} from 'redis';
import { MeshError, describeError } from '@meshmq/shared';
import type { Logger } from 'pino';

export interface RedisLinkOptions {
  /** `redis://[user:password@]host:port[/db]`. */
  url: string;
  /**
   * Per-command deadline. A command still waiting to be written by then is
   * withdrawn and fails with `unavailable`; one written but not answered
   * fails with `maybe_stored`. Default 5 s.
   */
  commandTimeoutMs?: number;
  /** Longest wait between reconnect attempts. Default 2 s. */
  maxReconnectDelayMs?: number;
  logger?: Logger;
}

export type RedisLinkState = 'connecting' | 'up' | 'down';

export interface LuaScript {
  source: string;
  sha: string;
}

export function luaScript(source: string): LuaScript {
  return { source, sha: createHash('sha1').update(source).digest('hex') };
}

type Listener = (message: string, channel: string) => void;

/** What the link needs of a node-redis client, whatever the topology. */
interface Backend {
  readonly ready: boolean;
  connect(): Promise<void>;
  close(): Promise<void>;
  /** Aborting `signal` withdraws the command while it waits to be written; once written it is ignored. */
  send(args: string[], routeKey: string | undefined, signal: AbortSignal): Promise<unknown>;
  sSubscribe(channel: string, listener: Listener, buffers?: boolean): Promise<unknown>;
  sUnsubscribe(channel: string): Promise<unknown>;
  /** Calls `changed` on every client event that may change readiness. */
  watch(changed: (err?: Error) => void): void;
}

interface AnyClient {
  isReady: boolean;
  on(event: string, listener: (...args: never[]) => void): unknown;
  connect(): Promise<unknown>;
  close(): Promise<unknown>;
  sSubscribe(channel: string, listener: Listener, buffers?: boolean): Promise<unknown>;
  sUnsubscribe(channel: string): Promise<unknown>;
}

function watchClient(client: AnyClient, changed: (err?: Error) => void): void {
  // An 'error' event without a listener would kill the process: report it as state instead.
  client.on('error', (err: Error) => changed(err));
  for (const event of ['ready', 'end', 'reconnecting', 'connect']) client.on(event, () => changed());
}

/**
 * Parses the Redis URL forms MeshMQ accepts:
 * `redis://host:port[/db]` (standalone), `redis+sentinel://host:port[,host:port...]/<master-name>`
 * and `redis+cluster://host:port[,host:port...]` (credentials as in redis://).
 */
export function parseRedisUrl(url: string): { mode: 'standalone' | 'sentinel' | 'cluster'; nodes: Array<{ host: string; port: number }>; name?: string; auth: string } {
  const match = /^(redis|rediss|redis\+sentinel|redis\+cluster):\/\/(?:([^@/]*)@)?([^/]+)(?:\/(.*))?$/.exec(url);
  if (!match) throw new MeshError('bad_request', `REDIS_URL: cannot read '${url}'; expected redis://host:port, redis+sentinel://host:port,.../master or redis+cluster://host:port,...`);
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

function createBackend(url: string, clientOptions: Record<string, unknown>): Backend {
  const parsed = parseRedisUrl(url);
  const authUrl = (n: { host: string; port: number }) => `redis://${parsed.auth ? `${parsed.auth}@` : ''}${n.host}:${n.port}`;
  if (parsed.mode === 'standalone') {
    const commands = createClient({ ...clientOptions, url }) as unknown as AnyClient & { sendCommand(a: string[], o: object): Promise<unknown> };
    const subscriber = createClient({ ...clientOptions, url }) as unknown as AnyClient;
    return {
      get ready() {
        return commands.isReady && subscriber.isReady;
      },
      connect: async () => {
        await Promise.all([commands.connect(), subscriber.connect()]);
      },
      close: async () => {
        await Promise.allSettled([commands.close(), subscriber.close()]);
      },
      send: (args, _key, abortSignal) => commands.sendCommand(args, { abortSignal }),
      sSubscribe: (channel, listener, buffers) => subscriber.sSubscribe(channel, listener, buffers),
      sUnsubscribe: (channel) => subscriber.sUnsubscribe(channel),
      watch: (changed) => {
        watchClient(commands, changed);
        watchClient(subscriber, changed);
      },
    };
  }
  if (parsed.mode === 'sentinel') {
    const sentinel = createSentinel({
      name: parsed.name!,
      sentinelRootNodes: parsed.nodes,
      nodeClientOptions: clientOptions,
      sentinelClientOptions: { socket: clientOptions.socket },
      // One master connection: WAIT counts the replicas that have this connection's writes.
      masterPoolSize: 1,
    } as never) as unknown as AnyClient & { sendCommand(r: boolean, a: string[], o: object): Promise<unknown> };
    return {
      get ready() {
        return sentinel.isReady;
      },
      connect: async () => {
        await sentinel.connect();
      },
      close: async () => {
        await sentinel.close();
      },
      send: (args, _key, abortSignal) => sentinel.sendCommand(false, args, { abortSignal }),
      sSubscribe: (channel, listener, buffers) => sentinel.sSubscribe(channel, listener, buffers),
      sUnsubscribe: (channel) => sentinel.sUnsubscribe(channel),
      watch: (changed) => watchClient(sentinel, changed),
    };
  }
  const cluster = createCluster({
    rootNodes: parsed.nodes.map((n) => ({ url: authUrl(n) })),
    defaults: clientOptions,
  } as never) as unknown as AnyClient & { sendCommand(k: string | undefined, r: boolean, a: string[], o: object): Promise<unknown> };
  return {
    get ready() {
      return cluster.isReady;
    },
    connect: async () => {
      await cluster.connect();
    },
    close: async () => {
      await cluster.close();
    },
    send: (args, key, abortSignal) => cluster.sendCommand(key, false, args, { abortSignal }),
    sSubscribe: (channel, listener, buffers) => cluster.sSubscribe(channel, listener, buffers),
    sUnsubscribe: (channel) => cluster.sUnsubscribe(channel),
    watch: (changed) => watchClient(cluster, changed),
  };
}

/**
 * The engine's connection to Redis (standalone, Sentinel or Cluster, chosen
 * by the URL): commands, scripts and sharded pub/sub, with fail-fast
 * semantics. While Redis is unreachable every command rejects at once with
 * `unavailable` (nothing is queued to run later behind the caller's back),
 * and the link reports its state so the node can surface it.
 *
 * Events: `state` (RedisLinkState), `reconnected` (after a link came back:
 * pub/sub messages may have been missed meanwhile).
 */
export class RedisLink extends EventEmitter {
  private readonly backend: Backend;
  private readonly timeoutMs: number;
  private readonly channels = new Map<string, { listener: Listener; buffers: boolean }>();
  private currentState: RedisLinkState = 'connecting';
  private everUp = false;
  private closing = false;

  constructor(private readonly options: RedisLinkOptions) {
    super();
    this.timeoutMs = options.commandTimeoutMs ?? 5000;
    const maxDelay = options.maxReconnectDelayMs ?? 2000;
    this.backend = createBackend(options.url, {
      RESP: 3,
      disableOfflineQueue: true,
      socket: {
        connectTimeout: 2000,
        reconnectStrategy: (retries: number) => Math.min(50 * 2 ** Math.min(retries, 6), maxDelay),
      },
    });
    this.backend.watch((err) => {
      if (err) this.options.logger?.debug({ err }, 'redis client error');
      this.updateState();
    });
  }

  get state(): RedisLinkState {
    return this.currentState;
  }

  get url(): string {
    return this.options.url;
  }

  async connect(): Promise<void> {
    try {
      await this.backend.connect();
    } catch (err) {
      throw new MeshError('unavailable', `cannot connect to Redis at ${redact(this.options.url)}: ${describeError(err)}`, { cause: err });
    }
    this.updateState();
  }

  async close(): Promise<void> {
    this.closing = true;
    await this.backend.close().catch(() => undefined);
    this.currentState = 'down';
  }

  /**
   * Runs one command. Rejects with `unavailable` when it never reached Redis,
   * with `maybe_stored` when a write reached Redis but its answer did not
   * come back, and otherwise as {@link translateRedisError} maps Redis's
   * error reply. `routeKey` picks the shard on Redis Cluster (a key the
   * command touches).
   */
  async command<T = unknown>(args: Array<string | number>, routeKey?: string): Promise<T> {
    const key = routeKey ?? keyOf(args);
    const command: CommandInfo = { name: String(args[0]).toUpperCase(), key, timeoutMs: this.timeoutMs };
    if (!this.backend.ready) throw unreachable(command);
    const withdraw = new AbortController();
    const sent = this.backend.send(args.map(String), key, withdraw.signal);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        // A command still queued in node-redis is withdrawn: `sent` rejects with AbortError in this turn's
        // microtasks, before the setImmediate below. A written one ignores the abort: its fate is unknown.
        withdraw.abort();
        setImmediate(() => reject(new NoAnswerError()));
      }, this.timeoutMs);
    });
    try {
      return (await Promise.race([sent, deadline])) as T;
    } catch (err) {
      throw translateRedisError(err, command);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Runs a Lua script by its SHA, loading it first when Redis does not know it. */
  async eval<T = unknown>(script: LuaScript, keys: string[], args: Array<string | number>): Promise<T> {
    const tail = [String(keys.length), ...keys, ...args.map(String)];
    try {
      return await this.command<T>(['EVALSHA', script.sha, ...tail], keys[0]);
    } catch (err) {
      if (!(err instanceof MeshError && err.cause instanceof ErrorReply && err.cause.message.startsWith('NOSCRIPT'))) throw err;
      return this.command<T>(['EVAL', script.source, ...tail], keys[0]);
    }
  }

  /**
   * Subscribes to a sharded channel (SSUBSCRIBE); one listener per channel,
   * kept across reconnects. `buffers` hands the listener Buffers, not strings.
   */
  async subscribe(channel: string, listener: Listener, buffers = false): Promise<void> {
    this.channels.set(channel, { listener, buffers });
    if (!this.backend.ready) return; // subscribed by resubscribe() once the link is back
    try {
      await this.backend.sSubscribe(channel, listener, buffers);
    } catch (err) {
      throw translateRedisError(err, { name: 'SSUBSCRIBE', key: channel, timeoutMs: this.timeoutMs });
    }
  }

  async unsubscribe(channel: string): Promise<void> {
    this.channels.delete(channel);
    if (!this.backend.ready) return;
    try {
      await this.backend.sUnsubscribe(channel);
    } catch (err) {
      throw translateRedisError(err, { name: 'SUNSUBSCRIBE', key: channel, timeoutMs: this.timeoutMs });
    }
  }

  /**
   * Sends a command whose arguments may be Buffers and whose reply the
   * caller decodes itself (the Socket.IO adapter's binary messages), with
   * the same deadline as every command. Errors are node-redis's own.
   */
  sendRaw(args: Array<string | Buffer>, routeKey: string | undefined): Promise<unknown> {
    return this.backend.send(args as string[], routeKey, AbortSignal.timeout(this.timeoutMs));
  }

  private updateState(): void {
    if (this.closing) return;
    const next: RedisLinkState = this.backend.ready ? 'up' : this.everUp ? 'down' : 'connecting';
    if (next === this.currentState) return;
    const wasDown = this.currentState === 'down';
    this.currentState = next;
    if (next === 'up') {
      if (wasDown) {
        void this.resubscribe().then(() => this.emit('reconnected'));
      }
      this.everUp = true;
    }
    this.options.logger?.[next === 'up' ? 'info' : 'warn']({ redis: this.options.url, state: next }, `redis link ${next}`);
    this.emit('state', next);
  }

  /** node-redis restores subscriptions itself; this covers channels added while down. */
  private async resubscribe(): Promise<void> {
    for (const [channel, { listener, buffers }] of this.channels) {
      try {
        await this.backend.sSubscribe(channel, listener, buffers);
      } catch (err) {
        this.options.logger?.warn({ err, channel }, 'resubscribe failed');
      }
    }
  }
}

/**
 * A field/value reply (HGETALL, CONFIG GET, a stream entry's fields) as a
 * record of strings, whether Redis sent a flat list (RESP2, stream entries)
 * or a map (RESP3).
 */
export function fieldsOf(reply: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (Array.isArray(reply)) {
    for (let i = 0; i + 1 < reply.length; i += 2) out[String(reply[i])] = String(reply[i + 1]);
  } else if (reply !== null && typeof reply === 'object') {
    for (const [k, v] of Object.entries(reply)) out[k] = String(v);
  }
  return out;
}

/** Commands whose first argument after the name is a key, for routing on Redis Cluster. */
function keyOf(args: Array<string | number>): string | undefined {
  const name = String(args[0]).toUpperCase();
  if (['XRANGE', 'HMGET', 'SADD', 'SMEMBERS', 'SET', 'HSET', 'HGETALL', 'HDEL', 'DEL', 'GET'].includes(name)) return String(args[1]);
  if (name === 'XINFO' || name === 'XGROUP') return String(args[2]);
  return undefined;
}

/** A command as error messages name it. */
interface CommandInfo {
  /** Upper-case command name. */
  name: string;
  /** The key it touches, when known. */
  key: string | undefined;
  timeoutMs: number;
}

/** The command deadline passed after the command was written: Redis may or may not have run it. */
class NoAnswerError extends Error {
  constructor() {
    super('no answer before the deadline');
  }
}

/** Commands that change nothing: when their answer is lost, nothing was stored either. */
const READ_ONLY = new Set(['GET', 'HGET', 'HGETALL', 'HMGET', 'SMEMBERS', 'SCARD', 'XRANGE', 'XREVRANGE', 'XLEN', 'XINFO', 'XPENDING', 'EXISTS', 'TYPE', 'SCAN', 'INFO', 'CONFIG', 'PING', 'SSUBSCRIBE', 'SUNSUBSCRIBE']);

/**
 * Error replies that mean Redis refused the command without running it, by
 * their first word, with what to tell the caller. Each maps to `unavailable`:
 * nothing was stored, and the same request may succeed later.
 */
const REFUSALS: Record<string, string> = {
  OOM: 'Redis is out of memory (maxmemory reached) and refuses writes',
  BUSY: 'Redis is busy running a long script and answers nothing else until it ends',
  MISCONF: 'Redis refuses writes because it cannot persist to disk (stop-writes-on-bgsave-error)',
  NOREPLICAS: 'Redis refuses writes because too few replicas are connected (min-replicas-to-write)',
  LOADING: 'Redis is loading its dataset into memory',
  MASTERDOWN: "the Redis replica lost its link to the primary and does not serve stale data",
  READONLY: 'the Redis server is a read-only replica (a failover is under way)',
  CLUSTERDOWN: 'the Redis Cluster is down',
  TRYAGAIN: 'the Redis Cluster is moving the keys of this command',
  NOAUTH: "Redis refused the node's credentials (check the REDIS_URL user and password)",
  WRONGPASS: "Redis refused the node's credentials (check the REDIS_URL user and password)",
  NOPERM: "the node's Redis user lacks a permission it needs (check its ACL)",
};

/** The error reply raised by the MeshMQ scripts for a group or pending entry that is not there. */
const NOT_FOUND_REPLY = 'MESHMQ_NOT_FOUND ';
/** The error reply raised by the MeshMQ scripts for something past a configured limit. */
const LIMIT_REPLY = 'MESHMQ_LIMIT ';

function label(command: CommandInfo): string {
  return command.key === undefined ? command.name : `${command.name} on '${command.key}'`;
}

function unreachable(command: CommandInfo, cause?: unknown): MeshError {
  const why = cause === undefined ? '' : ` (${describeError(cause)})`;
  return new MeshError('unavailable', `Redis is unreachable${why}; ${label(command)} was not sent, nothing was stored, retry later`, { cause });
}

/**
 * Maps whatever a node-redis command rejected with to a MeshError whose
 * message names the command and says what happened:
 *
 * - the command never reached Redis (the client was offline or closed, or
 *   the deadline withdrew it from the write queue): `unavailable`;
 * - Redis refused it without running it (OOM, BUSY, MISCONF, READONLY, ...):
 *   `unavailable`;
 * - a write was sent but its answer never came (deadline, or the connection
 *   dropped): `maybe_stored`; for a read, `unavailable`;
 * - a MeshMQ script's not-found reply: `not_found`;
 * - any other error reply: `internal`, with Redis's text.
 *
 * With disableOfflineQueue, node-redis fails written and unwritten commands
 * alike with the socket's error when a connection drops; such a failure is
 * treated as "sent", the answer that is never wrong.
 */
function translateRedisError(err: unknown, command: CommandInfo): MeshError {
  if (err instanceof MeshError) return err;
  const text = describeError(err);
  const refusal = REFUSALS[text.split(' ', 1)[0]!];
  if (refusal !== undefined) {
    return new MeshError('unavailable', `${refusal}: it refused ${label(command)} (${text}); nothing was stored, retry later`, { cause: err });
  }
  if (err instanceof ErrorReply) {
    if (text.startsWith(NOT_FOUND_REPLY)) return new MeshError('not_found', text.slice(NOT_FOUND_REPLY.length), { cause: err });
    if (text.startsWith(LIMIT_REPLY)) return new MeshError('limit_exceeded', text.slice(LIMIT_REPLY.length), { cause: err });
    return new MeshError('internal', `Redis answered ${label(command)} with an error: ${text}`, { cause: err });
  }
  if (
    err instanceof ClientOfflineError ||
    err instanceof ClientClosedError ||
    err instanceof ConnectionTimeoutError ||
    err instanceof RootNodesUnavailableError
  ) {
    return unreachable(command, err);
  }
  if (err instanceof AbortError || err instanceof CommandTimeoutDuringMaintenanceError) {
    return new MeshError(
      'unavailable',
      `Redis did not take ${label(command)} within ${command.timeoutMs} ms (its connection is backed up); it was not sent, nothing was stored, retry later`,
      { cause: err },
    );
  }
  const noAnswer = err instanceof NoAnswerError;
  if (READ_ONLY.has(command.name)) {
    const lost = noAnswer ? `Redis did not answer ${label(command)} within ${command.timeoutMs} ms` : `the connection to Redis failed (${text}) before it answered ${label(command)}`;
    return new MeshError('unavailable', `${lost}; nothing was stored, retry later`, { cause: err });
  }
  const lost = noAnswer ? `Redis did not answer it within ${command.timeoutMs} ms` : `the connection to Redis failed (${text}) before the answer came`;
  return new MeshError(
    'maybe_stored',
    `${label(command)} was sent but ${lost}: it may have been stored; send the request again with the same idempotency key to find out`,
    { cause: err },
  );
}

/** The URL without its password, for messages. */
function redact(url: string): string {
  return url.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@');
}
