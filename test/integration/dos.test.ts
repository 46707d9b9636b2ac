import { randomBytes } from 'node:crypto';
import { get } from 'node:http';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { mintToken } from '@meshmq/server';
import { io, type Socket as SioSocket } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { heapProbeEnv, liveMemory, MemorySampler, MiB, mib, openConnections, residentMemory, socketQueues } from '../fuzz/proc-stats.js';
import { encodeFrame, OPCODE, RawWebSocket } from '../fuzz/raw-websocket.js';
import { NodeProcess, tempDir } from '../helpers/node-process.js';
import { RawClient } from '../helpers/raw-client.js';
import { eventually } from '../helpers/util.js';

/**
 * Denial-of-service shapes against real nodes with small limits: floods of
 * connections, oversized and slow headers, stalled and fragmented frames,
 * clients that stop reading, and clients that stop answering pings. Each
 * must cost the node a bounded amount and leave it serving everyone else.
 * Measured figures are printed for docs/security.md.
 */

const SECRET = randomBytes(32).toString('hex');
const tokenFor = (sub: string) => mintToken({ secret: SECRET, sub, permissions: { admin: true }, ttlMs: 3_600_000 });

interface Health {
  pid: number;
  connections: number;
}

/** GET as JSON on a connection of its own that closes after the answer (no keep-alive socket stays behind). */
function getJson<T>(url: string): Promise<{ status: number; body: T }> {
  return new Promise((resolve, reject) => {
    get(url, { agent: false }, (res) => {
      let text = '';
      res.on('data', (chunk: Buffer) => (text += chunk.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as T }));
    }).on('error', reject);
  });
}

const health = async (node: NodeProcess) => (await getJson<Health>(`${node.url}/healthz`)).body;

/** Opens a plain WebSocket; resolves with it, or with the HTTP status and body of the refusal. */
function openWs(url: string, options: WebSocket.ClientOptions = {}): Promise<WebSocket | { status: number; body: string }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, options);
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => (body += chunk.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    ws.once('error', (err) => resolve({ status: 0, body: err.message }));
  });
}

function closeAll(sockets: WebSocket[]): Promise<void> {
  return Promise.all(
    sockets.map(
      (ws) =>
        new Promise<void>((resolve) => {
          if (ws.readyState === WebSocket.CLOSED) return resolve();
          ws.once('close', () => resolve());
          ws.terminate();
        }),
    ),
  ).then(() => undefined);
}

/** Connects socket.io-client over WebSocket only; resolves once connected, or with the connect error. */
function openSocketIo(url: string, token: string, localAddress?: string): Promise<SioSocket | Error> {
  return new Promise((resolve) => {
    const socket = io(url, { transports: ['websocket'], reconnection: false, forceNew: true, auth: { token }, ...(localAddress ? { localAddress } : {}) });
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', (err) => {
      socket.disconnect();
      resolve(err);
    });
  });
}

