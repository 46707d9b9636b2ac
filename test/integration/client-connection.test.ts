import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type ConnectionState, MeshClient, MeshError, toWebSocketUrl } from '@meshmq/client';
import { BrokerNode, loadConfig } from '@meshmq/server';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { freePort, NodeProcess, tempDir } from '../helpers/node-process.js';
import { sleep, track, waitUntil } from '../helpers/wait.js';

const CLIENT_ENTRY = fileURLToPath(new URL('../../packages/client/dist/index.js', import.meta.url));

/** How long runScript lets a script run before it kills it and fails. */
const SCRIPT_LIMIT_MS = 20_000;
/** A timeout far past SCRIPT_LIMIT_MS (and below the server's dedupe window, as the SDK requires). */
const LONG_TIMER_MS = 100_000;

/** Runs an ES module script in a fresh Node process; resolves with its exit code and output once it exits by itself. */
function runScript(code: string, timeoutMs = SCRIPT_LIMIT_MS): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`script still running after ${timeoutMs} ms:\n${output}`));
    }, timeoutMs);
    child.on('exit', (exit) => {
      clearTimeout(timer);
      resolve({ code: exit, output });
    });
  });
}

describe('client: connections', () => {
  const cleanup: Array<() => Promise<void>> = [];
  afterEach(async () => {
    vi.restoreAllMocks();
    for (const step of cleanup.splice(0).reverse()) await step();
  });

  async function startNode(port?: number): Promise<NodeProcess> {
    const node = await NodeProcess.start(port === undefined ? {} : { port });
    cleanup.push(() => node.dispose());
    return node;
  }

  it('maps base URLs to the /ws endpoint', () => {
    expect(toWebSocketUrl('http://127.0.0.1:8080')).toBe('ws://127.0.0.1:8080/ws');
    expect(toWebSocketUrl('https://mq.example.com/')).toBe('wss://mq.example.com/ws');
    expect(toWebSocketUrl('ws://127.0.0.1:8080')).toBe('ws://127.0.0.1:8080/ws');
    expect(toWebSocketUrl('wss://mq.example.com/broker/ws')).toBe('wss://mq.example.com/broker/ws');
    expect(() => toWebSocketUrl('ftp://x')).toThrow(MeshError);
    expect(() => new MeshClient({})).toThrow(/no MeshMQ URL/);
  });

  it('connects when the first URL tried is dead', async () => {
    const node = await startNode();
    const dead = `http://127.0.0.1:${await freePort()}`;
    // Make the random start pick the first URL: the dead one.
    vi.spyOn(Math, 'random').mockReturnValue(0);
    const client = new MeshClient({ urls: [dead, node.url] });
    cleanup.push(() => client.close());
    const failed: string[] = [];
    client.on('connectFailed', ({ url, error }) => {
      failed.push(url);
      expect(error.code).toBe('unavailable');
    });
    await client.connect();
    vi.restoreAllMocks();
    expect(failed).toEqual([toWebSocketUrl(dead)]);
    expect(client.url).toBe(node.wsUrl);
    expect((await client.publish('conn.first-dead', 1)).offset).toBe(1);
  });

  it('moves to another node when its node dies', async () => {
    const a = await startNode();
    const b = await startNode();
    vi.spyOn(Math, 'random').mockReturnValue(0);
    const client = new MeshClient({ urls: [a.url, b.url], reconnect: { initialDelayMs: 50, maxDelayMs: 200 } });
    cleanup.push(() => client.close());
    await client.connect();
    vi.restoreAllMocks();
    expect(client.url).toBe(a.wsUrl);
    const connected: string[] = [];
    client.on('connected', (info) => connected.push(info.url));
    await a.kill();
    await waitUntil(() => client.url === b.wsUrl, 'the move to node b', 5000);
    expect(connected).toEqual([b.wsUrl]);
    expect((await client.publish('conn.failover', 'on b')).offset).toBe(1);
  });

  it('moves to the node a draining node names, and resumes its subscription there', async () => {
    // Node a runs in this process, so the test can make it drain; node b is a separate process.
    const b = await startNode();
    const port = await freePort();
    const dataDir = tempDir();
    const a = new BrokerNode(loadConfig(['--port', String(port), '--data-dir', dataDir, '--log-level', 'warn'], {}).config);
    cleanup.push(async () => rmSync(dataDir, { recursive: true, force: true }));
    await a.start();
    cleanup.push(() => a.stop());
    const client = new MeshClient({ url: `http://127.0.0.1:${port}` });
    cleanup.push(() => client.close());
    const moving: string[][] = [];
    const closes: number[] = [];
    client.on('moving', (info) => moving.push(info.nodes));
    client.on('disconnected', (info) => closes.push(info.code));
    const got: string[] = [];
    await client.subscribe<string>('conn.move', (m) => void got.push(m.data), { from: 1 });
    expect(client.urls).toEqual([`ws://127.0.0.1:${port}/ws`]);

    await a.broker.drain([b.url]);
    await waitUntil(() => client.url === b.wsUrl && client.state === 'connected', 'the move to node b', 5000);
    expect(moving).toEqual([[b.url]]);
    expect(closes).toEqual([1012]);
    // b has its own log (separate data), so the subscription continues there from its start.
    await client.publish('conn.move', 'on b');
    await waitUntil(() => got.length === 1, 'a message on node b');
    expect(got).toEqual(['on b']);
  });

  it('keeps trying until a node comes up, then connects', async () => {
    const port = await freePort();
    const client = new MeshClient({ url: `http://127.0.0.1:${port}`, reconnect: { initialDelayMs: 50, maxDelayMs: 200 } });
    cleanup.push(() => client.close());
    const states: ConnectionState[] = [];
    client.on('state', (s) => states.push(s));
    expect(client.state).toBe('idle');
    let failedAttempts = 0;
    client.on('connectFailed', () => failedAttempts++);
    const connecting = track(client.connect());
    const publishing = track(client.publish('conn.late', 'queued'));
    // Nothing listens yet: after two failed attempts the client is still trying, with both calls waiting.
    await waitUntil(() => failedAttempts >= 2, 'two failed connection attempts');
    expect(connecting.settled()).toBe(false);
    expect(publishing.settled()).toBe(false);
    expect(client.state).toBe('connecting');
    await startNode(port);
    await connecting.promise;
    expect(await publishing.promise).toMatchObject({ offset: 1 });
    expect(states).toEqual(['connecting', 'connected']);
  });

  it('rejects connect() after requestTimeoutMs when nothing answers', async () => {
    const client = new MeshClient({ url: `http://127.0.0.1:${await freePort()}`, requestTimeoutMs: 300 });
    cleanup.push(() => client.close());
    await expect(client.connect()).rejects.toMatchObject({ code: 'unavailable' });
  });

  it('closes: state closed, waiting requests fail, later calls fail', async () => {
    const node = await startNode();
    const client = new MeshClient({ url: node.url });
    const states: ConnectionState[] = [];
    client.on('state', (s) => states.push(s));
    await client.connect();
    const got: number[] = [];
    const sub = await client.subscribe('conn.close', (m) => void got.push(m.offset));
    await client.close();
    expect(states).toEqual(['connecting', 'connected', 'closed']);
    expect(client.state).toBe('closed');
    expect(sub.active).toBe(false);
    await expect(client.publish('conn.close', 1)).rejects.toMatchObject({ code: 'unavailable' });
    await expect(client.connect()).rejects.toMatchObject({ code: 'unavailable' });
    await expect(client.subscribe('conn.other', () => {})).rejects.toMatchObject({ code: 'unavailable' });
    // The server dropped the subscription with the connection.
    let subscriptions = -1;
    for (let i = 0; i < 50 && subscriptions !== 0; i++) {
      if (i > 0) await sleep(20);
      subscriptions = ((await (await fetch(`${node.url}/healthz`)).json()) as { subscriptions: number }).subscriptions;
    }
    expect(subscriptions).toBe(0);
  });

  it('leaves nothing that keeps a Node process alive after close()', async () => {
    const node = await startNode();
    const dead = `http://127.0.0.1:${await freePort()}`;
    // Every timer the clients run (request, connect, heartbeat, reconnect) is one that a leak would leave
    // behind; with these options a leaked one keeps the script alive past runScript's limit, so it fails.
    const script = `
      import { MeshClient } from ${JSON.stringify(CLIENT_ENTRY)};
      const options = { requestTimeoutMs: ${LONG_TIMER_MS}, connectTimeoutMs: ${LONG_TIMER_MS} };
      const live = new MeshClient({ url: ${JSON.stringify(node.url)}, heartbeatMs: 1000, ...options });
      await live.subscribe('conn.exit', () => {});
      await live.consume('conn.exit', 'g', () => {});
      await live.publish('conn.exit', 1);
      const offline = new MeshClient({ url: ${JSON.stringify(dead)}, ...options });
      const failed = new Promise((resolve) => offline.on('connectFailed', resolve));
      const queued = offline.publish('conn.exit', 2).catch((e) => e.code);
      // It tried, failed, and waits to try again, with the publish queued and its request timer running.
      await failed;
      await Promise.all([live.close(), offline.close()]);
      console.log('queued:', await queued);
    `;
    const result = await runScript(script);
    expect(result.output).toContain('queued: unavailable');
    expect(result.code).toBe(0);
  });
});
