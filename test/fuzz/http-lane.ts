import { Agent, type OutgoingHttpHeaders, request } from 'node:http';
import { connect } from 'node:net';
import { deepText, hostileString, jsonValue, randomBytes } from './generators.js';
import { toText } from './json-text.js';
import type { Prng } from './prng.js';
import { FUZZ_GROUPS, FUZZ_TOPICS, namesProtectedTopic, pickRole, type Role } from './roles.js';
import { excerpt, type Tally } from './tally.js';

export interface HttpLaneOptions {
  host: string;
  port: number;
  roles: readonly Role[];
  tally: Tally;
  /** Requests this lane sends. */
  frames: number;
  /** Requests in flight at once. */
  concurrency: number;
  /** Topics admin requests that write must not name. */
  protectedTopics: readonly string[];
  /** Topics read-only requests of anyone may name (recorded topics among them). */
  readableTopics: readonly string[];
}

/** The admin API's routes (docs/api.md), and the node's other paths. */
const ROUTES: ReadonlyArray<readonly [string, string]> = [
  ['GET', '/api/nodes'],
  ['GET', '/api/nodes/self'],
  ['GET', '/api/topics'],
  ['GET', '/api/topics/:topic'],
  ['GET', '/api/topics/:topic/messages'],
  ['GET', '/api/topics/:topic/groups/:group/pending'],
  ['PUT', '/api/topics/:topic/groups/:group'],
  ['GET', '/api/dead-letters'],
  ['GET', '/api/topics/:topic/dead-letters'],
  ['POST', '/api/topics/:topic/dead-letters/:offset/replay'],
  ['POST', '/api/topics/:topic/dead-letters/replay'],
  ['DELETE', '/api/topics/:topic/dead-letters'],
  ['GET', '/api/cluster/stats'],
  ['GET', '/healthz'],
  ['GET', '/readyz'],
];
const OTHER_PATHS = [
  '/',
  '/index.html',
  '/favicon.ico',
  '/assets/x.js',
  '/../../etc/passwd',
  '/%2e%2e/%2e%2e/%2e%2e/etc/passwd',
  '/..%2f..%2f..%2f..%2fetc%2fpasswd',
  '/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd',
  '//etc/passwd',
  '/%00',
  '/index.html%00.js',
  '/%ZZ',
  '/api',
  '/api/',
  '/api//topics',
  '/API/topics',
  '/api/topics/',
  '/api/topics/fuzz.a/',
  '/api/topics/%2e%2e',
  '/api/topics/..%2Fnodes',
  '/api/topics/fuzz.a/messages/extra',
  '/ws',
  '/socket.io/',
  '/socket.io/?EIO=3&transport=polling',
  '/socket.io/?EIO=4&transport=polling&sid=bogus',
  '/socket.io/?EIO=4&transport=xyz',
  '/healthz/../api/topics',
];
/** Topics whose summaries are not checked (none today: names such as `constructor` once got wrong counters). */
const TOPICS_LEFT_OUT_UNTIL_FIXED = new Set<string>();

/** Methods llhttp parses; others are refused before the node sees them. */
const METHODS: ReadonlyArray<readonly [number, string]> = [
  [40, 'GET'],
  [4, 'HEAD'],
  [12, 'POST'],
  [12, 'PUT'],
  [10, 'DELETE'],
  [3, 'PATCH'],
  [5, 'OPTIONS'],
  [1, 'PURGE'],
  [1, 'PROPFIND'],
  [1, 'FOO'],
];
const READ_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);
const NUMBER_TEXTS = ['1', '0', '-1', '1.5', '1000', '1001', '9007199254740991', '9007199254740993', '1e3', '0x10', ' 1', 'abc', '', '%00', 'NaN', 'Infinity'];
const BAD_PERCENT = ['%', '%C0%AF', '%FF', '%E2%80%AE', '%00', '%2F', '%20', '%252e', '%ED%A0%80', '%F0%9F%98%80'];

interface HttpRequest {
  method: string;
  path: string;
  headers: OutgoingHttpHeaders;
  body?: string | Buffer;
}

