import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { describeError, MeshError } from '@meshmq/shared';
import type { Logger } from 'pino';
import { ErrorReply } from 'redis';
import { type Backend, type BackendOptions, type Listener, parseRedisUrl, type RedisAddress } from './redis-backend.js';
import { clusterBackend } from './redis-cluster-backend.js';
import { type CommandInfo, NoAnswerError, redact, translateRedisError, unreachable } from './redis-errors.js';
import { PrimaryBackend, type PrimaryTarget } from './redis-primary.js';
import { SentinelLocator } from './redis-sentinel.js';

/**
 * Default command timeout: how long the connection a command went on may
 * answer nothing at all while it owes answers before the command fails (see
 * {@link RedisLink.command}). Long enough for any one script on a healthy
 * Redis, short enough that a primary that stopped answering (a host gone, a
 * network cut, which no socket error reports) is noticed within about a
 * second. A publish that waits for replicas gets WAIT's own timeout on top.
 */
export const DEFAULT_COMMAND_TIMEOUT_MS = 1000;
/** Default longest wait between two reconnect attempts. */
export const DEFAULT_MAX_RECONNECT_DELAY_MS = 2000;
/** How long opening a TCP connection to Redis or Sentinel may take. */
const CONNECT_TIMEOUT_MS = 2000;
/** Bytes of commands node-redis may hand to a connection's socket in one turn before it waits for them to drain. */
const WRITE_HIGH_WATER_MARK = 1024 * 1024;

