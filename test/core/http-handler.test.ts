import { createServer, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHttpHandler, Gate, type JsonRoute } from '@meshmq/server';
import { type ErrorCode, MeshError } from '@meshmq/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ALLOWED_ORIGIN = 'https://console.example.com';
const OWN_ORIGIN = 'https://broker.example.net:8443';

/** Every call a route handled, to show that refused requests never reach one. */
const handled: string[] = [];

const routes: Record<string, JsonRoute> = {
  'GET /api/items/:id': ({ params }) => {
    handled.push(`get ${params.id}`);
    return { status: 200, body: { id: params.id } };
  },
  'POST /api/items': () => {
    handled.push('post');
    return { status: 201, body: { created: true } };
  },
  'DELETE /api/items/:id': ({ params }) => {
    handled.push(`delete ${params.id}`);
    return { status: 200, body: { deleted: params.id } };
  },
  '/api/any': ({ req }) => {
    handled.push(`any ${req.method}`);
    return { status: 200, body: { method: req.method } };
  },
  'GET /api/fail/:code': ({ params }) => {
    throw new MeshError(params.code as ErrorCode, `failed with ${params.code}`);
  },
  'GET /api/crash': () => {
    throw new TypeError('a bug');
  },
};

const gate = new Gate({
  allowedOrigins: [ALLOWED_ORIGIN],
  ownOrigins: () => [OWN_ORIGIN],
  allowedHosts: ['mq.internal'],
});

let port = 0;
const server = createServer((req, res) => void createHttpHandler(routes, '', gate)(req, res));

beforeAll(async () => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  json: unknown;
}

/** The error code of a JSON error answer. */
const codeOf = (answer: Answer) => (answer.json as { error?: { code?: string } } | undefined)?.error?.code;

