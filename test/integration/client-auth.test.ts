import { type AuthInfo, CLOSE_TOKEN_EXPIRED, MeshClient, type MeshClientOptions, MeshError, type WebSocketConstructor } from '@meshmq/client';
import { type MintOptions, mintToken } from '@meshmq/server';
import { SignJWT } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { NodeProcess } from '../helpers/node-process.js';
import { uniqueTopic } from '../helpers/util.js';
import { range, waitUntil } from '../helpers/wait.js';

const SECRET = 'a-test-secret-that-is-long-enough-for-hs256';

type Grants = MintOptions['permissions'];

function token(sub: string, permissions: Grants, ttlMs = 60_000): Promise<string> {
  return mintToken({ secret: SECRET, sub, permissions, ttlMs });
}

/** A token that expired a minute ago, well past the node's 5 s of clock tolerance. */
function expiredToken(): Promise<string> {
  return new SignJWT({ mq: { publish: ['>'] } })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject('late')
    .setExpirationTime(Math.floor(Date.now() / 1000) - 60)
    .sign(new TextEncoder().encode(SECRET));
}

/** What a client reported, by event. */
function record(client: MeshClient) {
  const events = {
    connected: [] as Array<{ reconnect: boolean }>,
    disconnected: [] as Array<{ code: number; reason: string }>,
    connectFailed: [] as MeshError[],
    errors: [] as MeshError[],
    auth: [] as AuthInfo[],
    resumed: [] as Array<{ recovered: boolean; subscriptions: number; consumers: number }>,
    gaps: 0,
  };
  client.on('connected', (info) => events.connected.push(info));
  client.on('disconnected', (info) => events.disconnected.push(info));
  client.on('connectFailed', ({ error }) => events.connectFailed.push(error));
  client.on('error', (error) => events.errors.push(error));
  client.on('auth', (auth) => events.auth.push(auth));
  client.on('resumed', (info) => events.resumed.push(info));
  client.on('gap', () => events.gaps++);
  return events;
}

