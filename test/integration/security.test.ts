import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { fileURLToPath } from 'node:url';
import { type MintOptions, mintToken } from '@meshmq/server';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, NodeProcess } from '../helpers/node-process.js';
import { RawClient } from '../helpers/raw-client.js';
import { SioClient } from '../helpers/sio-client.js';
import { eventually, uniqueTopic } from '../helpers/util.js';

const SECRET = 'a-test-secret-that-is-long-enough-for-hs256';
const ISSUER = 'meshmq-test';
const CLI = fileURLToPath(new URL('../../packages/server/dist/cli.js', import.meta.url));

type Grants = MintOptions['permissions'];

function token(sub: string, permissions: Grants, options: Partial<MintOptions> = {}): Promise<string> {
  return mintToken({ secret: SECRET, issuer: ISSUER, sub, permissions, ttlMs: 60_000, ...options });
}

/**
 * Authentication at the handshake, authorisation of every operation in the
 * core, browser safety and the per-connection limits, against a real node
 * with a secret configured.
 */
describe('a node with authentication', () => {
  let node: NodeProcess;
  let admin: string;
  let operator: RawClient;

  const ws = (t?: string) => (t === undefined ? node.wsUrl : `${node.wsUrl}?token=${encodeURIComponent(t)}`);

  async function api(path: string, init: RequestInit & { token?: string } = {}) {
    const headers: Record<string, string> = { ...(init.headers as Record<string, string>) };
    if (init.token) headers.authorization = `Bearer ${init.token}`;
    const res = await fetch(`${node.url}${path}`, { ...init, headers });
    return { status: res.status, body: (await res.json()) as Record<string, any> };
  }

  /** Every retained message of a topic, read with the admin token. */
  async function stored(topic: string) {
    return (await operator.ok({ op: 'history', topic, limit: 1000 })).messages as Array<{ offset: number; data: unknown }>;
  }

  beforeAll(async () => {
    node = await NodeProcess.start({
      env: { AUTH_SECRET: SECRET, AUTH_ISSUER: ISSUER, MAX_SUBSCRIPTIONS: '3', MAX_PUBLISH_RATE: '20' },
    });
    admin = await token('ops', { admin: true });
    operator = await RawClient.connect(ws(admin));
  });

  afterAll(async () => {
    await operator?.close();
    await node?.dispose();
  });

  describe('refuses bad tokens at the handshake, before any upgrade', () => {
    const cases: Array<[string, () => Promise<string | undefined>, RegExp]> = [
      ['no token', async () => undefined, /requires a token/],
      ['a malformed token', async () => 'not.a.jwt', /malformed/],
      ['a bad signature', async () => mintToken({ secret: `${SECRET}-other`, issuer: ISSUER, sub: 'x', permissions: {}, ttlMs: 60_000 }), /signature/],
      [
        'an expired token',
        async () =>
          new SignJWT({ mq: {} })
            .setProtectedHeader({ alg: 'HS256' })
            .setSubject('x')
            .setIssuer(ISSUER)
            .setExpirationTime(Math.floor(Date.now() / 1000) - 60)
            .sign(new TextEncoder().encode(SECRET)),
        /expired/,
      ],
      ['a token from the wrong issuer', async () => token('x', {}, { issuer: 'someone-else' }), /issuer/],
    ];

    it.each(cases)('over plain WebSocket: %s', async (_what, make, reason) => {
      const refusal = await RawClient.refusal(ws(await make()));
      expect(refusal.status).toBe(401);
      expect(refusal.body.error?.code).toBe('unauthorized');
      expect(refusal.body.error?.message).toMatch(reason);
    });

    it.each(cases)('over Socket.IO: %s', async (_what, make, reason) => {
      const t = await make();
      const error = await SioClient.connect(node.url, t === undefined ? {} : { auth: { token: t } }).then(
        async (client) => {
          await client.close();
          throw new Error('connected');
        },
        (err: Error & { data?: { code?: string } }) => err,
      );
      expect(error.message).toMatch(reason);
      expect(error.data?.code).toBe('unauthorized');
    });

    it('keeps no socket of a refused handshake', async () => {
      const before = (await api('/healthz')).body.connections;
      for (let i = 0; i < 20; i++) await RawClient.refusal(ws('junk'));
      await eventually(async () => (await api('/healthz')).body.connections === before, 5000, 'connections back to where they were');
    });

    it('takes the token from an Authorization header too', async () => {
      const client = await RawClient.connect(node.wsUrl, { headers: { authorization: `Bearer ${await token('hdr', { publish: ['hdr.*'] })}` } });
      const hello = await client.ok({ op: 'hello' });
      expect(hello.auth).toMatchObject({ sub: 'hdr', permissions: { publish: ['hdr.*'], admin: false } });
      await client.close();
    });
  });

  describe('authorises every operation in one place', () => {
    it('publishes only where the token allows, storing nothing when refused', async () => {
      const client = await RawClient.connect(ws(await token('svc', { publish: ['orders.*'] })));
      expect(await client.request({ op: 'publish', topic: 'orders.eu', data: 1 })).toMatchObject({ op: 'ok', offset: 1 });
      const denied = await client.request({ op: 'publish', topic: 'billing', data: 2 });
      expect(denied).toMatchObject({ op: 'error', code: 'forbidden' });
      expect(denied.message).toMatch(/publish.*'svc'.*billing/);
      expect(await client.request({ op: 'publish', topic: 'orders.eu.x', data: 3 })).toMatchObject({ code: 'forbidden' });
      expect(await stored('billing')).toEqual([]);
      expect((await api('/api/topics/billing', { token: admin })).status).toBe(404);
      await client.close();
    });

    it('checks subscribe and history the same way, and reading creates no topic', async () => {
      await operator.ok({ op: 'publish', topic: 'feed.a', data: 'a' });
      await operator.ok({ op: 'publish', topic: 'secret', data: 's' });
      const client = await RawClient.connect(ws(await token('reader', { subscribe: ['feed.>'] })));
      expect(await client.request({ op: 'subscribe', topic: 'feed.a', from: 1 })).toMatchObject({ op: 'ok' });
      await client.waitForMessages(1, 'feed.a');
      expect(await client.request({ op: 'subscribe', topic: 'secret', from: 1 })).toMatchObject({ code: 'forbidden' });
      expect(await client.request({ op: 'history', topic: 'secret' })).toMatchObject({ code: 'forbidden' });
      expect((await client.ok({ op: 'history', topic: 'feed.a' })).messages).toHaveLength(1);
      // Reading topics that do not exist leaves none behind.
      const ghosts = Array.from({ length: 5 }, () => uniqueTopic('feed.ghost'));
      for (const ghost of ghosts) expect(await client.ok({ op: 'history', topic: ghost })).toMatchObject({ epoch: '', last: 0, messages: [] });
      await client.ok({ op: 'subscribe', topic: ghosts[0]! });
      const topics = (await api('/api/topics', { token: admin })).body.topics.map((t: { topic: string }) => t.topic);
      for (const ghost of ghosts) expect(topics).not.toContain(ghost);
      // Nor can a publisher-only token read dead letters.
      expect(await client.request({ op: 'subscribe', topic: '$dlq.feed.a' })).toMatchObject({ code: 'forbidden' });
      await client.close();
    });

    it('refuses a group member without consume, and lets one with it ack', async () => {
      const topic = 'jobs.x';
      const reader = await RawClient.connect(ws(await token('reader', { subscribe: ['jobs.>'] })));
      expect(await reader.request({ op: 'subscribe', topic, group: 'g' })).toMatchObject({ code: 'forbidden' });
      const worker = await RawClient.connect(ws(await token('worker', { consume: ['jobs.*'] })));
      await worker.ok({ op: 'subscribe', topic, group: 'g', from: 1 });
      await operator.ok({ op: 'publish', topic, data: 'job' });
      const [job] = await worker.waitForMessages(1, topic, 'g');
      await worker.ok({ op: 'ack', topic, group: 'g', offset: job!.offset, epoch: job!.epoch });
      await Promise.all([reader.close(), worker.close()]);
    });

    it('refresh: an auth frame for the same subject replaces the token; another subject is refused', async () => {
      const client = await RawClient.connect(ws(await token('alice', { subscribe: ['a.*'] }, { ttlMs: 30_000 })));
      const first = await client.ok({ op: 'hello' });
      const renewed = await client.ok({ op: 'auth', token: await token('alice', { subscribe: ['a.*'], publish: ['a.*'] }, { ttlMs: 600_000 }) });
      expect(renewed.sub).toBe('alice');
      expect(renewed.expiresAt as number).toBeGreaterThan((first.auth as { expiresAt: number }).expiresAt);
      expect(await client.request({ op: 'publish', topic: 'a.b', data: 1 })).toMatchObject({ op: 'ok' });
      expect(await client.request({ op: 'auth', token: await token('mallory', { admin: true }) })).toMatchObject({ code: 'forbidden' });
      expect(await client.request({ op: 'auth', token: 'garbage' })).toMatchObject({ code: 'unauthorized' });
      // A token that would not allow a subscription the connection holds is refused.
      await client.ok({ op: 'subscribe', topic: 'a.c' });
      expect(await client.request({ op: 'auth', token: await token('alice', { subscribe: ['b.*'] }) })).toMatchObject({ code: 'forbidden' });
      // Still alice, with the renewed permissions.
      expect((await client.ok({ op: 'hello' })).auth).toMatchObject({ sub: 'alice', permissions: { publish: ['a.*'] } });
      await client.close();
    });

    it('closes a connection whose token expires without a refresh, with 4001', async () => {
      // The node allows 5 s of clock skew past exp.
      const client = await RawClient.connect(ws(await token('brief', { subscribe: ['x'] }, { ttlMs: 1000 })));
      const closed = new Promise<{ code: number; reason: string }>((resolve) =>
        client.ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
      );
      const { code, reason } = await closed;
      expect(code).toBe(4001);
      expect(reason).toBe('token expired');
      expect(client.frames.find((f) => f.op === 'error' && f.id === null)).toMatchObject({ code: 'unauthorized', message: expect.stringMatching(/expired/) });
    }, 20_000);

    it('admin API: refuses every route without the admin permission, and a refused purge changes nothing', async () => {
      const topic = 'adm.jobs';
      const worker = await RawClient.connect(ws(admin));
      await worker.ok({ op: 'subscribe', topic, group: 'g', maxDeliveries: 1, from: 1 });
      await operator.ok({ op: 'publish', topic, data: 'poison' });
      const [job] = await worker.waitForMessages(1, topic, 'g');
      await worker.ok({ op: 'nack', topic, group: 'g', offset: job!.offset });
      await eventually(async () => (await api(`/api/topics/${topic}/dead-letters`, { token: admin })).body.count === 1, 10_000, 'a dead letter');
      const user = await token('user', { publish: ['>'], subscribe: ['>'], consume: ['>'] });
      const routes: Array<[string, string]> = [
        ['GET', '/api/nodes'],
        ['GET', '/api/topics'],
        ['GET', `/api/topics/${topic}`],
        ['GET', `/api/topics/${topic}/messages`],
        ['GET', `/api/topics/${topic}/groups/g/pending`],
        ['PUT', `/api/topics/${topic}/groups/g`],
        ['GET', '/api/dead-letters'],
        ['GET', `/api/topics/${topic}/dead-letters`],
        ['POST', `/api/topics/${topic}/dead-letters/1/replay`],
        ['POST', `/api/topics/${topic}/dead-letters/replay`],
        ['DELETE', `/api/topics/${topic}/dead-letters`],
        ['GET', '/api/cluster/stats'],
      ];
      for (const [method, path] of routes) {
        const json: Record<string, string> = method === 'GET' ? {} : { 'content-type': 'application/json' };
        const anonymous = await api(path, { method, headers: json, body: method === 'GET' ? undefined : '{}' });
        expect(anonymous.status, `${method} ${path} without a token`).toBe(401);
        const refused = await api(path, { method, headers: json, body: method === 'GET' ? undefined : '{}', token: user });
        expect(refused.status, `${method} ${path} with a user token`).toBe(403);
        expect(refused.body.error.code).toBe('forbidden');
      }
      expect((await api(`/api/topics/${topic}/dead-letters`, { token: admin })).body.count).toBe(1);
      expect((await api(`/api/topics/${topic}`, { token: admin })).body.topic.last).toBe(1);
      // The node's own record stays open, like /healthz, for static peers.
      expect((await api('/api/nodes/self')).status).toBe(200);
      // Any valid token may ask who it is.
      expect((await api('/api/auth', { token: user })).body).toMatchObject({ sub: 'user', permissions: { admin: false, publish: ['>'] } });
      expect((await api('/api/auth', { token: 'junk' })).status).toBe(401);
      await worker.close();
    });

    it('admin API: a write must be JSON, so a cross-site form or text/plain request cannot replay or purge', async () => {
      const plain = await api('/api/topics/adm.jobs/dead-letters', { method: 'DELETE', token: admin, headers: { 'content-type': 'text/plain' } });
      expect(plain.status).toBe(415);
      const form = await api('/api/topics/adm.jobs/dead-letters/replay', {
        method: 'POST',
        token: admin,
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: 'purge=true',
      });
      expect(form.status).toBe(415);
      expect((await api('/api/topics/adm.jobs/dead-letters', { token: admin })).body.count).toBe(1);
    });
  });

  describe('browser safety', () => {
    it('refuses WebSocket and Socket.IO handshakes from a foreign Origin, and answers the API only for allowed ones', async () => {
      const refusal = await RawClient.refusal(ws(admin), { origin: 'https://evil.example' });
      expect(refusal).toMatchObject({ status: 403, body: { error: { code: 'forbidden' } } });
      const sio = await SioClient.connect(node.url, { auth: { token: admin }, extraHeaders: { origin: 'https://evil.example' } }).then(
        async (c) => {
          await c.close();
          return 'connected';
        },
        (err: Error) => err.message,
      );
      expect(sio).not.toBe('connected');
      // The node's own page origin (the console it serves) is allowed.
      const own = await RawClient.connect(ws(admin), { origin: node.url });
      await own.close();
      const api403 = await api('/api/topics', { token: admin, headers: { origin: 'https://evil.example' } });
      expect(api403.status).toBe(403);
    });

    it('refuses a Host that is not one of the node’s names (DNS rebinding)', async () => {
      // fetch() will not send another Host: plain node:http does.
      const withHost = (host: string) =>
        new Promise<{ status: number; body: string }>((resolve, reject) => {
          const req = request({ port: node.port, host: '127.0.0.1', path: '/api/topics', headers: { host, authorization: `Bearer ${admin}` } }, (res) => {
            let body = '';
            res.on('data', (c: Buffer) => (body += c.toString()));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
          });
          req.on('error', reject);
          req.end();
        });
      const rebound = await withHost('evil.example:1234');
      expect(rebound.status).toBe(403);
      expect(JSON.parse(rebound.body)).toMatchObject({ error: { code: 'forbidden', message: expect.stringContaining('--allowed-hosts') } });
      expect((await RawClient.refusal(ws(admin), { headers: { host: 'evil.example' } })).status).toBe(403);
      expect((await withHost(`localhost:${node.port}`)).status).toBe(200);
      expect((await withHost(`127.0.0.1:${node.port}`)).status).toBe(200);
    });
  });

  describe('limits', () => {
    it('caps subscriptions per connection with limit_exceeded', async () => {
      const client = await RawClient.connect(ws(admin));
      for (const n of [1, 2, 3]) await client.ok({ op: 'subscribe', topic: `lim.${n}` });
      const refused = await client.request({ op: 'subscribe', topic: 'lim.4' });
      expect(refused).toMatchObject({ code: 'limit_exceeded' });
      expect(await client.request({ op: 'subscribe', topic: 'lim.5', group: 'g' })).toMatchObject({ code: 'limit_exceeded' });
      await client.ok({ op: 'unsubscribe', topic: 'lim.1' });
      await client.ok({ op: 'subscribe', topic: 'lim.4' });
      await client.close();
    });

    it('rate-limits publishes per connection with a retry hint, storing only what it accepted', async () => {
      const client = await RawClient.connect(ws(admin));
      const topic = uniqueTopic('rate');
      const replies = await Promise.all(Array.from({ length: 60 }, (_, i) => client.request({ op: 'publish', topic, data: i })));
      const refused = replies.filter((r) => r.op === 'error');
      expect(refused.length).toBeGreaterThan(0);
      for (const r of refused) {
        expect(r.code).toBe('rate_limited');
        expect(r.retryAfterMs as number).toBeGreaterThan(0);
      }
      const accepted = replies.filter((r) => r.op === 'ok').length;
      expect((await stored(topic)).length).toBe(accepted);
      await client.close();
    });
  });

  describe('groups', () => {
    it('settles only the member’s own leases, and a joining member never rewrites the group’s settings', async () => {
      const topic = 'grp.x';
      const a = await RawClient.connect(ws(admin));
      const b = await RawClient.connect(ws(admin));
      const joined = await a.ok({ op: 'subscribe', topic, group: 'g', from: 1, ackWait: 60_000, maxDeliveries: 5, prefetch: 1 });
      expect(joined).toMatchObject({ ackWait: 60_000, maxDeliveries: 5 });
      // A hostile joiner asks for maxDeliveries 1: the group keeps 5.
      const hostile = await b.ok({ op: 'subscribe', topic, group: 'g', maxDeliveries: 1, ackWait: 100, prefetch: 1 });
      expect(hostile).toMatchObject({ ackWait: 60_000, maxDeliveries: 5 });
      await operator.ok({ op: 'publish', topic, data: 1 });
      await operator.ok({ op: 'publish', topic, data: 2 });
      const [mine] = await a.waitForMessages(1, topic, 'g');
      const [theirs] = await b.waitForMessages(1, topic, 'g');
      expect(await b.request({ op: 'ack', topic, group: 'g', offset: mine!.offset })).toMatchObject({ code: 'not_found' });
      expect(await b.request({ op: 'nack', topic, group: 'g', offset: mine!.offset })).toMatchObject({ code: 'not_found' });
      await a.ok({ op: 'ack', topic, group: 'g', offset: mine!.offset });
      await b.ok({ op: 'ack', topic, group: 'g', offset: theirs!.offset });
      // Settings change through the admin API only.
      const changed = await api(`/api/topics/${topic}/groups/g`, {
        method: 'PUT',
        token: admin,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ maxDeliveries: 3 }),
      });
      expect(changed.body.group).toMatchObject({ maxDeliveries: 3, ackWaitMs: 60_000 });
      await Promise.all([a.close(), b.close()]);
    });

    it('never starts an epoch from a client’s claim', async () => {
      const topic = uniqueTopic('claim');
      const { epoch } = await operator.ok({ op: 'publish', topic, data: 1 });
      const client = await RawClient.connect(ws(admin));
      for (let i = 0; i < 20; i++) {
        const reply = await client.ok({ op: 'subscribe', topic, from: 1000 + i, epoch });
        expect(reply).toMatchObject({ epoch, recovered: false, from: 2, missing: { from: 2, to: 999 + i, reason: 'epoch' } });
        await client.ok({ op: 'unsubscribe', topic });
      }
      expect((await operator.ok({ op: 'publish', topic, data: 2 })).epoch).toBe(epoch);
      await client.close();
    });
  });

  describe('hostile input', () => {
    it('answers an op nested 10,000 deep with bad_request, and refuses keys with lone surrogates', async () => {
      const client = await RawClient.connect(ws(admin));
      const deep = `${'['.repeat(10_000)}${']'.repeat(10_000)}`;
      const seen = client.frames.length;
      client.sendRaw(`{"op":${deep},"id":"deep"}`);
      const reply = await client.waitFor((f) => client.frames.indexOf(f) >= seen && f.id === 'deep');
      expect(reply).toMatchObject({ op: 'error', code: 'bad_request', message: expect.stringContaining('unknown op (a array)') });
      const topic = uniqueTopic('keys');
      expect(await client.request({ op: 'publish', topic, data: 1, key: 'a\ud800' })).toMatchObject({ code: 'bad_request' });
      expect(await client.request({ op: 'publish', topic, data: 1, key: '\udc00b' })).toMatchObject({ code: 'bad_request' });
      expect(await client.ok({ op: 'publish', topic, data: 1, key: 'ok-\ud83d\ude00' })).toMatchObject({ duplicate: false });
      await client.close();
      expect(node.logs).not.toMatch(/"level":(50|60)/);
    });
  });
});