/** Percent-encodes any JS string; a lone surrogate becomes its (invalid) three UTF-8-style bytes. */
function percentEncode(text: string): string {
  let out = '';
  for (const char of text) {
    const code = char.codePointAt(0)!;
    if (code >= 0xd800 && code <= 0xdfff)
      out += `%${(0xe0 | (code >> 12)).toString(16)}%${(0x80 | ((code >> 6) & 0x3f)).toString(16)}%${(0x80 | (code & 0x3f)).toString(16)}`.toUpperCase();
    else out += encodeURIComponent(char);
  }
  return out;
}

function segment(rng: Prng, values: readonly string[]): string {
  return rng.weighted<() => string>([
    [6, () => encodeURIComponent(rng.pick(values))],
    [1, () => percentEncode(hostileString(rng))],
    [1, () => `${encodeURIComponent(rng.pick(values))}${rng.pick(BAD_PERCENT)}`],
    [1, () => rng.pick(BAD_PERCENT)],
  ])();
}

function query(rng: Prng, role: Role, tokenInQuery: boolean): string {
  const params: string[] = [];
  for (let n = rng.int(0, 4); n > 0; n--) {
    const name = rng.pick(['limit', 'before', 'from', 'limit', 'x', '__proto__', 'token']);
    params.push(`${name}=${encodeURIComponent(rng.pick(NUMBER_TEXTS))}`);
  }
  if (tokenInQuery && role.token !== undefined) params.push(`token=${encodeURIComponent(role.token)}`);
  if (rng.chance(0.02)) params.push(`q=${'q'.repeat(rng.int(1000, 8000))}`);
  return params.length > 0 ? `?${params.join('&')}` : '';
}

function authorization(rng: Prng, role: Role): string | undefined {
  if (role.token === undefined) return rng.chance(0.8) ? undefined : rng.pick(['Bearer', 'Bearer ', 'Basic dXNlcjpwYXNz', 'x']);
  return rng.weighted<() => string>([
    [12, () => `Bearer ${role.token}`],
    [1, () => `bearer  ${role.token}`],
    [1, () => `Bearer ${role.token} extra`],
    [1, () => `Basic ${role.token}`],
    [1, () => `Bearer ${'a'.repeat(9000)}`],
  ])();
}

function body(rng: Prng): string | Buffer {
  return rng.weighted<() => string | Buffer>([
    [
      4,
      () => rng.pick(['', '{}', '{"purge":true}', '{"purge":false}', '{"ackWaitMs":100}', '{"maxDeliveries":1000}', '{"ackWaitMs":30000,"maxDeliveries":5}']),
    ],
    [
      4,
      () =>
        rng.pick([
          '{"purge":"true"}',
          '{"purge":true,"x":1}',
          '{"ackWaitMs":99}',
          '{"maxDeliveries":1001}',
          '{"ackWaitMs":1e400}',
          '{"ackWaitMs":1.5}',
          '{"__proto__":{"purge":true}}',
          '{"constructor":{"prototype":{"admin":true}}}',
          '{"purge":false,"purge":true}',
          '[]',
          'null',
          '"x"',
          'not json',
          '{"purge":',
        ]),
    ],
    [2, () => toText(jsonValue(rng, 3))],
    [0.3, () => deepText(rng, 60_000)],
    [0.2, () => 'x'.repeat(rng.int(64 * 1024 + 1, 100 * 1024))],
    [0.2, () => randomBytes(rng, rng.int(1, 512))],
  ])();
}

