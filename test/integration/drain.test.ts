import { io } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FlushGate } from '../helpers/flush-gate.js';
import { NodeProcess } from '../helpers/node-process.js';
import { type Frame, RawClient } from '../helpers/raw-client.js';
import { SioClient } from '../helpers/sio-client.js';
import { eventually, uniqueTopic } from '../helpers/util.js';

/** Close code of a draining node's connections (docs/protocol.md, moving to another node). */
const SERVICE_RESTART = 1012;

/**
 * What a node does between SIGTERM and exit (docs/protocol.md, "Moving to
 * another node"), over both transports. A publish is kept in flight across
 * the SIGTERM by holding the disk's confirmation of its write, so the test
 * can look at the draining node for as long as it needs.
 */
describe('a node draining on SIGTERM', () => {
  let gate: FlushGate;
  let node: NodeProcess;

  beforeAll(async () => {
    gate = await FlushGate.create();
    // Room to look: the drain waits up to a minute for requests in flight. No retention sweep writing meanwhile.
    node = await NodeProcess.start({ env: { ...gate.env, DRAIN_TIMEOUT: '60s', RETENTION_SWEEP: '1h' } });
  });

  afterAll(async () => {
    gate?.open();
    await node?.dispose();
    gate?.dispose();
  });

  async function readiness(): Promise<{ status: number; body: { ready: boolean; reasons?: string[] } }> {
    const res = await fetch(`${node.url}/readyz`);
    return { status: res.status, body: (await res.json()) as { ready: boolean; reasons?: string[] } };
  }

  it('stops being ready, sends move at once to old and new connections, finishes the requests it had, then closes with 1012', async () => {
    const topic = uniqueTopic('drain');
    const ws = await RawClient.connect(node.wsUrl);
    const wsClosed = new Promise<number>((resolve) => ws.ws.once('close', (code) => resolve(code)));
    const sio = await SioClient.connect(node.url);
    const sioMoves: Frame[] = [];
    sio.socket.on('move', (frame: Frame) => sioMoves.push(frame));
    const sioGone = new Promise<string>((resolve) => sio.socket.once('disconnect', (reason) => resolve(reason)));
    await ws.ok({ op: 'publish', topic, data: 'before' });
    expect((await readiness()).status).toBe(200);

    gate.close();
    const stopping = (async () => {
      ws.sendRaw(JSON.stringify({ op: 'publish', id: 'in-flight', topic, data: 'during' }));
      await gate.waitHeld();
      // SIGTERM while the publish waits for the disk.
      await node.stop();
    })();
    try {
      const move = await ws.waitFor((f) => f.op === 'move');
      // A single node has nowhere to send its clients.
      expect(move).toEqual({ op: 'move', reason: 'draining', nodes: [] });
      await eventually(() => sioMoves.length === 1, 10_000, 'the move event over Socket.IO');
      expect(sioMoves[0]).toMatchObject({ op: 'move', reason: 'draining', nodes: [] });

      const ready = await readiness();
      expect(ready.status).toBe(503);
      expect(ready.body).toMatchObject({ ready: false, reasons: expect.arrayContaining(['draining']) });

      // Connections opened now get the move at once and are closed.
      const late = await RawClient.connect(node.wsUrl);
      const lateClosed = await new Promise<number>((resolve) => late.ws.once('close', (code) => resolve(code)));
      expect(lateClosed).toBe(SERVICE_RESTART);
      expect(late.frames).toEqual([{ op: 'move', reason: 'draining', nodes: [] }]);
      const lateSio = io(node.url, { transports: ['websocket'], reconnection: false, forceNew: true });
      const lateSioEvents: string[] = [];
      lateSio.on('connect', () => lateSioEvents.push('connect'));
      lateSio.on('move', (frame: Frame) => lateSioEvents.push(`move ${frame.reason} ${JSON.stringify(frame.nodes)}`));
      const lateSioGone = await new Promise<string>((resolve) => lateSio.once('disconnect', (reason) => resolve(reason)));
      expect(lateSioGone).toBe('io server disconnect');
      expect(lateSioEvents).toEqual(['connect', 'move draining []']);

      // The publish received before the SIGTERM is still waiting for the disk, and its connection still open.
      expect(ws.frames.filter((f) => f.id === 'in-flight')).toEqual([]);
      expect(ws.open).toBe(true);
      expect(sio.open).toBe(true);
    } finally {
      gate.open();
    }
    const reply = await ws.waitFor((f) => f.id === 'in-flight');
    expect(reply).toMatchObject({ op: 'ok', offset: 2 });
    expect(await wsClosed).toBe(SERVICE_RESTART);
    expect(ws.frames.map((f) => f.op)).toEqual(['ok', 'move', 'ok']);
    expect(await sioGone).toBe('io server disconnect');
    await stopping;
    expect(node.running).toBe(false);

    // What it acknowledged while draining is stored.
    await node.start();
    const reader = await RawClient.connect(node.wsUrl);
    const history = await reader.ok({ op: 'history', topic });
    expect((history.messages as Array<{ data: unknown }>).map((m) => m.data)).toEqual(['before', 'during']);
    await reader.close();
  });
});
