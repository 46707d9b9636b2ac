/** Starts MeshMQ nodes from packages/server/dist/cli.js as child processes. */
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Child, freePort, makeTempDir, removeTempDir, startChild, waitFor } from './proc.js';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const CLI = join(REPO_ROOT, 'packages/server/dist/cli.js');

/**
 * Options every bench node gets: loopback, quiet logs, and no limit that would
 * throttle a benchmark (the publish rate limit off, in-flight requests above
 * any window the bench uses). Printed by the harness at start.
 */
export const MESH_BENCH_ARGS = [
  '--host',
  '127.0.0.1',
  '--log-level',
  'warn',
  '--max-publish-rate',
  '0',
  '--max-inflight',
  '100000',
  '--max-connections-per-address',
  '10000',
];

export interface MeshNodesOptions {
  engine: 'embedded' | 'redis';
  /** How many nodes (default 1). Embedded nodes are independent; Redis nodes form one cluster. */
  count?: number;
  /** For the Redis engine: the Redis URL (redis://127.0.0.1:<port>). */
  redis?: string;
  /** Appended to each node's command line. */
  extraArgs?: string[];
  /** Node.js options put before the CLI on each node's command line (e.g. `--inspect-port=…`). */
  nodeArgs?: string[];
}

export interface MeshNode {
  /** http://127.0.0.1:<port> */
  url: string;
  /** ws://127.0.0.1:<port>/ws */
  wsUrl: string;
  port: number;
  pid: number;
  dataDir?: string;
}

export interface MeshCluster {
  nodes: MeshNode[];
  urls: string[];
  wsUrls: string[];
  pids: number[];
  /** The full command line of the first node, for the report. */
  args: string[];
  /** The last lines each node printed (at --log-level warn: its warnings and errors), by port. */
  output(): Record<number, string>;
  stop(): Promise<void>;
}

let clusterSeq = 0;

export async function startMeshNodes(options: MeshNodesOptions): Promise<MeshCluster> {
  const count = options.count ?? 1;
  if (options.engine === 'redis' && !options.redis) throw new Error('startMeshNodes: the redis engine needs options.redis');
  const prefix = `bench${process.pid}x${++clusterSeq}:`;
  const started: { child: Child; node: MeshNode }[] = [];
  let firstArgs: string[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const port = await freePort();
      const args = [CLI, '--port', String(port), '--node-id', `bench-${port}`, ...MESH_BENCH_ARGS];
      let dataDir: string | undefined;
      if (options.engine === 'embedded') {
        dataDir = makeTempDir(`mesh-${port}`);
        args.push('--data-dir', dataDir);
      } else {
        args.push('--redis-url', options.redis!, '--redis-prefix', prefix);
      }
      args.push(...(options.extraArgs ?? []));
      if (i === 0) firstArgs = [relative(REPO_ROOT, CLI), ...args.slice(1)];
      const child = startChild(process.execPath, [...(options.nodeArgs ?? []), ...args], { cwd: REPO_ROOT });
      const node: MeshNode = { url: `http://127.0.0.1:${port}`, wsUrl: `ws://127.0.0.1:${port}/ws`, port, pid: child.pid, ...(dataDir ? { dataDir } : {}) };
      started.push({ child, node });
    }
    for (const { child, node } of started) {
      await waitFor(
        `meshmq node on ${node.port}`,
        async () => {
          try {
            const res = await fetch(`${node.url}/readyz`);
            await res.arrayBuffer();
            return res.ok;
          } catch {
            return false;
          }
        },
        30_000,
        child,
      );
    }
  } catch (err) {
    await Promise.all(started.map(({ child }) => child.stop(1000)));
    throw err;
  }
  const nodes = started.map((s) => s.node);
  return {
    nodes,
    urls: nodes.map((n) => n.url),
    wsUrls: nodes.map((n) => n.wsUrl),
    pids: nodes.map((n) => n.pid),
    args: firstArgs,
    output() {
      const out: Record<number, string> = {};
      for (const { child, node } of started) {
        const text = child.output().trim();
        if (text) out[node.port] = text;
      }
      return out;
    },
    async stop() {
      await Promise.all(started.map(({ child }) => child.stop()));
      for (const { node } of started) if (node.dataDir) removeTempDir(node.dataDir);
    },
  };
}
