import { ClientOfflineError, createClient } from 'redis';
import { type Backend, type BackendOptions, type Listener, Pipeline } from './redis-backend.js';
import { type ReplicatedWrite, ReplicatedWrites } from './redis-replicated-writes.js';

/** Where the primary is: a URL to connect to, and its `host:port` as Sentinel names it. */
export interface PrimaryTarget {
  url: string;
  address: string;
}

/** What a locator learns about the primary between two look-ups (Sentinel's notifications). */
export interface LocatorEvents {
  /** Another server is the primary now. */
  switched(address: string): void;
  /** The primary at `address` is down by agreement (+odown): a failover follows. */
  down(address: string): void;
  /** The primary at `address` is reachable again (-odown). */
  back(address: string): void;
  /** One observer finds the primary at `address` unresponsive (+sdown). */
  suspect(address: string): void;
}

/** How a PrimaryBackend finds its primary: the URL itself, or Sentinel. */
export interface PrimaryLocator {
  /** Where the primary is now; rejects when nobody can say. */
  locate(): Promise<PrimaryTarget>;
  /** Whether the located server may not be (or no longer be) the primary, so ROLE is checked first. */
  readonly checksRole: boolean;
  /** Starts reporting what the locator learns. */
  watch?(events: LocatorEvents): void;
  close?(): Promise<void>;
}

interface NodeClient {
  readonly isReady: boolean;
  on(event: string, listener: (...args: never[]) => void): unknown;
  connect(): Promise<unknown>;
  destroy(): void;
  sendCommand(args: Array<string | Buffer>, options?: object): Promise<unknown>;
  sSubscribe(channel: string, listener: Listener, buffers?: boolean): Promise<unknown>;
  sUnsubscribe(channel: string): Promise<unknown>;
}

/** One connection to one primary: commands, sharded pub/sub and, maybe, replicated writes, opened and dropped together. */
interface Connection {
  readonly id: number;
  readonly address: string;
  readonly commands: NodeClient;
  /** How the commands connection answers (see Pipeline). */
  readonly pipeline: Pipeline;
  readonly subscriber: NodeClient;
  readonly replicated: { client: NodeClient; writes: ReplicatedWrites; pipeline: Pipeline } | undefined;
}

function clientsOf(c: Connection): NodeClient[] {
  return c.replicated ? [c.commands, c.subscriber, c.replicated.client] : [c.commands, c.subscriber];
}

/**
 * A connection to one primary: the server of a `redis://` URL, or the one
 * Sentinel names. It never reconnects behind a command's back: when the
 * connection drops, every command still in flight fails, the backend is not
 * ready (new commands fail at once, unsent) until it has connected again,
 * and each connection is a new set of clients, so a write and the WAIT
 * after it run on the same server or not at all.
 *
 * With Sentinel it also listens to Sentinel's notifications: a switch of
 * primary drops the old connection at once; a primary that the Sentinels
 * agree is down (+odown) is dropped and not used again until it is back or
 * replaced, because whatever it acknowledges now a failover would lose; one
 * that a single Sentinel suspects (+sdown) is checked with a PING.
 */
export class PrimaryBackend implements Backend {
  private current: Connection | undefined;
  private connections = 0;
  private reconnecting: Promise<void> | undefined;
  private closed = false;
  private changed: (err?: Error) => void = () => undefined;
  /** The primary the Sentinels agree is down: not connected to until it is back or replaced. */
  private heldDown: string | undefined;
  /** Cuts the wait between two reconnect attempts short (Sentinel named a new primary). */
  private wake: (() => void) | undefined;
  /** The last primary Sentinel switched to, and how many switches there were: a connection opened meanwhile to another is stale. */
  private switches = { count: 0, to: '' };
  private probing = false;

  constructor(
    private readonly locator: PrimaryLocator,
    private readonly options: BackendOptions,
  ) {}

  get ready(): boolean {
    const c = this.current;
    return c !== undefined && clientsOf(c).every((client) => client.isReady);
  }

  watch(changed: (err?: Error) => void): void {
    this.changed = changed;
  }

  /** Resolves once connected; keeps trying until then (Redis may start after the node). */
  async connect(): Promise<void> {
    this.locator.watch?.({
      switched: (address) => {
        this.heldDown = undefined;
        this.switches = { count: this.switches.count + 1, to: address };
        if (this.current && this.current.address !== address) this.drop(this.current, new Error(`Sentinel switched the primary to ${address}`));
        this.wake?.();
      },
      down: (address) => {
        this.heldDown = address;
        if (this.current?.address === address) this.drop(this.current, new Error(`the Sentinels agree the primary ${address} is down`));
      },
      back: (address) => {
        if (this.heldDown !== address) return;
        this.heldDown = undefined;
        this.wake?.();
      },
      suspect: (address) => {
        if (this.current?.address === address) this.probe();
      },
    });
    this.reconnect();
    await this.reconnecting;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.wake?.();
    if (this.current) this.drop(this.current);
    await this.locator.close?.();
  }

  send(args: Array<string | Buffer>, _routeKey: string | undefined, abortSignal: AbortSignal): Promise<unknown> {
    const c = this.current;
    if (!c) return Promise.reject(new ClientOfflineError());
    return c.pipeline.track(c.commands.sendCommand(args, { abortSignal }));
  }

  silence(_routeKey: string | undefined, replicated = false): number {
    const c = this.current;
    return (replicated ? c?.replicated?.pipeline : c?.pipeline)?.silence() ?? 0;
  }

  writeReplicated(write: string[], _routeKey: string | undefined, replicas: number, timeoutMs: number, abortSignal: AbortSignal): ReplicatedWrite {
    const replicated = this.current?.replicated;
    if (!replicated) return { written: Promise.reject(new ClientOfflineError()), replicated: Promise.reject(new ClientOfflineError()) };
    // Its client is never reconnected: a write and the WAIT after it run on the same server or not at all.
    return replicated.writes.add(write, replicas, timeoutMs, abortSignal);
  }