describe('connection floods', () => {
  const MAX_CONNECTIONS = 6;
  let node: NodeProcess;
  let token: string;

  beforeAll(async () => {
    node = await NodeProcess.start({ env: { AUTH_SECRET: SECRET, MAX_CONNECTIONS: String(MAX_CONNECTIONS), MAX_CONNECTIONS_PER_ADDRESS: '100' } });
    token = await tokenFor('flood');
  });
  afterAll(async () => {
    await node?.dispose();
  });

  it('refuses connections past MAX_CONNECTIONS with 503 on both transports, keeps serving the ones it holds, and keeps no refused socket', async () => {
    const wsUrl = `${node.wsUrl}?token=${token}`;
    const before = await RawClient.connect(wsUrl);
    await before.ok({ op: 'publish', topic: 'flood.before', data: 1 });
    const fillers: WebSocket[] = [];
    for (let i = 1; i < MAX_CONNECTIONS; i++) {
      const ws = await openWs(wsUrl);
      if (!(ws instanceof WebSocket)) throw new Error(`connection ${i + 1} of ${MAX_CONNECTIONS} refused: ${JSON.stringify(ws)}`);
      fillers.push(ws);
    }
    expect((await health(node)).connections).toBe(MAX_CONNECTIONS);

    const refusals = await Promise.all(Array.from({ length: 30 }, () => openWs(wsUrl)));
    for (const refusal of refusals) {
      expect(refusal).not.toBeInstanceOf(WebSocket);
      const { status, body } = refusal as { status: number; body: string };
      expect(status).toBe(503);
      expect(JSON.parse(body)).toMatchObject({ error: { code: 'limit_exceeded', message: expect.stringContaining('--max-connections') } });
    }
    // Socket.IO: its WebSocket handshake, its polling handshake, and socket.io-client itself.
    const sioUpgrade = await openWs(`ws://127.0.0.1:${node.port}/socket.io/?EIO=4&transport=websocket`);
    expect(sioUpgrade).toMatchObject({ status: 503 });
    const polling = await getJson<{ error: { code: string } }>(`${node.url}/socket.io/?EIO=4&transport=polling`);
    expect(polling).toMatchObject({ status: 503, body: { error: { code: 'limit_exceeded' } } });
    const sio = await openSocketIo(node.url, token);
    expect(sio).toBeInstanceOf(Error);

    // The connection made before the flood is served as before.
    expect((await before.ok({ op: 'publish', topic: 'flood.before', data: 2 })).offset).toBe(2);
    expect(((await before.ok({ op: 'history', topic: 'flood.before' })).messages as unknown[]).length).toBe(2);
    // Refused sockets are closed: the node holds exactly the admitted ones.
    await eventually(() => openConnections(node.pid!, node.port) === MAX_CONNECTIONS, 10_000, `the node to hold ${MAX_CONNECTIONS} sockets`);
    expect((await health(node)).connections).toBe(MAX_CONNECTIONS);

    // Slots come back when connections close: the limit admits as many again.
    await closeAll(fillers);
    await eventually(async () => (await health(node)).connections === 1, 10_000, 'the fillers to be released');
    const again: WebSocket[] = [];
    for (let i = 1; i < MAX_CONNECTIONS; i++) again.push((await openWs(wsUrl)) as WebSocket);
    expect(again.every((ws) => ws instanceof WebSocket)).toBe(true);
    expect(await openWs(wsUrl)).toMatchObject({ status: 503 });
    await closeAll(again);
    await before.close();
  });
});

describe('connection floods from one address', () => {
  const PER_ADDRESS = 3;
  let node: NodeProcess;
  let token: string;

  beforeAll(async () => {
    node = await NodeProcess.start({ env: { AUTH_SECRET: SECRET, MAX_CONNECTIONS: '100', MAX_CONNECTIONS_PER_ADDRESS: String(PER_ADDRESS) } });
    token = await tokenFor('flood');
  });
  afterAll(async () => {
    await node?.dispose();
  });

  it('refuses one address past MAX_CONNECTIONS_PER_ADDRESS with 503 on both transports while another address still connects', async () => {
    const wsUrl = `${node.wsUrl}?token=${token}`;
    const held: WebSocket[] = [];
    for (let i = 0; i < PER_ADDRESS; i++) held.push((await openWs(wsUrl)) as WebSocket);
    expect(held.every((ws) => ws instanceof WebSocket)).toBe(true);

    const refused = await openWs(wsUrl);
    expect(refused).toMatchObject({ status: 503 });
    expect(JSON.parse((refused as { body: string }).body)).toMatchObject({
      error: { code: 'limit_exceeded', message: expect.stringContaining('per address') },
    });
    expect(await openWs(`ws://127.0.0.1:${node.port}/socket.io/?EIO=4&transport=websocket`)).toMatchObject({ status: 503 });
    expect(await openSocketIo(node.url, token)).toBeInstanceOf(Error);

    // Another client address is not affected (the loopback network answers on every 127.x address).
    const other = await openWs(wsUrl, { localAddress: '127.0.0.2' });
    expect(other).toBeInstanceOf(WebSocket);
    const otherSio = await openSocketIo(node.url, token, '127.0.0.2');
    expect(otherSio).not.toBeInstanceOf(Error);
    (otherSio as SioSocket).disconnect();

    await eventually(() => openConnections(node.pid!, node.port) === PER_ADDRESS + 1, 10_000, 'the refused sockets to be closed');
    await closeAll([...held, other as WebSocket]);
    await eventually(async () => (await health(node)).connections === 0, 10_000, 'every connection to be released');
    expect(await openWs(wsUrl)).toBeInstanceOf(WebSocket);
  });
});

