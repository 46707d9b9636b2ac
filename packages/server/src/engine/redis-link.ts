import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { createClient, type RedisClientType } from 'redis';
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

/**
 * The engine's connection to Redis: one client for commands and scripts and
 * one for sharded pub/sub, with fail-fast semantics. While Redis is
 * unreachable every command rejects at once with `unavailable` (nothing is
 * queued to run later behind the caller's back), and the link reports its
 * state so the node can surface it.
 *
 * Events: `state` (RedisLinkState), `reconnected` (after a link came back:
 * pub/sub messages may have been missed meanwhile).
 */
export class RedisLink extends EventEmitter {
  private readonly commands: RedisClientType;
  private readonly subscriber: RedisClientType;
  private readonly timeoutMs: number;
  private readonly channels = new Map<string, Listener>();
  private currentState: RedisLinkState = 'connecting';
  private everUp = false;
  private closing = false;

  constructor(private readonly options: RedisLinkOptions) {
    super();
    this.timeoutMs = options.commandTimeoutMs ?? 5000;
    const maxDelay = options.maxReconnectDelayMs ?? 2000;
    const clientOptions = {
      url: options.url,
      RESP: 3 as const,
      disableOfflineQueue: true,
      socket: {
        connectTimeout: 2000,
        reconnectStrategy: (retries: number) => Math.min(50 * 2 ** Math.min(retries, 6), maxDelay),
      },
    };
    this.commands = createClient(clientOptions) as unknown as RedisClientType;
    this.subscriber = createClient(clientOptions) as unknown as RedisClientType;
    for (const [name, client] of [
      ['commands', this.commands],
      ['subscriber', this.subscriber],
    ] as const) {
      // Errors are reported by state; an unhandled 'error' event would kill the process.
      client.on('error', (err: Error) => {
        this.options.logger?.debug({ err, client: name }, 'redis client error');
        this.updateState();
      });
      client.on('ready', () => this.updateState());
      client.on('end', () => this.updateState());
      client.on('reconnecting', () => this.updateState());
    }
  }

  get state(): RedisLinkState {
    return this.currentState;
  }

  get url(): string {
    return this.options.url;
  }

  async connect(): Promise<void> {
    await Promise.all([this.commands.connect(), this.subscriber.connect()]);
    this.updateState();
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.allSettled([this.commands.close(), this.subscriber.close()]);
    this.currentState = 'down';
  }

  /** Runs one command; rejects with `unavailable` when Redis cannot answer. */
  async command<T = unknown>(args: Array<string | number>): Promise<T> {
    if (!this.commands.isReady) throw this.unavailable();
    try {
      return (await this.commands.sendCommand(args.map(String), { timeout: this.timeoutMs })) as T;
    } catch (err) {
      throw this.translate(err);
    }
  }

  /** Runs a Lua script by its SHA, loading it first when Redis does not know it. */
  async eval<T = unknown>(script: LuaScript, keys: string[], args: Array<string | number>): Promise<T> {
    const tail = [String(keys.length), ...keys, ...args.map(String)];
    try {
      return await this.command<T>(['EVALSHA', script.sha, ...tail]);
    } catch (err) {
      if (!(err instanceof MeshError) || !/NOSCRIPT/.test(err.message)) throw err;
      return this.command<T>(['EVAL', script.source, ...tail]);
    }
  }

  /** Subscribes to a sharded channel (SSUBSCRIBE); one listener per channel. */
  async subscribe(channel: string, listener: Listener): Promise<void> {
    this.channels.set(channel, listener);
    if (!this.subscriber.isReady) return; // resubscribed by the client on reconnect
    try {
      await this.subscriber.sSubscribe(channel, listener);
    } catch (err) {
      throw this.translate(err);
    }
  }

  async unsubscribe(channel: string): Promise<void> {
    this.channels.delete(channel);
    if (!this.subscriber.isReady) return;
    try {
      await this.subscriber.sUnsubscribe(channel);
    } catch (err) {
      throw this.translate(err);
    }
  }

  private updateState(): void {
    if (this.closing) return;
    const next: RedisLinkState = this.commands.isReady && this.subscriber.isReady ? 'up' : this.everUp ? 'down' : 'connecting';
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
    for (const [channel, listener] of this.channels) {
      try {
        await this.subscriber.sSubscribe(channel, listener);
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
    if (/Timeout|ClientClosed|ClientOffline|SocketClosed|ConnectionTimeout/i.test(`${name} ${message}`) || !this.commands.isReady) {
      return this.unavailable(err);
    }
    if (/^NOGROUP|NOSCRIPT|BUSYGROUP/.test(message)) return new MeshError('internal', message, { cause: err });
    if (/^(LOADING|MASTERDOWN|READONLY|CLUSTERDOWN|TRYAGAIN)/.test(message)) return this.unavailable(err);
    if (/^MESHMQ_NOT_FOUND /.test(message)) return new MeshError('not_found', message.replace(/^MESHMQ_NOT_FOUND /, ''));
    return new MeshError('internal', `Redis: ${message}`, { cause: err });
  }
}
