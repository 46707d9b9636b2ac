import type { Server as HttpServer } from 'node:http';
import { Server, type ServerOptions, type Socket } from 'socket.io';
import { MeshError, type ServerFrame } from '@meshmq/shared';
import type { Broker } from '../core/broker.js';
import type { Connection } from '../core/connection.js';

export interface SocketIoTransportOptions {
  /** Largest packet accepted; larger ones close the connection. */
  maxFrameBytes: number;
  /**
   * Adapter factory for a cluster (e.g. @socket.io/redis-adapter's sharded
   * adapter): rooms, broadcasts and server-to-server requests then span every
   * node. Default: Socket.IO's in-memory adapter.
   */
  adapter?: ServerOptions['adapter'];
}

/** Room of the Socket.IO connections subscribed to a topic. */
export const topicRoom = (topic: string) => `topic:${topic}`;

type Ack = (reply: unknown) => void;

/**
 * Socket.IO on the same HTTP port: each operation is an event of the same
 * name whose acknowledgement carries the reply; deliveries are `message`
 * events. Requests sent without an acknowledgement get their reply as an
 * `ok` or `error` event instead.
 */
export class SocketIoTransport {
  readonly io: Server;

  constructor(
    private readonly broker: Broker,
    server: HttpServer,
    options: SocketIoTransportOptions,
  ) {
    this.io = new Server(server, {
      maxHttpBufferSize: options.maxFrameBytes,
      serveClient: false,
      destroyUpgrade: false,
      cors: { origin: true },
      ...(options.adapter ? { adapter: options.adapter } : {}),
    });
    this.io.on('connection', (socket) => this.accept(socket));
  }

  private accept(socket: Socket): void {
    const pending = new Map<number, Ack>();
    let nextId = 1;
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
      // Socket.IO keeps its queue private; its underlying socket's buffer is what congests.
      bufferedAmount: () => (socket.conn.request.socket?.writableLength ?? 0),
      // Let frames already queued (a move, last replies) go out before the close.
      close: () => setImmediate(() => socket.disconnect(true)),
      joinTopic: (topic) => void socket.join(topicRoom(topic)),
      leaveTopic: (topic) => void socket.leave(topicRoom(topic)),
    };
    const session = this.broker.openSession(connection);
    socket.onAny((event: unknown, ...args: unknown[]) => {
      const ack = typeof args.at(-1) === 'function' ? (args.pop() as Ack) : undefined;
      const id = nextId++;
      if (ack) pending.set(id, ack);
      const payload = args[0] ?? {};
      if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) {
        connection.send({ op: 'error', id, code: 'bad_request', message: 'the event payload must be an object' });
        return;
      }
      if ('op' in payload || 'id' in payload) {
        connection.send({ op: 'error', id, code: 'bad_request', message: "the event name is the op; do not send 'op' or 'id'" });
        return;
      }
      void session.handleFrame({ ...payload, op: event, id });
    });
    socket.on('disconnect', () => {
      pending.clear();
      void session.close();
    });
    socket.on('error', (err) => session.sendError(null, MeshError.from(err)));
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.io.close(() => resolve());
    });
  }
}