/** Sends raw bytes; resolves with the status line (if any) once the node closes the socket. */
function rawRequest(port: number, bytes: string): Promise<{ status: string; closed: boolean }> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let data = '';
    const done = (closed: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ status: data.slice(0, data.indexOf('\r\n')), closed });
    };
    const timer = setTimeout(() => done(false), 10_000);
    socket.on('data', (chunk: Buffer) => (data += chunk.toString('latin1')));
    socket.on('close', () => done(true));
    socket.on('error', () => undefined);
    socket.write(bytes);
  });
}

describe('header limits', () => {
  let node: NodeProcess;
  let host: string;
  let token: string;
  const upgrade = 'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n';
  const headers = (count: number, valueBytes: number) => Array.from({ length: count }, (_, i) => `X-H${i}: ${'v'.repeat(valueBytes)}\r\n`).join('');

  beforeAll(async () => {
    node = await NodeProcess.start({ env: { AUTH_SECRET: SECRET } });
    host = `Host: 127.0.0.1:${node.port}\r\n`;
    token = await tokenFor('headers');
  });
  afterAll(async () => {
    await node?.dispose();
  });

  it('refuses headers past 16 KiB, in all or in one, with 431 and closes the connection', async () => {
    for (const extra of [headers(500, 40), `X-Big: ${'b'.repeat(64 * 1024)}\r\n`]) {
      expect(await rawRequest(node.port, `GET /healthz HTTP/1.1\r\n${host}${extra}\r\n`)).toEqual({
        status: 'HTTP/1.1 431 Request Header Fields Too Large',
        closed: true,
      });
      expect(await rawRequest(node.port, `GET /ws?token=${token} HTTP/1.1\r\n${host}${upgrade}${extra}\r\n`)).toEqual({
        status: 'HTTP/1.1 431 Request Header Fields Too Large',
        closed: true,
      });
    }
    expect((await health(node)).connections).toBe(0);
  });

  it('reads only the first 100 headers of a request: what follows them does not count', async () => {
    // 500 headers under 16 KiB in all are not refused; the node keeps the first 100 (maxHeadersCount).
    const admin = `GET /api/topics HTTP/1.1\r\n${host}Connection: close\r\n`;
    expect((await rawRequest(node.port, `${admin}Authorization: Bearer ${token}\r\n${headers(500, 1)}\r\n`)).status).toBe('HTTP/1.1 200 OK');
    expect((await rawRequest(node.port, `${admin}${headers(500, 1)}Authorization: Bearer ${token}\r\n\r\n`)).status).toBe('HTTP/1.1 401 Unauthorized');
    // An upgrade whose WebSocket headers come after the 100th is no upgrade.
    expect(await rawRequest(node.port, `GET /ws?token=${token} HTTP/1.1\r\n${host}${headers(500, 1)}${upgrade}\r\n`)).toEqual({
      status: 'HTTP/1.1 400 Bad Request',
      closed: true,
    });
  });

  it('is unharmed by them', async () => {
    const pid = node.pid;
    expect((await health(node)).pid).toBe(pid);
    const client = await RawClient.connect(`${node.wsUrl}?token=${token}`);
    expect((await client.ok({ op: 'ping' })).op).toBe('ok');
    await client.close();
    expect(node.logs).not.toMatch(/"level":(50|60)/);
  });
});