export interface RedisLinkOptions {
  /** `redis://[user:password@]host:port[/db]`, `redis+sentinel://...` or `redis+cluster://...`. */
  url: string;
  /**
   * Command timeout: a command fails once the connection it went on has
   * owed answers and given none for this long (time spent behind other
   * commands that Redis keeps answering does not count). A command still
   * waiting to be written by then is withdrawn and fails with `unavailable`;
   * one written fails with `maybe_stored`, and the connection is checked with
   * a PING (no answer to anything within the same time: it is dropped and
   * sought again). Default {@link DEFAULT_COMMAND_TIMEOUT_MS}.
   */
  commandTimeoutMs?: number;
  /** Longest wait between reconnect attempts. Default {@link DEFAULT_MAX_RECONNECT_DELAY_MS}. */
  maxReconnectDelayMs?: number;
  /** Writes will wait for replicas ({@link RedisLink.evalThenWait}): give them a connection of their own. Default false. */
  replicatedWrites?: boolean;
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

/** A script's reply and how many replicas confirmed its write (Redis WAIT on the same connection). */
export interface ReplicatedReply<T> {
  reply: T;
  replicas: number;
}

/** The backend for a Redis URL: one primary (standalone, or found by Sentinel), or a Redis Cluster. */
export function createBackend(url: string, options: BackendOptions): Backend {
  const parsed = parseRedisUrl(url);
  const authUrl = (n: RedisAddress) => `redis://${parsed.auth ? `${parsed.auth}@` : ''}${n.host}:${n.port}`;
  if (parsed.mode === 'standalone') {
    const target: PrimaryTarget = { url, address: `${parsed.nodes[0]!.host}:${parsed.nodes[0]!.port}` };
    return new PrimaryBackend({ locate: async () => target, checksRole: false }, options);
  }
  if (parsed.mode === 'sentinel') {
    const locator = new SentinelLocator({
      sentinels: parsed.nodes,
      name: parsed.name!,
      primaryUrl: authUrl,
      clientOptions: options.clientOptions,
      logger: options.logger,
    });
    return new PrimaryBackend(locator, options);
  }
  return clusterBackend(
    parsed.nodes.map((n) => ({ url: authUrl(n) })),
    options.clientOptions,
  );
}

/**
 * The engine's connection to Redis (standalone, Sentinel or Cluster, chosen
 * by the URL): commands, scripts and sharded pub/sub, with fail-fast
 * semantics. While Redis is unreachable every command rejects at once with
 * `unavailable` (nothing is queued to run later behind the caller's back,
 * nothing is sent twice), and the link reports its state so the node can
 * surface it.
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
  private ups = 0;

  constructor(private readonly options: RedisLinkOptions) {
    super();
    this.timeoutMs = options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    const maxReconnectDelayMs = options.maxReconnectDelayMs ?? DEFAULT_MAX_RECONNECT_DELAY_MS;
    this.backend = createBackend(options.url, {
      clientOptions: {
        RESP: 3,
        disableOfflineQueue: true,
        // No node-redis timeout (5 s by default, counted from the call, ending in a TimeoutError without a message):
        // the link's own deadline decides, by the connection's silence rather than the length of the node's queue.
        commandOptions: { timeout: 0 },
        socket: {
          connectTimeout: CONNECT_TIMEOUT_MS,
          // node-redis stops writing its queue when the socket's buffer passes this mark and goes on only
          // after 'drain', a turn of the event loop later: at Node's default (16 KiB, some 40 publishes) a
          // burst of commands would go out a few dozen per turn, and wait for turns of a busy node.
          writableHighWaterMark: WRITE_HIGH_WATER_MARK,
          reconnectStrategy: (retries: number) => Math.min(50 * 2 ** Math.min(retries, 6), maxReconnectDelayMs),
        },
      },
      maxReconnectDelayMs,
      probeTimeoutMs: this.timeoutMs,
      replicatedWrites: options.replicatedWrites ?? false,
      logger: options.logger,
    });
    this.backend.watch((err) => {
      if (err) this.options.logger?.debug({ err }, 'redis client error');
      this.updateState();
    });
  }

  get state(): RedisLinkState {
    return this.currentState;
  }

  /**
   * Counts the times the link came up: while it stays the same, every
   * command since went over one unbroken link (to one primary, unless
   * Redis Cluster moved a shard).
   */
  get connection(): number {
    return this.ups;
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
   *
   * The command has no fixed deadline: it fails only once its connection has
   * owed answers and given none for the command timeout (see
   * {@link deadline}). Every command of a node shares one pipelined
   * connection, and Redis answers them in order, so under a burst a command
   * waits behind thousands of others, in the node's write queue and in
   * Redis, while Redis answers each in turn: that is a busy Redis, not a
   * failed one, and failing the command would refuse work a healthy Redis is
   * doing (or, for a write already sent, answer `maybe_stored` for a write
   * that is about to succeed). How much may wait is bounded above the link,
   * by each connection's in-flight limit.
   */
  async command<T = unknown>(args: Array<string | number>, routeKey?: string): Promise<T> {
    const key = routeKey ?? keyOf(args);
    const command: CommandInfo = { name: String(args[0]).toUpperCase(), key, timeoutMs: this.timeoutMs };
    if (!this.backend.ready) throw unreachable(command);
    const withdraw = new AbortController();
    const deadline = this.deadline(key, this.timeoutMs, false, withdraw);
    try {
      return (await Promise.race([this.backend.send(args.map(String), key, withdraw.signal), deadline.passed])) as T;
    } catch (err) {
      throw this.failure(err, command);
    } finally {
      deadline.clear();
    }
  }

  /** Runs a Lua script by its SHA, loading it first when Redis does not know it. */
  async eval<T = unknown>(script: LuaScript, keys: string[], args: Array<string | number>): Promise<T> {
    const tail = [String(keys.length), ...keys, ...args.map(String)];
    try {
      return await this.command<T>(['EVALSHA', script.sha, ...tail], keys[0]);
    } catch (err) {
      if (!isNoScript(err)) throw err;
      return this.command<T>(['EVAL', script.source, ...tail], keys[0]);
    }
  }

  /**
   * Runs a script, then `WAIT replicas timeoutMs` behind it on the same
   * connection, so the count is of replicas that have this script's writes
   * on the server that ran it. (A WAIT sent later on its own could run on
   * another connection, or on a new primary after a failover, and count
   * nothing of this write.) Writes that wait for replicas share one
   * connection of their own and one WAIT per batch (ReplicatedWrites).
   * Fails like {@link eval}; when the script ran but WAIT's answer did not
   * come back, with `maybe_stored`.
   */
  async evalThenWait<T = unknown>(
    script: LuaScript,
    keys: string[],
    args: Array<string | number>,
    replicas: number,
    timeoutMs: number,
  ): Promise<ReplicatedReply<T>> {
    const tail = [String(keys.length), ...keys, ...args.map(String)];
    try {
      return await this.together<T>(['EVALSHA', script.sha, ...tail], keys[0]!, replicas, timeoutMs);
    } catch (err) {
      if (!isNoScript(err)) throw err;
      return this.together<T>(['EVAL', script.source, ...tail], keys[0]!, replicas, timeoutMs);
    }
  }

  private async together<T>(write: string[], key: string, replicas: number, waitMs: number): Promise<ReplicatedReply<T>> {
    // WAIT holds its connection silent for up to waitMs by design.
    const timeoutMs = this.timeoutMs + waitMs;
    const command: CommandInfo = { name: write[0]!, key, timeoutMs };
    if (!this.backend.ready) throw unreachable(command);
    const withdraw = new AbortController();
    const deadline = this.deadline(key, timeoutMs, true, withdraw);
    try {
      const { written, replicated } = this.backend.writeReplicated(write, key, replicas, waitMs, withdraw.signal);
      replicated.catch(() => undefined); // read below, or moot when the script failed
      let reply: T;
      try {
        reply = (await Promise.race([written, deadline.passed])) as T;
      } catch (err) {
        throw this.failure(err, command);
      }
      try {
        return { reply, replicas: Number(await Promise.race([replicated, deadline.passed])) };
      } catch (err) {
        if (err instanceof NoAnswerError) this.backend.suspect('no-answer');
        throw new MeshError(
          'maybe_stored',
          `Redis ran ${command.name} on '${key}' but its replicas' confirmation (WAIT) did not come back (${describeError(err)}): it is stored on the primary and may not survive a failover; send the request again with the same idempotency key to find out`,
          { cause: err },
        );
      }
    } finally {
      deadline.clear();
    }
  }

  /**
   * The deadline of one request: it passes once the connection the request
   * went on (`replicated`: the connection of writes that wait for replicas)
   * has owed answers and given none for `silenceMs` (Backend.silence). It
   * is checked `silenceMs` after the call and again whenever the connection
   * answered meanwhile, so a request may wait longer than `silenceMs` behind
   * others, but never on a Redis that stopped answering. When it passes, a
   * command still queued in node-redis is withdrawn (it rejects with
   * AbortError in this turn's microtasks, before `passed` rejects); a
   * written one ignores the abort, and its fate is unknown.
   *
   * Silence is counted in the node's own running time (a stretch in which
   * its event loop was held up, reading no answer and writing nothing, is
   * not Redis's silence), and each check runs after the I/O of its turn
   * (setImmediate), so answers that arrived meanwhile count first.
   */
  private deadline(routeKey: string | undefined, silenceMs: number, replicated: boolean, withdraw: AbortController): { passed: Promise<never>; clear(): void } {
    let timer: ReturnType<typeof setTimeout> | undefined;
    let cleared = false;
    const passed = new Promise<never>((_, reject) => {
      const check = (ms: number) => {
        timer = setTimeout(
          () =>
            setImmediate(() => {
              if (cleared) return;
              const silent = this.backend.silence(routeKey, replicated);
              if (silent < silenceMs) return check(silenceMs - silent);
              withdraw.abort();
              setImmediate(() => reject(new NoAnswerError()));
            }),
          ms,
        );
      };
      check(silenceMs);
    });
    passed.catch(() => undefined);
    return {
      passed,
      clear: () => {
        cleared = true;
        clearTimeout(timer);
      },
    };
  }

  /** The MeshError for a failed command; signs that the primary is gone or demoted make the backend check. */
  private failure(err: unknown, command: CommandInfo): MeshError {
    if (err instanceof NoAnswerError) this.backend.suspect('no-answer');
    if (err instanceof ErrorReply && err.message.startsWith('READONLY')) this.backend.suspect('readonly');
    return translateRedisError(err, command);
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
   * caller decodes itself (the Socket.IO adapter's binary messages). Like
   * every command it is withdrawn when its connection answers nothing for
   * the command timeout while it waits to be written. Errors are
   * node-redis's own.
   */
  sendRaw(args: Array<string | Buffer>, routeKey: string | undefined): Promise<unknown> {
    const withdraw = new AbortController();
    const deadline = this.deadline(routeKey, this.timeoutMs, false, withdraw);
    const sent = this.backend.send(args, routeKey, withdraw.signal);
    sent.then(deadline.clear, deadline.clear);
    return sent;
  }

  private updateState(): void {
    if (this.closing) return;
    const next: RedisLinkState = this.backend.ready ? 'up' : this.everUp ? 'down' : 'connecting';
    if (next === this.currentState) return;
    const wasDown = this.currentState === 'down';
    this.currentState = next;
    if (next === 'up') {
      this.ups++;
      if (wasDown) {
        void this.resubscribe().then(() => this.emit('reconnected'));
      }
      this.everUp = true;
    }
    this.options.logger?.[next === 'up' ? 'info' : 'warn']({ redis: redact(this.options.url), state: next }, `redis link ${next}`);
    this.emit('state', next);
  }

  /** Subscribes every channel on the connection that came up (a new one has none; node-redis's Cluster client restores its own). */
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

function isNoScript(err: unknown): boolean {
  return err instanceof MeshError && err.cause instanceof ErrorReply && err.cause.message.startsWith('NOSCRIPT');
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
  if (['XRANGE', 'HMGET', 'SADD', 'SMEMBERS', 'SCARD', 'SET', 'HSET', 'HGETALL', 'HDEL', 'DEL', 'GET'].includes(name)) return String(args[1]);
  if (name === 'XINFO' || name === 'XGROUP') return String(args[2]);
  return undefined;
}