/** A random request of a role: a route or another path, with hostile parameters, headers and body. */
export function nextHttpRequest(rng: Prng, role: Role, options: Pick<HttpLaneOptions, 'port' | 'readableTopics'>): HttpRequest {
  const [routeMethod, template] = rng.chance(0.85) ? rng.pick(ROUTES) : ['GET', rng.pick(OTHER_PATHS)];
  const method = rng.chance(0.7) ? routeMethod : rng.weighted(METHODS);
  // An admin may write any topic: its writes name fuzz topics only; reads may name any.
  const topics = role.admin && !READ_METHODS.has(method) ? FUZZ_TOPICS : options.readableTopics;
  const tokenInQuery = rng.chance(0.1);
  const path =
    template
      .replace(':topic', () => segment(rng, topics))
      .replace(':group', () => segment(rng, FUZZ_GROUPS))
      .replace(':offset', () => encodeURIComponent(rng.pick(NUMBER_TEXTS))) + (template.includes('?') ? '' : query(rng, role, tokenInQuery));
  const headers: OutgoingHttpHeaders = {};
  const auth = tokenInQuery ? undefined : authorization(rng, role);
  if (auth !== undefined) headers.authorization = auth;
  if (!READ_METHODS.has(method) || rng.chance(0.1)) {
    const type = rng.weighted<() => string | undefined>([
      [8, () => 'application/json'],
      [1, () => 'application/json; charset=utf-8'],
      [1, () => 'APPLICATION/JSON'],
      [2, () => rng.pick(['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/jsonx', 'json'])],
      [1, () => undefined],
    ])();
    if (type !== undefined) headers['content-type'] = type;
  }
  if (rng.chance(0.15))
    headers.origin = rng.pick([
      'http://evil.example',
      'null',
      `http://127.0.0.1:${options.port}`,
      `http://localhost:${options.port}`,
      'garbage',
      'http://127.0.0.1.evil.example',
    ]);
  if (rng.chance(0.1))
    headers.host = rng.pick([
      'evil.example',
      'evil.example:80',
      '127.0.0.1',
      `[::1]:${options.port}`,
      'localhost',
      '',
      'a b',
      '%',
      `127.0.0.1:${options.port}.evil.example`,
    ]);
  if (rng.chance(0.1))
    headers[rng.pick(['x-forwarded-for', 'x-forwarded-host', 'accept', 'accept-encoding', 'cookie', 'x-fuzz'])] = rng.pick([
      'evil.example',
      '*/*',
      'gzip, br',
      '\u00ff\u00fe',
      'a'.repeat(2000),
      '1.2.3.4, 5.6.7.8',
    ]);
  const request: HttpRequest = { method, path, headers };
  if (!READ_METHODS.has(method) || rng.chance(0.03)) request.body = body(rng);
  return request;
}

interface HttpAnswer {
  status: number;
  contentType: string;
  body: Buffer;
}

function send(agent: Agent, options: HttpLaneOptions, req: HttpRequest): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const r = request({ host: options.host, port: options.port, method: req.method, path: req.path, headers: req.headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type'] ?? ''), body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    r.on('error', reject);
    r.setTimeout(30_000, () => r.destroy(new Error('no answer within 30 s')));
    r.end(req.body);
  });
}