describe('slow headers', () => {
  let node: NodeProcess;

  beforeAll(async () => {
    node = await NodeProcess.start({ env: { AUTH_SECRET: SECRET, HEADERS_TIMEOUT: '1s' } });
  });
  afterAll(async () => {
    await node?.dispose();
  });

  it('closes clients that send an upgrade request one byte at a time (HEADERS_TIMEOUT)', async () => {
    const request = `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${node.port}\r\n${'X-Slow: abcdefghijklmnopqrstuvwxyz\r\n'.repeat(20)}`;
    const clients = Array.from({ length: 10 }, () => {
      const socket = connect(node.port, '127.0.0.1');
      const state = { socket, closed: false, answer: '', sent: 0 };
      socket.on('data', (chunk: Buffer) => (state.answer += chunk.toString('latin1')));
      socket.on('close', () => (state.closed = true));
      socket.on('error', () => undefined);
      return state;
    });
    const started = Date.now();
    const trickle = setInterval(() => {
      for (const c of clients) if (!c.closed && c.sent < request.length) c.socket.write(request[c.sent++]!);
    }, 300);
    try {
      // The whole request would take 3 minutes at this pace; the node must close every socket long before.
      await eventually(() => clients.every((c) => c.closed), 30_000, 'the node to close every slow client');
    } finally {
      clearInterval(trickle);
    }
    console.log(
      `slow headers: ${clients.length} clients closed after ${Date.now() - started} ms having sent ${Math.max(...clients.map((c) => c.sent))} of ${request.length} bytes; answer: ${JSON.stringify(clients[0]!.answer.split('\r\n')[0])}`,
    );
    expect(clients.every((c) => c.sent < request.length)).toBe(true);
    expect((await health(node)).connections).toBe(0);
  });
});

