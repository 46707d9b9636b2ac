import { createReadStream, existsSync, statSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { extname, join, normalize, sep } from 'node:path';

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

export type JsonRoute = (req: IncomingMessage) => { status: number; body: unknown } | Promise<{ status: number; body: unknown }>;

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(text);
}

/**
 * Plain HTTP: JSON routes by exact path, then the built console as static
 * files with index.html for unknown paths (client-side routing).
 */
export function createHttpHandler(routes: Record<string, JsonRoute>, consoleDir: string) {
  const hasConsole = consoleDir !== '' && existsSync(join(consoleDir, 'index.html'));
  return async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const route = routes[url.pathname];
    if (route) {
      try {
        const { status, body } = await route(req);
        sendJson(res, status, body);
      } catch (err) {
        sendJson(res, 500, { error: { code: 'internal', message: (err as Error).message } });
      }
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
    let file = normalize(join(consoleDir, decodeURIComponent(url.pathname)));
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
