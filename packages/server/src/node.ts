import { createServer, type Server } from 'node:http';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { Broker } from './core/broker.js';
import { retentionResolver, type NodeConfig } from './config.js';
import { EmbeddedEngine } from './engine/embedded-engine.js';
import type { Engine } from './engine/engine.js';
import { createHttpHandler } from './http-handler.js';
import { createLogger } from './logger.js';
import { SocketIoTransport } from './transport/socketio-transport.js';
import { WsTransport } from './transport/ws-transport.js';
import { VERSION } from './version.js';

/** Room for the request envelope around the largest message. */
const FRAME_OVERHEAD_BYTES = 64 * 1024;

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
  private readonly server: Server;
  private ws: WsTransport | undefined;
  private socketIo: SocketIoTransport | undefined;
  private readonly startedAt = Date.now();
  private stopping: Promise<void> | undefined;

  constructor(readonly config: NodeConfig) {
    this.logger = createLogger(config.logLevel, config.nodeId);
    this.engine = new EmbeddedEngine({
      dataDir: config.dataDir,
      retention: retentionResolver(config),
      dedupeWindowMs: config.dedupeWindowMs,
    });
    this.broker = new Broker({
      engine: this.engine,
      nodeId: config.nodeId,
      version: VERSION,
      maxMessageBytes: config.maxMessageBytes,
      nodeUrls: () => [config.publicUrl],
      logger: this.logger,
      retentionSweepMs: config.retentionSweepMs,
    });
    const consoleDir = config.consoleDir || bundledConsoleDir();
    this.server = createServer(
      createHttpHandler(
        {
          '/healthz': () => ({ status: 200, body: this.health() }),
          '/readyz': () => ({ status: this.stopping ? 503 : 200, body: { ready: !this.stopping, node: config.nodeId } }),
        },
        consoleDir,
      ),
    );
  }

  health() {
    return {
      status: 'ok',
      node: this.config.nodeId,
      version: VERSION,
      engine: this.engine.kind,
      uptimeMs: Date.now() - this.startedAt,
      ...this.broker.stats(),
    };
  }

  async start(): Promise<void> {
    await this.engine.open();
    this.broker.start();
    const maxFrameBytes = this.config.maxMessageBytes * 2 + FRAME_OVERHEAD_BYTES;
    this.ws = new WsTransport(this.broker, this.server, { maxFrameBytes });
    this.socketIo = new SocketIoTransport(this.broker, this.server, { maxFrameBytes });
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
      await this.ws?.close();
      await this.socketIo?.close();
      this.server.closeAllConnections();
      await new Promise<void>((resolve) => this.server.close(() => resolve()));
      await this.broker.close();
      await this.engine.close();
      this.logger.info('MeshMQ node stopped');
    })();
    return this.stopping;
  }
}
