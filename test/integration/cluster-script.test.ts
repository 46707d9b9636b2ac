import { type ChildProcess, spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort, tempDir } from '../helpers/node-process.js';
import { eventually } from '../helpers/util.js';

const SCRIPT = fileURLToPath(new URL('../../scripts/cluster.mjs', import.meta.url));

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** A base port with the two after it free as well. */
async function threeFreePorts(): Promise<number> {
  for (;;) {
    const base = 20_000 + Math.floor(Math.random() * 30_000);
    if ((await portFree(base)) && (await portFree(base + 1)) && (await portFree(base + 2))) return base;
  }
}

async function health(port: number): Promise<{ node: string; pid: number } | undefined> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/readyz`);
    if (res.status !== 200) return undefined;
    return (await (await fetch(`http://127.0.0.1:${port}/healthz`)).json()) as { node: string; pid: number };
  } catch {
    return undefined;
  }
}

/** `pnpm cluster`'s script: three nodes and its own Redis, restarting a node that dies. */
describe('the local cluster script', () => {
  let child: ChildProcess | undefined;
  const dataDir = tempDir('meshmq-cluster-');
  afterAll(async () => {
    if (child && child.exitCode === null) {
      const exited = new Promise((resolve) => child!.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('starts three nodes over its own Redis, restarts one that is killed, and stops them all', async () => {
    const base = await threeFreePorts();
    const redisPort = await freePort();
    let output = '';
    child = spawn(process.execPath, [SCRIPT], {
      env: { ...process.env, PORT: String(base), CLUSTER_REDIS_PORT: String(redisPort), DATA_DIR: dataDir, LOG_LEVEL: 'warn', REDIS_URL: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout?.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr?.on('data', (c: Buffer) => (output += c.toString()));
    const ports = [base, base + 1, base + 2];
    const first = await eventually(
      async () => {
        const all = await Promise.all(ports.map(health));
        return all.every(Boolean) && (all as Array<{ node: string; pid: number }>);
      },
      30_000,
      `three ready nodes (${output})`,
    );
    expect(first.map((h) => h.node)).toEqual(['node-1', 'node-2', 'node-3']);
    // The nodes learn of each other from their heartbeats.
    const nodes = await eventually(
      async () => {
        const view = (await (await fetch(`http://127.0.0.1:${base}/api/nodes`)).json()) as { mode: string; nodes: Array<{ id: string }> };
        return view.nodes.length === 3 && view;
      },
      10_000,
      'membership of three',
    );
    expect(nodes.mode).toBe('cluster');
    expect(nodes.nodes.map((n) => n.id).sort()).toEqual(['node-1', 'node-2', 'node-3']);
    const readyz = (await (await fetch(`http://127.0.0.1:${base}/readyz`)).json()) as { redis: { durability: { survives: { hostCrash: boolean } } } };
    expect(readyz.redis.durability.survives.hostCrash).toBe(true);

    process.kill(first[1]!.pid, 'SIGKILL');
    const again = await eventually(
      async () => {
        const h = await health(base + 1);
        return h && h.pid !== first[1]!.pid && h;
      },
      20_000,
      'node-2 restarted',
    );
    expect(again.node).toBe('node-2');
    expect(output).toContain('[node-2] exited (SIGKILL); restarting');

    const exited = new Promise<number | null>((resolve) => child!.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    for (const port of ports) expect(await portFree(port)).toBe(true);
  }, 90_000);
});
