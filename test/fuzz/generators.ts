/**
 * Generators of hostile input for the protocol: values, request fields of
 * every op with valid and invalid values, whole frames, deep nesting and
 * mutations of valid frames. Everything draws from a {@link Prng}.
 */
import { type Json, Obj, Raw, toText } from './json-text.js';
import type { Prng } from './prng.js';

export const OPS = ['hello', 'ping', 'auth', 'publish', 'subscribe', 'unsubscribe', 'ack', 'nack', 'history'] as const;
export type Op = (typeof OPS)[number];

/** Fields of each op besides `op` and `id` (packages/shared/src/frames.ts). */
const FIELDS: Record<Op, readonly string[]> = {
  hello: ['client'],
  ping: [],
  auth: ['token'],
  publish: ['topic', 'data', 'key'],
  subscribe: ['topic', 'from', 'epoch', 'group', 'prefetch', 'ackWait', 'maxDeliveries'],
  unsubscribe: ['topic', 'group'],
  ack: ['topic', 'group', 'offset', 'epoch'],
  nack: ['topic', 'group', 'offset', 'delay', 'epoch'],
  history: ['topic', 'from', 'limit'],
};

/** How often each op is picked: writes and reads more than the handshake-like ops; `auth` costs a token check. */
const OP_WEIGHTS: ReadonlyArray<readonly [number, Op]> = [
  [5, 'publish'],
  [4, 'subscribe'],
  [2, 'unsubscribe'],
  [3, 'ack'],
  [3, 'nack'],
  [4, 'history'],
  [1, 'hello'],
  [1, 'ping'],
  [0.5, 'auth'],
];

export function pickOp(rng: Prng): Op {
  return rng.weighted(OP_WEIGHTS);
}

const REQUIRED: Record<Op, readonly string[]> = {
  hello: [],
  ping: [],
  auth: ['token'],
  publish: ['topic', 'data'],
  subscribe: ['topic'],
  unsubscribe: ['topic'],
  ack: ['topic', 'group', 'offset'],
  nack: ['topic', 'group', 'offset'],
  history: ['topic'],
};

export const LONE_SURROGATES = ['\uD800', '\uDBFF', '\uDC00', '\uDFFF', 'a\uD83Db', 'x\uDE00', '\uDE00\uD83D'];
export const UNICODE_EDGES = [
  '\u0000',
  '\u0001\u001f',
  '\u007f',
  '\u0085',
  '\u00a0',
  '\u2028\u2029',
  '\uFEFF',
  '\u202Eevil',
  '\u200B\u200D',
  'e\u0301',
  '\uFFFD',
  '\uFFFE\uFFFF',
  '😀',
  '👩‍👩‍👧',
  '𝕗𝕦𝕫𝕫',
  'ｆｕｚｚ',
  'fuzz\u2024a',
  'İı',
  '日本語',
];
export const PROTOTYPE_KEYS = ['__proto__', 'constructor', 'prototype', 'toString', 'valueOf', 'hasOwnProperty', 'isPrototypeOf', '__defineGetter__'];
const INJECTIONS = [
  // biome-ignore lint/suspicious/noTemplateCurlyInString: a log-injection payload, sent as it is
  '${jndi:ldap://x/a}',
  '%s%s%n%x',
  '{{7*7}}',
  "'; DROP TABLE topics;--",
  '<script>alert(1)</script>',
  '../../../../etc/passwd',
  '..\\..\\windows',
  '\r\nX-Injected: 1',
  'null',
  'undefined',
  'NaN',
  'Infinity',
  '-0',
  '1e400',
  '{}',
  '"',
  '\\',
];
/** Numbers a parser, a range check or a store may mishandle. */
const NUMBERS: Json[] = [
  0,
  -1,
  1,
  1.5,
  -1.5,
  0.1,
  Number.MAX_SAFE_INTEGER,
  Number.MAX_SAFE_INTEGER + 1,
  Number.MAX_SAFE_INTEGER + 3,
  -Number.MAX_SAFE_INTEGER,
  2 ** 31 - 1,
  2 ** 31,
  2 ** 32,
  2 ** 63,
  2 ** 64,
  1e21,
  1.7976931348623157e308,
  5e-324,
  new Raw('1e400'),
  new Raw('-1e400'),
  new Raw('1e-400'),
  new Raw('-0'),
  new Raw('1E2'),
  new Raw('1.0'),
  new Raw('100e-2'),
  new Raw('9'.repeat(400)),
  new Raw(`0.${'0'.repeat(400)}1`),
];

