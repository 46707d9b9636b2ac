import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { MeshError, type ServerFrame } from '@meshmq/shared';
import type { Broker } from '../core/broker.js';
import type { Connection } from '../core/connection.js';

export interface WsTransportOptions {
  /** URL path of the endpoint. Default `/ws`. */
  path?: string;
  /** Largest frame accepted; larger frames close the connection with 1009. */
  maxFrameBytes: number;
}

/**
 * The plain WebSocket endpoint: one JSON text frame per request, reply or
 * delivery (docs/protocol.md).
 */
export class WsTransport {
  private readonly wss: WebSocketServer;
  private readonly path: string;

  constructor(
    private readonly broker: Broker,
    server: Server,
    options: WsTransportOptions,
  ) {
    this.path = options.path ?? '/ws';
    this.wss = new WebSocketServer({ noServer: true, maxPayload: options.maxFrameBytes, perMessageDeflate: false });
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      if (new URL(req.url ?? '/', 'http://localhost').pathname !== this.path) return;
      this.wss.handleUpgrade(req, socket, head, (ws) => this.accept(ws, req));
    });
  }

  private accept(ws: WebSocket, req: IncomingMessage): void {
    const connection: Connection = {
      transport: 'ws',
      remoteAddress: req.socket.remoteAddress ?? '',
      send: (frame: ServerFrame, encode?: () => Buffer) => {
        if (ws.readyState !== ws.OPEN) return;
        if (encode) ws.send(encode(), { binary: false });
        else ws.send(JSON.stringify(frame));
      },
      bufferedAmount: () => ws.bufferedAmount,
      close: (code, reason) => ws.close(code, reason),
    };
    const session = this.broker.openSession(connection);
    ws.on('message', (raw: RawData, isBinary: boolean) => {
      if (isBinary) {
        session.sendError(null, new MeshError('bad_request', 'binary frames are not supported; send JSON text frames'));
        return;
      }
      let frame: unknown;
      try {
        frame = JSON.parse(raw.toString());
      } catch {
        session.sendError(null, new MeshError('bad_request', 'frame is not valid JSON'));
        return;
      }
      void session.handleFrame(frame);
    });
    ws.on('error', (err) => this.broker.logger.debug({ err, session: session.id }, 'websocket error'));
    ws.on('close', () => void session.close());
  }

  async close(): Promise<void> {
    for (const ws of this.wss.clients) ws.terminate();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }
}
