import { io, type Socket } from 'socket.io-client';
import { hostileString, hostilityOf, jsonValue, nestedText, OPS, type Op, pickOp, randomBytes, requestFields, type Vocabulary } from './generators.js';
import { Obj, Raw, toValue } from './json-text.js';
import type { Prng } from './prng.js';
import { namesProtectedTopic, pickRole, type Role } from './roles.js';
import { excerpt, type Tally } from './tally.js';

export interface SocketIoLaneOptions {
  /** http://host:port */
  url: string;
  roles: readonly Role[];
  tally: Tally;
  frames: number;
  /** engine.io's maxHttpBufferSize on the node (its frame limit). */
  maxFrameBytes: number;
  protectedTopics: readonly string[];
  replyTimeoutMs: number;
}

/** Names socket.io-client refuses to emit (its own events). */
const CLIENT_RESERVED = new Set(['connect', 'connect_error', 'disconnect', 'disconnecting', 'newListener', 'removeListener']);

/** Event names never sent (none today; `error` once reached the node's own error handler). */
export const EXCLUDED_EVENT_NAMES = new Set<string>();

/** Largest Buffer sent as a whole event payload: the node refuses anything but a plain object before reading it. */
export const MAX_BUFFER_PAYLOAD_BYTES = 256 * 1024;

function eventName(rng: Prng): string {
  if (rng.chance(0.9)) return pickOp(rng);
  const name = rng.pick([
    '',
    ' ',
    'explode',
    'PUBLISH',
    'message',
    'ok',
    'move',
    'reset',
    '__proto__',
    'constructor',
    'toString',
    'hasOwnProperty',
    'x'.repeat(10_000),
    hostileString(rng),
  ]);
  return CLIENT_RESERVED.has(name) || EXCLUDED_EVENT_NAMES.has(name) ? 'ping' : name;
}

/** The arguments of one event: mostly a request payload, sometimes anything else. */
function eventArgs(rng: Prng, op: Op, vocab: Vocabulary, maxFrameBytes: number): { args: unknown[]; closes?: string } {
  const fields = () => requestFields(rng, op, vocab, hostilityOf(rng));
  const kind = rng.weighted([
    [70, 'payload'],
    [5, 'none'],
    [5, 'not an object'],
    [4, 'with op or id'],
    [3, 'extra args'],
    [2, 'buffer'],
    [3, 'buffer inside'],
    [1, 'deep'],
    [0.1, 'oversized'],
  ] as const);
  switch (kind) {
    case 'payload':
      return { args: [toValue(fields())] };
    case 'none':
      return { args: [] };
    case 'not an object':
      return { args: [rng.pick<unknown>(['orders', 42, null, true, [], [toValue(fields())], toValue(jsonValue(rng, 2))])] };
    case 'with op or id': {
      const obj = fields();
      return { args: [toValue(rng.chance(0.5) ? obj.set('op', op) : obj.set('id', rng.int(1, 9)))] };
    }
    case 'extra args':
      return { args: [toValue(fields()), toValue(jsonValue(rng, 2)), 'extra'] };
    case 'buffer':
      // Within the frame limit: a larger packet closes the connection by design (the oversized case below).
      return { args: [randomBytes(rng, rng.int(0, Math.min(MAX_BUFFER_PAYLOAD_BYTES, maxFrameBytes / 2)))] };
    case 'buffer inside': {
      const payload = toValue(fields()) as Record<string, unknown>;
      payload[rng.pick(['data', 'topic', 'key', 'from', 'x'])] = randomBytes(rng, rng.int(0, 256));
      return { args: [payload] };
    }
    case 'deep':
      // socket.io-client walks payloads recursively (looking for binary): deeper nesting goes through the raw lane.
      return { args: [toValue(new Obj().set('topic', 'fuzz.a').set('data', new Raw(nestedText(rng.int(65, 2000), rng.pick(['array', 'object'] as const)))))] };
    case 'oversized':
      return { args: [{ topic: 'fuzz.a', data: 'x'.repeat(maxFrameBytes + rng.int(1, 4096)) }], closes: 'oversized packet' };
  }
}

function connect(rng: Prng, url: string, token: string | undefined): Socket {
  const viaHeader = token !== undefined && rng.chance(0.3);
  return io(url, {
    transports: ['websocket'],
    reconnection: false,
    forceNew: true,
    timeout: 10_000,
    ...(token === undefined ? {} : viaHeader ? { extraHeaders: { authorization: `Bearer ${token}` } } : { auth: { token } }),
  });
}

function connected(socket: Socket): Promise<'connected' | { code: unknown; message: string }> {
  return new Promise((resolve) => {
    socket.once('connect', () => resolve('connected'));
    socket.once('connect_error', (err: Error & { data?: { code?: unknown } }) => resolve({ code: err.data?.code, message: err.message }));
  });
}