describe('the topic limit', () => {
  it('refuses publishes and group joins that would create a topic past --max-topics; existing topics go on', async () => {
    const node = await NodeProcess.start({ env: { MAX_TOPICS: '3' } });
    try {
      const client = await RawClient.connect(node.wsUrl);
      for (const t of ['a', 'b', 'c']) await client.ok({ op: 'publish', topic: t, data: 1 });
      const refused = await client.request({ op: 'publish', topic: 'd', data: 1 });
      expect(refused).toMatchObject({ code: 'limit_exceeded', message: expect.stringContaining('--max-topics') });
      expect(await client.request({ op: 'subscribe', topic: 'e', group: 'g' })).toMatchObject({ code: 'limit_exceeded' });
      expect((await client.ok({ op: 'publish', topic: 'a', data: 2 })).offset).toBe(2);
      const topics = ((await (await fetch(`${node.url}/api/topics`)).json()) as { topics: Array<{ topic: string }> }).topics.map((t) => t.topic);
      expect(topics.sort()).toEqual(['a', 'b', 'c']);
      await client.close();
    } finally {
      await node.dispose();
    }
  });
});

describe('a node without authentication', () => {
  it('refuses to start bound beyond loopback, saying how to configure auth', async () => {
    const port = await freePort();
    const child = spawn(process.execPath, [CLI, '--host', '0.0.0.0', '--port', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(code).toBe(1);
    expect(output).toMatch(/--auth-secret/);
    expect(output).toMatch(/--insecure/);
  });

  it('starts with --insecure and warns', async () => {
    const node = await NodeProcess.start({ args: ['--host', '0.0.0.0', '--insecure'], env: { LOG_LEVEL: 'warn', HOST: '0.0.0.0' } });
    try {
      expect(node.logs).toMatch(/INSECURE/);
      const client = await RawClient.connect(node.wsUrl);
      expect((await client.ok({ op: 'hello' })).auth).toMatchObject({ sub: null, permissions: { admin: true } });
      await client.close();
    } finally {
      await node.dispose();
    }
  });
});
