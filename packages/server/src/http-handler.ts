import { createReadStream, existsSync, statSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { extname, join, normalize, sep } from 'node:path';
import { MeshError } from '@meshmq/shared';
import type { Principal } from './core/access.js';
import type { Gate } from './gate.js';
import { HTTP_STATUS } from './http-status.js';

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
};

/** What a JSON route is handed. */
export interface RouteContext {
  req: IncomingMessage;
  /** The decoded `:name` segments of the route's path. */
  params: Record<string, string>;
  url: URL;
  /** Who the request acts as (its bearer token); rejects with `unauthorized`. Routes open to anyone never ask. */
  principal(): Promise<Principal>;
}

/** A route's answer: JSON, unless it names another content type for a text body (Prometheus's `/metrics`). */
export interface RouteAnswer {
  status: number;
  body: unknown;
  contentType?: string;
}

export type JsonRoute = (ctx: RouteContext) => RouteAnswer | Promise<RouteAnswer>;

/** Methods that change something: they must send JSON, which a cross-site form or simple request cannot. */
const WRITE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { ...headers, 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(text);
}

function sendError(res: ServerResponse, err: unknown, headers: Record<string, string> = {}): void {
  const error = MeshError.from(err);
  const extra: Record<string, string> = error.code === 'unauthorized' ? { 'www-authenticate': 'Bearer' } : {};
  sendJson(res, HTTP_STATUS[error.code], { error: { code: error.code, message: error.message } }, { ...headers, ...extra });
}

interface CompiledRoute {
  method: string | undefined;
  segments: string[];
  handler: JsonRoute;
}

/** Route keys are `/path` (any method) or `METHOD /path`; a `:name` segment matches one path segment. */
function compile(routes: Record<string, JsonRoute>): CompiledRoute[] {
  return Object.entries(routes).map(([key, handler]) => {
    const [first, second] = key.split(' ');
    const method = second === undefined ? undefined : first;
    const path = second ?? first ?? '/';
    return { method, segments: path.split('/'), handler };
  });
}

function match(route: CompiledRoute, segments: string[]): Record<string, string> | undefined {
  if (route.segments.length !== segments.length) return undefined;
  const params: Record<string, string> = {};
  for (const [i, part] of route.segments.entries()) {
    const actual = segments[i]!;
    if (part.startsWith(':')) {
      if (actual === '') return undefined;
      try {
        params[part.slice(1)] = decodeURIComponent(actual);
      } catch {
        return undefined;
      }
    } else if (part !== actual) {
      return undefined;
    }
  }
  return params;
}

/**
 * Cross-origin headers for a page of an allowed origin; none for same-origin
 * requests and clients without an Origin.
 */
function corsHeaders(req: IncomingMessage, gate: Gate): Record<string, string> {
  const origin = req.headers.origin;
  if (origin === undefined || !gate.originAllowed(origin)) return {};
  return { 'access-control-allow-origin': origin, vary: 'Origin' };
}

/**
 * Plain HTTP: JSON routes (first match wins, methods checked), a JSON 404 for
 * any other `/api/` path, then the built console as static files with
 * index.html for unknown paths (client-side routing). A route that throws a
 * MeshError answers `{error: {code, message}}` with the code's HTTP status.
 *
 * Every JSON route first passes the gate: a Host of another site (DNS
 * rebinding) and a page of a foreign origin are refused, a write must send
 * JSON, and pages of allowed origins get CORS headers.
 */
export function createHttpHandler(routes: Record<string, JsonRoute>, consoleDir: string, gate: Gate) {
  const hasConsole = consoleDir !== '' && existsSync(join(consoleDir, 'index.html'));
  const compiled = compile(routes);
  return async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const segments = url.pathname.split('/');
    const method = req.method ?? 'GET';
    const matched = compiled.map((route) => ({ route, params: match(route, segments) })).filter((m) => m.params !== undefined);
    if (matched.length > 0) {
      const cors = corsHeaders(req, gate);
      try {
        gate.checkHost(req);
        gate.checkOrigin(req);
      } catch (err) {
        sendError(res, err);
        return;
      }
      if (method === 'OPTIONS') {
        res.writeHead(204, {
          ...cors,
          'access-control-allow-methods': 'GET, HEAD, POST, PUT, DELETE',
          'access-control-allow-headers': 'authorization, content-type',
          'access-control-max-age': '600',
        });
        res.end();
        return;
      }
      const hit = matched.find(({ route }) => route.method === undefined || route.method === method || (route.method === 'GET' && method === 'HEAD'));
      if (!hit) {
        sendJson(res, 405, { error: { code: 'bad_request', message: `${method} is not allowed on ${url.pathname}` } }, cors);
        return;
      }
      if (WRITE_METHODS.has(method) && !/^application\/json\s*(;|$)/i.test(req.headers['content-type'] ?? '')) {
        sendJson(res, 415, { error: { code: 'bad_request', message: `${method} requests must send Content-Type: application/json` } }, cors);
        return;
      }
      const context: RouteContext = { req, params: hit.params!, url, principal: () => gate.authenticate(req) };
      try {
        const { status, body, contentType } = await hit.route.handler(context);
        if (contentType === undefined) sendJson(res, status, body, cors);
        else {
          res.writeHead(status, { ...cors, 'content-type': contentType, 'cache-control': 'no-store' });
          res.end(String(body));
        }
      } catch (err) {
        sendError(res, err, cors);
      }
      return;
    }
    if (url.pathname === '/api' || url.pathname.startsWith('/api/')) {
      sendJson(res, 404, { error: { code: 'not_found', message: `no route ${url.pathname}` } });
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      sendJson(res, 405, { error: { code: 'bad_request', message: `${req.method} is not allowed here` } });
      return;
    }
    if (!hasConsole) {
      sendJson(res, 404, { error: { code: 'not_found', message: `no route ${url.pathname}` } });
      return;
    }
    let file: string;
    try {
      file = normalize(join(consoleDir, decodeURIComponent(url.pathname)));
    } catch {
      file = '';
    }
    if (!file.startsWith(consoleDir + sep) || !existsSync(file) || !statSync(file).isFile()) {
      file = join(consoleDir, 'index.html');
    }
    res.writeHead(200, {
      'content-type': CONTENT_TYPES[extname(file)] ?? 'application/octet-stream',
      'cache-control': file.includes(`${sep}assets${sep}`) ? 'public, max-age=31536000, immutable' : 'no-cache',
    });
    if (req.method === 'HEAD') res.end();
    else createReadStream(file).pipe(res);
  };
}