/**
 * A lane of Socket.IO fuzzing with socket.io-client: random event names and
 * payloads, with and without acknowledgements (replies then come as `ok` and
 * `error` events); every event must be answered exactly once.
 */
export async function runSocketIoLane(rng: Prng, options: SocketIoLaneOptions): Promise<void> {
  const { tally } = options;
  let sent = 0;
  while (sent < options.frames) {
    const role = pickRole(rng, options.roles, 0.05);
    const socket = connect(rng, options.url, role.token);
    const outcome = await connected(socket);
    if (!role.accepted) {
      if (outcome !== 'connected' && outcome.code === 'unauthorized') tally.bump(tally.refused, `socket.io ${role.name}`);
      else tally.finding('bad token not refused as unauthorized', `socket.io ${role.name}: ${JSON.stringify(outcome)}`);
      socket.disconnect();
      continue;
    }
    if (outcome !== 'connected') {
      tally.finding('valid token refused', `socket.io ${role.name}: ${JSON.stringify(outcome)}`);
      socket.disconnect();
      continue;
    }
    let outstanding = 0;
    let expectingDisconnect = false;
    let disconnected: string | undefined;
    const recent: Array<() => string> = [];
    const lastEvents = () => recent.map((show) => show()).join(' | ');
    let wake: (() => void) | undefined;
    const replied = (reply: unknown, trigger: () => string) => {
      outstanding--;
      if (outstanding < 0) {
        tally.finding('more replies than requests', `socket.io ${role.name}: ${excerpt(JSON.stringify(reply) ?? '')}`);
        outstanding = 0;
      }
      const frame = reply as { op?: unknown; code?: unknown; message?: unknown } | null;
      if (frame?.op === 'error') tally.error('socket.io', frame, trigger);
      else if (frame?.op !== 'ok')
        tally.finding('reply is not ok or error', `socket.io ${role.name}: ${excerpt(JSON.stringify(reply) ?? String(reply))} for ${trigger()}`);
      wake?.();
    };
    socket.on('ok', (frame: unknown) => replied(frame, () => `(event reply) one of ${lastEvents()}`));
    socket.on('error', (frame: unknown) => replied(frame, () => `(event reply) one of ${lastEvents()}`));
    socket.on('disconnect', (reason) => {
      disconnected = reason;
      if (!expectingDisconnect) tally.finding('connection dropped', `socket.io ${role.name}: ${reason}; last events ${lastEvents()}`);
      wake?.();
    });
    const until = async (max: number): Promise<boolean> => {
      const deadline = Date.now() + options.replyTimeoutMs;
      while (outstanding > max && disconnected === undefined) {
        const left = deadline - Date.now();
        if (left <= 0) return false;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.min(left, 1000));
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
      return true;
    };
    const window = rng.int(1, 32);
    for (let n = rng.int(50, 500); n > 0 && sent < options.frames && disconnected === undefined; n--) {
      const event = eventName(rng);
      const op = (OPS as readonly string[]).includes(event) ? (event as Op) : rng.pick(OPS);
      const { args, closes } = eventArgs(rng, op, role.vocab, options.maxFrameBytes);
      const shown = () => `${excerpt(event)} ${excerpt(safeJson(args))}`;
      if (role.admin && namesProtectedTopic(safeJson(args), options.protectedTopics)) continue;
      if (closes) {
        if (!(await until(0))) break;
        expectingDisconnect = true;
        const gone = new Promise<string>((resolve) => socket.once('disconnect', (reason) => resolve(reason)));
        socket.emit(event, ...args);
        sent++;
        tally.count('socket.io', event.length + safeJson(args).length);
        const reason = await gone;
        tally.bump(tally.closes, `socket.io ${reason} (${closes})`);
        break;
      }
      if (!(await until(window - 1)) || disconnected !== undefined) break;
      recent.push(shown);
      if (recent.length > 6) recent.shift();
      outstanding++;
      if (rng.chance(0.7)) socket.emit(event, ...args, (reply: unknown) => replied(reply, shown));
      else socket.emit(event, ...args);
      sent++;
      tally.count('socket.io', event.length + safeJson(args).length);
    }
    if (disconnected === undefined && !(await until(0))) {
      tally.finding('no reply', `socket.io ${role.name}: ${outstanding} events unanswered; last events ${lastEvents()}`);
    }
    expectingDisconnect = true;
    socket.disconnect();
  }
}

function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value, (_k, v: unknown) => (Buffer.isBuffer(v) || (v as { type?: string })?.type === 'Buffer' ? `<buffer>` : v)) ?? 'undefined';
  } catch {
    return String(value);
  }
}