/** What frames of one principal may name. */
export interface Vocabulary {
  /** Topic names the frames use as valid values. */
  topics: readonly string[];
  groups: readonly string[];
  /** Tokens an `auth` request carries. */
  tokens: readonly string[];
  /** Epochs seen in replies (shared and growing), for valid-looking settle and resume requests. */
  epochs: string[];
  /** The node's --max-message-bytes. */
  maxMessageBytes: number;
}

// ---- values ----------------------------------------------------------------------

export function randomChars(rng: Prng, length: number): string {
  let out = '';
  for (let i = 0; i < length; i++) {
    out += rng.weighted<() => string>([
      [10, () => String.fromCharCode(rng.int(0x20, 0x7e))],
      [2, () => String.fromCharCode(rng.int(0, 0x1f))],
      [2, () => rng.pick(['"', '\\', '{', '}', '[', ']', ',', ':', '.', '$', '*', '>', '%'])],
      [2, () => String.fromCharCode(rng.int(0xa0, 0xd7ff))],
      [1, () => String.fromCodePoint(rng.int(0x10000, 0x10ffff))],
      [1, () => String.fromCharCode(rng.int(0xd800, 0xdfff))],
    ])();
  }
  return out;
}

export function hostileString(rng: Prng): string {
  return rng.weighted<() => string>([
    [3, () => rng.pick(LONE_SURROGATES)],
    [3, () => rng.pick(UNICODE_EDGES)],
    [2, () => rng.pick(PROTOTYPE_KEYS)],
    [2, () => rng.pick(INJECTIONS)],
    [1, () => ''],
    [1, () => ' '],
    [1, () => 'x'.repeat(rng.chance(0.05) ? 4096 : rng.pick([64, 65, 127, 128, 129, 200, 201, 256, 257]))],
    [3, () => randomChars(rng, rng.int(1, 40))],
    [1, () => `${hostileString(rng)}${hostileString(rng)}`],
  ])();
}

export function hostileNumber(rng: Prng): Json {
  return rng.pick(NUMBERS);
}

/** Any JSON value, shallow (deep nesting comes from {@link deepText}). */
export function jsonValue(rng: Prng, depth = 3): Json {
  if (depth <= 0 || rng.chance(0.45)) {
    return rng.weighted<() => Json>([
      [1, () => null],
      [1, () => rng.chance(0.5)],
      [2, () => hostileNumber(rng)],
      [2, () => rng.int(-1000, 1000)],
      [2, () => hostileString(rng)],
      [2, () => `v${rng.int(0, 9999)}`],
    ])();
  }
  if (rng.chance(0.5)) return Array.from({ length: rng.int(0, 5) }, () => jsonValue(rng, depth - 1));
  const obj = new Obj();
  for (let i = rng.int(0, 5); i > 0; i--) {
    const key = rng.weighted<() => string>([
      [4, () => `k${rng.int(0, 20)}`],
      [2, () => rng.pick(PROTOTYPE_KEYS)],
      [2, () => hostileString(rng)],
    ])();
    obj.set(key, jsonValue(rng, depth - 1));
  }
  return obj;
}

/** JSON text nested `depth` levels (arrays, objects or both). */
export function nestedText(depth: number, kind: 'array' | 'object' | 'mixed', leaf = '1'): string {
  if (kind === 'array') return `${'['.repeat(depth)}${leaf}${']'.repeat(depth)}`;
  if (kind === 'object') return `${'{"a":'.repeat(depth)}${leaf}${'}'.repeat(depth)}`;
  const half = Math.floor(depth / 2);
  return `${'[{"a":'.repeat(half)}${leaf}${'}]'.repeat(half)}`;
}

/** Nesting of 10,000 or more levels, kept under `maxChars` of text. */
export function deepText(rng: Prng, maxChars: number): string {
  const kind = rng.pick(['array', 'object', 'mixed'] as const);
  const perLevel = kind === 'array' ? 2 : kind === 'object' ? 6 : 7;
  const depth = Math.max(10_000, Math.min(rng.int(10_000, 60_000), Math.floor((maxChars - 200) / perLevel)));
  return nestedText(depth, kind);
}

// ---- request fields ----------------------------------------------------------------