describe('client: authentication', () => {
  let node: NodeProcess;
  let admin: MeshClient;
  const cleanup: Array<() => Promise<void>> = [];

  function client(options: Omit<MeshClientOptions, 'url'>): MeshClient {
    const c = new MeshClient({ url: node.url, reconnect: { initialDelayMs: 50, maxDelayMs: 300 }, ...options });
    cleanup.push(() => c.close());
    return c;
  }

  beforeAll(async () => {
    node = await NodeProcess.start({ env: { AUTH_SECRET: SECRET } });
    admin = new MeshClient({ url: node.url, token: await token('ops', { admin: true }) });
  });

  afterEach(async () => {
    for (const step of cleanup.splice(0).reverse()) await step();
  });

  afterAll(async () => {
    await admin?.close();
    await node?.dispose();
  });

  it('publishes and subscribes with a valid token, and says who it acts as', async () => {
    const topic = uniqueTopic('ok');
    const c = client({ token: await token('svc', { publish: ['ok.>'], subscribe: ['ok.>'] }) });
    const events = record(c);
    const seen: unknown[] = [];
    await c.subscribe(topic, (m) => void seen.push(m.data));
    expect((await c.publish(topic, 'hello')).offset).toBe(1);
    await waitUntil(() => seen.length === 1, 'the message');
    expect(seen).toEqual(['hello']);
    expect(c.auth).toMatchObject({ sub: 'svc', permissions: { publish: ['ok.>'], subscribe: ['ok.>'], consume: [], admin: false } });
    expect(c.auth!.expiresAt).toBeGreaterThan(Date.now());
    expect(events.auth).toEqual([c.auth]);
  });

  it('sends the token in the URL with a WebSocket passed as an option', async () => {
    const topic = uniqueTopic('ok');
    const c = client({ token: await token('browserish', { publish: ['ok.>'] }), WebSocket: WebSocket as unknown as WebSocketConstructor });
    expect((await c.publish(topic, 1)).offset).toBe(1);
    expect(c.auth?.sub).toBe('browserish');
  });

  const refusals: Array<[string, () => Promise<string | undefined>, RegExp]> = [
    ['no token', async () => undefined, /requires a token/],
    ['a bad signature', () => mintToken({ secret: `${SECRET}-other`, sub: 'x', permissions: {}, ttlMs: 60_000 }), /signature/],
    ['an expired token', expiredToken, /expired/],
  ];

  it.each(refusals)('reports a refused handshake with unauthorized and the reason: %s', async (_what, make, reason) => {
    const t = await make();
    const c = client({ ...(t === undefined ? {} : { token: t }), requestTimeoutMs: 1500 });
    const events = record(c);
    const connecting = c.connect().then(
      () => undefined,
      (err: MeshError) => err,
    );
    const error = await connecting;
    expect(error).toBeInstanceOf(MeshError);
    expect(error!.code).toBe('unauthorized');
    expect(error!.message).toMatch(reason);
    // It kept trying, and each attempt was refused for the token.
    expect(events.connectFailed.length).toBeGreaterThan(0);
    for (const failure of events.connectFailed) {
      expect(failure.code).toBe('unauthorized');
      expect(failure.message).toMatch(reason);
    }
    expect(events.connected).toEqual([]);
  });

  it('reports a failing token function as unauthorized and connects once it gives a token', async () => {
    const good = await token('flaky', { publish: ['ok.>'] });
    let calls = 0;
    const c = client({
      token: () => {
        calls++;
        if (calls < 3) throw new Error('identity provider down');
        return good;
      },
    });
    const events = record(c);
    await c.connect();
    expect(events.connectFailed.map((e) => e.code)).toEqual(['unauthorized', 'unauthorized']);
    expect(events.connectFailed[0]!.message).toMatch(/token function failed: identity provider down/);
    expect(c.auth?.sub).toBe('flaky');
  });

  it('refreshes a short-lived token on the same connection before it expires', async () => {
    const topic = uniqueTopic('ok');
    let calls = 0;
    const c = client({
      token: () => {
        calls++;
        return token('short', { publish: ['ok.>'], subscribe: ['ok.>'] }, 3000);
      },
    });
    const events = record(c);
    const seen: number[] = [];
    await c.subscribe(topic, (m) => void seen.push(m.offset));
    const firstExpiry = c.auth!.expiresAt!;
    // The connection outlives its first token.
    await waitUntil(() => Date.now() > firstExpiry + 1000, 'the first token to have expired a while ago');
    expect(c.auth!.expiresAt!).toBeGreaterThan(firstExpiry);
    expect((await c.publish(topic, 'after')).offset).toBe(1);
    await waitUntil(() => seen.length === 1, 'the message published after the first expiry');
    expect(events.connected).toHaveLength(1);
    expect(events.disconnected).toEqual([]);
    expect(events.errors).toEqual([]);
    expect(calls).toBeGreaterThanOrEqual(2);
    expect(events.auth.length).toBeGreaterThanOrEqual(2);
    expect(events.auth.at(-1)).toEqual(c.auth);
  }, 20_000);

  it('reports a token given as a string that expired, and goes on trying', async () => {
    const c = client({ token: await token('static', { subscribe: ['ok.>'] }, 2000) });
    const events = record(c);
    await c.subscribe(uniqueTopic('ok'), () => undefined);
    await waitUntil(() => events.disconnected.length > 0, 'the node to close the connection', 15_000);
    expect(events.disconnected[0]).toMatchObject({ code: CLOSE_TOKEN_EXPIRED, reason: 'token expired' });
    await waitUntil(() => events.errors.length > 0, 'an error event');
    expect(events.errors[0]!.code).toBe('unauthorized');
    expect(events.errors[0]!.message).toMatch(/the token expired at .*cannot be refreshed: pass a function/);
    // The usual reconnecting goes on, and the node refuses the expired token.
    await waitUntil(() => events.connectFailed.length > 0, 'a refused attempt');
    expect(events.connectFailed[0]!.code).toBe('unauthorized');
    expect(events.connectFailed[0]!.message).toMatch(/expired/);
  }, 20_000);

  it('reconnects with a fresh token when the node closes for expiry, resuming subscriptions and groups exactly', async () => {
    const topic = uniqueTopic('ok');
    const jobs = uniqueTopic('ok');
    const grants: Grants = { subscribe: ['ok.>'], consume: ['ok.>'] };
    const fresh = await token('renewing', grants);
    // The first token is short-lived; then the identity provider is down until the node has closed the connection.
    let phase: 'first' | 'outage' | 'back' = 'first';
    const c = client({
      token: () => {
        if (phase === 'first') {
          phase = 'outage';
          return token('renewing', grants, 2000);
        }
        if (phase === 'outage') throw new Error('identity provider down');
        return fresh;
      },
    });
    const events = record(c);
    const publisher = admin;
    c.on('disconnected', () => (phase = 'back'));

    const seen: number[] = [];
    await c.subscribe(topic, (m) => void seen.push(m.offset));
    const handled: unknown[] = [];
    const workers = await c.consume(jobs, 'workers', (m) => void handled.push(m.data));

    for (const i of range(1, 5)) await publisher.publish(topic, i);
    await waitUntil(() => seen.length === 5, 'the first 5 messages');

    await waitUntil(() => events.disconnected.length > 0, 'the node to close the connection', 15_000);
    expect(events.disconnected[0]!.code).toBe(CLOSE_TOKEN_EXPIRED);
    // Published while the subscriber is away.
    const whileAway = range(6, 10).map((i) => publisher.publish(topic, i));
    await waitUntil(() => events.resumed.length > 0, 'the subscriber to resume');
    await Promise.all(whileAway);
    for (const i of range(11, 15)) await publisher.publish(topic, i);
    await publisher.publish(jobs, 'after');

    await waitUntil(() => seen.length >= 15 && handled.length >= 1, 'every message');
    expect(seen).toEqual(range(1, 15));
    expect(handled).toEqual(['after']);
    expect(events.gaps).toBe(0);
    expect(events.resumed[0]).toMatchObject({ recovered: true, subscriptions: 1, consumers: 1 });
    expect(events.connected.map((e) => e.reconnect)).toEqual([false, true]);
    expect(c.auth?.expiresAt).toBeGreaterThan(Date.now() + 30_000);
    // The refresh attempts before the expiry failed, and said so.
    expect(events.errors.length).toBeGreaterThan(0);
    for (const error of events.errors) {
      expect(error.code).toBe('unauthorized');
      expect(error.message).toMatch(/refreshing the token failed .*identity provider down/);
    }
    await workers.stop();
  }, 25_000);

  it('rejects a publish the token does not allow with forbidden, storing nothing', async () => {
    const allowed = uniqueTopic('ok');
    const denied = uniqueTopic('denied');
    const c = client({ token: await token('narrow', { publish: ['ok.>'] }) });
    expect((await c.publish(allowed, 1)).offset).toBe(1);
    const error = await c.publish(denied, 2, { key: 'k-denied' }).then(
      () => undefined,
      (err: MeshError) => err,
    );
    expect(error?.code).toBe('forbidden');
    expect(error?.key).toBe('k-denied');
    expect(error?.message).toMatch(/narrow.*denied/);
    const subscribing = await c
      .subscribe(denied, () => undefined)
      .then(
        () => undefined,
        (err: MeshError) => err,
      );
    expect(subscribing?.code).toBe('forbidden');
    expect((await admin.history(denied)).messages).toEqual([]);
    expect((await admin.history(allowed)).messages.map((m) => m.data)).toEqual([1]);
  });
});
