import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort, tempDir } from './node-process.js';
import { RedisProcess } from './redis-process.js';
import { TcpProxy } from './tcp-proxy.js';
import { eventually } from './util.js';

const run = promisify(execFile);

/** Runs redis-cli against a port and returns its output. */
export async function redisCli(port: number, ...args: string[]): Promise<string> {
  const { stdout } = await run('redis-cli', ['-p', String(port), ...args]);
  return stdout.trim();
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
    private readonly link: TcpProxy,
  ) {}

  static async start(master = 'mymaster'): Promise<SentinelSetup> {
    const primary = await RedisProcess.start({ args: ['--repl-diskless-sync-delay', '0'] });
    // Everyone reaches the primary through this proxy, so a test can starve the replicas alone.
    const link = await TcpProxy.start(primary.port);
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
    this.link.swallowReplies = (sent) => sent.includes('PSYNC');
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
