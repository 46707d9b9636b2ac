import { timingSafeEqual } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { type AlarmsResponse, type ClusterAlarms, type ClusterStats, MeshError, type NodeActivity } from '@meshmq/shared';
import type { Logger } from 'pino';
import { adminRoutes, localActivity } from './admin-api.js';
import { Alarms } from './alarms.js';
import { TokenVerifier } from './auth/token-verifier.js';
import { totalsOf } from './cluster/activity.js';
import type { Cluster } from './cluster/cluster.js';
import { authOptionsOf, type NodeConfig, retentionResolver } from './config.js';
import { authorize, type Principal } from './core/access.js';
import { Broker } from './core/broker.js';
import { DEFAULT_CONNECTION_LIMITS } from './core/limits.js';
import { allOf } from './core/observer.js';
import type { Engine } from './engine/engine.js';
import { Gate, isLoopback, refuseUpgrade, tokenOf } from './gate.js';
import { createHttpHandler, type RouteContext, sendJson } from './http-handler.js';
import { HTTP_STATUS } from './http-status.js';
import { createLogger } from './logger.js';
import { NodeMetrics } from './metrics.js';
import { NodeStats } from './node-stats.js';
import { createStorage } from './storage.js';
import { SocketIoTransport } from './transport/socketio-transport.js';
import { WsTransport } from './transport/ws-transport.js';
import { VERSION } from './version.js';

/** Room for the request envelope around the largest message. */
const FRAME_OVERHEAD_BYTES = 64 * 1024;
/** Longest time a client may take to send a whole HTTP request (headers and body). */
const REQUEST_TIMEOUT_MS = 30_000;
/** Headers one HTTP request may carry. */
const MAX_HEADERS_COUNT = 100;

