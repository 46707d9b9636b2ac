import {
  Broker,
  type BrokerOptions,
  type ConnectionLimits,
  DEFAULT_CONNECTION_LIMITS,
  type EmbeddedEngine,
  HIGH_WATER_MARK,
  type Principal,
} from '@meshmq/server';
import { type ErrorFrame, MeshError, type OkFrame, type PermissionClaim, Permissions, type RequestBody } from '@meshmq/shared';
import { describe, expect, it, onTestFinished } from 'vitest';
import { waitUntil } from '../helpers/wait.js';
import { FakeConnection } from './fake-connection.js';
import { tempEngine } from './temp-engine.js';

/** A logger that keeps what the broker logs, so a test can see that nothing failed inside. */
function recordingLogger() {
  const entries: Array<{ level: string; args: unknown[] }> = [];
  const logger: Record<string, unknown> = {};
  for (const level of ['trace', 'debug', 'info', 'warn', 'error', 'fatal']) logger[level] = (...args: unknown[]) => entries.push({ level, args });
  logger.child = () => logger;
  return { logger: logger as unknown as BrokerOptions['logger'], entries };
}

async function brokerOn(engine: EmbeddedEngine, limits: Partial<ConnectionLimits> = {}, authenticate?: BrokerOptions['authenticate']) {
  const { logger, entries } = recordingLogger();
  const broker = new Broker({
    engine,
    nodeId: 'node-1',
    version: '0.0.0-test',
    maxMessageBytes: 64 * 1024,
    dedupeWindowMs: 60_000,
    nodeUrls: () => ['http://127.0.0.1:4000'],
    logger,
    limits: { ...DEFAULT_CONNECTION_LIMITS, ...limits },
    ...(authenticate ? { authenticate } : {}),
  });
  broker.start();
  onTestFinished(async () => {
    await broker.close();
    expect(entries.filter((e) => e.level === 'error' || e.level === 'fatal')).toEqual([]);
  });
  return broker;
}

function principal(claim: Partial<PermissionClaim>, sub: string | null = 'alice', expiresAt: number | null = null): Principal {
  return { sub, grants: Permissions.fromClaim(claim), expiresAt };
}

/** A client on a fake connection: `request` sends one frame and answers the reply to it. */
function connect(broker: Broker, who: Principal) {
  const connection = new FakeConnection();
  const session = broker.openSession(connection, who);
  let ids = 0;
  const send = (body: RequestBody): { id: number; replied: Promise<OkFrame | ErrorFrame> } => {
    const id = ++ids;
    const replied = session.handleFrame({ ...body, id }).then(() => connection.reply(id)!);
    return { id, replied };
  };
  const request = (body: RequestBody) => send(body).replied;
  onTestFinished(() => session.close());
  return { connection, session, send, request };
}

function expectError(reply: OkFrame | ErrorFrame, code: string): ErrorFrame {
  expect(reply).toMatchObject({ op: 'error', code });
  return reply as ErrorFrame;
}

function expectOk(reply: OkFrame | ErrorFrame): OkFrame {
  expect(reply).toMatchObject({ op: 'ok' });
  return reply as OkFrame;
}

