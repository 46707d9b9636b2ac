import { connect, createServer, type Server, type Socket } from 'node:net';

/**
 * A TCP proxy in front of a node, to break connections the way networks do:
 * cut them, or swallow what the server sends while the client's frames still
 * get through (a reply lost in flight).
 */
export class TcpProxy {
  /**
   * Which server-to-client bytes to drop: none (false), all (true), or only
   * on connections whose client has sent bytes matching the function (e.g. a
   * Redis replica's PSYNC), so one kind of connection can be starved.
   */
  swallowReplies: boolean | ((sentByClient: string) => boolean) = false;
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static start(targetPort: number): Promise<TcpProxy> {
    return new Promise((resolve, reject) => {
      let proxy: TcpProxy;
      const server = createServer((client) => {
        const upstream = connect(targetPort, '127.0.0.1');
        for (const socket of [client, upstream]) {
          proxy.sockets.add(socket);
          socket.on('close', () => proxy.sockets.delete(socket));
          socket.on('error', () => {
            client.destroy();
            upstream.destroy();
          });
        }
        // The start of what the client sent, for swallowReplies filters.
        let sent = '';
        client.on('data', (chunk) => {
          if (sent.length < 4096) sent += chunk.toString('latin1');
          upstream.write(chunk);
        });
        upstream.on('data', (chunk) => {
          const swallow = proxy.swallowReplies;
          if (!(typeof swallow === 'function' ? swallow(sent) : swallow)) client.write(chunk);
        });
        client.on('close', () => upstream.destroy());
        upstream.on('close', () => client.destroy());
      });
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const address = server.address();
        if (typeof address !== 'object' || !address) return reject(new Error('no port'));
        proxy = new TcpProxy(server, address.port);
        resolve(proxy);
      });
    });
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Drops every connection through the proxy at once. */
  cutAll(): void {
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
  }

  close(): Promise<void> {
    this.cutAll();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
