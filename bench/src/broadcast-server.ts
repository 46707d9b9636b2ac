/**
 * The peers of the broadcast workloads (fanout, burst, connections), each a
 * minimal server in a child process of its own, in memory only:
 *
 *   node broadcast-server.js ws <port>
 *   node broadcast-server.js socketio <port> [redis://… for @socket.io/redis-adapter]
 *
 * - `ws`: a `ws` WebSocketServer keeping its clients in a set (`wss.clients`);
 *   every text frame a client sends is sent to every other open client, as in
 *   the broadcast example of ws's README, then answered to its sender with
 *   `a` (so a publisher can keep a window of unanswered publishes, as it does
 *   with MeshMQ).
 * - `socketio`: a Socket.IO server; a client joins a room with
 *   `join(room, ack)`, publishes with `pub(room, data, ack)`: the server does
 *   `io.to(room).emit('m', data)`, then acks. With a Redis URL it uses
 *   `@socket.io/redis-adapter` (`createAdapter`, Redis pub/sub), so rooms
 *   span every server of that Redis.
 *
 * Both answer `GET /health` with 200 once listening. Nothing is stored.
 */
import { createServer } from 'node:http';

const [kind, portArg, redisUrl] = process.argv.slice(2);
const port = Number(portArg);

const http = createServer((req, res) => {
  if (req.url === '/health') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('ok');
    return;
  }
  if (kind === 'ws') {
    res.writeHead(404);
    res.end();
  }
  // Socket.IO answers its own path; anything else it leaves alone (404 by engine.io or hanging): fine for a bench.
});

async function main(): Promise<void> {
  if (kind === 'ws') {
    const { default: WebSocket, WebSocketServer } = await import('ws');
    const wss = new WebSocketServer({ server: http, perMessageDeflate: false });
    wss.on('connection', (ws) => {
      ws.on('error', () => {});
      ws.on('message', (data, isBinary) => {
        for (const client of wss.clients) {
          if (client !== ws && client.readyState === WebSocket.OPEN) client.send(data, { binary: isBinary });
        }
        ws.send('a');
      });
    });
  } else if (kind === 'socketio') {
    const { Server } = await import('socket.io');
    const io = new Server(http, { serveClient: false });
    if (redisUrl) {
      const { createClient } = await import('redis');
      const { createAdapter } = await import('@socket.io/redis-adapter');
      const pub = createClient({ url: redisUrl });
      const sub = pub.duplicate();
      // No error handler of our own: a Redis error is what the adapter and node-redis make of it.
      await Promise.all([pub.connect(), sub.connect()]);
      io.adapter(createAdapter(pub, sub));
    }
    io.on('connection', (socket) => {
      socket.on('join', (room: string, ack?: () => void) => {
        void socket.join(room);
        ack?.();
      });
      socket.on('pub', (room: string, data: unknown, ack?: () => void) => {
        io.to(room).emit('m', data);
        ack?.();
      });
    });
  } else {
    throw new Error(`unknown server kind '${kind}'`);
  }
  await new Promise<void>((resolve) => http.listen(port, '127.0.0.1', resolve));
  process.stdout.write(`listening on ${port}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