function validValue(rng: Prng, field: string, vocab: Vocabulary): Json {
  switch (field) {
    case 'client':
      return rng.chance(0.7) ? `fuzz/${rng.int(0, 9)}` : hostileString(rng).slice(0, 200);
    case 'token':
      return rng.pick(vocab.tokens);
    case 'topic':
      return rng.pick(vocab.topics);
    case 'group':
      return rng.pick(vocab.groups);
    case 'data':
      return rng.weighted<() => Json>([
        [200, () => jsonValue(rng, 3)],
        [1, () => 'd'.repeat(rng.int(vocab.maxMessageBytes - 8, vocab.maxMessageBytes + 8))],
        [10, () => new Raw(nestedText(rng.int(62, 66), rng.pick(['array', 'object'] as const)))],
      ])();
    case 'key':
      return rng.weighted<() => Json>([
        [4, () => `k${rng.int(0, 30)}`],
        [1, () => 'K'.repeat(rng.pick([1, 255, 256]))],
        [1, () => rng.pick(['😀start', '日本語', 'e\u0301', '\uFFFF', '\u0000', '\u001e', '__proto__'])],
      ])();
    case 'from':
    case 'offset':
      return rng.weighted<() => Json>([
        [6, () => rng.int(1, 60)],
        [1, () => Number.MAX_SAFE_INTEGER],
        [1, () => rng.int(1, Number.MAX_SAFE_INTEGER)],
      ])();
    case 'epoch':
      return rng.weighted<() => Json>([
        [3, () => (vocab.epochs.length > 0 ? rng.pick(vocab.epochs) : 'e')],
        [1, () => ''],
        [1, () => 'z'.repeat(64)],
        [1, () => hostileString(rng).slice(0, 64)],
      ])();
    case 'prefetch':
      return rng.pick([1, 2, 5, 10, 100, 10_000]);
    case 'ackWait':
      return rng.pick([100, 250, 1000, 30_000, 43_200_000]);
    case 'maxDeliveries':
      return rng.pick([1, 2, 5, 1000]);
    case 'delay':
      return rng.pick([0, 1, 50, 1000, 43_200_000]);
    case 'limit':
      return rng.pick([1, 10, 100, 1000]);
    default:
      throw new Error(`no generator for field '${field}'`);
  }
}

/** Topic names that break a rule, or only just keep it. */
function hostileTopic(rng: Prng): string {
  return rng.pick([
    '',
    ' ',
    'a b',
    '.a',
    '-a',
    ':a',
    'a/b',
    'a*',
    '>',
    'fuzz.>',
    `fuzz.${'t'.repeat(195)}`,
    `fuzz.${'t'.repeat(196)}`,
    `$dlq.fuzz.${'t'.repeat(195)}`,
    '$dlq.',
    '$dlq.fuzz.a',
    '$dlq.$dlq.fuzz.a',
    '$dlq..a',
    '$sys.x',
    '$',
    'fuzz.a\u0000',
    'fuzz\u2024a',
    'ｆｕｚｚ.a',
    `fuzz.${rng.pick(LONE_SURROGATES)}`,
    `fuzz.${rng.pick(UNICODE_EDGES)}`,
    'fuzz.a\n',
    randomChars(rng, rng.int(1, 30)),
  ]);
}

function hostileValue(rng: Prng, field: string): Json {
  const wrongType = () => jsonValue(rng, 2);
  const numeric = (bounds: Json[]) =>
    rng.weighted<() => Json>([
      [3, () => rng.pick(bounds)],
      [2, () => hostileNumber(rng)],
      [1, () => String(rng.int(1, 100))],
      [1, wrongType],
    ])();
  switch (field) {
    case 'topic':
      return rng.chance(0.8) ? hostileTopic(rng) : wrongType();
    case 'group':
      return rng.chance(0.8) ? rng.pick(['', 'a b', '.g', `g${'x'.repeat(99)}`, `g${'x'.repeat(100)}`, '$dlq.g', 'g/h', hostileString(rng)]) : wrongType();
    case 'client':
      return rng.chance(0.5) ? 'c'.repeat(201) : wrongType();
    case 'token':
      return rng.pick(['', 't'.repeat(8193), hostileString(rng), 'a.b.c', 'e30.e30.', 'Bearer x']) as Json;
    case 'key':
      return rng.pick<Json>(['', 'k'.repeat(257), rng.pick(LONE_SURROGATES), `k${rng.pick(LONE_SURROGATES)}`, 7, wrongType()]);
    case 'epoch':
      return rng.chance(0.5) ? 'e'.repeat(65) : wrongType();
    case 'data':
      return rng.pick<Json>([new Raw('undefined'), new Raw('NaN'), wrongType()]);
    case 'from':
    case 'offset':
      return numeric([0, -1, 1.5, Number.MAX_SAFE_INTEGER + 1, new Raw('1e400'), '5']);
    case 'prefetch':
      return numeric([0, 10_001, -1, 1.5]);
    case 'ackWait':
      return numeric([99, 43_200_001, 0]);
    case 'maxDeliveries':
      return numeric([0, 1001]);
    case 'delay':
      return numeric([-1, 43_200_001, 0.5]);
    case 'limit':
      return numeric([0, 1001, -5]);
    default:
      return wrongType();
  }
}

