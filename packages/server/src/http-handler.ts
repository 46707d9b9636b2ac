import { createReadStream, existsSync, statSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { extname, join, normalize, sep } from 'node:path';
import { MeshError, type ErrorCode } from '@meshmq/shared';

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

/** HTTP status of each error code, for JSON routes. */
export const HTTP_STATUS: Record<ErrorCode, number> = {
  bad_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  payload_too_large: 413,
  rate_limited: 429,
  unavailable: 503,
  // The storage did not answer in time: the gateway-timeout of the storage behind the node.
  maybe_stored: 504,
  internal: 500,
};

/** A JSON route: `params` holds the decoded `:name` segments of its path, `url` the parsed request URL. */
export type JsonRoute = (
  req: IncomingMessage,
  params: Record<string, string>,
  url: URL,
) => { status: number; body: unknown } | Promise<{ status: number; body: unknown }>;

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(text);
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
 * Plain HTTP: JSON routes (first match wins, methods checked), a JSON 404 for
 * any other `/api/` path, then the built console as static files with
 * index.html for unknown paths (client-side routing). A route that throws a
 * MeshError answers `{error: {code, message}}` with the code's HTTP status.
 */
export function createHttpHandler(routes: Record<string, JsonRoute>, consoleDir: string) {
  const hasConsole = consoleDir !== '' && existsSync(join(consoleDir, 'index.html'));
  const compiled = compile(routes);
  return async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const segments = url.pathname.split('/');
    let methodMismatch = false;
    for (const route of compiled) {
      const params = match(route, segments);
      if (!params) continue;
      const method = req.method ?? 'GET';
      if (route.method !== undefined && route.method !== method && !(route.method === 'GET' && method === 'HEAD')) {
        methodMismatch = true;
        continue;
      }
      try {
        const { status, body } = await route.handler(req, params, url);
        sendJson(res, status, body);
      } catch (err) {
        const error = MeshError.from(err);
        sendJson(res, HTTP_STATUS[error.code], { error: { code: error.code, message: error.message } });
      }
      return;
    }
    if (methodMismatch) {
      sendJson(res, 405, { error: { code: 'bad_request', message: `${req.method} is not allowed on ${url.pathname}` } });
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