/** Checks one answer of the node; counts statuses and errors, records findings. */
function check(tally: Tally, role: Role, req: HttpRequest, answer: HttpAnswer): void {
  tally.bump(tally.httpStatuses, String(answer.status));
  const trigger = () =>
    `${req.method} ${excerpt(req.path)} as ${role.name} (${excerpt(JSON.stringify(req.headers))}) body ${req.body === undefined ? '-' : excerpt(req.body)}`;
  const text = answer.body.toString('utf8');
  if (/root:.*:0:0:/.test(text)) tally.finding('path traversal', trigger());
  const pathname = new URL(req.path, 'http://localhost').pathname;
  if (answer.contentType.includes('application/json') && req.method !== 'HEAD' && text !== '') {
    let parsed: { error?: { code?: unknown; message?: unknown } } & Record<string, unknown>;
    try {
      parsed = JSON.parse(text) as typeof parsed;
    } catch {
      tally.finding('admin API answer is not JSON', `${answer.status} ${excerpt(text)} for ${trigger()}`);
      return;
    }
    if (answer.status >= 400 && pathname.startsWith('/socket.io/') && parsed.error === undefined) {
      // engine.io's own refusals: {code: <number>, message}.
      if (typeof parsed.message !== 'string' || parsed.message === '')
        tally.finding('error answer without a message', `${answer.status} ${excerpt(text)} for ${trigger()}`);
    } else if (answer.status >= 400) {
      if (parsed.error === undefined) tally.finding('error answer without an error body', `${answer.status} ${excerpt(text)} for ${trigger()}`);
      else tally.error('http', parsed.error, trigger);
    } else if (req.method === 'GET' && pathname === '/api/topics' && Array.isArray(parsed.topics)) {
      for (const t of parsed.topics as Array<Record<string, unknown>>) {
        if (TOPICS_LEFT_OUT_UNTIL_FIXED.has(String(t.topic))) continue;
        for (const field of ['count', 'first', 'last', 'publishRate', 'subscribers', 'groups', 'members', 'deadLetters']) {
          if (typeof t[field] !== 'number')
            tally.finding('malformed admin answer', `topic ${excerpt(String(t.topic))}: '${field}' is ${JSON.stringify(t[field]) ?? 'missing'}`);
        }
      }
    }
  } else if (answer.status >= 500) {
    tally.finding('server error', `${answer.status} ${excerpt(text)} for ${trigger()}`);
  }
  if (answer.status === 500) tally.finding('internal error', `HTTP 500 for ${trigger()}`);
  // Only the admin permission opens the admin API (CORS preflights and /api/nodes/self are open by design).
  const adminRoute = pathname.startsWith('/api/') && pathname !== '/api/nodes/self';
  if (!role.admin && adminRoute && answer.status >= 200 && answer.status < 300 && req.method !== 'OPTIONS') {
    tally.finding('admin API answered a principal without admin', `${answer.status} for ${trigger()}`);
  }
}

/**
 * A lane of admin API fuzzing over keep-alive HTTP: random routes, methods,
 * paths, query strings, headers and bodies, as every role. No answer may be
 * a 500, every error carries a code and a message, nothing but an admin
 * token opens the admin API, and no path reads a file outside the console.
 */