function hostileId(rng: Prng): Json {
  return rng.pick<Json>(['i'.repeat(129), 'i'.repeat(128), null, true, new Obj().set('x', 1), [1], rng.pick(LONE_SURROGATES), hostileNumber(rng), '']);
}

/**
 * The fields of one request of `op` (without `op` and `id`), from fully valid
 * to thoroughly wrong: `hostility` 0 keeps every field valid.
 */
export function requestFields(rng: Prng, op: Op, vocab: Vocabulary, hostility: number): Obj {
  const obj = new Obj();
  for (const field of FIELDS[op]) {
    const required = REQUIRED[op].includes(field);
    // Group settings without a group are a separate error; keep them mostly with one.
    const present = required ? !rng.chance(hostility * 0.2) : rng.chance(0.35);
    if (!present) continue;
    obj.set(field, rng.chance(hostility) ? hostileValue(rng, field) : validValue(rng, field, vocab));
  }
  if (rng.chance(hostility * 0.3)) {
    // Unknown fields, prototype keys among them, and repeated known ones.
    const key = rng.weighted<() => string>([
      [3, () => rng.pick(PROTOTYPE_KEYS)],
      [2, () => hostileString(rng)],
      [2, () => rng.pick(FIELDS[op].length > 0 ? FIELDS[op] : ['x'])],
    ])();
    obj.set(key, rng.chance(0.5) ? new Obj().set('op', 'publish').set('admin', true) : jsonValue(rng, 2));
  }
  return obj;
}

/** A request frame of `op` as an object: op and id at random places among the fields. */
export function requestObject(rng: Prng, op: Op, id: Json, vocab: Vocabulary, hostility: number): Obj {
  const fields = requestFields(rng, op, vocab, hostility);
  const pairs = [...fields.pairs];
  const opValue: Json = rng.chance(hostility * 0.15) ? rng.pick<Json>([op.toUpperCase(), ` ${op}`, 7, null, [op], hostileString(rng)]) : op;
  if (!rng.chance(hostility * 0.05)) pairs.splice(rng.int(0, pairs.length), 0, ['op', opValue]);
  const idValue = rng.chance(hostility * 0.15) ? hostileId(rng) : id;
  if (!rng.chance(hostility * 0.05)) pairs.splice(rng.int(0, pairs.length), 0, ['id', idValue]);
  return new Obj(pairs);
}

/** Chooses how hostile one frame is: a third valid, a third one field off, a third chaos. */
export function hostilityOf(rng: Prng): number {
  return rng.pick([0, 0, 0.15, 0.3, 0.6, 1]);
}

// ---- mutation ----------------------------------------------------------------------

/** A few character-level edits of `text` (the result is still a JS string). */
export function mutateText(rng: Prng, text: string): string {
  let out = text;
  for (let edits = rng.int(1, 4); edits > 0; edits--) {
    const at = rng.int(0, Math.max(0, out.length - 1));
    out = rng.weighted<() => string>([
      [4, () => out.slice(0, at) + randomChars(rng, 1) + out.slice(at + 1)],
      [2, () => out.slice(0, at) + out.slice(at + 1)],
      [2, () => out.slice(0, at) + randomChars(rng, rng.int(1, 3)) + out.slice(at)],
      [1, () => out.slice(0, at)],
      [1, () => out.slice(0, at) + out.slice(at, at + rng.int(1, 20)).repeat(rng.int(2, 5)) + out.slice(at)],
      [1, () => out.slice(0, at) + toText(jsonValue(rng, 2)) + out.slice(at)],
    ])();
  }
  return out;
}

/** Flips bits of the UTF-8 bytes of `text`: the result may not be UTF-8 any more. */
export function flipBytes(rng: Prng, text: string): Buffer {
  const bytes = Buffer.from(text);
  for (let flips = rng.int(1, 4); flips > 0 && bytes.length > 0; flips--) {
    const at = rng.int(0, bytes.length - 1);
    // Mostly within ASCII; the high bit makes the text invalid UTF-8 (which closes the connection).
    bytes[at] = bytes[at]! ^ (1 << (rng.chance(0.1) ? 7 : rng.int(0, 6)));
  }
  return bytes;
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

export function isUtf8(bytes: Uint8Array): boolean {
  try {
    UTF8.decode(bytes);
    return true;
  } catch {
    return false;
  }
}

export function randomBytes(rng: Prng, length: number): Buffer {
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i++) out[i] = rng.int(0, 255);
  return out;
}