describe('stalled and fragmented frames', () => {
  let node: NodeProcess;
  let token: string;
  const heapFile = join(tempDir('meshmq-heap-'), 'heap.json');

  beforeAll(async () => {
    node = await NodeProcess.start({ env: { AUTH_SECRET: SECRET, FRAME_TIMEOUT: '1s', ...heapProbeEnv(heapFile) } });
    token = await tokenFor('frames');
  });
  afterAll(async () => {
    await node?.dispose();
  });

  const open = () => RawWebSocket.connect(node.port, `/ws?token=${token}`);

  it('closes a connection that sends half a large frame and stops, with 4002, and keeps none of it', async () => {
    const pid = node.pid!;
    const liveBefore = await liveMemory(pid, heapFile);
    const FRAME_BYTES = 1536 * 1024;
    const clients = await Promise.all(Array.from({ length: 10 }, open));
    const frame = encodeFrame(OPCODE.text, `{"op":"publish","id":1,"topic":"stall","data":"${'x'.repeat(FRAME_BYTES)}"}`);
    for (const client of clients) client.write(frame.subarray(0, frame.length / 2));
    await eventually(() => clients.every((c) => c.closeCode !== undefined), 20_000, 'a close frame for every stalled client');
    expect(clients.map((c) => c.closeCode)).toEqual(clients.map(() => 4002));
    // A client that stalls mid-frame does not finish the closing handshake either: the node drops the socket.
    await eventually(() => clients.every((c) => c.closed), 20_000, 'the node to drop every stalled socket');
    await eventually(async () => (await health(node)).connections === 0, 10_000, 'the sessions to end');
    const liveAfter = await liveMemory(pid, heapFile);
    console.log(
      `stalled frames: ${clients.length} clients held ${mib(clients.length * (frame.length / 2))} of half frames; node live memory before ${mib(liveBefore)}, after ${mib(liveAfter)}`,
    );
    expect(liveAfter - liveBefore).toBeLessThan(4 * MiB);
  });

  it('reassembles a message sent promptly in many fragments, with control frames between them', async () => {
    const client = await open();
    const data = { text: 'fragmented '.repeat(2000), n: 42 };
    const text = Buffer.from(JSON.stringify({ op: 'publish', id: 'frag', topic: 'fragments', data }));
    const pieces = 200;
    const size = Math.ceil(text.length / pieces);
    for (let i = 0; i < pieces; i++) {
      const piece = text.subarray(i * size, (i + 1) * size);
      client.send(i === 0 ? OPCODE.text : OPCODE.continuation, piece, i === pieces - 1);
      if (i === pieces / 2) client.send(OPCODE.ping, 'between fragments');
    }
    await eventually(() => client.json().some((f) => f.id === 'frag'), 10_000, 'the publish reply');
    expect(client.json().find((f) => f.id === 'frag')).toMatchObject({ op: 'ok', offset: 1 });
    expect(client.frames.some((f) => f.opcode === OPCODE.pong && f.payload.toString() === 'between fragments')).toBe(true);
    client.send(OPCODE.text, JSON.stringify({ op: 'history', id: 'h', topic: 'fragments' }));
    await eventually(() => client.json().some((f) => f.id === 'h'), 10_000, 'the history reply');
    const history = client.json().find((f) => f.id === 'h') as { messages: Array<{ data: unknown }> };
    expect(history.messages.map((m) => m.data)).toEqual([data]);
    client.destroy();
  });

  it('closes a fragmented message that is never finished like a stalled frame', async () => {
    const client = await open();
    client.send(OPCODE.text, '{"op":"publish","id":1,', false);
    client.send(OPCODE.continuation, '"topic":"never",', false);
    client.send(OPCODE.continuation, `"data":"${'y'.repeat(64 * 1024)}`, false);
    await eventually(() => client.closeCode !== undefined, 20_000, 'a close frame');
    expect(client.closeCode).toBe(4002);
    await eventually(() => client.closed, 20_000, 'the node to drop the socket');
  });
});

/**
 * Waits until `sample` gives the same positive value twice in a row, 250 ms
 * apart: the node has sent a client that does not read all it is going to.
 */
async function settled(sample: () => number, what: string): Promise<number> {
  let last = -1;
  return eventually(
    async () => {
      await new Promise((resolve) => setTimeout(resolve, 250));
      const now = sample();
      const same = now > 0 && now === last;
      last = now;
      return same ? now : 0;
    },
    30_000,
    what,
  );
}

/** What the kernel holds between the node and a client socket: the node's unsent bytes and the client's unread ones. */
function kernelQueued(client: Socket, nodePort: number): number {
  return socketQueues(nodePort, client.localPort!).tx + socketQueues(client.localPort!, nodePort).rx;
}

/** 1 KiB messages: the payload of each. */
const PAD = 'p'.repeat(1000);
const MESSAGES = 50 * 1024; // 50 MiB of 1 KiB messages

/**
 * Publishes `count` numbered 1 KiB messages to `topic` over one connection
 * with `window` publishes in flight (a lean client: replies matched by id).
 */
async function publishMany(wsUrl: string, topic: string, count: number, window = 512): Promise<void> {
  const ws = new WebSocket(wsUrl);
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const pending = new Map<number, (reply: { op: string }) => void>();
  ws.on('message', (raw) => {
    const reply = JSON.parse(raw.toString()) as { op: string; id: number };
    pending.get(reply.id)?.(reply);
    pending.delete(reply.id);
  });
  let next = 1;
  const worker = async () => {
    while (next <= count) {
      const n = next++;
      const reply = await new Promise<{ op: string }>((resolve) => {
        pending.set(n, resolve);
        ws.send(JSON.stringify({ op: 'publish', id: n, topic, data: { n, pad: PAD } }));
      });
      if (reply.op !== 'ok') throw new Error(`publish ${n}: ${JSON.stringify(reply)}`);
    }
  };
  await Promise.all(Array.from({ length: window }, worker));
  ws.close();
}

