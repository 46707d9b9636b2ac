import WebSocket from 'ws';
import {
  deepText,
  flipBytes,
  hostileString,
  hostilityOf,
  isUtf8,
  jsonValue,
  mutateText,
  pickOp,
  randomBytes,
  requestObject,
  type Vocabulary,
} from './generators.js';
import { type Json, Obj, toText } from './json-text.js';
import type { Prng } from './prng.js';
import { namesProtectedTopic, pickRole, type Role } from './roles.js';
import { excerpt, type Tally } from './tally.js';

export interface WsLaneOptions {
  /** ws://host:port/ws */
  wsUrl: string;
  roles: readonly Role[];
  tally: Tally;
  /** Frames this lane sends. */
  frames: number;
  /** The node's frame limit (2 × max message bytes + 64 KiB). */
  maxFrameBytes: number;
  /** Topics admin frames must not name. */
  protectedTopics: readonly string[];
  /** How long a frame may go unanswered before it counts as a hang. */
  replyTimeoutMs: number;
}

/** One frame to send, and what the node must do with it. */
type WsFrame =
  | { kind: 'request'; data: string | Buffer; binary: boolean }
  /** The node must close the connection with `code` (an oversized frame, a text frame that is not UTF-8). */
  | { kind: 'closing'; data: string | Buffer; binary: boolean; code: number; why: string };

function requestText(rng: Prng, vocab: Vocabulary, id: Json, hostility: number): string {
  const obj = requestObject(rng, pickOp(rng), id, vocab, hostility);
  if (!rng.chance(0.03)) return toText(obj);
  const junk = rng.pick(['explode', 'PUBLISH', 'message', 'ok', '__proto__', 'constructor', hostileString(rng)]);
  return toText(new Obj(obj.pairs.map(([k, v]): [string, Json] => [k, k === 'op' ? junk : v])));
}

/** The next frame of a lane: requests valid and not, mutations, broken JSON, binary, deep and oversized frames. */
export function nextWsFrame(rng: Prng, vocab: Vocabulary, id: number, maxFrameBytes: number): WsFrame {
  const idValue: Json = rng.chance(0.8) ? id : `s${id}`;
  const kind = rng.weighted([
    [55, 'request'],
    [12, 'mutated'],
    [3, 'flipped'],
    [6, 'broken'],
    [4, 'not an object'],
    [3, 'binary'],
    [0.4, 'deep'],
    [0.2, 'wide'],
    [0.1, 'oversized'],
  ] as const);
  switch (kind) {
    case 'request':
      return { kind: 'request', data: requestText(rng, vocab, idValue, hostilityOf(rng)), binary: false };
    case 'mutated':
      return { kind: 'request', data: mutateText(rng, requestText(rng, vocab, idValue, 0)), binary: false };
    case 'flipped': {
      const bytes = flipBytes(rng, requestText(rng, vocab, idValue, 0));
      // ws checks every text frame is UTF-8 and closes with 1007 when it is not.
      return isUtf8(bytes)
        ? { kind: 'request', data: bytes, binary: false }
        : { kind: 'closing', data: bytes, binary: false, code: 1007, why: 'text frame not UTF-8' };
    }
    case 'broken':
      return {
        kind: 'request',
        binary: false,
        data: rng.pick([
          '',
          ' ',
          '{',
          '}',
          'nul',
          '{"op":"ping","id":1',
          '{"op":"ping","id":1,}',
          "{'op':'ping','id':1}",
          '{"op":"ping","id":01}',
          '{"op":"ping","id":0x10}',
          '{"op":"ping","id":NaN}',
          '{"op":"ping","id":1}{"op":"ping","id":2}',
          '\uFEFF{"op":"ping","id":1}',
          '{"op":"ping","id":1}\u0000',
          '{"op":"ping"\u0000,"id":1}',
          `{"op":"publish","id":${id},"topic":"fuzz.a","data":"\\ud800"}`,
          `{"op":"publish","id":${id},"topic":"fuzz.a","data":"\\uZZZZ"}`,
          requestText(rng, vocab, idValue, 0).slice(0, rng.int(1, 30)),
        ]),
      };
    case 'not an object':
      return {
        kind: 'request',
        binary: false,
        data: rng.pick(['[]', '[{"op":"ping","id":1}]', '"ping"', '0', '-0', '1e400', 'null', 'true', toText(jsonValue(rng, 2))]),
      };
    case 'binary':
      return {
        kind: 'request',
        binary: true,
        data: rng.chance(0.5) ? Buffer.from(requestText(rng, vocab, idValue, 0)) : randomBytes(rng, rng.int(0, 512)),
      };
    case 'deep': {
      const deep = deepText(rng, maxFrameBytes - 512);
      const where = rng.pick(['data', 'frame', 'id', 'op', 'unknown field', 'topic'] as const);
      const text =
        where === 'frame'
          ? deep
          : where === 'data'
            ? `{"op":"publish","id":${id},"topic":${JSON.stringify(rng.pick(vocab.topics))},"data":${deep}}`
            : where === 'unknown field'
              ? `{"op":"ping","id":${id},"x":${deep}}`
              : where === 'id'
                ? `{"op":"ping","id":${deep}}`
                : where === 'op'
                  ? `{"op":${deep},"id":${id}}`
                  : `{"op":"history","id":${id},"topic":${deep}}`;
      return { kind: 'request', binary: false, data: text };
    }
    case 'wide': {
      // Many keys or elements, within the frame limit.
      const n = rng.int(1000, Math.floor(maxFrameBytes / 12));
      const obj = new Obj().set('op', rng.pick(['ping', 'publish', 'subscribe'])).set('id', id);
      if (rng.chance(0.5)) for (let i = 0; i < n; i++) obj.set(`k${i}`, i);
      else
        obj.set('topic', 'fuzz.a').set(
          'data',
          Array.from({ length: n }, (_, i) => i),
        );
      const text = toText(obj);
      return { kind: 'request', binary: false, data: text.length < maxFrameBytes ? text : text.slice(0, maxFrameBytes - 1) };
    }
    case 'oversized': {
      const size = maxFrameBytes + rng.int(1, 64 * 1024);
      const binary = rng.chance(0.2);
      const data = binary ? randomBytes(rng, size) : `{"op":"publish","id":${id},"topic":"fuzz.a","data":"${'x'.repeat(size)}"}`;
      return { kind: 'closing', data, binary, code: 1009, why: 'oversized frame' };
    }
  }
}