/** Socket.IO's endpoint (engine.io's default path). */
function isSocketIoPath(req: IncomingMessage): boolean {
  return (req.url ?? '').startsWith('/socket.io/');
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
  /** Present when the node runs in a cluster over Redis. */
  readonly cluster: Cluster | undefined;
  readonly gate: Gate;
  readonly metrics: NodeMetrics;
  readonly alarms: Alarms;
  private readonly server: Server;
  private ws: WsTransport | undefined;
  private socketIo: SocketIoTransport | undefined;
  private readonly startedAt = Date.now();
  private stopping: Promise<void> | undefined;
  private draining = false;

  constructor(readonly config: NodeConfig) {
    this.logger = createLogger(config.logLevel, config.nodeId, config.logFormat);
    const retention = retentionResolver(config);
    const verifier = TokenVerifier.fromOptions(authOptionsOf(config));
    const verify =
      verifier &&
      (async (token: string): Promise<Principal> => {
        const identity = await verifier.verify(token);
        return { sub: identity.sub, grants: identity.permissions, expiresAt: identity.expiresAt };
      });
    const storage = createStorage(config, this.logger, retention, {
      self: () => this.stats.record(),
      activity: () => this.localActivity(),
    });
    this.engine = storage.engine;
    this.cluster = storage.cluster;
    this.alarms = new Alarms(
      {
        engine: this.engine,
        localGroups: () => this.broker.localGroups(),
        logger: this.logger,
        ...(this.cluster
          ? {
              redisState: () => this.cluster!.report().state,
              redisPersistence: () => this.redisPersistence(),
            }
          : { dataDir: config.dataDir, diskFreeLimit: config.diskFreeLimit }),
      },
      { diskFreeRatio: config.alarmDiskFree, memoryRatio: config.alarmMemory, groupAgeMs: config.alarmGroupAgeMs },
    );
    this.metrics = new NodeMetrics(
      {
        node: config.nodeId,
        version: VERSION,
        engine: this.engine,
        connections: () => this.broker.connectionsByTransport(),
        alarms: () => this.alarms.list(),
        subscriptions: () => this.broker.stats().subscriptions,
        ...(this.cluster
          ? {
              redisUp: () => this.cluster!.report().state === 'up',
              redisSurvives: () => this.redisSurvives(),
              clusterNodesUp: () => this.cluster!.nodes().filter((n) => n.status === 'up').length,
            }
          : { dataDir: config.dataDir }),
      },
      config.metricsTopics,
    );
    this.broker = new Broker({
      engine: this.engine,
      nodeId: config.nodeId,
      version: VERSION,
      maxMessageBytes: config.maxMessageBytes,
      dedupeWindowMs: config.dedupeWindowMs,
      nodeUrls: () => this.cluster?.liveUrls() ?? [config.publicUrl],
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
      observer: allOf(this.metrics, { deadLettered: (topic, _group, count) => this.alarms.deadLettered(topic, count) }),
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
      redis: () => (this.cluster ? { state: this.cluster.report().state } : null),
    });
    const consoleDir = config.consoleDir || bundledConsoleDir();
    const http = createHttpHandler(
      {
        '/healthz': () => ({ status: 200, body: this.health() }),
        '/readyz': () => this.readiness(),
        'GET /metrics': async (ctx) => {
          await this.authorizeMetrics(ctx);
          const { contentType, body } = await this.metrics.text();
          return { status: 200, body, contentType };
        },
        'GET /api/alarms': async ({ principal }) => {
          authorize(await principal(), 'admin', undefined, 'GET /api/alarms');
          return { status: 200, body: { node: config.nodeId, alarms: this.alarms.list() } satisfies AlarmsResponse };
        },
        'GET /api/cluster/stats': async ({ principal }) => {
          authorize(await principal(), 'admin', undefined, 'GET /api/cluster/stats');
          return { status: 200, body: await this.clusterStats() };
        },
        'GET /api/cluster/alarms': async ({ principal }) => {
          authorize(await principal(), 'admin', undefined, 'GET /api/cluster/alarms');
          const { nodes, missing } = await this.clusterStats();
          return { status: 200, body: { nodes: nodes.map(({ node, alarms }) => ({ node, alarms })), missing } satisfies ClusterAlarms };
        },
        ...adminRoutes({
          broker: this.broker,
          stats: this.stats,
          retention: retentionResolver(config),
          selfUrl: config.publicUrl,
          peers: config.peers,
          cluster: this.cluster && (() => this.cluster!.nodes()),
          ...(this.cluster ? { activity: async () => (await this.clusterStats()).totals } : {}),
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
  /** What an acknowledged publish survives with the cluster's Redis; undefined without Redis or while its settings are unknown. */
  private redisSurvives() {
    const durability = this.cluster?.report().durability;
    return durability && durability.appendonly !== 'unknown' ? durability.survives : undefined;
  }

  /** How the cluster's Redis persists; undefined without Redis or while its settings are unknown. */
  private redisPersistence(): 'aof' | 'snapshots' | 'none' | undefined {
    const durability = this.cluster?.report().durability;
    if (!durability || durability.appendonly === 'unknown') return undefined;
    return durability.survives.processKill ? 'aof' : durability.snapshots ? 'snapshots' : 'none';
  }

  private ownOrigins(): string[] {
    const origins = [this.config.publicUrl, ...this.config.peers, ...(this.cluster?.nodes().map((n) => n.url) ?? [])];
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
      throw new MeshError('not_found', `no WebSocket endpoint at ${url.pathname}; use /ws${this.socketIo ? ' or Socket.IO' : ''}`);
    } catch (err) {
      release?.();
      const error = MeshError.from(err);
      this.metrics.connectionRefused(error.code);
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
      this.metrics.connectionRefused(error.code);
      this.logger.info({ address: req.socket.remoteAddress, origin: req.headers.origin, code: error.code, reason: error.message }, 'refused a connection');
      sendJson(res, HTTP_STATUS[error.code], { error: { code: error.code, message: error.message } });
      return;
    }
    if (!this.socketIo) {
      sendJson(res, 404, { error: { code: 'not_found', message: 'this node does not serve Socket.IO (see --transports); use /ws' } });
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
      // Whether clients need a token (the console asks for one before connecting).
      auth: this.gate.requiresToken ? 'token' : 'anonymous',
      uptimeMs: Date.now() - this.startedAt,
      ...this.broker.stats(),
    };
  }

  /**
   * Who may read `/metrics`: anyone on a node without authentication (it
   * binds loopback, or was started --insecure); otherwise the bearer
   * `--metrics-token` (Prometheus's scrape credential) or an admin token.
   */
  private async authorizeMetrics(ctx: RouteContext): Promise<void> {
    if (!this.gate.requiresToken) return;
    const given = Buffer.from(tokenOf(ctx.req) ?? '');
    const expected = Buffer.from(this.config.metricsToken);
    if (expected.length > 0 && given.length === expected.length && timingSafeEqual(given, expected)) return;
    authorize(await ctx.principal(), 'admin', undefined, 'GET /metrics');
  }

  /** This node's connections, activity per topic and active alarms. */
  localActivity(): NodeActivity {
    const { connections, subscriptions } = this.broker.stats();
    return { node: this.config.nodeId, connections, subscriptions, ...localActivity(this.broker, this.stats), alarms: this.alarms.list() };
  }

  /**
   * Connections, subscribers per topic and alarms of every live node, asked
   * over the cluster's own Redis channel (ClusterActivity): whatever arrived
   * within the timeout, naming the nodes that did not answer. This node
   * alone without a cluster.
   */
  async clusterStats(): Promise<ClusterStats> {
    if (this.cluster) return this.cluster.stats();
    const own = this.localActivity();
    return { nodes: [own], missing: [], totals: totalsOf([own]) };
  }

  /** Ready when not draining and while the storage can serve. */
  readiness(): { status: number; body: unknown } {
    const reasons: string[] = [];
    if (this.draining || this.stopping) reasons.push('draining');
    const { state } = this.engine.health();
    if (state !== 'up') reasons.push(`storage ${state}`);
    const body = {
      ready: reasons.length === 0,
      node: this.config.nodeId,
      engine: this.engine.kind,
      ...(reasons.length > 0 ? { reasons } : {}),
      ...(this.cluster ? { redis: this.cluster.report() } : {}),
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
    await this.cluster?.connect();
    await this.engine.open();
    await this.cluster?.start(this.engine);
    this.broker.start();
    this.stats.start();
    this.alarms.start();
    const maxFrameBytes = this.config.maxMessageBytes * 2 + FRAME_OVERHEAD_BYTES;
    if (this.config.transports.includes('ws')) {
      this.ws = new WsTransport(this.broker, {
        maxFrameBytes,
        keepAliveMs: this.config.keepAliveMs,
        frameTimeoutMs: this.config.frameTimeoutMs,
        logger: this.logger,
      });
    }
    if (this.config.transports.includes('socket.io')) {
      const adapter = this.cluster?.socketIoAdapter();
      this.socketIo = new SocketIoTransport(this.broker, {
        maxFrameBytes,
        frameTimeoutMs: this.config.frameTimeoutMs,
        authenticate: (req, token) =>
          this.gate.authenticate(req, token).catch((err: unknown) => {
            this.metrics.connectionRefused(MeshError.from(err).code);
            throw err;
          }),
        admit: (address) => this.gate.admit(address),
        originAllowed: (origin) => this.gate.originAllowed(origin),
        logger: this.logger,
        ...(adapter ? { adapter } : {}),
      });
    }
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

  /** The port actually bound (useful with port 0). */
  get port(): number {
    const address = this.server.address();
    return typeof address === 'object' && address ? address.port : this.config.port;
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.draining = true;
      // Tell the cluster first, so no client is sent here while we drain.
      await this.cluster?.beatNow();
      const elsewhere = (this.cluster?.liveUrls() ?? []).filter((url) => url !== this.config.publicUrl);
      await this.broker.drain(elsewhere, this.config.drainTimeoutMs);
      await this.cluster?.leave();
      await this.ws?.close();
      await this.socketIo?.close();
      this.server.closeAllConnections();
      await new Promise<void>((resolve) => this.server.close(() => resolve()));
      await this.broker.close();
      this.stats.stop();
      this.alarms.stop();
      await this.engine.close();
      await this.cluster?.close();
      this.logger.info('MeshMQ node stopped');
    })();
    return this.stopping;
  }
}
