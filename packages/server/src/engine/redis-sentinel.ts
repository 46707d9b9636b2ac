import { describeError } from '@meshmq/shared';
import type { Logger } from 'pino';
import { createClient } from 'redis';
import type { RedisAddress } from './redis-backend.js';
import type { LocatorEvents, PrimaryLocator, PrimaryTarget } from './redis-primary.js';

export interface SentinelLocatorOptions {
  sentinels: RedisAddress[];
  /** The master name the Sentinels monitor. */
  name: string;
  /** The URL of a primary at an address (with the credentials of REDIS_URL). */
  primaryUrl: (address: RedisAddress) => string;
  clientOptions: Record<string, unknown>;
  logger?: Logger;
}

/** The Sentinel channels a locator listens to. */
const EVENTS = ['+switch-master', '+odown', '-odown', '+sdown'];
/** Wait before listening to the next Sentinel when one goes away. */
const WATCH_RETRY_MS = 500;

interface SentinelClient {
  on(event: string, listener: (...args: never[]) => void): unknown;
  connect(): Promise<unknown>;
  destroy(): void;
  sendCommand(args: string[]): Promise<unknown>;
  subscribe(channels: string[], listener: (message: string, channel: string) => void): Promise<unknown>;
}

/**
 * Finds the primary through Sentinel: asks the Sentinels in turn which
 * server is the master of `name`, and listens to one of them for
 * `+switch-master`, `+odown`/`-odown` and `+sdown` of that master, so a node
 * learns of a failover when Sentinel decides it rather than when its next
 * command fails.
 */
export class SentinelLocator implements PrimaryLocator {
  readonly checksRole = true;
  private watcher: SentinelClient | undefined;
  private closed = false;
  private next = 0;

  constructor(private readonly options: SentinelLocatorOptions) {}

  async locate(): Promise<PrimaryTarget> {
    const failures: string[] = [];
    for (const sentinel of this.options.sentinels) {
      const client = this.client(sentinel);
      try {
        await client.connect();
        const reply = await client.sendCommand(['SENTINEL', 'GET-MASTER-ADDR-BY-NAME', this.options.name]);
        if (!Array.isArray(reply) || reply.length < 2) {
          failures.push(`${sentinel.host}:${sentinel.port} knows no master '${this.options.name}'`);
          continue;
        }
        const address = { host: String(reply[0]), port: Number(reply[1]) };
        return { url: this.options.primaryUrl(address), address: `${address.host}:${address.port}` };
      } catch (err) {
        failures.push(`${sentinel.host}:${sentinel.port}: ${describeError(err)}`);
      } finally {
        client.destroy();
      }
    }
    throw new Error(`no Sentinel named the primary of '${this.options.name}': ${failures.join('; ')}`);
  }

  watch(events: LocatorEvents): void {
    void this.listen(events);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.watcher?.destroy();
  }

  /** Subscribes to one Sentinel's notifications; when it goes away, to the next. */
  private async listen(events: LocatorEvents): Promise<void> {
    while (!this.closed) {
      const sentinel = this.options.sentinels[this.next++ % this.options.sentinels.length]!;
      const client = this.client(sentinel);
      const gone = new Promise<void>((resolve) => {
        client.on('error', () => resolve());
        client.on('end', () => resolve());
      });
      try {
        await client.connect();
        this.watcher = client;
        await client.subscribe(EVENTS, (message, channel) => this.onEvent(events, channel, message));
        await gone;
      } catch (err) {
        this.options.logger?.debug({ err, sentinel }, 'cannot listen to this Sentinel; trying the next');
      }
      client.destroy();
      if (!this.closed) await new Promise((resolve) => setTimeout(resolve, WATCH_RETRY_MS));
    }
  }

  private onEvent(events: LocatorEvents, channel: string, message: string): void {
    const words = message.split(' ');
    if (channel === '+switch-master') {
      // <name> <old ip> <old port> <new ip> <new port>
      if (words[0] !== this.options.name) return;
      const to = `${words[3]}:${words[4]}`;
      this.options.logger?.warn({ from: `${words[1]}:${words[2]}`, to }, 'Sentinel switched the Redis primary');
      events.switched(to);
      return;
    }
    // master <name> <ip> <port> ...
    if (words[0] !== 'master' || words[1] !== this.options.name) return;
    const address = `${words[2]}:${words[3]}`;
    if (channel === '+odown') {
      this.options.logger?.warn({ primary: address }, 'the Sentinels agree the Redis primary is down; refusing writes until a failover or its return');
      events.down(address);
    } else if (channel === '-odown') {
      events.back(address);
    } else if (channel === '+sdown') {
      events.suspect(address);
    }
  }

  private client(sentinel: RedisAddress): SentinelClient {
    const { socket } = this.options.clientOptions as { socket?: object };
    const client = createClient({ socket: { ...socket, host: sentinel.host, port: sentinel.port, reconnectStrategy: false } }) as unknown as SentinelClient;
    // Without a listener an 'error' event would end the process.
    client.on('error', () => undefined);
    return client;
  }
}
