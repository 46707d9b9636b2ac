import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { mintToken } from '@meshmq/server';
import { io, type Socket } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { MiB, residentMemory } from '../fuzz/proc-stats.js';
import { NodeProcess } from '../helpers/node-process.js';
import { RawClient } from '../helpers/raw-client.js';
import { eventually } from '../helpers/util.js';

const SECRET = randomBytes(32).toString('hex');
/** The part of lmdb (the node's store, read here as a second reader) this test uses. */
interface Lmdb {
  open(options: { path: string; compression: boolean; readOnly: boolean }): {
    openDB(options: { name: string }): { getKeys(range: { start: unknown[]; end: unknown[] }): Iterable<unknown> };
    close(): Promise<void>;
  };
}
const { open: openLmdb } = createRequire(new URL('../../packages/server/package.json', import.meta.url))('lmdb') as Lmdb;

/** What the fuzz test found once, each pinned by the input that showed it. */
describe('inputs the fuzzer found', () => {
  let node: NodeProcess;
  let token: string;

  beforeAll(async () => {
    node = await NodeProcess.start({ env: { AUTH_SECRET: SECRET, DEDUPE_WINDOW: '1s', RETENTION_SWEEP: '300ms' } });
    token = await mintToken({ secret: SECRET, sub: 'k', permissions: { admin: true }, ttlMs: 600_000 });
  });
  afterAll(async () => {
    await node?.dispose();
  });

  const sio = async (): Promise<Socket> => {
    const socket = io(node.url, { transports: ['websocket'], reconnection: false, forceNew: true, auth: { token } });
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    return socket;
  };

  it('answers a Socket.IO event named "error" like any unknown event, without internal or an error log', async () => {
    const socket = await sio();
    const frames: Array<{ code?: string }> = [];
    socket.on('error', (frame: { code?: string }) => frames.push(frame));
    expect(await socket.emitWithAck('error', { x: 1 })).toMatchObject({ op: 'error', code: 'bad_request' });
    // Anything the node sent about it came before the reply to a later request on the same connection.
    expect(await socket.emitWithAck('ping', {})).toMatchObject({ op: 'ok' });
    expect(frames.filter((f) => f.code === 'internal')).toEqual([]);
    expect(node.logs).not.toMatch(/"level":50/);
    socket.disconnect();
  });

  it.each(['42{}', '4', '42["disconnect",{}]', '4511-["ping",{}]', '47'])('does not answer a broken Socket.IO packet %j with internal', async (packet) => {
    const ws = new WebSocket(`ws://127.0.0.1:${node.port}/socket.io/?EIO=4&transport=websocket`);
    const got: string[] = [];
    ws.on('message', (data) => got.push(data.toString()));
    const closed = new Promise((resolve) => ws.once('close', resolve));
    await new Promise((resolve) => ws.once('open', resolve));
    ws.send(`40${JSON.stringify({ token })}`);
    await eventually(() => got.some((g) => g.startsWith('40{')), 5000, 'the namespace connect');
    const logged = node.logs.length;
    ws.send(packet);
    // The parser refuses it and the node drops the connection; a packet it takes instead is answered like a ping.
    ws.send('42["ping",{}]');
    await Promise.race([closed, eventually(() => got.some((g) => g.includes('"ts"')), 5000, 'the reply to a ping')]);
    expect(got.filter((g) => g.includes('"internal"'))).toEqual([]);
    expect(node.logs.slice(logged)).not.toMatch(/"level":50/);
    ws.terminate();
  });

  it('refuses a binary Socket.IO payload cheaply', async () => {
    const socket = await sio();
    const before = residentMemory(node.pid!).rss;
    const reply = await socket.timeout(60_000).emitWithAck('publish', Buffer.alloc(2_000_000, 1));
    expect(reply).toMatchObject({ code: 'bad_request', message: 'the event payload must be an object' });
    expect(residentMemory(node.pid!).rss - before).toBeLessThan(50 * MiB);
    socket.disconnect();
  });

  it('reports numeric counters for topics named like Object.prototype members', async () => {
    const client = await RawClient.connect(`${node.wsUrl}?token=${token}`);
    for (const topic of ['constructor', 'toString', '__proto__']) await client.ok({ op: 'publish', topic, data: 1 });
    await client.ok({ op: 'subscribe', topic: 'constructor' });
    const { topics } = (await (await fetch(`${node.url}/api/topics`, { headers: { authorization: `Bearer ${token}` } })).json()) as {
      topics: Array<{ topic: string; subscribers: unknown; publishRate: unknown }>;
    };
    const counters = (name: string) => topics.find((t) => t.topic === name);
    expect(counters('constructor')).toMatchObject({ subscribers: 1 });
    for (const name of ['toString', '__proto__']) expect(counters(name)).toMatchObject({ subscribers: 0 });
    for (const name of ['constructor', 'toString', '__proto__']) expect(typeof counters(name)?.publishRate).toBe('number');
    await client.close();
  });

  it('expires dedupe keys whatever their first character', async () => {
    const client = await RawClient.connect(`${node.wsUrl}?token=${token}`);
    for (const key of ['plain', '😀emoji', '𝕗fancy']) await client.ok({ op: 'publish', topic: 'dedupe', data: 1, key });
    await client.close();
    const root = openLmdb({ path: node.dataDir, compression: false, readOnly: true });
    try {
      const dedupe = root.openDB({ name: 'dedupe' });
      await eventually(
        () => [...dedupe.getKeys({ start: ['dedupe', ''], end: ['dedupe\u0001', ''] })].length === 0,
        10_000,
        'every dedupe key of the topic to expire',
      );
    } finally {
      await root.close();
    }
  });

  it('stores pipelined publishes to a new topic in the order they were sent', async () => {
    const client = await RawClient.connect(`${node.wsUrl}?token=${token}`);
    const replies = await Promise.all(Array.from({ length: 300 }, (_, i) => client.request({ op: 'publish', topic: 'ordered.new', data: i })));
    expect(replies.map((r) => r.offset)).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
    await client.close();
  });
});
