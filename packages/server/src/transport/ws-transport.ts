import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { CLOSE_CODES, MeshError, type ServerFrame } from '@meshmq/shared';
import type { Logger } from 'pino';
import { type RawData, type WebSocket, WebSocketServer } from 'ws';
import type { Principal } from '../core/access.js';
import type { Connection } from '../core/connection.js';
import type { Session } from '../core/session.js';
import { FrameWatchdog, InputThrottle } from './flow-control.js';
import { WriteBatcher } from './write-batcher.js';

/** What a transport needs of the core: a session per connection. */
export interface SessionHost {
  openSession(connection: Connection, principal: Principal): Session;
}

export interface WsTransportOptions {
  /** Largest frame accepted; larger frames close the connection with 1009. */
  maxFrameBytes: number;
  /** Ping interval; a connection that has not answered the previous ping is dropped. 0 disables. */
  keepAliveMs: number;
  /** Longest time a started frame may take to arrive in full before the connection is dropped. */
  frameTimeoutMs: number;
  logger: Logger;
}

/**
 * The plain WebSocket endpoint: one JSON text frame per request, reply or
 * delivery (docs/protocol.md). The node's gate admits each upgrade (host,
 * origin, limits, token) before it gets here.
 */
export class WsTransport {
  private readonly wss: WebSocketServer;
  private readonly alive = new WeakSet<WebSocket>();
  /** Bytes queued for each connection at the last ping. */
  private readonly queued = new WeakMap<WebSocket, number>();
  private readonly keepAlive: NodeJS.Timeout | undefined;
  private readonly watchdog: FrameWatchdog;
  private readonly batcher = new WriteBatcher();

  constructor(
    private readonly sessions: SessionHost,
    private readonly options: WsTransportOptions,
  ) {
    this.wss = new WebSocketServer({ noServer: true, maxPayload: options.maxFrameBytes, perMessageDeflate: false, clientTracking: true });
    this.watchdog = new FrameWatchdog(options.frameTimeoutMs);
    if (options.keepAliveMs > 0) {
      this.keepAlive = setInterval(() => this.ping(), options.keepAliveMs);
      this.keepAlive.unref();
    }
  }

  /** Completes an upgrade the gate admitted; `release` frees its connection slot when it closes. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, principal: Principal, release: () => void): void {
    socket.once('close', release);
    this.wss.handleUpgrade(req, socket, head, (ws) => this.accept(ws, req, principal));
  }

  private accept(ws: WebSocket, req: IncomingMessage, principal: Principal): void {
    // ws keeps its socket private; frames sent in one turn share one write through it.
    const socket = (ws as unknown as { _socket: Duplex })._socket;
    const connection: Connection = {
      transport: 'ws',
      remoteAddress: req.socket.remoteAddress ?? '',
      send: (frame: ServerFrame, encode?: () => Buffer) => {
        if (ws.readyState !== ws.OPEN) return;
        this.batcher.hold(socket);
        if (encode) ws.send(encode(), { binary: false });
        // As bytes: a socket writes a batch of Buffers as they are, where strings would be copied into one block first.
        else ws.send(Buffer.from(JSON.stringify(frame)), { binary: false });
      },
      bufferedAmount: () => ws.bufferedAmount,
      close: (code, reason) => {
        this.batcher.release();
        ws.close(code, reason);
      },
    };
    const session = this.sessions.openSession(connection, principal);
    const throttle = new InputThrottle(connection.bufferedAmount, () => ws);
    this.alive.add(ws);
    ws.on('pong', () => this.alive.add(ws));
    this.watchdog.watch(ws, () => {
      this.options.logger.info({ session: session.id, sub: session.sub }, 'dropping a connection whose frame stalled');
      ws.close(CLOSE_CODES.frameTimeout, 'frame timeout');
      // A client that stalls mid-frame will not finish the closing handshake either.
      setTimeout(() => ws.terminate(), 1000).unref();
    });
    ws.on('message', (raw: RawData, isBinary: boolean) => {
      this.alive.add(ws);
      if (isBinary) {
        session.sendError(null, new MeshError('bad_request', 'binary frames are not supported; send JSON text frames'));
      } else {
        let frame: unknown;
        try {
          frame = JSON.parse(raw.toString());
        } catch {
          frame = undefined;
          session.sendError(null, new MeshError('bad_request', 'frame is not valid JSON'));
        }
        if (frame !== undefined) void session.handleFrame(frame);
      }
      throttle.check();
    });
    ws.on('error', (err) => this.options.logger.debug({ err, session: session.id }, 'websocket error'));
    ws.on('close', () => {
      throttle.stop();
      void session.close();
    });
  }

  /**
   * Pings every connection; one that did not answer the previous ping is
   * gone. A connection whose input the node paused cannot answer: it counts
   * as alive while it takes what is queued for it.
   */
  private ping(): void {
    for (const ws of this.wss.clients) {
      const buffered = ws.bufferedAmount;
      const draining = ws.isPaused && buffered < (this.queued.get(ws) ?? Infinity);
      this.queued.set(ws, buffered);
      if (!this.alive.has(ws) && !draining) {
        ws.terminate();
        continue;
      }
      this.alive.delete(ws);
      ws.ping();
    }
  }

  async close(): Promise<void> {
    this.batcher.release();
    clearInterval(this.keepAlive);
    this.watchdog.close();
    for (const ws of this.wss.clients) ws.terminate();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }
}
