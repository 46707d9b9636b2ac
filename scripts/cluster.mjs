#!/usr/bin/env node
// `pnpm cluster`: three MeshMQ nodes on consecutive ports against one Redis,
// restarting any node that dies. Uses REDIS_URL when set; otherwise starts a
// redis-server of its own (AOF on, appendfsync always) when one is on PATH.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const cli = join(root, 'packages/server/dist/cli.js');
const count = Number(process.env.CLUSTER_NODES ?? 3);
const basePort = Number(process.env.PORT ?? 8080);
const host = process.env.HOST ?? '127.0.0.1';
const dataDir = resolve(process.env.DATA_DIR ?? join(root, 'data/cluster'));
let redisUrl = process.env.REDIS_URL;
let redis;
let stopping = false;
const children = new Map();

function log(name, line) {
  process.stdout.write(`[${name}] ${line}\n`);
}

function pipe(name, stream) {
  let rest = '';
  stream.on('data', (chunk) => {
    const lines = (rest + chunk.toString()).split('\n');
    rest = lines.pop() ?? '';
    for (const line of lines) if (line) log(name, line);
  });
}

async function startRedis() {
  if (spawnSync('redis-server', ['--version']).status !== 0) {
    console.error('REDIS_URL is not set and redis-server is not on PATH: install redis-server or set REDIS_URL.');
    process.exit(2);
  }
  const port = Number(process.env.CLUSTER_REDIS_PORT ?? 6390);
  const dir = join(dataDir, 'redis');
  mkdirSync(dir, { recursive: true });
  redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'always', '--save', ''], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  pipe('redis', redis.stdout);
  pipe('redis', redis.stderr);
  redis.on('exit', (code) => {
    if (!stopping) log('redis', `exited with ${code}; the nodes report it and fail publishes until it is back`);
  });
  redisUrl = `redis://127.0.0.1:${port}`;
  await new Promise((r) => setTimeout(r, 300));
}

function startNode(i, restarts = 0) {
  const port = basePort + i;
  const name = `node-${i + 1}`;
  const child = spawn(process.execPath, [cli], {
    env: {
      ...process.env,
      PORT: String(port),
      HOST: host,
      NODE_ID: name,
      PUBLIC_URL: `http://${host}:${port}`,
      REDIS_URL: redisUrl,
      DATA_DIR: join(dataDir, name),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.set(i, child);
  pipe(name, child.stdout);
  pipe(name, child.stderr);
  const startedAt = Date.now();
  child.on('exit', (code, signal) => {
    if (stopping) return;
    // Back off when a node keeps dying right after start; reset once it stayed up.
    const next = Date.now() - startedAt > 10_000 ? 0 : restarts + 1;
    const delay = Math.min(250 * 2 ** next, 10_000);
    log(name, `exited (${signal ?? code}); restarting in ${delay} ms`);
    setTimeout(() => startNode(i, next), delay);
  });
}

function shutdown() {
  if (stopping) return;
  stopping = true;
  for (const child of children.values()) child.kill('SIGTERM');
  setTimeout(() => {
    redis?.kill('SIGTERM');
    process.exit(0);
  }, 6000).unref();
  Promise.all([...children.values()].map((c) => new Promise((r) => (c.exitCode !== null ? r() : c.once('exit', r))))).then(() => {
    redis?.kill('SIGTERM');
    process.exit(0);
  });
}

process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);

if (!redisUrl) await startRedis();
log('cluster', `${count} nodes on ports ${basePort}-${basePort + count - 1} against ${redisUrl}`);
for (let i = 0; i < count; i++) startNode(i);
