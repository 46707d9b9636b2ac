import { CLOSE_CODES, type HelloResult, MeshError, type ServerFrame } from '@meshmq/shared';
import { Backoff } from './backoff.js';
import { type CloseInfo, Link } from './link.js';
import type { ResolvedOptions } from './options.js';
import { unref } from './timers.js';
import type { Credentials } from './token.js';
import type { ConnectionState } from './types.js';
import { UrlList } from './urls.js';
import type { SocketOpener } from './websocket.js';

/** A connection that stayed up this long resets the backoff. */
const STABLE_MS = 5000;
/** Close code the client uses when it gives up on a connection itself. */
export const CLIENT_CLOSE_CODE = 4000;
/** The node closed the connection because its token expired (reconnect with a fresh one). */
export const CLOSE_TOKEN_EXPIRED = CLOSE_CODES.tokenExpired;

export interface ConnectorHooks {
  onFrame(link: Link, frame: ServerFrame): void;
  onBadFrame(link: Link, error: MeshError): void;
  /** Sends hello on a fresh link; rejects when the node does not answer properly. */
  hello(link: Link): Promise<HelloResult>;
  /** Sends a ping; failures are ignored. */
  ping(link: Link): void;
  /** A link has been greeted and is now the client's connection. */
  onReady(link: Link, reconnect: boolean): void;
  /** Any link that was opened has closed, greeted or not. */
  onClosed(link: Link, info: CloseInfo, wasReady: boolean): void;
  onAttemptFailed(url: string, error: MeshError): void;
  onState(state: ConnectionState): void;
}

/**
 * Keeps one connection up: tries the URLs in rounds, with backoff between
 * rounds, presents a current token and greets each new connection with
 * hello, watches it with a heartbeat, and starts over when it is lost, until
 * stopped.
 */