describe('Broker and Session through a connection', () => {
  it('refuses every operation the grants do not allow with forbidden, and stores nothing', async () => {
    const engine = await tempEngine();
    const broker = await brokerOn(engine);
    // May publish to 'drop.box' and only there; may read and consume 'open.*'.
    const who = principal({ publish: ['drop.box', 'open.*'], subscribe: ['open.*'], consume: ['open.*'] });
    const { request } = connect(broker, who);

    expectError(await request({ op: 'publish', topic: 'secret.x', data: 1 }), 'forbidden');
    expectError(await request({ op: 'subscribe', topic: 'secret.x' }), 'forbidden');
    expectError(await request({ op: 'subscribe', topic: 'secret.x', group: 'g' }), 'forbidden');
    expectError(await request({ op: 'history', topic: 'secret.x' }), 'forbidden');
    // Publishing somewhere does not grant reading it.
    expectOk(await request({ op: 'publish', topic: 'drop.box', data: 'letter' }));
    expectError(await request({ op: 'subscribe', topic: 'drop.box' }), 'forbidden');
    expectError(await request({ op: 'subscribe', topic: 'drop.box', group: 'g' }), 'forbidden');
    expectError(await request({ op: 'history', topic: 'drop.box' }), 'forbidden');

    expect((await engine.listTopics()).map((t) => t.topic)).toEqual(['drop.box']);
    expect((await engine.topicInfo('drop.box'))?.last).toBe(1);
    expect(await engine.listGroups('drop.box')).toEqual([]);
    expect(broker.stats().subscriptions).toBe(0);

    // What is granted works on the same connection.
    expectOk(await request({ op: 'subscribe', topic: 'open.a' }));
    expectOk(await request({ op: 'subscribe', topic: 'open.a', group: 'g' }));
    expectOk(await request({ op: 'publish', topic: 'open.a', data: 2 }));
    expectOk(await request({ op: 'history', topic: 'open.a' }));

    // The admin API's calls take the same path.
    await expect(broker.publish(who, 'secret.x', 1)).rejects.toMatchObject({ code: 'forbidden' });
    await expect(broker.history(who, 'drop.box', undefined, undefined)).rejects.toMatchObject({ code: 'forbidden' });
    await expect(broker.topics(who)).rejects.toMatchObject({ code: 'forbidden' });
    expect(await engine.topicInfo('secret.x')).toBeUndefined();
  });

  it('refuses a subscription past maxSubscriptions with limit_exceeded', async () => {
    const engine = await tempEngine();
    const broker = await brokerOn(engine, { maxSubscriptions: 2 });
    const { request } = connect(broker, principal({ subscribe: ['>'], consume: ['>'] }));
    expectOk(await request({ op: 'subscribe', topic: 'a' }));
    expectOk(await request({ op: 'subscribe', topic: 'b', group: 'g' }));
    expectError(await request({ op: 'subscribe', topic: 'c' }), 'limit_exceeded');
    expectError(await request({ op: 'subscribe', topic: 'c', group: 'g' }), 'limit_exceeded');
    expect(broker.stats().subscriptions).toBe(2);
    expect(await engine.groupInfo('c', 'g')).toBeUndefined();

    expectOk(await request({ op: 'unsubscribe', topic: 'a' }));
    expectOk(await request({ op: 'subscribe', topic: 'c' }));
    // The limit is per connection.
    const other = connect(broker, principal({ subscribe: ['>'] }));
    expectOk(await other.request({ op: 'subscribe', topic: 'a' }));
  });

  it('answers rate_limited with retryAfterMs to a request past maxInflight', async () => {
    const engine = await tempEngine();
    const broker = await brokerOn(engine, { maxInflight: 2 });
    const { connection, send, request } = connect(broker, principal({ subscribe: ['>'] }));
    // History waits while the client is not reading: these two stay in flight.
    connection.buffered = HIGH_WATER_MARK;
    const first = send({ op: 'history', topic: 'a' });
    const second = send({ op: 'history', topic: 'a' });
    const refused = expectError(await request({ op: 'ping' }), 'rate_limited');
    expect(refused.retryAfterMs).toBeGreaterThan(0);
    expect(connection.reply(first.id)).toBeUndefined();

    connection.buffered = 0;
    expectOk(await first.replied);
    expectOk(await second.replied);
    expectOk(await request({ op: 'ping' }));
  });

  it('answers rate_limited to publishes past the token bucket, and stores none of them', async () => {
    const engine = await tempEngine();
    const broker = await brokerOn(engine, { publishRate: 1, publishBurst: 3 });
    const { send } = connect(broker, principal({ publish: ['>'] }));
    // Sent at once, so the bucket cannot refill in between however slow the machine is.
    const replies = await Promise.all([0, 1, 2, 'too many'].map((data) => send({ op: 'publish', topic: 'a', data }).replied));
    for (const reply of replies.slice(0, 3)) expectOk(reply);
    const refused = expectError(replies[3]!, 'rate_limited');
    expect(refused.retryAfterMs).toBeGreaterThan(0);
    expect((await engine.topicInfo('a'))?.last).toBe(3);
    // Each connection has its own bucket.
    const other = connect(broker, principal({ publish: ['>'] }));
    expectOk(await other.request({ op: 'publish', topic: 'a', data: 'other' }));
  });

  it('closes the connection with 4001 when its token expires', async () => {
    const engine = await tempEngine();
    const broker = await brokerOn(engine);
    const { connection, request } = connect(broker, principal({ subscribe: ['>'] }, 'alice', Date.now() + 300));
    expect(connection.closes).toEqual([]);
    expectOk(await request({ op: 'subscribe', topic: 'a' }));
    await waitUntil(() => connection.closes.length > 0, 'the connection to be closed');
    expect(connection.closes).toEqual([{ code: 4001, reason: 'token expired' }]);
    expect(connection.frames.at(-1)).toMatchObject({ op: 'error', id: null, code: 'unauthorized' });
  });

  it('closes at once a connection whose token has already expired', async () => {
    const engine = await tempEngine();
    const broker = await brokerOn(engine);
    const { connection } = connect(broker, principal({ subscribe: ['>'] }, 'alice', Date.now() - 1));
    expect(connection.closes).toEqual([{ code: 4001, reason: 'token expired' }]);
  });

  it('refuses an auth refresh for another subject, or one that may not read what the connection reads', async () => {
    const engine = await tempEngine();
    const later = Date.now() + 3_600_000;
    const tokens: Record<string, Principal> = {
      'alice-again': principal({ subscribe: ['>'] }, 'alice', later),
      'alice-narrow': principal({ subscribe: ['b'] }, 'alice', later),
      bob: principal({ subscribe: ['>'] }, 'bob', later),
    };
    const broker = await brokerOn(engine, {}, async (token) => {
      const found = tokens[token];
      if (!found) throw new MeshError('unauthorized', 'unknown token');
      return found;
    });
    const { connection, request } = connect(broker, principal({ subscribe: ['>'] }, 'alice', Date.now() + 60_000));
    expectOk(await request({ op: 'subscribe', topic: 'a' }));

    expectError(await request({ op: 'auth', token: 'bob' }), 'forbidden');
    expectError(await request({ op: 'auth', token: 'alice-narrow' }), 'forbidden');
    expectError(await request({ op: 'auth', token: 'nobody' }), 'unauthorized');
    const hello = expectOk(await request({ op: 'hello' }));
    expect(hello.auth).toMatchObject({ sub: 'alice', permissions: { subscribe: ['>'] } });
    expect((hello.auth as { expiresAt: number }).expiresAt).toBeLessThan(later);

    expect(expectOk(await request({ op: 'auth', token: 'alice-again' }))).toMatchObject({ sub: 'alice', expiresAt: later });
    expect(connection.closes).toEqual([]);
  });

  it('refuses auth on a node without tokens', async () => {
    const engine = await tempEngine();
    const broker = await brokerOn(engine);
    const { request } = connect(broker, principal({ subscribe: ['>'] }, null));
    expectError(await request({ op: 'auth', token: 'anything' }), 'bad_request');
  });

  it('closes with 4008 a connection that has more queued than the node keeps, whatever it was sent', async () => {
    const engine = await tempEngine();
    const broker = await brokerOn(engine);
    const reader = connect(broker, principal({ admin: true }));
    expectOk(await reader.request({ op: 'subscribe', topic: 'big', from: 1 }));
    expectOk(await reader.request({ op: 'publish', topic: 'big', data: 1 }));
    await waitUntil(() => reader.connection.offsets('big').length === 1, 'the first delivery');
    expect(reader.connection.closes).toEqual([]);
    // The client stopped reading and a reply pushed its queue past the limit (64 MiB): the node closes it.
    reader.connection.buffered = 64 * 1024 * 1024 + 1;
    const late = await reader.request({ op: 'ping' });
    expect(late).toMatchObject({ op: 'ok' });
    expect(reader.connection.closes).toEqual([{ code: 4008, reason: expect.stringContaining('too slow') }]);
    // Nothing more is sent to it, deliveries included.
    const sent = reader.connection.frames.length;
    const other = connect(broker, principal({ admin: true }));
    expectOk(await other.request({ op: 'publish', topic: 'big', data: 2 }));
    expectOk(await other.request({ op: 'publish', topic: 'big', data: 3 }));
    expect(reader.connection.frames.length).toBe(sent);
  });
});