  sSubscribe(channel: string, listener: Listener, buffers?: boolean): Promise<unknown> {
    const c = this.current;
    return c ? c.subscriber.sSubscribe(channel, listener, buffers) : Promise.reject(new ClientOfflineError());
  }

  sUnsubscribe(channel: string): Promise<unknown> {
    const c = this.current;
    return c ? c.subscriber.sUnsubscribe(channel) : Promise.reject(new ClientOfflineError());
  }

  suspect(sign: 'no-answer' | 'readonly'): void {
    if (sign === 'no-answer') this.probe();
    else if (this.locator.checksRole && this.current) this.drop(this.current, new Error('the primary became a replica (READONLY)'));
  }

  /**
   * Checks a connection that may be dead without the socket knowing (a host
   * gone, a network cut) with a PING behind whatever it was sent: it is
   * dropped when it answers nothing, neither the PING nor the commands ahead
   * of it, for the probe timeout. A Redis working through a backlog keeps
   * answering, so it is never dropped for being busy.
   */
  private probe(): void {
    const c = this.current;
    if (!c || this.probing) return;
    this.probing = true;
    const timeoutMs = this.options.probeTimeoutMs;
    let answered = false;
    let timer: NodeJS.Timeout | undefined;
    const done = () => {
      clearTimeout(timer);
      this.probing = false;
    };
    void c.pipeline.track(c.commands.sendCommand(['PING'])).then(
      () => (answered = true),
      () => (answered = true), // the connection failed: its error drops it
    );
    const check = (ms: number) => {
      // Decided after this turn's I/O: after a stall of the event loop, answers already received count.
      timer = setTimeout(
        () =>
          setImmediate(() => {
            if (answered || this.current !== c) return done();
            const silent = c.pipeline.silence();
            if (silent < timeoutMs) return check(timeoutMs - silent);
            done();
            this.drop(c, new Error(`no answer from Redis for ${Math.round(silent)} ms, not even to a PING`));
          }),
        ms,
      );
    };
    check(timeoutMs);
  }

  /** Closes a connection: commands in flight on it fail; a new one is sought unless the backend is closing. */
  private drop(c: Connection, why?: Error): void {
    if (this.current === c) this.current = undefined;
    c.replicated?.writes.fail(new ClientOfflineError());
    for (const client of clientsOf(c)) {
      try {
        client.destroy();
      } catch {
        // already closed by its socket
      }
    }
    if (this.closed) return;
    this.changed(why);
    this.reconnect();
  }

  private reconnect(): void {
    if (this.reconnecting || this.closed) return;
    this.reconnecting = this.establish().finally(() => {
      this.reconnecting = undefined;
    });
  }

  private async establish(): Promise<void> {
    for (let attempt = 0; !this.closed; attempt++) {
      if (attempt > 0) await this.pause(Math.min(50 * 2 ** Math.min(attempt - 1, 6), this.options.maxReconnectDelayMs));
      if (this.closed) return;
      try {
        const target = await this.locator.locate();
        const switches = this.switches.count;
        if (target.address === this.heldDown) throw new Error(`the primary ${target.address} is down by the Sentinels' agreement; waiting for the failover`);
        const connection = await this.open(target);
        if (this.closed) {
          this.drop(connection);
          return;
        }
        // Sentinel's news while it was being opened wins over the address looked up before.
        const stale = target.address === this.heldDown || (this.switches.count !== switches && this.switches.to !== target.address);
        if (stale) {
          this.drop(connection);
          continue;
        }
        this.current = connection;
        this.changed();
        return;
      } catch (err) {
        // The first failure of an outage is worth a warning (a node that cannot start says why); the rest are noise.
        if (attempt === 0) this.options.logger?.warn({ err }, 'cannot reach the Redis primary; trying again');
        this.changed(err as Error);
      }
    }
  }

  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = () => {
        this.wake = undefined;
        done();
      };
    });
  }

  private async open(target: PrimaryTarget): Promise<Connection> {
    const { socket, ...rest } = this.options.clientOptions as { socket?: object };
    const options = { ...rest, url: target.url, socket: { ...socket, reconnectStrategy: false as const } } as never;
    const commands = createClient(options) as unknown as NodeClient;
    const subscriber = createClient(options) as unknown as NodeClient;
    const replicatedClient = this.options.replicatedWrites ? (createClient(options) as unknown as NodeClient) : undefined;
    let replicated: Connection['replicated'];
    if (replicatedClient) {
      const pipeline = new Pipeline();
      const sender = { sendCommand: (args: string[]) => pipeline.track(replicatedClient.sendCommand(args)) };
      replicated = { client: replicatedClient, writes: new ReplicatedWrites(sender), pipeline };
    }
    const connection: Connection = { id: ++this.connections, address: target.address, commands, pipeline: new Pipeline(), subscriber, replicated };
    for (const client of clientsOf(connection)) {
      // A client that loses its socket does not come back: the connection is over.
      client.on('error', (err: Error) => {
        if (this.current === connection) this.drop(connection, err);
      });
    }
    try {
      await Promise.all(clientsOf(connection).map((client) => client.connect()));
      if (this.locator.checksRole) {
        const role = (await commands.sendCommand(['ROLE'])) as unknown[];
        if (String(role[0]) !== 'master') throw new Error(`${target.address} is a ${String(role[0])}, not the primary`);
      }
      return connection;
    } catch (err) {
      for (const client of clientsOf(connection)) {
        try {
          client.destroy();
        } catch {
          // never connected
        }
      }
      throw err;
    }
  }
}