export class Connector {
  state: ConnectionState = 'idle';
  /** The greeted connection, while there is one. */
  link: Link | undefined;
  private readonly urls: UrlList;
  private readonly backoff: Backoff;
  private stopped = false;
  private readonly stopSignal: Promise<undefined>;
  private signalStop!: () => void;
  /** The last connection ended by a move: reconnect without backoff. */
  private moving = false;
  /** The last connection's token expired and a new one can be had: reconnect at once. */
  private renewing = false;
  /** The token of the last connection closed for expiry; the same token expiring again waits for the backoff. */
  private expiredToken: string | undefined;
  private sleeping: { timer: ReturnType<typeof setTimeout>; wake: () => void } | undefined;
  private abortAttempt: (() => void) | undefined;
  private opening: Link | undefined;
  private heartbeat: ReturnType<typeof setInterval> | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly options: ResolvedOptions,
    private readonly openSocket: SocketOpener,
    private readonly credentials: Credentials,
    private readonly hooks: ConnectorHooks,
  ) {
    this.urls = new UrlList(options.urls);
    this.backoff = new Backoff(options.reconnect);
    this.stopSignal = new Promise((resolve) => (this.signalStop = () => resolve(undefined)));
  }

  /** The connection new requests go on: greeted, and not being drained by its node. */
  get readyLink(): Link | undefined {
    return this.link && !this.link.draining ? this.link : undefined;
  }

  /**
   * The node of `link` is shutting down and named `nodes` to move to. New
   * requests wait from now on; the node finishes the ones it has and closes
   * the connection (the client does, if the node does not within
   * requestTimeoutMs); the next attempt goes to one of `nodes`, soon.
   */
  move(link: Link, nodes: readonly string[]): void {
    if (link !== this.link || link.draining) return;
    link.draining = true;
    this.moving = true;
    this.urls.moveTo(this.options.discoverNodes ? nodes : [], link.url);
    const timer = setTimeout(() => link.close(CLIENT_CLOSE_CODE, 'node draining'), this.options.requestTimeoutMs);
    unref(timer);
    void link.closed.then(() => clearTimeout(timer));
  }

  /** Every URL the client may use: the configured ones and, once known, the nodes' own. */
  get knownUrls(): string[] {
    return this.urls.all;
  }

  start(): void {
    if (this.running || this.stopped) return;
    this.running = this.run();
  }

  /** Stops trying and closes the connection; resolves once the loop has ended. */
  async stop(): Promise<void> {
    if (this.stopped) return this.running;
    this.stopped = true;
    this.signalStop();
    this.abortAttempt?.();
    this.opening?.close(1000, 'client closed');
    this.link?.close(1000, 'client closed');
    if (this.sleeping) {
      clearTimeout(this.sleeping.timer);
      this.sleeping.wake();
    }
    await this.running;
    this.setState('closed');
  }

  private setState(state: ConnectionState): void {
    if (this.state === state || this.state === 'closed') return;
    this.state = state;
    this.hooks.onState(state);
  }

  private async run(): Promise<void> {
    let connectedBefore = false;
    let firstRound = true;
    this.setState('connecting');
    while (!this.stopped) {
      if (this.renewing) {
        this.renewing = false;
      } else if (this.moving) {
        this.moving = false;
        // A planned move: come back soon, spread a little so that a node's clients do not all arrive at once.
        await this.sleep(Math.random() * this.options.reconnect.initialDelayMs);
      } else if (!firstRound) await this.sleep(this.backoff.next());
      firstRound = false;
      for (const url of this.urls.round()) {
        if (this.stopped) return;
        const link = await this.attempt(url);
        if (!link) {
          this.urls.advancePast(url);
          continue;
        }
        await this.serve(link, connectedBefore);
        connectedBefore = true;
        this.urls.advancePast(url);
        if (!this.stopped) this.setState('reconnecting');
        break;
      }
    }
  }

  /** Runs a greeted link until it closes. */
  private async serve(link: Link, reconnect: boolean): Promise<void> {
    const since = Date.now();
    if (this.options.discoverNodes && link.hello) this.urls.setDiscovered(link.hello.nodes);
    this.link = link;
    this.startHeartbeat(link);
    // Restores subscriptions and sends queued requests before anyone hears of the state change.
    this.hooks.onReady(link, reconnect);
    this.setState('connected');
    const { code } = await link.closed;
    this.stopHeartbeat();
    this.link = undefined;
    if (Date.now() - since >= STABLE_MS) this.backoff.reset();
    if (code === CLOSE_TOKEN_EXPIRED && this.credentials.refreshable && link.token !== this.expiredToken) {
      // A token function that keeps returning the expired token must not make the client spin: once per token.
      this.expiredToken = link.token;
      this.renewing = true;
    }
  }

  /** Gets a token, opens and greets one connection; undefined when that fails. */
  private async attempt(url: string): Promise<Link | undefined> {
    let token: string | undefined;
    try {
      token = await Promise.race([this.credentials.get(), this.stopSignal]);
    } catch (err) {
      if (!this.stopped) this.hooks.onAttemptFailed(url, MeshError.from(err));
      return undefined;
    }
    if (this.stopped) return undefined;
    const opening = Link.open(
      this.openSocket,
      url,
      token,
      this.options.connectTimeoutMs,
      (link, frame) => this.hooks.onFrame(link, frame),
      (link, error) => this.hooks.onBadFrame(link, error),
    );
    this.abortAttempt = opening.abort;
    let link: Link;
    try {
      link = await opening.link;
    } catch (err) {
      if (!this.stopped) this.hooks.onAttemptFailed(url, MeshError.from(err));
      return undefined;
    } finally {
      this.abortAttempt = undefined;
    }
    let ready = false;
    void link.closed.then((info) => this.hooks.onClosed(link, info, ready));
    if (this.stopped) {
      link.close(1000, 'client closed');
      return undefined;
    }
    this.opening = link;
    try {
      link.hello = await Promise.race([
        this.hooks.hello(link),
        link.closed.then((info): never => {
          throw new MeshError('unavailable', `${url} closed the connection during hello (code ${info.code})`);
        }),
      ]);
    } catch (err) {
      link.close(CLIENT_CLOSE_CODE, 'hello failed');
      // A token that expired (within the node's clock tolerance) is refused right after the handshake.
      const error = link.expiry ? new MeshError('unauthorized', `${url} closed the connection: ${link.expiry.message}`) : MeshError.from(err);
      if (!this.stopped) this.hooks.onAttemptFailed(url, error);
      return undefined;
    } finally {
      this.opening = undefined;
    }
    if (this.stopped) {
      link.close(1000, 'client closed');
      return undefined;
    }
    ready = true;
    return link;
  }

  private startHeartbeat(link: Link): void {
    const every = this.options.heartbeatMs;
    if (every <= 0) return;
    let lastTick = Date.now();
    this.heartbeat = setInterval(() => {
      const now = Date.now();
      // A late tick means this process was busy, not that the server is gone.
      const late = now - lastTick > every * 1.5;
      lastTick = now;
      if (late) return;
      const idle = now - link.lastFrameAt;
      if (idle >= 2 * every) link.close(CLIENT_CLOSE_CODE, 'heartbeat timeout');
      else if (idle >= every) this.hooks.ping(link);
    }, every);
    unref(this.heartbeat);
  }

  private stopHeartbeat(): void {
    clearInterval(this.heartbeat);
    this.heartbeat = undefined;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        this.sleeping = undefined;
        resolve();
      };
      this.sleeping = { timer: setTimeout(wake, ms), wake };
    });
  }
}
