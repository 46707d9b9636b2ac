import { randomUUID } from 'node:crypto';
import { createServer, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { existsSync } from 'node:fs';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { MeshError } from '@meshmq/shared';
import { TokenVerifier } from './auth/token-verifier.js';
import { authorize, type Principal } from './core/access.js';
import { Broker } from './core/broker.js';
import { authOptionsOf, retentionResolver, type NodeConfig } from './config.js';
import { Gate } from './gate.js';
import { Membership } from './cluster/membership.js';
import { describeRedisDurability, type RedisDurability } from './cluster/redis-durability.js';
import { takeOverLeases } from './cluster/takeover.js';
import { EmbeddedEngine } from './engine/embedded-engine.js';
import type { Engine } from './engine/engine.js';
import { RedisEngine } from './engine/redis-engine.js';
import { adminRoutes, localActivity, type TopicActivity } from './admin-api.js';
import { createHttpHandler, HTTP_STATUS, sendJson } from './http-handler.js';
import { createLogger } from './logger.js';
import { NodeStats, type NodeRecord } from './node-stats.js';
import { createShardedAdapter } from '@socket.io/redis-adapter';
import { SocketIoTransport } from './transport/socketio-transport.js';
import { WsTransport } from './transport/ws-transport.js';
import { VERSION } from './version.js';
import { DEFAULT_CONNECTION_LIMITS } from './core/limits.js';

/** One node's answer to the cluster-wide stats request. */
export interface LocalStats extends TopicActivity {
  node: string;
  connections: number;
  subscriptions: number;
}

/** Socket.IO's endpoint (engine.io's default path). */
function isSocketIoPath(req: IncomingMessage): boolean {
  return (req.url ?? '').startsWith('/socket.io/');
}

function sumInto(target: Record<string, number>, add: Record<string, number>): void {
  for (const [k, v] of Object.entries(add)) target[k] = (target[k] ?? 0) + v;
}

/** Room for the request envelope around the largest message. */
const FRAME_OVERHEAD_BYTES = 64 * 1024;
/** Longest time a client may take to send a whole HTTP request (headers and body). */
const REQUEST_TIMEOUT_MS = 30_000;
/** Headers one HTTP request may carry. */
const MAX_HEADERS_COUNT = 100;

/** True for an address that only this machine can reach. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}

/**
 * Refuses an upgrade before any WebSocket exists: an HTTP status with the
 * error as JSON, then the socket is closed.
 */
function refuseUpgrade(socket: Duplex, err: unknown): void {
  const error = MeshError.from(err);
  const status = HTTP_STATUS[error.code];
  const body = JSON.stringify({ error: { code: error.code, message: error.message } });
  const auth = error.code === 'unauthorized' ? 'WWW-Authenticate: Bearer\r\n' : '';
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${auth}Connection: close\r\n\r\n${body}`,
  );
  // A client that does not read the answer does not keep the socket.
  setTimeout(() => socket.destroy(), 1000).unref();
}

function bundledConsoleDir(): string {
  const dir = fileURLToPath(new URL('../../web/dist', import.meta.url));
  return existsSync(dir) ? dir : '';
}

/**
 * A running broker node: HTTP server, both transports, the core and its
 * engine, wired from one {@link NodeConfig}.
 */
export class BrokerNode {
  readonly logger: Logger;
  readonly engine: Engine;
  readonly broker: Broker;
  readonly stats: NodeStats;
  /** Present when the node runs over Redis. */
  readonly membership: Membership<NodeRecord> | undefined;
  readonly gate: Gate;
  private durability: RedisDurability | undefined;
  private readonly server: Server;
  private ws: WsTransport | undefined;
  private socketIo: SocketIoTransport | undefined;
  private readonly startedAt = Date.now();
  private stopping: Promise<void> | undefined;
  private draining = false;
  /** Cluster stats requests of this node waiting for answers, by request id. */
  private readonly statsRequests = new Map<string, (stats: LocalStats) => void>();

  constructor(readonly config: NodeConfig) {
    this.logger = createLogger(config.logLevel, config.nodeId);
    const retention = retentionResolver(config);
    const verifier = TokenVerifier.fromOptions(authOptionsOf(config));
    const verify = verifier && (async (token: string): Promise<Principal> => {
      const identity = await verifier.verify(token);
      return { sub: identity.sub, grants: identity.permissions, expiresAt: identity.expiresAt };
    });
    const redis = config.redisUrl
      ? new RedisEngine({
          url: config.redisUrl,
          keyPrefix: config.redisPrefix,
          retention,
          dedupeWindowMs: config.dedupeWindowMs,
          maxTopics: config.maxTopics,
          replicas: config.redisReplicas,
          replicaTimeoutMs: config.redisReplicaTimeoutMs,
          logger: this.logger,
        })
      : undefined;
    this.engine =
      redis ?? new EmbeddedEngine({ dataDir: config.dataDir, retention, dedupeWindowMs: config.dedupeWindowMs, maxTopics: config.maxTopics });
    this.broker = new Broker({
      engine: this.engine,
      nodeId: config.nodeId,
      version: VERSION,
      maxMessageBytes: config.maxMessageBytes,
      dedupeWindowMs: config.dedupeWindowMs,
      nodeUrls: () => this.membership?.liveUrls() ?? [config.publicUrl],
      logger: this.logger,
      retentionSweepMs: config.retentionSweepMs,
      limits: {
        ...DEFAULT_CONNECTION_LIMITS,
        maxSubscriptions: config.maxSubscriptions,
        maxInflight: config.maxInflight,
        publishRate: config.maxPublishRate,
        publishBurst: config.maxPublishRate,
      },
      ...(verify ? { authenticate: verify } : {}),
    });
    this.gate = new Gate({
      limits: { maxConnections: config.maxConnections, maxConnectionsPerAddress: config.maxConnectionsPerAddress },
      ...(verify ? { verify } : {}),
      allowedOrigins: config.allowedOrigins,
      allowedHosts: config.allowedHosts,
      ownOrigins: () => this.ownOrigins(),
    });
    this.stats = new NodeStats({
      id: config.nodeId,
      url: config.publicUrl,
      version: VERSION,
      startedAt: this.startedAt,
      counters: () => this.broker.stats(),
      topicCounters: () => this.broker.publishedPerTopic(),
      status: () => (this.draining ? 'draining' : 'up'),
      redis: () => (redis ? { state: redis.link.state } : null),
    });
    this.membership = redis
      ? new Membership<NodeRecord>({
          link: redis.link,
          keyPrefix: config.redisPrefix,
          self: () => this.stats.record(),
          heartbeatMs: config.heartbeatMs,
          downAfterMs: config.nodeDownAfterMs,
          logger: this.logger,
        })
      : undefined;
    const consoleDir = config.consoleDir || bundledConsoleDir();
    const http = createHttpHandler(
        {
          '/healthz': () => ({ status: 200, body: this.health() }),
          '/readyz': () => this.readiness(),
          'GET /api/cluster/stats': async ({ principal }) => {
            authorize(await principal(), 'admin', undefined, 'GET /api/cluster/stats');
            return { status: 200, body: await this.clusterStats() };
          },
          ...adminRoutes({
            broker: this.broker,
            stats: this.stats,
            retention: retentionResolver(config),
            selfUrl: config.publicUrl,
            peers: config.peers,
            cluster: this.membership && (() => this.membership!.nodes()),
            ...(this.membership ? { activity: async () => (await this.clusterStats()).totals } : {}),
          }),
        },
        consoleDir,
        this.gate,
      );
    this.server = createServer(
      {
        headersTimeout: config.headersTimeoutMs,
        requestTimeout: Math.max(REQUEST_TIMEOUT_MS, config.headersTimeoutMs),
        // How often timed-out requests are looked for (Node's default, 30 s, would let slow headers live that long).
        connectionsCheckingInterval: Math.min(1000, config.headersTimeoutMs),
      },
      (req, res) => {
        if (isSocketIoPath(req)) this.socketIoRequest(req, res);
        else void http(req, res);
      },
    );
    this.server.maxHeadersCount = MAX_HEADERS_COUNT;
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => void this.upgrade(req, socket, head));
  }

  /** Origins that are this node's own: its public URL, its loopback names, and the other nodes it knows. */
  private ownOrigins(): string[] {
    const origins = [this.config.publicUrl, ...this.config.peers, ...(this.membership?.nodes().map((n) => n.url) ?? [])];
    if (isLoopback(this.config.host)) {
      const port = this.port;
      origins.push(`http://localhost:${port}`, `http://127.0.0.1:${port}`, `http://[::1]:${port}`);
    }
    return origins;
  }

  /**
   * Every WebSocket upgrade passes the gate here before a transport sees it:
   * host, origin, connection limits, then the token. A refusal is an HTTP
   * status before any upgrade, and no socket is kept.
   */
  private async upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    // The socket is ours now: an error on it (a client that resets) must not reach the process.
    socket.on('error', () => socket.destroy());
    const address = req.socket.remoteAddress ?? '';
    let release: (() => void) | undefined;
    try {
      this.gate.checkHost(req);
      this.gate.checkOrigin(req);
      const url = new URL(req.url ?? '/', 'http://localhost');
      if (url.pathname === '/ws' && this.ws) {
        release = this.gate.admit(address);
        const principal = await this.gate.authenticate(req);
        if (socket.destroyed) throw new MeshError('unavailable', 'the client left during the handshake');
        this.ws.handleUpgrade(req, socket, head, principal, release);
        return;
      }
      if (isSocketIoPath(req) && this.socketIo) {
        if (SocketIoTransport.isHandshake(url)) this.gate.checkCapacity(address);
        this.socketIo.handleUpgrade(req, socket, head);
        return;
      }
      throw new MeshError('not_found', `no WebSocket endpoint at ${url.pathname}; use /ws`);
    } catch (err) {
      release?.();
      const error = MeshError.from(err);
      this.logger.info({ address, origin: req.headers.origin, code: error.code, reason: error.message }, 'refused a connection');
      refuseUpgrade(socket, error);
    }
  }

  /** Socket.IO's HTTP requests (long-polling, handshakes) pass the same gate. */
  private socketIoRequest(req: IncomingMessage, res: ServerResponse): void {
    try {
      this.gate.checkHost(req);
      this.gate.checkOrigin(req);
      if (req.method !== 'OPTIONS' && SocketIoTransport.isHandshake(new URL(req.url ?? '/', 'http://localhost'))) {
        this.gate.checkCapacity(req.socket.remoteAddress ?? '');
      }
    } catch (err) {
      const error = MeshError.from(err);
      this.logger.info({ address: req.socket.remoteAddress, origin: req.headers.origin, code: error.code, reason: error.message }, 'refused a connection');
      sendJson(res, HTTP_STATUS[error.code], { error: { code: error.code, message: error.message } });
      return;
    }
    if (!this.socketIo) {
      sendJson(res, 503, { error: { code: 'unavailable', message: 'the node is not accepting connections' } });
      return;
    }
    this.socketIo.handleRequest(req, res);
  }

  health() {
    return {
      status: 'ok',
      node: this.config.nodeId,
      pid: process.pid,
      version: VERSION,
      engine: this.engine.kind,
      uptimeMs: Date.now() - this.startedAt,
      ...this.broker.stats(),
    };
  }

  localStats(): LocalStats {
    const { connections, subscriptions } = this.broker.stats();
    return { node: this.config.nodeId, connections, subscriptions, ...localActivity(this.broker, this.stats) };
  }

  /**
   * Connections and subscribers per topic on every live node, asked through
   * the Socket.IO adapter. A node that does not answer within `timeoutMs`
   * (dead, or stuck) is left out and named in `missing`; the call never
   * waits longer than that.
   */
  async clusterStats(timeoutMs = 1500): Promise<{ nodes: LocalStats[]; missing: string[]; totals: Omit<LocalStats, 'node'> }> {
    const own = this.localStats();
    const expected = (this.membership?.nodes() ?? []).filter((n) => n.status !== 'down' && n.id !== own.node).map((n) => n.id);
    const others = new Map<string, LocalStats>();
    if (this.socketIo && expected.length > 0) {
      const id = randomUUID();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, timeoutMs);
        function done() {
          clearTimeout(timer);
          pending.delete(id);
          resolve();
        }
        const pending = this.statsRequests;
        pending.set(id, (stats) => {
          others.set(stats.node, stats);
          if (expected.every((node) => others.has(node))) done();
        });
        this.socketIo!.io.serverSideEmit('meshmq:stats', id);
      });
    }
    const nodes = [own, ...others.values()];
    const totals: Omit<LocalStats, 'node'> = { connections: 0, subscriptions: 0, subscribers: {}, members: {}, publishRates: {} };
    for (const n of nodes) {
      totals.connections += n.connections;
      totals.subscriptions += n.subscriptions;
      sumInto(totals.subscribers, n.subscribers);
      sumInto(totals.members, n.members);
      sumInto(totals.publishRates, n.publishRates);
    }
    return { nodes, missing: expected.filter((node) => !others.has(node)), totals };
  }

  /** Ready when not draining and, over Redis, while Redis answers. */
  readiness(): { status: number; body: unknown } {
    const redis = this.engine instanceof RedisEngine ? this.engine : undefined;
    const reasons: string[] = [];
    if (this.draining || this.stopping) reasons.push('draining');
    if (redis && redis.link.state !== 'up') reasons.push(`redis ${redis.link.state}`);
    const body = {
      ready: reasons.length === 0,
      node: this.config.nodeId,
      engine: this.engine.kind,
      ...(reasons.length > 0 ? { reasons } : {}),
      ...(redis ? { redis: { state: redis.link.state, durability: this.durability ?? null } } : {}),
    };
    return { status: reasons.length === 0 ? 200 : 503, body };
  }

  async start(): Promise<void> {
    if (!this.gate.requiresToken && !isLoopback(this.config.host)) {
      if (!this.config.insecure) {
        throw new MeshError(
          'bad_request',
          `binding ${this.config.host} without authentication would let anyone who reaches it publish, read and purge: ` +
            'set --auth-secret (AUTH_SECRET), --auth-public-key or --auth-jwks-url (docs/security.md), ' +
            'bind 127.0.0.1, or pass --insecure to accept the risk',
        );
      }
      this.logger.warn({ host: this.config.host }, 'INSECURE: no authentication and bound beyond loopback: anyone who reaches this node may do anything');
    }
    await this.engine.open();
    if (this.engine instanceof RedisEngine) await this.startClustered(this.engine);
    this.broker.start();
    this.stats.start();
    const maxFrameBytes = this.config.maxMessageBytes * 2 + FRAME_OVERHEAD_BYTES;
    this.ws = new WsTransport(this.broker, {
      maxFrameBytes,
      keepAliveMs: this.config.keepAliveMs,
      frameTimeoutMs: this.config.frameTimeoutMs,
      logger: this.logger,
    });
    const redis = this.engine instanceof RedisEngine ? this.engine : undefined;
    let adapter;
    if (redis) {
      const { pub, sub } = redis.link.adapterClients();
      adapter = createShardedAdapter(pub, sub, { channelPrefix: `${this.config.redisPrefix}sio`, subscriptionMode: 'static' });
    }
    this.socketIo = new SocketIoTransport(this.broker, {
      maxFrameBytes,
      frameTimeoutMs: this.config.frameTimeoutMs,
      authenticate: (req, token) => this.gate.authenticate(req, token),
      admit: (address) => this.gate.admit(address),
      originAllowed: (origin) => this.gate.originAllowed(origin),
      logger: this.logger,
      ...(adapter ? { adapter } : {}),
    });
    // Server-to-server request of the cluster-wide stats over the adapter: every node answers with its own.
    this.socketIo.io.on('meshmq:stats', (id: string) => this.socketIo?.io.serverSideEmit('meshmq:stats-reply', id, this.localStats()));
    this.socketIo.io.on('meshmq:stats-reply', (id: string, stats: LocalStats) => this.statsRequests.get(id)?.(stats));
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.config.port, this.config.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    const address = this.server.address();
    this.logger.info(
      { address, dataDir: this.config.dataDir, engine: this.engine.kind, version: VERSION },
      `MeshMQ node listening on ${this.config.publicUrl}`,
    );
  }

  private async startClustered(redis: RedisEngine): Promise<void> {
    this.durability = await describeRedisDurability(redis.link, this.config.redisReplicas);
    const level = this.durability.survives.hostCrash ? 'info' : 'warn';
    this.logger[level]({ durability: this.durability }, `Redis durability: ${this.durability.summary}`);
    // Leases held by this node's previous life (same node id) go back to their groups.
    await takeOverLeases(redis, this.config.nodeId, this.logger);
    this.membership!.on('down', (record: NodeRecord) => {
      this.logger.warn({ node: record.id, url: record.url }, 'node is down; taking over its leases');
      const claim = `${this.config.redisPrefix}takeover:${record.id}:${record.startedAt}`;
      takeOverLeases(redis, record.id, this.logger, claim).catch((err) =>
        this.logger.error({ err, node: record.id }, 'taking over the leases of a down node failed'),
      );
    });
    this.membership!.on('up', (record: NodeRecord) => this.logger.info({ node: record.id, url: record.url }, 'node is up'));
    await this.membership!.start();
  }

  /** The port actually bound (useful with port 0). */
  get port(): number {
    const address = this.server.address();
    return typeof address === 'object' && address ? address.port : this.config.port;
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.draining = true;
      // Tell the cluster first, so no client is sent here while we drain.
      await this.membership?.beatNow();
      const elsewhere = (this.membership?.liveUrls() ?? []).filter((url) => url !== this.config.publicUrl);
      await this.broker.drain(elsewhere, this.config.drainTimeoutMs);
      await this.membership?.stop();
      await this.ws?.close();
      await this.socketIo?.close();
      this.server.closeAllConnections();
      await new Promise<void>((resolve) => this.server.close(() => resolve()));
      await this.broker.close();
      this.stats.stop();
      await this.engine.close();
      this.logger.info('MeshMQ node stopped');
    })();
    return this.stopping;
  }
}
