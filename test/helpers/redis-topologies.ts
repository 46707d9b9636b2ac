import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort, tempDir } from './node-process.js';
import { RedisProcess } from './redis-process.js';
import { createServer, connect as connectTcp, type Server, type Socket } from 'node:net';
import { eventually } from './util.js';

const run = promisify(execFile);

/** Runs redis-cli against a port and returns its output. */
export async function redisCli(port: number, ...args: string[]): Promise<string> {
  const { stdout } = await run('redis-cli', ['-p', String(port), ...args]);
  return stdout.trim();
}

/**
 * A TCP proxy in front of the primary through which everyone reaches it. It
 * recognises replication connections (the replica sends PSYNC) and, once
 * cut, drops what the primary sends on them: the replicas silently fall
 * behind while ordinary clients are unaffected.
 */
class PrimaryProxy {
  cut = false;
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static start(target: number): Promise<PrimaryProxy> {
    return new Promise((resolve, reject) => {
      let proxy: PrimaryProxy;
      const server = createServer((client) => {
        const upstream = connectTcp(target, '127.0.0.1');
        let replication = false;
        for (const socket of [client, upstream]) {
          proxy.sockets.add(socket);
          socket.on('close', () => proxy.sockets.delete(socket));
          socket.on('error', () => {
            client.destroy();
            upstream.destroy();
          });
        }
        client.on('data', (chunk) => {
          if (chunk.includes('PSYNC')) replication = true;
          upstream.write(chunk);
        });
        upstream.on('data', (chunk) => {
          if (!(replication && proxy.cut)) client.write(chunk);
        });
        client.on('close', () => upstream.destroy());
        upstream.on('close', () => client.destroy());
      });
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const address = server.address();
        if (typeof address !== 'object' || !address) return reject(new Error('no port'));
        proxy = new PrimaryProxy(server, address.port);
        resolve(proxy);
      });
    });
  }

  close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/**
 * A primary, two replicas and three Sentinels (redis-server --sentinel), all
 * real processes on loopback ports. Two replicas, so that after a failover
 * the new primary still has one. The replicas reach the primary through a
 * TCP proxy, so a test can make them lag (a slow or broken link).
 */
export class SentinelSetup {
  readonly sentinels: Array<{ port: number; child: ChildProcess; dir: string }> = [];

  private constructor(
    public primary: RedisProcess,
    public replicas: RedisProcess[],
    private readonly link: PrimaryProxy,
  ) {}

  static async start(master = 'mymaster'): Promise<SentinelSetup> {
    const primary = await RedisProcess.start({ args: ['--repl-diskless-sync-delay', '0'] });
    const link = await PrimaryProxy.start(primary.port);
    const replicas = [];
    for (let i = 0; i < 2; i++) replicas.push(await RedisProcess.start({ args: ['--replicaof', '127.0.0.1', String(link.port)] }));
    for (const replica of replicas) {
      await eventually(async () => (await redisCli(replica.port, 'INFO', 'replication')).includes('master_link_status:up'), 15_000, 'replica in sync');
    }
    const setup = new SentinelSetup(primary, replicas, link);
    for (let i = 0; i < 3; i++) {
      const port = await freePort();
      const dir = tempDir('meshmq-sentinel-');
      const conf = join(dir, 'sentinel.conf');
      writeFileSync(
        conf,
        [
          `port ${port}`,
          'bind 127.0.0.1',
          `dir ${dir}`,
          `sentinel monitor ${master} 127.0.0.1 ${link.port} 2`,
          `sentinel down-after-milliseconds ${master} 1000`,
          `sentinel failover-timeout ${master} 5000`,
          `sentinel parallel-syncs ${master} 1`,
          '',
        ].join('\n'),
      );
      const child = spawn('redis-server', [conf, '--sentinel'], { stdio: 'ignore' });
      setup.sentinels.push({ port, child, dir });
    }
    for (const s of setup.sentinels) {
      await eventually(async () => (await redisCli(s.port, 'SENTINEL', 'get-master-addr-by-name', master)).includes(String(link.port)), 10_000, 'sentinel');
    }
    return setup;
  }

  url(master = 'mymaster'): string {
    return `redis+sentinel://${this.sentinels.map((s) => `127.0.0.1:${s.port}`).join(',')}/${master}`;
  }

  /** From now on the replicas receive nothing more from the primary. */
  cutReplicationLink(): void {
    this.link.cut = true;
  }

  /** Port the Sentinels announce for the original primary (its proxy). */
  get originalPrimaryPort(): number {
    return this.link.port;
  }

  /** Port of the current primary as the Sentinels see it. */
  async primaryPort(master = 'mymaster'): Promise<number> {
    const reply = await redisCli(this.sentinels[0]!.port, 'SENTINEL', 'get-master-addr-by-name', master);
    return Number(reply.split('\n')[1]);
  }

  async dispose(): Promise<void> {
    for (const s of this.sentinels) {
      s.child.kill('SIGKILL');
      rmSync(s.dir, { recursive: true, force: true });
    }
    await this.link.close();
    await Promise.all([this.primary, ...this.replicas].map((r) => r.dispose()));
  }
}

/** A Redis Cluster of three primaries (no replicas), created with redis-cli --cluster create. */
export class ClusterSetup {
  private constructor(readonly nodes: RedisProcess[]) {}

  static async start(): Promise<ClusterSetup> {
    const nodes: RedisProcess[] = [];
    for (let i = 0; i < 3; i++) {
      const port = await freePort();
      nodes.push(
        await RedisProcess.start({
          port,
          args: ['--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`, '--cluster-node-timeout', '2000'],
        }),
      );
    }
    await run('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '0', '--cluster-yes']);
    for (const node of nodes) {
      await eventually(async () => (await redisCli(node.port, 'CLUSTER', 'INFO')).includes('cluster_state:ok'), 15_000, 'cluster state ok');
    }
    return new ClusterSetup(nodes);
  }

  url(): string {
    return `redis+cluster://${this.nodes.map((n) => `127.0.0.1:${n.port}`).join(',')}`;
  }

  async dispose(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.dispose()));
  }
}
