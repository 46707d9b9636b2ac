import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { MeshError, type ServerFrame } from '@meshmq/shared';
import { Server as EngineServer, type Socket as EngineSocket } from 'engine.io';
import type { Logger } from 'pino';
import { Server, type ServerOptions, type Socket } from 'socket.io';
import type { WebSocket } from 'ws';
import type { Principal } from '../core/access.js';
import type { Connection } from '../core/connection.js';
import { FrameWatchdog, InputThrottle } from './flow-control.js';
import type { SessionHost } from './ws-transport.js';

export interface SocketIoTransportOptions {
  /** Largest packet accepted; larger ones close the connection. */
  maxFrameBytes: number;
  /** Longest time a started WebSocket frame may take to arrive in full. */
  frameTimeoutMs: number;
  /**
   * Adapter factory for a cluster (e.g. @socket.io/redis-adapter's sharded
   * adapter): rooms and broadcasts then span every node. Default: Socket.IO's
   * in-memory adapter.
   */
  adapter?: ServerOptions['adapter'];
  /** Who a connection acts as, from its `auth.token` (or the handshake's token); rejects with a MeshError. */
  authenticate: (req: IncomingMessage, token: string | undefined) => Promise<Principal>;
  /** Counts a new connection against the node's limits; returns its release. Throws a MeshError when full. */
  admit: (address: string) => () => void;
  /** True when pages of `origin` may connect (engine.io answers CORS preflights with it). */
  originAllowed: (origin: string) => boolean;
  logger: Logger;
}

/** Room of the Socket.IO connections subscribed to a topic. */
export const topicRoom = (topic: string) => `topic:${topic}`;

type Ack = (reply: unknown) => void;

/** How long a Socket.IO client has after the engine.io handshake to connect to the namespace (and authenticate). */
const CONNECT_TIMEOUT_MS = 10_000;

/**
 * Socket.IO on the node's HTTP port, under `/socket.io/`: each operation is
 * an event of the same name whose acknowledgement carries the reply;
 * deliveries are `message` events. Requests sent without an acknowledgement
 * get their reply as an `ok` or `error` event instead.
 *
 * The engine is not attached to the HTTP server: the node routes requests
 * and upgrades here once its gate admitted them, and the token (Socket.IO's
 * `auth: { token }`) is checked when the client connects to the namespace,
 * refused with `connect_error`.
 */
export class SocketIoTransport {
  readonly io: Server;
  private readonly engine: EngineServer;
  private readonly watchdog: FrameWatchdog;

  constructor(
    private readonly sessions: SessionHost,
    private readonly options: SocketIoTransportOptions,
  ) {
    this.engine = new EngineServer({
      maxHttpBufferSize: options.maxFrameBytes,
      cors: { origin: (origin, callback) => callback(null, origin === undefined || options.originAllowed(origin)) },
      perMessageDeflate: false,
      httpCompression: false,
    });
    this.io = new Server({ serveClient: false, connectTimeout: CONNECT_TIMEOUT_MS, ...(options.adapter ? { adapter: options.adapter } : {}) });
    this.io.bind(this.engine);
    this.watchdog = new FrameWatchdog(options.frameTimeoutMs);
    this.engine.on('connection', (conn: EngineSocket) => this.admitConnection(conn));
    this.io.use((socket, next) => {
      const auth = socket.handshake.auth as { token?: unknown } | undefined;
      const token = typeof auth?.token === 'string' ? auth.token : undefined;
      options.authenticate(socket.request, token).then(
        (principal) => {
          (socket.data as { principal?: Principal }).principal = principal;
          next();
        },
        (err) => {
          const error = MeshError.from(err);
          const refusal = Object.assign(new Error(error.message), { data: { code: error.code } });
          next(refusal);
          // The refusal (connect_error) goes out first; then no socket is kept.
          setImmediate(() => socket.conn.close());
        },
      );
    });
    this.io.on('connection', (socket) => this.accept(socket));
  }

  /** True for an engine.io request that opens a new connection (no session id yet). */
  static isHandshake(url: URL): boolean {
    return !url.searchParams.has('sid');
  }