/**
 * Checks that `frames` are the messages at offsets 1..count in order, and
 * hold each message {@link publishMany} sent exactly once (publishes in
 * flight together may be stored in either order).
 */
function expectInOrder(frames: Array<{ offset?: unknown; data?: unknown }>, count: number): void {
  expect(frames.length).toBe(count);
  expect(frames.findIndex((f, i) => f.offset !== i + 1)).toBe(-1);
  const numbers = new Set(frames.map((f) => (f.data as { n?: unknown } | undefined)?.n));
  expect(numbers.size).toBe(count);
  expect([...numbers].every((n) => typeof n === 'number' && n >= 1 && n <= count)).toBe(true);
}

describe('clients that stop reading', () => {
  let node: NodeProcess;
  let token: string;
  const heapFile = join(tempDir('meshmq-heap-'), 'heap.json');

  beforeAll(async () => {
    node = await NodeProcess.start({ env: { AUTH_SECRET: SECRET, MAX_PUBLISH_RATE: '0', ...heapProbeEnv(heapFile) } });
    token = await tokenFor('slow');
  });
  afterAll(async () => {
    await node?.dispose();
  });

  /**
   * Stops `client` (a subscriber's socket) reading, publishes 50 MiB to its
   * topic from another connection, waits until the node sends it nothing
   * more, and returns how much the node's memory grew.
   */
  async function floodPausedSubscriber(name: string, topic: string, client: Socket): Promise<{ liveGrowth: number; anonGrowth: number }> {
    const pid = node.pid!;
    const liveBefore = await liveMemory(pid, heapFile);
    const rssBefore = residentMemory(pid);
    const sampler = new MemorySampler(pid);
    client.pause();
    await publishMany(`${node.wsUrl}?token=${token}`, topic, MESSAGES);
    const kernel = await settled(() => kernelQueued(client, node.port), 'the node to stop sending to the subscriber');
    const rssAfter = sampler.stop();
    const liveAfter = await liveMemory(pid, heapFile);
    console.log(
      `${name}: published ${mib(MESSAGES * 1024)} to a subscriber that does not read; node RSS before ${mib(rssBefore.rss)} (anon ${mib(rssBefore.anon)}), ` +
        `after ${mib(rssAfter.rss)} (anon ${mib(rssAfter.anon)}), peak ${mib(sampler.peak.rss)} (anon ${mib(sampler.peak.anon)}); ` +
        `live memory before ${mib(liveBefore)}, after ${mib(liveAfter)} (growth ${mib(liveAfter - liveBefore)}); ${mib(kernel)} queued in the kernel's socket buffers`,
    );
    return { liveGrowth: liveAfter - liveBefore, anonGrowth: sampler.peak.anon - rssBefore.anon };
  }

  /**
   * Bounds for 50 MiB published past a client that does not read. The node
   * queues at most HIGH_WATER_MARK (4 MiB) for the connection; the kernel's
   * socket buffers (about 4 MiB more, printed) are not process memory.
   * - Live memory (heap and buffers after a full collection) is what the
   *   node keeps: measured 6-8 MiB of growth (the 4 MiB queue, the last
   *   catch-up batch, and the topic's state).
   * - Anonymous RSS at its peak also holds garbage not yet collected and the
   *   allocators' slack while 51,200 publishes go through: measured 50-70
   *   MiB of growth.
   * - VmRSS (printed) grows further by the LMDB pages of the 50 MiB written:
   *   file-backed storage mapped into the process, not queued data.
   * Queuing what was published would add over 50 MiB to the first two.
   */
  const LIVE_GROWTH_BOUND = 16 * MiB;
  const PEAK_ANON_GROWTH_BOUND = 120 * MiB;

  it('queues a bounded amount for a WebSocket subscriber that does not read, then delivers every message in order', async () => {
    const topic = 'slow.ws';
    const ws = new WebSocket(`${node.wsUrl}?token=${token}`);
    await new Promise((resolve) => ws.once('open', resolve));
    const received: Array<{ offset?: unknown; data?: unknown }> = [];
    const subscribed = new Promise<void>((resolve) => {
      ws.on('message', (raw) => {
        const frame = JSON.parse(raw.toString()) as { op: string; offset?: unknown; data?: unknown };
        if (frame.op === 'message') received.push(frame);
        else if (frame.op === 'ok') resolve();
      });
    });
    ws.send(JSON.stringify({ op: 'subscribe', id: 1, topic, from: 1 }));
    await subscribed;
    const socket = (ws as unknown as { _socket: Socket })._socket;
    const { liveGrowth, anonGrowth } = await floodPausedSubscriber('ws subscriber', topic, socket);
    expect(received.length).toBeLessThan(MESSAGES);
    expect(liveGrowth).toBeLessThan(LIVE_GROWTH_BOUND);
    expect(anonGrowth).toBeLessThan(PEAK_ANON_GROWTH_BOUND);

    socket.resume();
    await eventually(() => received.length >= MESSAGES, 60_000, `${MESSAGES} deliveries`);
    expectInOrder(received, MESSAGES);
    ws.close();
  }, 180_000);

  it('queues a bounded amount for a Socket.IO subscriber that does not read, then delivers every message in order', async () => {
    const topic = 'slow.sio';
    const sio = io(node.url, { transports: ['websocket'], reconnection: false, forceNew: true, auth: { token } });
    await new Promise<void>((resolve) => sio.once('connect', () => resolve()));
    const received: Array<{ offset?: unknown; data?: unknown }> = [];
    sio.on('message', (frame: { offset?: unknown; data?: unknown }) => received.push(frame));
    expect(await sio.emitWithAck('subscribe', { topic, from: 1 })).toMatchObject({ op: 'ok' });
    const engineWs = (sio.io.engine.transport as unknown as { ws: { _socket: Socket } }).ws;
    const { liveGrowth, anonGrowth } = await floodPausedSubscriber('Socket.IO subscriber', topic, engineWs._socket);
    expect(received.length).toBeLessThan(MESSAGES);
    expect(liveGrowth).toBeLessThan(LIVE_GROWTH_BOUND);
    expect(anonGrowth).toBeLessThan(PEAK_ANON_GROWTH_BOUND);

    engineWs._socket.resume();
    await eventually(() => received.length >= MESSAGES, 60_000, `${MESSAGES} deliveries`);
    expectInOrder(received, MESSAGES);
    sio.disconnect();
  }, 180_000);

  /**
   * A client that asks for more than it reads: many large history pages, or
   * 10 groups with prefetch 10,000. The node answers one history at a time
   * once the connection has room, hands groups messages only while it has
   * room, and stops reading requests past the high-water mark.
   */
  it('bounds what it queues for a client that sends requests and never reads the replies', async () => {
    const pid = node.pid!;
    const publisher = await RawClient.connect(`${node.wsUrl}?token=${token}`);
    const big = 'h'.repeat(8 * 1024);
    for (let n = 1; n <= 100; n++) await publisher.ok({ op: 'publish', topic: 'slow.history', data: { n, big } });
    await publisher.close();
    await publishMany(`${node.wsUrl}?token=${token}`, 'slow.groups', 5000);

    const liveBefore = await liveMemory(pid, heapFile);
    const rssBefore = residentMemory(pid);
    const sampler = new MemorySampler(pid);
    const ws = new WebSocket(`${node.wsUrl}?token=${token}`);
    await new Promise((resolve) => ws.once('open', resolve));
    const socket = (ws as unknown as { _socket: Socket })._socket;
    const replies = new Map<unknown, string>();
    const deliveries = new Map<string, number>();
    ws.on('message', (raw) => {
      const frame = JSON.parse(raw.toString()) as { op: string; id?: unknown; group?: string };
      if (frame.op === 'message') deliveries.set(frame.group!, (deliveries.get(frame.group!) ?? 0) + 1);
      else replies.set(frame.id, frame.op);
    });
    socket.pause();
    const HISTORIES = 64;
    const GROUPS = 10;
    for (let g = 0; g < GROUPS; g++) ws.send(JSON.stringify({ op: 'subscribe', id: `g${g}`, topic: 'slow.groups', group: `g${g}`, from: 1, prefetch: 10_000 }));
    for (let i = 0; i < HISTORIES; i++) ws.send(JSON.stringify({ op: 'history', id: i, topic: 'slow.history', from: 1, limit: 1000 }));
    // Everything asked for is about 50 MiB of history pages and 50 MiB of group deliveries: let the node work on it.
    const asked = HISTORIES * 100 * big.length + GROUPS * 5000 * 1024;
    await eventually(() => ws.bufferedAmount === 0, 10_000, 'the requests to leave the client');
    const kernel = await settled(() => kernelQueued(socket, node.port), 'the node to stop sending to the client');
    const rssAfter = sampler.stop();
    const liveAfter = await liveMemory(pid, heapFile);
    console.log(
      `requests without reading: asked for ${mib(asked)}; node RSS before ${mib(rssBefore.rss)} (anon ${mib(rssBefore.anon)}), after ${mib(rssAfter.rss)} (anon ${mib(rssAfter.anon)}), ` +
        `peak ${mib(sampler.peak.rss)} (anon ${mib(sampler.peak.anon)}); live memory before ${mib(liveBefore)}, after ${mib(liveAfter)} (growth ${mib(liveAfter - liveBefore)}); ${mib(kernel)} queued in the kernel's socket buffers`,
    );
    expect(liveAfter - liveBefore).toBeLessThan(LIVE_GROWTH_BOUND);
    expect(sampler.peak.anon - rssBefore.anon).toBeLessThan(PEAK_ANON_GROWTH_BOUND);

    socket.resume();
    await eventually(
      () => replies.size === HISTORIES + GROUPS && [...deliveries.values()].reduce((a, b) => a + b, 0) === GROUPS * 5000,
      60_000,
      'every reply and delivery',
    );
    expect([...replies.values()].every((op) => op === 'ok')).toBe(true);
    expect([...deliveries.values()]).toEqual(Array.from({ length: GROUPS }, () => 5000));
    ws.close();
  }, 120_000);
});

describe('keep-alive', () => {
  let node: NodeProcess;
  let token: string;

  beforeAll(async () => {
    node = await NodeProcess.start({ env: { AUTH_SECRET: SECRET, KEEP_ALIVE: '500ms' } });
    token = await tokenFor('keepalive');
  });
  afterAll(async () => {
    await node?.dispose();
  });

  it('drops a client that stops answering pings and keeps one that answers', async () => {
    const silent = new WebSocket(`${node.wsUrl}?token=${token}`);
    await new Promise((resolve) => silent.once('open', resolve));
    const answering = await RawClient.connect(`${node.wsUrl}?token=${token}`);
    await eventually(async () => (await health(node)).connections === 2, 10_000, 'both connections');
    (silent as unknown as { _socket: Socket })._socket.pause();
    const started = Date.now();
    await eventually(async () => (await health(node)).connections === 1, 10_000, 'the silent client to be dropped');
    console.log(`keep-alive: a client that stopped answering pings was dropped after ${Date.now() - started} ms (KEEP_ALIVE 500 ms)`);
    expect(answering.open).toBe(true);
    expect((await answering.ok({ op: 'ping' })).op).toBe('ok');
    silent.terminate();
    await answering.close();
  });
});
