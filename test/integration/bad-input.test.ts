import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NodeProcess } from '../helpers/node-process.js';
import { RawClient } from '../helpers/raw-client.js';
import { SioClient } from '../helpers/sio-client.js';
import { range, uniqueTopic } from '../helpers/util.js';

const MAX_MESSAGE_BYTES = 1024;

/**
 * Every malformed frame gets a precise error; the connection stays usable,
 * the node stays up, and nothing stored changes.
 */
describe('bad input', () => {
  let node: NodeProcess;
  let client: RawClient;
  /** The pid /healthz reported right after start: a crash and restart would change it. */
  let startPid: number;
  const topic = uniqueTopic('stored');
  let before: unknown;

  beforeAll(async () => {
    node = await NodeProcess.start({ env: { MAX_MESSAGE_BYTES: String(MAX_MESSAGE_BYTES) } });
    startPid = await healthzPid();
    expect(startPid).toBe(node.pid);
    client = await RawClient.connect(node.wsUrl);
    for (const n of [1, 2, 3]) await client.ok({ op: 'publish', topic, data: { n }, key: `k${n}` });
    await client.ok({ op: 'subscribe', topic, group: 'g', from: 1 });
    await client.waitForMessages(3, topic, 'g');
    before = (await client.ok({ op: 'history', topic })).messages;
  });

  afterAll(async () => {
    await client?.close();
    await node?.dispose();
  });

  async function healthzPid(): Promise<number> {
    const res = await fetch(`${node.url}/healthz`);
    expect(res.status).toBe(200);
    return ((await res.json()) as { pid: number }).pid;
  }

  /** Sends raw text and returns the error frame the server answers with. */
  async function rawError(text: string, binary = false) {
    const seen = client.frames.length;
    client.sendRaw(binary ? Buffer.from(text) : text, binary);
    return client.waitFor((f) => f.op === 'error' && client.frames.indexOf(f) >= seen);
  }

  it.each([
    ['text that is not JSON', '{"op":"publish",'],
    ['a JSON array', '[1,2,3]'],
    ['a JSON string', '"publish"'],
    ['a JSON number', '42'],
    ['JSON null', 'null'],
  ])('rejects %s with bad_request and no id', async (_what, text) => {
    const error = await rawError(text);
    expect(error).toMatchObject({ op: 'error', id: null, code: 'bad_request' });
    expect(String(error.message)).toMatch(/JSON|object/);
  });

  it('rejects a request without an id', async () => {
    const error = await rawError('{"op":"ping"}');
    expect(error).toMatchObject({ id: null, code: 'bad_request', message: "'id' is required" });
  });

  it('rejects binary frames', async () => {
    const error = await rawError('{"op":"ping","id":1}', true);
    expect(error).toMatchObject({ code: 'bad_request', message: expect.stringContaining('binary') });
  });

  it.each([
    ['missing op', { id: 1, topic: 'x' }, "'op' is required"],
    ['unknown op', { op: 'explode', id: 2 }, 'unknown op "explode"'],
    ['non-string op', { op: 7, id: 3 }, 'unknown op 7'],
    ['missing topic', { op: 'publish', id: 4, data: 1 }, "'topic' is required"],
    ['missing data', { op: 'publish', id: 5, topic: 'x' }, "'data' is required"],
    ['wrong-typed topic', { op: 'publish', id: 6, topic: 5, data: 1 }, "'topic'"],
    ['wrong-typed key', { op: 'publish', id: 7, topic: 'x', data: 1, key: 9 }, "'key'"],
    ['empty key', { op: 'publish', id: 8, topic: 'x', data: 1, key: '' }, "'key'"],
    ['string offset', { op: 'ack', id: 9, topic: 'x', group: 'g', offset: '5' }, "'offset'"],
    ['zero offset', { op: 'subscribe', id: 10, topic: 'x', from: 0 }, "'from'"],
    ['fractional offset', { op: 'history', id: 11, topic: 'x', from: 1.5 }, "'from'"],
    ['limit over the maximum', { op: 'history', id: 12, topic: 'x', limit: 100_000 }, "'limit'"],
    ['prefetch of zero', { op: 'subscribe', id: 13, topic: 'x', group: 'g', prefetch: 0 }, "'prefetch'"],
    ['negative nack delay', { op: 'nack', id: 14, topic: 'x', group: 'g', offset: 1, delay: -1 }, "'delay'"],
    ['an unknown field', { op: 'publish', id: 15, topic: 'x', data: 1, tpoic: 'y' }, "unknown field 'tpoic'"],
    ['an empty topic', { op: 'publish', id: 16, topic: '', data: 1 }, 'invalid topic name'],
    ['a topic with a space', { op: 'publish', id: 17, topic: 'a b', data: 1 }, 'invalid topic name'],
    ['a topic starting with a dot', { op: 'subscribe', id: 18, topic: '.a' }, 'invalid topic name'],
    ['a topic of 201 characters', { op: 'publish', id: 19, topic: 'a'.repeat(201), data: 1 }, 'invalid topic name'],
    ['an unknown system topic', { op: 'subscribe', id: 20, topic: '$sys.x' }, 'invalid topic name'],
    ['an invalid group name', { op: 'subscribe', id: 21, topic: 'x', group: 'a/b' }, 'invalid group name'],
    ['group options on a fan-out subscribe', { op: 'subscribe', id: 22, topic: 'x', prefetch: 5 }, 'group subscriptions only'],
    ['a key over 256 characters', { op: 'publish', id: 23, topic: 'x', data: 1, key: 'k'.repeat(257) }, "'key'"],
    ['a key with a lone surrogate', { op: 'publish', id: 24, topic: 'x', data: 1, key: 'a\ud800' }, 'lone surrogate'],
    ['a token over 8 KiB in auth', { op: 'auth', id: 25, token: 't'.repeat(8193) }, "'token'"],
    ['an ack without offset or offsets', { op: 'ack', id: 26, topic: 'x', group: 'g' }, "give 'offset' or 'offsets'"],
    ['an ack with both offset and offsets', { op: 'ack', id: 27, topic: 'x', group: 'g', offset: 1, offsets: [2] }, "give 'offset' or 'offsets'"],
    ['an ack with no offsets', { op: 'ack', id: 28, topic: 'x', group: 'g', offsets: [] }, "'offsets'"],
    ['an ack of 1001 offsets', { op: 'ack', id: 29, topic: 'x', group: 'g', offsets: range(1, 1001) }, "'offsets'"],
    ['an ack with a zero among its offsets', { op: 'ack', id: 30, topic: 'x', group: 'g', offsets: [1, 0] }, "'offsets.1'"],
    ['offsets on a nack', { op: 'nack', id: 31, topic: 'x', group: 'g', offset: 1, offsets: [1] }, "unknown field 'offsets'"],
  ])('rejects %s with bad_request', async (_what, frame, message) => {
    const reply = await client.request(frame as Record<string, unknown>);
    expect(reply).toMatchObject({ op: 'error', code: 'bad_request', id: frame.id });
    expect(String(reply.message)).toContain(message);
  });

  it('rejects data over the size limit with payload_too_large', async () => {
    const reply = await client.request({ op: 'publish', topic, data: 'x'.repeat(MAX_MESSAGE_BYTES) });
    expect(reply).toMatchObject({ op: 'error', code: 'payload_too_large' });
    expect(String(reply.message)).toContain(String(MAX_MESSAGE_BYTES));
  });

  it('rejects publishing to a dead-letter topic with forbidden', async () => {
    expect(await client.request({ op: 'publish', topic: `$dlq.${topic}`, data: 1 })).toMatchObject({ code: 'forbidden' });
  });

  it('rejects acks and nacks for offsets that are not pending with not_found', async () => {
    expect(await client.request({ op: 'ack', topic, group: 'g', offset: 999 })).toMatchObject({ code: 'not_found' });
    expect(await client.request({ op: 'nack', topic, group: 'g', offset: 999 })).toMatchObject({ code: 'not_found' });
    expect(await client.request({ op: 'ack', topic, group: 'other', offset: 1 })).toMatchObject({ code: 'not_found' });
  });

  it('rejects a second subscription and an unknown unsubscribe', async () => {
    const t = uniqueTopic();
    await client.ok({ op: 'subscribe', topic: t });
    expect(await client.request({ op: 'subscribe', topic: t })).toMatchObject({ code: 'bad_request' });
    expect(await client.request({ op: 'subscribe', topic, group: 'g' })).toMatchObject({ code: 'bad_request' });
    expect(await client.request({ op: 'unsubscribe', topic: uniqueTopic() })).toMatchObject({ code: 'not_found' });
  });

  it('handles deeply nested data without crashing', async () => {
    const deep = `${'['.repeat(30_000)}${']'.repeat(30_000)}`;
    const seen = client.frames.length;
    client.sendRaw(`{"op":"publish","id":"deep","topic":"${topic}-deep","data":${deep}}`);
    const reply = await client.waitFor((f) => client.frames.indexOf(f) >= seen && f.id === 'deep');
    expect(reply.op).toBe('error');
    expect(['bad_request', 'payload_too_large']).toContain(reply.code);
  });

  it('closes a connection whose frame exceeds the frame limit, and only that one', async () => {
    const victim = await RawClient.connect(node.wsUrl);
    const closed = new Promise<number>((resolve) => victim.ws.once('close', (code) => resolve(code)));
    victim.sendRaw(JSON.stringify({ op: 'publish', id: 1, topic, data: 'x'.repeat(256 * 1024) }));
    expect(await closed).toBe(1009);
    expect((await client.ok({ op: 'ping' })).op).toBe('ok');
  });

  it('answers Socket.IO clients that send unknown events or bad payloads', async () => {
    const sio = await SioClient.connect(node.url);
    try {
      const unknown = await sio.socket.timeout(5000).emitWithAck('explode', {});
      expect(unknown).toMatchObject({ op: 'error', code: 'bad_request' });
      const notObject = await sio.socket.timeout(5000).emitWithAck('publish', 'orders');
      expect(notObject).toMatchObject({ op: 'error', code: 'bad_request' });
      const withOp = await sio.socket.timeout(5000).emitWithAck('publish', { op: 'publish', topic: 'x', data: 1 });
      expect(withOp).toMatchObject({ op: 'error', code: 'bad_request' });
      expect(await sio.ok({ op: 'ping' })).toMatchObject({ op: 'ok' });
    } finally {
      await sio.close();
    }
  });

  it('kept the node up, the connection usable and the stored data unchanged', async () => {
    // The same process answers as at the start: it neither crashed nor was restarted.
    expect(await healthzPid()).toBe(startPid);
    expect(node.running).toBe(true);
    expect(client.open).toBe(true);
    expect(await client.ok({ op: 'ping' })).toMatchObject({ op: 'ok' });
    const after = await client.ok({ op: 'history', topic });
    expect(after.messages).toEqual(before);
    expect(after.last).toBe(3);
    expect(node.logs).not.toMatch(/"level":(50|60)/);
  });
});