/** One request with exactly the headers given (Host included), as node:http sends them. */
function call(method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path, headers: { host: `127.0.0.1:${port}`, ...headers } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => {
        let json: unknown;
        try {
          json = text === '' ? undefined : JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

const JSON_TYPE = { 'content-type': 'application/json' };

describe('createHttpHandler', () => {
  it('matches method and path, answering JSON', async () => {
    const got = await call('GET', '/api/items/42');
    expect(got.status).toBe(200);
    expect(got.headers['content-type']).toBe('application/json');
    expect(got.json).toEqual({ id: '42' });
    expect((await call('POST', '/api/items', JSON_TYPE, '{}')).status).toBe(201);
    expect((await call('DELETE', '/api/items/42', JSON_TYPE)).json).toEqual({ deleted: '42' });
  });

  it('answers HEAD on a GET route, and a route without a method takes any', async () => {
    const head = await call('HEAD', '/api/items/7');
    expect(head.status).toBe(200);
    expect(head.text).toBe('');
    expect((await call('GET', '/api/any')).json).toEqual({ method: 'GET' });
    expect((await call('PUT', '/api/any', JSON_TYPE, '{}')).json).toEqual({ method: 'PUT' });
  });

  it('answers 405 to a method the path does not take', async () => {
    const before = handled.length;
    const got = await call('PUT', '/api/items/42', JSON_TYPE, '{}');
    expect(got.status).toBe(405);
    expect(got.json).toEqual({ error: { code: 'bad_request', message: 'PUT is not allowed on /api/items/42' } });
    expect((await call('GET', '/api/items')).status).toBe(405);
    expect(handled.length).toBe(before);
  });

  it('decodes :param segments; a bad percent-encoding or an empty segment matches no route', async () => {
    expect((await call('GET', '/api/items/a%20b%2Fc')).json).toEqual({ id: 'a b/c' });
    expect((await call('GET', '/api/items/%C3%A9t%C3%A9')).json).toEqual({ id: 'été' });
    const before = handled.length;
    for (const path of ['/api/items/%E0%A4%A', '/api/items/%ZZ', '/api/items/']) {
      const got = await call('GET', path);
      expect(got.status, path).toBe(404);
      expect(codeOf(got), path).toBe('not_found');
    }
    expect(handled.length).toBe(before);
  });

  it('answers a JSON 404 for any other path under /api/', async () => {
    for (const path of ['/api', '/api/', '/api/nothing', '/api/items/1/2']) {
      const got = await call('GET', path);
      expect(got.status, path).toBe(404);
      expect(got.headers['content-type'], path).toBe('application/json');
      expect(got.json, path).toEqual({ error: { code: 'not_found', message: `no route ${path}` } });
    }
  });

  it('without a console, answers other paths with a JSON 404 (GET) or 405', async () => {
    expect(codeOf(await call('GET', '/index.html'))).toBe('not_found');
    expect((await call('POST', '/anything', JSON_TYPE, '{}')).status).toBe(405);
  });

  it("answers a route's MeshError with the code's status and {error: {code, message}}", async () => {
    const cases: Array<[ErrorCode, number]> = [
      ['bad_request', 400],
      ['unauthorized', 401],
      ['forbidden', 403],
      ['not_found', 404],
      ['payload_too_large', 413],
      ['rate_limited', 429],
      ['limit_exceeded', 503],
      ['unavailable', 503],
      ['maybe_stored', 504],
    ];
    for (const [code, status] of cases) {
      const got = await call('GET', `/api/fail/${code}`);
      expect(got.status, code).toBe(status);
      expect(got.json, code).toEqual({ error: { code, message: `failed with ${code}` } });
    }
    expect((await call('GET', '/api/fail/unauthorized')).headers['www-authenticate']).toBe('Bearer');
  });

  it('answers any other failure as internal, 500', async () => {
    const got = await call('GET', '/api/crash');
    expect(got.status).toBe(500);
    expect(codeOf(got)).toBe('internal');
  });

  it('refuses a write without a JSON content type with 415', async () => {
    const before = handled.length;
    const refusedTypes: Array<Record<string, string>> = [
      {},
      { 'content-type': 'text/plain' },
      { 'content-type': 'application/x-www-form-urlencoded' },
      { 'content-type': 'application/jsonp' },
    ];
    for (const headers of refusedTypes) {
      const got = await call('POST', '/api/items', headers, '{}');
      expect(got.status, JSON.stringify(headers)).toBe(415);
      expect(codeOf(got)).toBe('bad_request');
    }
    expect((await call('DELETE', '/api/items/1')).status).toBe(415);
    expect(handled.length).toBe(before);
    expect((await call('POST', '/api/items', { 'content-type': 'Application/JSON; charset=utf-8' }, '{}')).status).toBe(201);
  });

  it('refuses a page of a foreign origin with 403, before any route runs', async () => {
    const before = handled.length;
    for (const origin of ['https://evil.example', 'null', 'http://console.example.com', `http://127.0.0.1:${port + 1}`]) {
      const got = await call('POST', '/api/items', { ...JSON_TYPE, origin }, '{}');
      expect(got.status, origin).toBe(403);
      expect(codeOf(got), origin).toBe('forbidden');
      expect(got.headers['access-control-allow-origin'], origin).toBeUndefined();
    }
    expect((await call('OPTIONS', '/api/items', { origin: 'https://evil.example' })).status).toBe(403);
    expect(handled.length).toBe(before);
  });

  it('lets through a page served by the host the request names, and clients without an Origin, without CORS headers', async () => {
    const same = await call('GET', '/api/items/1', { origin: `http://127.0.0.1:${port}` });
    expect(same.status).toBe(200);
    expect(same.headers['access-control-allow-origin']).toBeUndefined();
    const none = await call('GET', '/api/items/1');
    expect(none.status).toBe(200);
    expect(none.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('refuses a Host naming a foreign host with 403; addresses, localhost and the node’s names pass', async () => {
    const before = handled.length;
    for (const host of ['evil.example', `evil.example:${port}`, 'rebind.attacker.test:80', 'localhost.evil.example']) {
      const got = await call('GET', '/api/items/1', { host });
      expect(got.status, host).toBe(403);
      expect(codeOf(got), host).toBe('forbidden');
    }
    expect(handled.length).toBe(before);
    const addresses = ['127.0.0.1', `127.0.0.1:${port}`, '10.1.2.3:80', '[::1]:8080'];
    const names = ['localhost', `LOCALHOST:${port}`, 'app.localhost', 'mq.internal', 'broker.example.net:8443'];
    for (const host of [...addresses, ...names]) {
      expect((await call('GET', '/api/items/1', { host })).status, host).toBe(200);
    }
  });

  it('gives an allowed cross origin CORS headers, and answers its preflight with 204', async () => {
    const got = await call('GET', '/api/items/1', { origin: ALLOWED_ORIGIN });
    expect(got.status).toBe(200);
    expect(got.headers['access-control-allow-origin']).toBe(ALLOWED_ORIGIN);
    expect(got.headers.vary).toBe('Origin');
    const refused = await call('PUT', '/api/items/1', { origin: ALLOWED_ORIGIN, ...JSON_TYPE }, '{}');
    expect(refused.status).toBe(405);
    expect(refused.headers['access-control-allow-origin']).toBe(ALLOWED_ORIGIN);

    const before = handled.length;
    const preflight = await call('OPTIONS', '/api/items', {
      origin: ALLOWED_ORIGIN,
      'access-control-request-method': 'POST',
      'access-control-request-headers': 'content-type, authorization',
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers['access-control-allow-origin']).toBe(ALLOWED_ORIGIN);
    expect(preflight.headers['access-control-allow-methods']).toContain('POST');
    expect(preflight.headers['access-control-allow-headers']).toContain('content-type');
    expect(preflight.headers['access-control-allow-headers']).toContain('authorization');
    expect(handled.length).toBe(before);

    // The node's own origin is allowed as well.
    expect((await call('GET', '/api/items/1', { origin: OWN_ORIGIN })).headers['access-control-allow-origin']).toBe(OWN_ORIGIN);
  });
});