export async function runHttpLane(rng: Prng, options: HttpLaneOptions): Promise<void> {
  const { tally } = options;
  const agent = new Agent({ keepAlive: true, maxSockets: options.concurrency });
  let left = options.frames;
  const worker = async (wrng: Prng) => {
    while (left > 0) {
      left--;
      const role = pickRole(wrng, options.roles, 0.2);
      const req = nextHttpRequest(wrng, role, options);
      if (role.admin && !READ_METHODS.has(req.method) && namesProtectedTopic(req.path, options.protectedTopics)) continue;
      tally.count('http', req.path.length + (req.body === undefined ? 0 : Buffer.byteLength(req.body)));
      try {
        check(tally, role, req, await send(agent, options, req));
      } catch (err) {
        // The node may close a connection after refusing a request (a method llhttp does not know).
        tally.bump(tally.closes, `http request failed: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, () => worker(rng.fork())));
  agent.destroy();
}

// ---- malformed HTTP on raw sockets ------------------------------------------------------

/** Requests no HTTP client would send: broken request lines and headers, smuggling shapes, junk upgrades. */
export function nextRawHttpRequest(rng: Prng, port: number, tokens: { admin: string }): Buffer {
  const host = `Host: 127.0.0.1:${port}\r\n`;
  const text = rng.pick<() => string>([
    () => 'GET\r\n\r\n',
    () => 'GET / HTTP/9.9\r\n\r\n',
    () => `GET / HTTP/1.1 extra\r\n${host}\r\n`,
    () => `G\u0000T / HTTP/1.1\r\n${host}\r\n`,
    () => `GET /\u0000 HTTP/1.1\r\n${host}\r\n`,
    () => `GET /api/topics HTTP/1.1\r\n${host}NoColonHere\r\n\r\n`,
    () => `GET /api/topics HTTP/1.1\r\nHost : 127.0.0.1\r\n\r\n`,
    () => `GET /api/topics HTTP/1.1\r\n${host}X-Fold: a\r\n  folded\r\n\r\n`,
    () => `GET /api/topics HTTP/1.1\r\n${host}X-Nul: a\u0000b\r\n\r\n`,
    () => `GET /api/topics HTTP/1.1\n${host.replace('\r', '')}\n`,
    () =>
      `POST /api/topics/fuzz.a/dead-letters/replay HTTP/1.1\r\n${host}Authorization: Bearer ${tokens.admin}\r\nContent-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
    () => `POST /api/topics/fuzz.a/dead-letters/replay HTTP/1.1\r\n${host}Content-Type: application/json\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n{}`,
    () => `POST /api/topics/fuzz.a/dead-letters/replay HTTP/1.1\r\n${host}Content-Type: application/json\r\nContent-Length: -1\r\n\r\n`,
    () =>
      `POST /api/topics/fuzz.a/dead-letters/replay HTTP/1.1\r\n${host}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`,
    () =>
      `POST /api/topics/fuzz.a/dead-letters/replay HTTP/1.1\r\n${host}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n{}\r\n`,
    () => `POST /api/topics/fuzz.a/dead-letters/replay HTTP/1.1\r\n${host}Content-Type: application/json\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n`,
    () => `GET /${'a'.repeat(rng.int(17_000, 40_000))} HTTP/1.1\r\n${host}\r\n`,
    () => `GET / HTTP/1.1\r\n${host}${Array.from({ length: 500 }, (_, i) => `X-H${i}: ${i}\r\n`).join('')}\r\n`,
    () => `GET / HTTP/1.1\r\n${host}X-Big: ${'b'.repeat(rng.int(17_000, 40_000))}\r\n\r\n`,
    () => 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n',
    () => randomBytes(rng, rng.int(1, 300)).toString('latin1'),
    () => `GET /healthz HTTP/1.1\r\n${host}\r\nGET /api/topics HTTP/1.1\r\n${host}\r\nGARBAGE\r\n\r\n`,
    () =>
      `GET /ws?token=${tokens.admin} HTTP/1.1\r\n${host}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: bad\r\n\r\n`,
    () =>
      `GET /ws?token=${tokens.admin} HTTP/1.1\r\n${host}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 12\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
    () =>
      `GET /ws HTTP/1.1\r\n${host}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
    () => `GET /api/topics HTTP/1.1\r\n${host}Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n`,
    () =>
      `GET /socket.io/ HTTP/1.1\r\n${host}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
    () => `GET /ws?token=${tokens.admin} HTTP/1.1\r\n${host}Upgrade: h2c\r\nConnection: Upgrade\r\n\r\n`,
    () =>
      `POST /api/topics/fuzz.a/dead-letters/replay HTTP/1.1\r\n${host}Authorization: Bearer ${tokens.admin}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"purge":`,
  ])();
  return Buffer.from(text, 'latin1');
}

/** Sends one raw request; resolves with the status line's code, or a description of how the socket ended. */
function sendRaw(port: number, bytes: Buffer, waitMs: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let data = '';
    let done = false;
    const finish = (how: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(data)?.[1];
      resolve(status ?? how);
    };
    const timer = setTimeout(() => finish('no answer (still open)'), waitMs);
    socket.on('data', (chunk: Buffer) => {
      data += chunk.toString('latin1');
      if (/^HTTP\/1\.[01] \d{3}/.test(data)) finish('answered');
    });
    socket.on('close', () => finish('closed without answer'));
    socket.on('error', () => finish('reset'));
    socket.write(bytes);
  });
}

/** Malformed HTTP on raw sockets: the node answers with a 4xx or closes; never a 500, never down. */
export async function runRawHttpLane(rng: Prng, options: HttpLaneOptions & { adminToken: string }): Promise<void> {
  const { tally } = options;
  let left = options.frames;
  const worker = async (wrng: Prng) => {
    while (left-- > 0) {
      const bytes = nextRawHttpRequest(wrng, options.port, { admin: options.adminToken });
      tally.count('http raw', bytes.length);
      const outcome = await sendRaw(options.port, bytes, 1000);
      tally.bump(tally.closes, `http raw ${outcome}`);
      if (outcome.startsWith('5') && outcome !== '503') tally.finding('server error', `raw HTTP ${outcome} for ${excerpt(bytes)}`);
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, () => worker(rng.fork())));
}