  handleRequest(req: IncomingMessage, res: ServerResponse): void {
    this.engine.handleRequest(req, res);
  }

  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    this.engine.handleUpgrade(req, socket, head);
  }

  /** Counts each engine.io connection against the node's limits for as long as it is open. */
  private admitConnection(conn: EngineSocket): void {
    let release: () => void;
    try {
      release = this.options.admit(conn.request.socket?.remoteAddress ?? conn.remoteAddress);
    } catch (err) {
      this.options.logger.info({ reason: MeshError.from(err).message }, 'refusing a Socket.IO connection');
      conn.close();
      return;
    }
    conn.once('close', release);
    const watch = () => {
      const ws = websocketOf(conn);
      if (ws) this.watchdog.watch(ws, () => conn.close());
    };
    watch();
    conn.once('upgrade', watch);
  }

  private accept(socket: Socket): void {
    const principal = (socket.data as { principal: Principal }).principal;
    const conn = socket.conn;
    const pending = new Map<number, Ack>();
    let nextId = 1;
    const queued = queuedBytes(conn);
    const connection: Connection = {
      transport: 'socket.io',
      remoteAddress: socket.handshake.address,
      send: (frame: ServerFrame) => {
        if (frame.op === 'message' || frame.op === 'move' || frame.op === 'reset') {
          socket.emit(frame.op, frame);
          return;
        }
        const ack = typeof frame.id === 'number' ? pending.get(frame.id) : undefined;
        if (ack) {
          pending.delete(frame.id as number);
          const { id: _id, ...reply } = frame;
          ack(reply);
        } else {
          socket.emit(frame.op, frame);
        }
      },
      // engine.io's own queue (packets not yet handed to the transport) plus the WebSocket's.
      bufferedAmount: () => queued() + (websocketOf(conn)?.bufferedAmount ?? 0),
      // Let frames already queued (a move, last replies) go out before the close.
      close: () => setImmediate(() => socket.disconnect(true)),
      joinTopic: (topic) => void socket.join(topicRoom(topic)),
      leaveTopic: (topic) => void socket.leave(topicRoom(topic)),
    };
    const session = this.sessions.openSession(connection, principal);
    const throttle = new InputThrottle(connection.bufferedAmount, () => websocketOf(conn));
    socket.onAny((event: unknown, ...args: unknown[]) => {
      const ack = typeof args.at(-1) === 'function' ? (args.pop() as Ack) : undefined;
      const id = nextId++;
      if (ack) pending.set(id, ack);
      const payload = args[0] ?? {};
      // Plain objects only: spreading anything else (a Buffer of 2 MiB, an array) would cost far more than its size.
      if (!isPlainObject(payload)) {
        connection.send({ op: 'error', id, code: 'bad_request', message: 'the event payload must be an object' });
      } else if ('op' in payload || 'id' in payload) {
        connection.send({ op: 'error', id, code: 'bad_request', message: "the event name is the op; do not send 'op' or 'id'" });
      } else {
        void session.handleFrame({ ...payload, op: event, id });
      }
      throttle.check();
    });
    socket.on('disconnect', () => {
      throttle.stop();
      pending.clear();
      void session.close();
    });
    // Socket.IO reports packets its parser refused here (the client is then disconnected), and a client's own
    // event named 'error' reaches this listener too (onAny answered it as an unknown op): neither is the node's failure.
    socket.on('error', (err: unknown) =>
      this.options.logger.debug({ session: session.id, reason: MeshError.from(err).message.slice(0, 200) }, 'socket.io error'),
    );
  }

  async close(): Promise<void> {
    this.watchdog.close();
    await new Promise<void>((resolve) => {
      void this.io.close(() => resolve());
    });
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== 'object') return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** The WebSocket under an engine.io connection, when its transport is one. */
function websocketOf(conn: EngineSocket): WebSocket | undefined {
  const transport = conn.transport as { name?: string; socket?: WebSocket } | undefined;
  return transport?.name === 'websocket' ? transport.socket : undefined;
}

/**
 * Bytes of the packets engine.io holds for a connection before handing them
 * to its transport (a paused or polling client makes them pile up there).
 */
function queuedBytes(conn: EngineSocket): () => number {
  let bytes = 0;
  const size = (packet: { data?: unknown }) => (typeof packet.data === 'string' ? packet.data.length : Buffer.isBuffer(packet.data) ? packet.data.length : 0);
  conn.on('packetCreate', (packet: { data?: unknown }) => (bytes += size(packet)));
  conn.on('flush', (packets: Array<{ data?: unknown }>) => {
    for (const packet of packets) bytes -= size(packet);
  });
  return () => Math.max(0, bytes);
}