/** Connects with the role's token in the query or in an Authorization header. */
function connect(rng: Prng, wsUrl: string, token: string | undefined): WebSocket {
  if (token === undefined) return new WebSocket(wsUrl);
  if (rng.chance(0.5)) return new WebSocket(`${wsUrl}?token=${encodeURIComponent(token)}`);
  return new WebSocket(wsUrl, { headers: { authorization: `Bearer ${token}` } });
}

/** Resolves with the HTTP status of a refused handshake, or 'open' when the node accepted it. */
function handshakeOutcome(ws: WebSocket): Promise<number | 'open' | string> {
  return new Promise((resolve) => {
    ws.once('open', () => resolve('open'));
    ws.once('unexpected-response', (_req, res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.once('error', (err) => resolve(`error: ${err.message}`));
  });
}

/**
 * One fuzzing connection: counts the frames that must be answered and the
 * replies (ok and error frames; deliveries are not replies), checks every
 * error frame, and notices a close it did not ask for.
 */
class FuzzConnection {
  outstanding = 0;
  closedWith: number | undefined;
  expectingClose = false;
  private readonly recent: Array<string | Buffer> = [];
  private readonly byId = new Map<unknown, string | Buffer>();
  private wake: (() => void) | undefined;

  constructor(
    readonly ws: WebSocket,
    private readonly role: Role,
    private readonly tally: Tally,
  ) {
    ws.on('message', (raw, isBinary) => this.onMessage(raw.toString(), isBinary));
    ws.on('close', (code) => {
      this.closedWith = code;
      if (!this.expectingClose) tally.finding('connection dropped', `ws ${role.name}: closed with ${code}; last frames ${this.lastFrames()}`);
      this.wake?.();
    });
    ws.on('error', () => undefined);
  }

  get open(): boolean {
    return this.closedWith === undefined && this.ws.readyState === WebSocket.OPEN;
  }

  send(frame: string | Buffer, binary: boolean, id: number): void {
    this.recent.push(frame);
    if (this.recent.length > 8) this.recent.shift();
    this.byId.set(id, frame);
    this.byId.set(`s${id}`, frame);
    this.outstanding++;
    this.ws.send(frame, { binary });
  }

  /** Waits until at most `max` replies are outstanding (or the connection closed); false on timeout. */
  async until(max: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.outstanding > max && this.open) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 1000));
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return true;
  }

  lastFrames(): string {
    return this.recent.map((f) => excerpt(f)).join(' | ');
  }

  unanswered(): string {
    return `${this.outstanding} frames unanswered; last frames ${this.lastFrames()}`;
  }

  private onMessage(text: string, isBinary: boolean): void {
    if (isBinary) {
      this.tally.finding('binary frame from the node', `ws ${this.role.name}: ${excerpt(text)}`);
      return;
    }
    let frame: Record<string, unknown>;
    try {
      frame = JSON.parse(text) as Record<string, unknown>;
    } catch {
      this.tally.finding('frame from the node is not JSON', `ws ${this.role.name}: ${excerpt(text)}`);
      return;
    }
    if (frame.op === 'ok' || frame.op === 'error') {
      this.outstanding--;
      if (this.outstanding < 0) {
        this.tally.finding('more replies than requests', `ws ${this.role.name}: ${excerpt(text)}; last frames ${this.lastFrames()}`);
        this.outstanding = 0;
      }
      const trigger = this.byId.get(frame.id);
      this.byId.delete(frame.id);
      if (frame.op === 'error')
        this.tally.error('ws', frame, () => (trigger ? excerpt(trigger) : `(id ${JSON.stringify(frame.id)}) one of ${this.lastFrames()}`));
      else if (typeof frame.epoch === 'string' && frame.epoch !== '' && !this.role.vocab.epochs.includes(frame.epoch) && this.role.vocab.epochs.length < 64) {
        this.role.vocab.epochs.push(frame.epoch);
      }
      this.wake?.();
    } else if (frame.op !== 'message' && frame.op !== 'reset') {
      this.tally.finding('unexpected frame from the node', `ws ${this.role.name}: ${excerpt(text)}`);
    }
  }
}

