import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { createClient, createCluster, createSentinel } from 'redis';
import { MeshError } from '@meshmq/shared';
import type { Logger } from 'pino';

export interface RedisLinkOptions {
  /** `redis://[user:password@]host:port[/db]`. */
  url: string;
  /** Per-command timeout; a command that takes longer fails with `unavailable`. Default 5 s. */
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
  send(args: string[], routeKey: string | undefined, timeout: number): Promise<unknown>;
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
      send: (args, _key, timeout) => commands.sendCommand(args, { timeout }),
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
      send: (args, _key, timeout) => sentinel.sendCommand(false, args, { timeout }),
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
    send: (args, key, timeout) => cluster.sendCommand(key, false, args, { timeout }),
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
      throw this.translate(err);
    }
    this.updateState();
  }

  async close(): Promise<void> {
    this.closing = true;
    await this.backend.close().catch(() => undefined);
    this.currentState = 'down';
  }

  /**
   * Runs one command; rejects with `unavailable` when Redis cannot answer.
   * `routeKey` picks the shard on Redis Cluster (a key the command touches).
   */
  async command<T = unknown>(args: Array<string | number>, routeKey?: string): Promise<T> {
    if (!this.backend.ready) throw this.unavailable();
    try {
      return (await this.backend.send(args.map(String), routeKey ?? keyOf(args), this.timeoutMs)) as T;
    } catch (err) {
      throw this.translate(err);
    }
  }

  /** Runs a Lua script by its SHA, loading it first when Redis does not know it. */
  async eval<T = unknown>(script: LuaScript, keys: string[], args: Array<string | number>): Promise<T> {
    const tail = [String(keys.length), ...keys, ...args.map(String)];
    try {
      return await this.command<T>(['EVALSHA', script.sha, ...tail], keys[0]);
    } catch (err) {
      if (!(err instanceof MeshError) || !/NOSCRIPT/.test(err.message)) throw err;
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
      throw this.translate(err);
    }
  }

  async unsubscribe(channel: string): Promise<void> {
    this.channels.delete(channel);
    if (!this.backend.ready) return;
    try {
      await this.backend.sUnsubscribe(channel);
    } catch (err) {
      throw this.translate(err);
    }
  }

  /**
   * Publisher and subscriber objects for @socket.io/redis-adapter's sharded
   * adapter, over this link's connections and its fail-fast commands.
   */
  adapterClients(): { pub: object; sub: object } {
    const pub = {
      sSubscribe: () => Promise.resolve(),
      sUnsubscribe: () => Promise.resolve(),
      sPublish: (channel: string, payload: string | Buffer) =>
        this.backend.send(['SPUBLISH', channel, payload as string], channel, this.timeoutMs),
      sendCommand: (args: string[]) => this.backend.send(args, args[2], this.timeoutMs),
    };
    // The adapter does not catch subscription failures: go through subscribe(), which never rejects while
    // Redis is down and subscribes again after a reconnect.
    const sub = {
      sSubscribe: (channel: string, listener: Listener, buffers?: boolean) =>
        this.subscribe(channel, listener, buffers ?? false).catch((err) =>
          this.options.logger?.warn({ err, channel }, 'Socket.IO adapter subscription failed; retried on reconnect'),
        ),
      sUnsubscribe: (channel: string) => this.unsubscribe(channel).catch(() => undefined),
      sPublish: pub.sPublish,
      sendCommand: pub.sendCommand,
    };
    return { pub, sub };
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

  private unavailable(cause?: unknown): MeshError {
    return new MeshError('unavailable', 'Redis is unreachable; nothing was stored, retry later', { cause });
  }

  private translate(err: unknown): MeshError {
    if (err instanceof MeshError) return err;
    const message = err instanceof Error ? err.message : String(err);
    const name = err instanceof Error ? err.name : '';
    if (/Timeout|ClientClosed|ClientOffline|SocketClosed|ConnectionTimeout|ECONNREFUSED|ECONNRESET/i.test(`${name} ${message}`) || !this.backend.ready) {
      return this.unavailable(err);
    }
    if (/^NOGROUP|NOSCRIPT|BUSYGROUP/.test(message)) return new MeshError('internal', message, { cause: err });
    if (/^(LOADING|MASTERDOWN|READONLY|CLUSTERDOWN|TRYAGAIN)/.test(message)) return this.unavailable(err);
    if (/^MESHMQ_NOT_FOUND /.test(message)) return new MeshError('not_found', message.replace(/^MESHMQ_NOT_FOUND /, ''));
    if (/^MESHMQ_LIMIT /.test(message)) return new MeshError('limit_exceeded', message.replace(/^MESHMQ_LIMIT /, ''));
    return new MeshError('internal', `Redis: ${message}`, { cause: err });
  }
}

/** Commands whose first argument after the name is a key, for routing on Redis Cluster. */
function keyOf(args: Array<string | number>): string | undefined {
  const name = String(args[0]).toUpperCase();
  if (['XRANGE', 'HMGET', 'SADD', 'SMEMBERS', 'SET', 'HSET', 'HGETALL', 'HDEL', 'DEL', 'GET'].includes(name)) return String(args[1]);
  if (name === 'XINFO' || name === 'XGROUP') return String(args[2]);
  return undefined;
}