/**
 * A lane of plain WebSocket fuzzing: connects as a random role (refused
 * roles must get an HTTP error at the handshake), sends a run of frames with
 * a random number in flight, checks each is answered exactly once, then
 * closes and starts again. Oversized and non-UTF-8 frames end a connection
 * and must close it with their code.
 */
export async function runWsLane(rng: Prng, options: WsLaneOptions): Promise<void> {
  const { tally } = options;
  let sent = 0;
  while (sent < options.frames) {
    const role = pickRole(rng, options.roles, 0.05);
    const ws = connect(rng, options.wsUrl, role.token);
    if (!role.accepted) {
      const outcome = await handshakeOutcome(ws);
      if (outcome === 401) tally.bump(tally.refused, `ws ${role.name}`);
      else tally.finding('bad token not refused with 401', `ws ${role.name}: ${String(outcome)}`);
      if (outcome === 'open') ws.terminate();
      continue;
    }
    const outcome = await handshakeOutcome(ws);
    if (outcome !== 'open') {
      tally.finding('valid token refused', `ws ${role.name}: ${String(outcome)}`);
      continue;
    }
    const conn = new FuzzConnection(ws, role, tally);
    // Up to more requests in flight than MAX_INFLIGHT allows.
    const window = rng.int(1, 96);
    let id = 0;
    for (let n = rng.int(50, 600); n > 0 && sent < options.frames && conn.open; n--) {
      const frame = nextWsFrame(rng, role.vocab, ++id, options.maxFrameBytes);
      if (role.admin && typeof frame.data === 'string' && namesProtectedTopic(frame.data, options.protectedTopics)) continue;
      if (frame.kind === 'closing') {
        // Only once everything before it was answered: the close may cut replies off.
        if (!(await conn.until(0, options.replyTimeoutMs))) break;
        conn.expectingClose = true;
        const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
        ws.send(frame.data, { binary: frame.binary });
        sent++;
        tally.count('ws', frame.data.length);
        const code = await closed;
        if (code === frame.code) tally.bump(tally.closes, `ws ${code} (${frame.why})`);
        else tally.finding(`${frame.why} not closed with ${frame.code}`, `ws ${role.name}: closed with ${code}: ${excerpt(frame.data)}`);
        break;
      }
      if (!(await conn.until(window - 1, options.replyTimeoutMs))) break;
      if (!conn.open) break;
      conn.send(frame.data, frame.binary, id);
      sent++;
      tally.count('ws', frame.data.length);
    }
    if (conn.open) {
      if (!(await conn.until(0, options.replyTimeoutMs))) tally.finding('no reply', `ws ${role.name}: ${conn.unanswered()}`);
      conn.expectingClose = true;
      await new Promise<void>((resolve) => {
        if (ws.readyState === WebSocket.CLOSED) return resolve();
        ws.once('close', () => resolve());
        ws.close();
        setTimeout(() => ws.terminate(), 2000).unref();
      });
    }
  }
}
