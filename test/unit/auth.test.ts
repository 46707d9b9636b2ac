import { execFile, execFileSync } from 'node:child_process';
import { createHmac, generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { type AuthOptions, authOptionsOf, loadConfig, Permissions, TokenVerifier, TopicPattern } from '@meshmq/server';
import { MeshError } from '@meshmq/shared';
import { type CryptoKey, exportJWK, exportSPKI, generateKeyPair, importPKCS8, type JWK, type JWTHeaderParameters, type JWTPayload, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/util.js';

const CLI = fileURLToPath(new URL('../../packages/server/dist/cli.js', import.meta.url));
const run = promisify(execFile);

const SECRET = randomBytes(48).toString('base64');
const now = () => Math.floor(Date.now() / 1000);
const dir = mkdtempSync(join(tmpdir(), 'meshmq-auth-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function sign(payload: JWTPayload, key: CryptoKey | Uint8Array, header: JWTHeaderParameters = { alg: 'HS256' }): Promise<string> {
  return new SignJWT(payload).setProtectedHeader(header).sign(key);
}
const secretKey = (secret = SECRET) => new TextEncoder().encode(secret);
const b64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** The MeshError a promise or call failed with. */
async function failure(action: Promise<unknown> | (() => unknown)): Promise<MeshError> {
  try {
    await (typeof action === 'function' ? action() : action);
  } catch (err) {
    expect(err).toBeInstanceOf(MeshError);
    return err as MeshError;
  }
  throw new Error('expected a failure');
}

function verifier(options: AuthOptions): TokenVerifier {
  const built = TokenVerifier.fromOptions(options);
  if (!built) throw new Error('expected a verifier');
  return built;
}

async function keyFile(alg: 'RS256' | 'ES256' | 'EdDSA'): Promise<{ path: string; privateKey: CryptoKey }> {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  const path = join(dir, `${alg}-${randomBytes(4).toString('hex')}.pem`);
  writeFileSync(path, await exportSPKI(publicKey));
  return { path, privateKey };
}

describe('topic patterns', () => {
  const table: Array<[pattern: string, topic: string, matches: boolean]> = [
    ['orders', 'orders', true],
    ['orders', 'orders.eu', false],
    ['orders', 'order', false],
    ['orders.*', 'orders.eu', true],
    ['orders.*', 'orders', false],
    ['orders.*', 'orders.eu.x', false],
    ['orders.*', 'orders.', false],
    ['*.eu', 'orders.eu', true],
    ['*.eu', '.eu', false],
    ['a.*.c', 'a.b.c', true],
    ['a.*.c', 'a..c', false],
    ['tenant-7.>', 'tenant-7.a', true],
    ['tenant-7.>', 'tenant-7.a.b', true],
    ['tenant-7.>', 'tenant-7', false],
    ['tenant-7.>', 'tenant-7.', false],
    ['tenant-7.>', 'tenant-70.a', false],
    ['>', 'anything', true],
    ['>', 'a.b.c', true],
    ['>', '', false],
    ['*', 'orders', true],
    ['*', 'orders.eu', false],
    ['*.>', 'a.b', true],
    ['*.>', 'a', false],
    // Dead-letter topics need their prefix spelled out.
    ['$dlq.orders', '$dlq.orders', true],
    ['$dlq.orders', '$dlq.orders.eu', false],
    ['$dlq.orders.*', '$dlq.orders.eu', true],
    ['$dlq.>', '$dlq.orders', true],
    ['>', '$dlq.orders', false],
    ['*.orders', '$dlq.orders', false],
    ['orders', '$dlq.orders', false],
  ];
  it.each(table)('%s against %s: %s', (pattern, topic, expected) => {
    expect(TopicPattern.parse(pattern).matches(topic)).toBe(expected);
  });

  it('stays correct on hostile topics (long, many segments, near misses)', () => {
    const manySegments = `${'a.'.repeat(100_000)}c`;
    expect(TopicPattern.parse('a.*.*.*.b').matches(manySegments)).toBe(false);
    expect(TopicPattern.parse('a.>').matches(manySegments)).toBe(true);
    expect(TopicPattern.parse('*.*').matches(manySegments)).toBe(false);
    expect(TopicPattern.parse('a.a.a.a').matches(manySegments)).toBe(false);
    const dots = '.'.repeat(200_000);
    expect(TopicPattern.parse('*.>').matches(dots)).toBe(false);
    expect(TopicPattern.parse('>').matches(dots)).toBe(true);
    const long = 'x'.repeat(1_000_000);
    expect(TopicPattern.parse('x').matches(long)).toBe(false);
    expect(TopicPattern.parse('*').matches(long)).toBe(true);
  });

  it.each([
    ['', 'invalid topic pattern: empty'],
    ['ord*', `invalid topic pattern 'ord*': wildcards '*' and '>' must be whole segments, not part of 'ord*'`],
    ['orders.>x', `wildcards '*' and '>' must be whole segments, not part of '>x'`],
    ['**', 'must be whole segments'],
    ['a.>.b', `invalid topic pattern 'a.>.b': '>' must be the last segment`],
    ['>.a', `'>' must be the last segment`],
    ['a..b', `invalid topic pattern 'a..b': empty segment`],
    ['.a', 'empty segment'],
    ['a.', 'empty segment'],
    ['a b', `segment 'a b' may only hold A-Z a-z 0-9 _ - :`],
    ['orders/eu', 'may only hold'],
    ['a.$dlq.b', `'$dlq' is only allowed as the first segment`],
    ['$dlq', `'$dlq' must be followed by a topic pattern`],
    ['$sys.x', `'$' is only allowed in the reserved prefix '$dlq.'`],
    ['x'.repeat(201), 'invalid topic pattern: longer than 200 characters'],
  ])('refuses %j', (pattern, message) => {
    const error = (() => {
      try {
        TopicPattern.parse(pattern);
      } catch (err) {
        return err as MeshError;
      }
      throw new Error('expected a failure');
    })();
    expect(error.code).toBe('bad_request');
    expect(error.message).toContain(message);
  });

  it('accepts a 200-character pattern and prints every pattern as written', () => {
    const longest = `${'x'.repeat(196)}.>`.padStart(200, 'y');
    expect(TopicPattern.parse(longest).toString()).toBe(longest);
    expect(String(TopicPattern.parse('orders.*'))).toBe('orders.*');
  });
});

describe('permissions', () => {
  it('grants each action by its own list', () => {
    const p = Permissions.fromClaim({ publish: ['orders.*'], subscribe: ['orders.>', 'audit'], consume: ['jobs'] });
    expect(p.can('publish', 'orders.eu')).toBe(true);
    expect(p.can('publish', 'orders.eu.x')).toBe(false);
    expect(p.can('publish', 'audit')).toBe(false);
    expect(p.can('subscribe', 'orders.eu.x')).toBe(true);
    expect(p.can('subscribe', 'audit')).toBe(true);
    expect(p.can('consume', 'jobs')).toBe(true);
    expect(p.can('consume', 'orders.eu')).toBe(false);
    expect(p.can('admin')).toBe(false);
    // Without a topic a topic action asks about every topic: only admin grants that.
    expect(p.can('publish')).toBe(false);
  });

  it('admin grants every action on every topic, dead-letter topics included', () => {
    const p = Permissions.fromClaim({ admin: true });
    for (const action of ['publish', 'subscribe', 'consume'] as const) expect(p.can(action, '$dlq.orders')).toBe(true);
    expect(p.can('admin')).toBe(true);
    expect(p.can('publish')).toBe(true);
  });

  it('reads a dead-letter topic only with subscribe on that name', () => {
    const broad = Permissions.fromClaim({ subscribe: ['>', 'orders'] });
    expect(broad.can('subscribe', 'orders')).toBe(true);
    expect(broad.can('subscribe', '$dlq.orders')).toBe(false);
    const dlq = Permissions.fromClaim({ subscribe: ['$dlq.orders'] });
    expect(dlq.can('subscribe', '$dlq.orders')).toBe(true);
    expect(dlq.can('subscribe', '$dlq.orders.eu')).toBe(false);
    expect(dlq.can('subscribe', 'orders')).toBe(false);
  });

  it('ALL allows everything, NONE and an empty claim nothing', () => {
    expect(Permissions.ALL.can('admin')).toBe(true);
    expect(Permissions.ALL.can('publish', 'x')).toBe(true);
    for (const p of [Permissions.NONE, Permissions.fromClaim({})]) {
      expect(p.can('publish', 'x')).toBe(false);
      expect(p.can('subscribe', 'x')).toBe(false);
      expect(p.can('admin')).toBe(false);
    }
  });

  it('round-trips through toJSON with every field present', () => {
    const claim = { publish: ['orders.*'], subscribe: ['$dlq.orders', 'tenant-7.>'], consume: [], admin: false };
    expect(Permissions.fromClaim(claim).toJSON()).toEqual(claim);
    expect(Permissions.fromClaim({ subscribe: ['a'] }).toJSON()).toEqual({ publish: [], subscribe: ['a'], consume: [], admin: false });
    expect(Permissions.fromClaim(JSON.parse(JSON.stringify(Permissions.fromClaim(claim)))).toJSON()).toEqual(claim);
  });

  it.each([
    ['orders', "'mq' claim: must be an object"],
    [null, "'mq' claim: must be an object"],
    [['orders'], "'mq' claim: must be an object"],
    [{ publish: 'orders' }, "'mq' claim: publish: must be a list of topic patterns"],
    [{ publish: ['orders', 7] }, "'mq' claim: publish[1]: must be a topic pattern string"],
    [{ subscribe: ['ok', 'ord*'] }, "'mq' claim: subscribe[1]: invalid topic pattern 'ord*': wildcards '*' and '>' must be whole segments, not part of 'ord*'"],
    [{ consume: ['x'.repeat(201)] }, "'mq' claim: consume[0]: invalid topic pattern: longer than 200 characters"],
    [{ publish: Array.from({ length: 101 }, (_, i) => `t${i}`) }, "'mq' claim: publish: holds more than 100 patterns"],
    [{ admin: 'yes' }, "'mq' claim: admin: must be true or false"],
    [{ publsh: ['orders'] }, "'mq' claim: unknown field 'publsh'"],
  ])('refuses the claim %j', (claim, message) => {
    let error: MeshError | undefined;
    try {
      Permissions.fromClaim(claim);
    } catch (err) {
      error = err as MeshError;
    }
    expect(error).toBeInstanceOf(MeshError);
    expect(error!.code).toBe('unauthorized');
    expect(error!.message).toBe(message);
  });

  it('accepts 100 patterns per list', () => {
    const publish = Array.from({ length: 100 }, (_, i) => `t${i}.*`);
    const p = Permissions.fromClaim({ publish });
    expect(p.can('publish', 't99.x')).toBe(true);
    expect(p.can('publish', 't100.x')).toBe(false);
  });
});

describe('token verification with a shared secret', () => {
  const v = verifier({ secret: SECRET, issuer: 'meshmq', audience: 'brokers' });
  const good = { sub: 'alice', iss: 'meshmq', aud: 'brokers' };
  const expiredAt = now() - 3600;

  it('returns the identity of a valid token', async () => {
    const exp = now() + 600;
    const token = await sign({ ...good, exp, mq: { publish: ['orders.*'], admin: false } }, secretKey());
    const identity = await v.verify(token);
    expect(identity.sub).toBe('alice');
    expect(identity.expiresAt).toBe(exp * 1000);
    expect(identity.permissions.can('publish', 'orders.eu')).toBe(true);
    expect(identity.permissions.can('subscribe', 'orders.eu')).toBe(false);
  });

  it('gives a token without exp no expiry, and one without mq no permissions', async () => {
    const identity = await v.verify(await sign(good, secretKey()));
    expect(identity.expiresAt).toBeNull();
    expect(identity.permissions.toJSON()).toEqual({ publish: [], subscribe: [], consume: [], admin: false });
  });

  it('is undefined when no key is configured (anonymous mode)', () => {
    expect(TokenVerifier.fromOptions({})).toBeUndefined();
    expect(TokenVerifier.fromOptions({ issuer: 'meshmq', audience: 'x' })).toBeUndefined();
  });

  it('refuses a secret shorter than 32 bytes', async () => {
    const error = await failure(() => TokenVerifier.fromOptions({ secret: 'x'.repeat(31) }));
    expect(error.code).toBe('bad_request');
    expect(error.message).toMatch(/^the auth secret is 31 bytes; it must be at least 32/);
    expect(error.message).not.toContain('xxxx');
  });

  it.each<[string, () => Promise<string>, string | RegExp]>([
    ['garbage', async () => 'not-a-token', 'malformed token'],
    ['an empty token', async () => '', 'malformed token'],
    ['bad base64 header', async () => `!!.${b64url(good)}.sig`, 'malformed token'],
    ['an oversize token', async () => `${'a'.repeat(8193)}`, 'malformed token: longer than 8192 characters'],
    [
      'a signed payload that is not a JSON object',
      async () => {
        const signingInput = `${b64url({ alg: 'HS256' })}.${Buffer.from('[1]').toString('base64url')}`;
        return `${signingInput}.${createHmac('sha256', secretKey()).update(signingInput).digest('base64url')}`;
      },
      'malformed token',
    ],
    ['another secret', () => sign(good, secretKey(randomBytes(48).toString('base64'))), 'token signature is invalid'],
    [
      'a tampered payload',
      async () => {
        const [h, , s] = (await sign({ ...good, mq: { admin: false } }, secretKey())).split('.');
        return `${h}.${b64url({ ...good, mq: { admin: true } })}.${s}`;
      },
      'token signature is invalid',
    ],
    ['an expired token', () => sign({ ...good, exp: expiredAt }, secretKey()), `token expired at ${new Date(expiredAt * 1000).toISOString()}`],
    ['nbf in the future', () => sign({ ...good, nbf: 4_000_000_000 }, secretKey()), `token is not valid before ${new Date(4_000_000_000_000).toISOString()}`],
    ['a non-numeric exp', () => sign({ ...good, exp: 'soon' as unknown as number }, secretKey()), "malformed token: 'exp' must be a number"],
    ['a wrong issuer', () => sign({ ...good, iss: 'someone-else' }, secretKey()), "token issuer 'someone-else' is not the expected 'meshmq'"],
    ['no issuer', () => sign({ sub: 'alice', aud: 'brokers' }, secretKey()), "token has no issuer; expected 'meshmq'"],
    ['a wrong audience', () => sign({ ...good, aud: ['web', 'mobile'] }, secretKey()), "token audience 'web, mobile' does not include the expected 'brokers'"],
    ['no audience', () => sign({ sub: 'alice', iss: 'meshmq' }, secretKey()), "token has no audience; expected 'brokers'"],
    ['no sub', () => sign({ iss: 'meshmq', aud: 'brokers' }, secretKey()), "token has no 'sub'"],
    ['an empty sub', () => sign({ ...good, sub: '' }, secretKey()), "token has no 'sub'"],
    ['a sub longer than 200 characters', () => sign({ ...good, sub: 'a'.repeat(201) }, secretKey()), "token 'sub' is longer than 200 characters"],
    ['an invalid mq claim', () => sign({ ...good, mq: { publish: ['ord*'] } }, secretKey()), /^'mq' claim: publish\[0\]: invalid topic pattern 'ord\*'/],
    ['alg none', async () => `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url(good)}.`, 'token algorithm none is not accepted'],
    ['HS512', () => sign(good, secretKey(), { alg: 'HS512' }), 'token algorithm HS512 is not accepted'],
    ['an RS256 token', async () => sign(good, (await generateKeyPair('RS256')).privateKey, { alg: 'RS256' }), 'token algorithm RS256 is not accepted'],
  ])('refuses %s', async (_, token, reason) => {
    const error = await failure(v.verify(await token()));
    expect(error.code).toBe('unauthorized');
    if (typeof reason === 'string') expect(error.message).toBe(reason);
    else expect(error.message).toMatch(reason);
    expect(error.message).not.toContain(SECRET);
  });

  it('allows clock skew up to the tolerance', async () => {
    const token = await sign({ ...good, exp: now() - 30, nbf: now() + 30 }, secretKey());
    expect((await failure(v.verify(token))).message).toMatch(/^token is not valid before /);
    const tolerant = verifier({ secret: SECRET, issuer: 'meshmq', audience: 'brokers', clockToleranceSec: 120 });
    expect((await tolerant.verify(token)).sub).toBe('alice');
  });
});

describe('token verification with a public key file', () => {
  it.each(['RS256', 'ES256', 'EdDSA'] as const)('verifies %s tokens and refuses other algorithms', async (alg) => {
    const { path, privateKey } = await keyFile(alg);
    const v = verifier({ publicKeyFile: path });
    const identity = await v.verify(await sign({ sub: 'svc', mq: { consume: ['jobs'] } }, privateKey, { alg }));
    expect(identity.sub).toBe('svc');
    expect(identity.permissions.can('consume', 'jobs')).toBe(true);

    const other = await keyFile(alg);
    const forged = await sign({ sub: 'svc' }, other.privateKey, { alg });
    expect((await failure(v.verify(forged))).message).toBe('token signature is invalid');
    const hs = await sign({ sub: 'svc' }, secretKey());
    expect((await failure(v.verify(hs))).message).toBe('token algorithm HS256 is not accepted');
  });

  it('refuses an HS256 token signed with the public key itself (algorithm confusion)', async () => {
    const { path } = await keyFile('RS256');
    const forged = await sign({ sub: 'mallory', mq: { admin: true } }, new Uint8Array(readFileSync(path)));
    const error = await failure(verifier({ publicKeyFile: path }).verify(forged));
    expect(error.code).toBe('unauthorized');
    expect(error.message).toBe('token algorithm HS256 is not accepted');
    // With a secret also configured, the RSA key still never verifies an HS256 token.
    const both = verifier({ publicKeyFile: path, secret: SECRET });
    expect((await failure(both.verify(forged))).message).toBe('token signature is invalid');
  });

  it('accepts both a secret and a public key, each for its own algorithm', async () => {
    const { path, privateKey } = await keyFile('ES256');
    const v = verifier({ publicKeyFile: path, secret: SECRET });
    expect((await v.verify(await sign({ sub: 'a' }, privateKey, { alg: 'ES256' }))).sub).toBe('a');
    expect((await v.verify(await sign({ sub: 'b' }, secretKey()))).sub).toBe('b');
  });

  it.skipIf(!hasOpenssl())('verifies tokens against a certificate', async () => {
    const key = join(dir, 'cert-key.pem');
    const cert = join(dir, 'cert.pem');
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        key,
        '-out',
        cert,
        '-days',
        '1',
        '-subj',
        '/CN=meshmq-test',
      ],
      { stdio: 'ignore' },
    );
    const privateKey = await importPKCS8(readFileSync(key, 'utf8'), 'ES256');
    const identity = await verifier({ publicKeyFile: cert }).verify(await sign({ sub: 'issuer-signed' }, privateKey, { alg: 'ES256' }));
    expect(identity.sub).toBe('issuer-signed');
  });

  it('refuses unusable key files at construction, with the reason', async () => {
    const cases: Array<[string, string | RegExp]> = [];
    const missing = join(dir, 'missing.pem');
    cases.push([missing, new RegExp(`^cannot read the auth public key ${missing}: ENOENT`)]);

    const priv = join(dir, 'private.pem');
    writeFileSync(priv, generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }));
    cases.push([priv, `${priv} holds a private key; give the node only the public key (openssl pkey -in key.pem -pubout)`]);

    const garbage = join(dir, 'garbage.pem');
    writeFileSync(garbage, 'not a key');
    cases.push([garbage, `${garbage} is not a PEM public key (BEGIN PUBLIC KEY) or certificate (BEGIN CERTIFICATE)`]);

    const p384 = join(dir, 'p384.pem');
    writeFileSync(p384, generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).publicKey.export({ type: 'spki', format: 'pem' }));
    cases.push([p384, `${p384}: ec (secp384r1) keys are not supported; use RSA (RS256), P-256 (ES256) or Ed25519 (EdDSA)`]);

    const weak = join(dir, 'rsa1024.pem');
    writeFileSync(weak, generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'pem' }));
    cases.push([weak, `${weak}: RSA key of 1024 bits; at least 2048 are required`]);

    for (const [path, message] of cases) {
      const error = await failure(() => TokenVerifier.fromOptions({ publicKeyFile: path }));
      expect(error.code).toBe('bad_request');
      if (typeof message === 'string') expect(error.message).toBe(message);
      else expect(error.message).toMatch(message);
    }
    const error = await failure(() => TokenVerifier.fromOptions({ publicKeyFile: weak, jwksUrl: 'http://127.0.0.1:1/jwks' }));
    expect(error.message).toBe('configure either an auth public key or an auth JWKS URL, not both');
  });
});

function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('token verification with a JWKS endpoint', () => {
  let server: Server;
  let jwksUrl: string;
  let served: { status: number; keys: JWK[] } = { status: 200, keys: [] };
  let fetches = 0;

  async function signingKey(alg: 'RS256' | 'ES256' | 'EdDSA', kid: string) {
    const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
    const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
    return { jwk, token: (payload: JWTPayload) => sign(payload, privateKey, { alg, kid }) };
  }

  beforeAll(async () => {
    server = createServer((_req, res) => {
      fetches++;
      res.writeHead(served.status, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: served.keys }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    jwksUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('verifies tokens by kid, fetching the key set once for many tokens', async () => {
    const a = await signingKey('RS256', 'a');
    served = { status: 200, keys: [a.jwk] };
    const v = verifier({ jwksUrl });
    const before = fetches;
    for (const sub of ['u1', 'u2', 'u3']) expect((await v.verify(await a.token({ sub }))).sub).toBe(sub);
    expect(fetches - before).toBe(1);
    expect((await failure(v.verify(await sign({ sub: 'x' }, secretKey())))).message).toBe('token algorithm HS256 is not accepted');
  });

  it('accepts a key rotated in later and drops a retired one, without a new verifier', async () => {
    const a = await signingKey('ES256', 'a');
    const b = await signingKey('EdDSA', 'b');
    served = { status: 200, keys: [a.jwk] };
    const v = verifier({ jwksUrl, jwksCooldownMs: 0 });
    expect((await v.verify(await a.token({ sub: 'old' }))).sub).toBe('old');
    const early = await failure(v.verify(await b.token({ sub: 'new' })));
    expect(early.code).toBe('unauthorized');
    expect(early.message).toBe("no signing key matches the token (key id 'b', algorithm EdDSA)");

    served = { status: 200, keys: [a.jwk, b.jwk] };
    expect((await v.verify(await b.token({ sub: 'new' }))).sub).toBe('new');

    // Retire a: the next unknown kid refetches the set, after which a's tokens fail.
    served = { status: 200, keys: [b.jwk] };
    const c = await signingKey('ES256', 'c');
    await failure(v.verify(await c.token({ sub: 'unknown' })));
    expect((await failure(v.verify(await a.token({ sub: 'old' })))).message).toBe("no signing key matches the token (key id 'a', algorithm ES256)");
  });

  it('refreshes the key set in the background, keeping the last keys while the endpoint fails', async () => {
    const a = await signingKey('ES256', 'a');
    served = { status: 200, keys: [a.jwk] };
    // Checked every time (no cache of verified tokens), so the removal below shows at once.
    const v = verifier({ jwksUrl, jwksRefreshMs: 0, verifiedCacheMs: 0 });
    const token = await a.token({ sub: 'u' });
    expect((await v.verify(token)).sub).toBe('u');

    served = { status: 500, keys: [] };
    const before = fetches;
    expect((await v.verify(token)).sub).toBe('u');
    await eventually(() => fetches > before, 10_000, 'a background refetch');
    expect((await v.verify(token)).sub).toBe('u');

    // A key the provider removed stops verifying once a refetch has seen it gone.
    served = { status: 200, keys: [] };
    await eventually(
      async () => (await failure(v.verify(token))).message === "no signing key matches the token (key id 'a', algorithm ES256)",
      10_000,
      'the removed key to be refused',
    );
  });

  it('takes a token it verified lately as verified, until the cache window or the token ends', async () => {
    const a = await signingKey('ES256', 'a');
    served = { status: 200, keys: [a.jwk] };
    const v = verifier({ jwksUrl, jwksRefreshMs: 0, verifiedCacheMs: 60_000 });
    const token = await a.token({ sub: 'u' });
    expect((await v.verify(token)).sub).toBe('u');
    // The key is gone and the node has seen it gone: a token checked again would be refused, the cached one is not.
    served = { status: 200, keys: [] };
    let n = 0;
    // A new token each time: one that verified would itself be cached.
    await eventually(
      async () => (await failure(v.verify(await a.token({ sub: `w${++n}` })))).message.startsWith('no signing key matches'),
      10_000,
      'the removed key to be seen',
    );
    expect((await v.verify(token)).sub).toBe('u');
  });

  it('tries each candidate key for a token without kid', async () => {
    const jwkOf = async (key: CryptoKey, kid: string) => ({ ...(await exportJWK(key)), alg: 'ES256', kid });
    const a = await generateKeyPair('ES256', { extractable: true });
    const b = await generateKeyPair('ES256', { extractable: true });
    served = { status: 200, keys: [await jwkOf(a.publicKey, 'a'), await jwkOf(b.publicKey, 'b')] };
    const v = verifier({ jwksUrl });
    expect((await v.verify(await sign({ sub: 'no-kid' }, b.privateKey, { alg: 'ES256' }))).sub).toBe('no-kid');
    const stranger = await generateKeyPair('ES256');
    expect((await failure(v.verify(await sign({ sub: 'no-kid' }, stranger.privateKey, { alg: 'ES256' })))).message).toBe('token signature is invalid');
  });

  it('reports an unreachable or failing endpoint as unavailable', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const deadUrl = `http://127.0.0.1:${(closed.address() as AddressInfo).port}/jwks`;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const a = await signingKey('RS256', 'a');
    const token = await a.token({ sub: 'u' });

    const dead = await failure(verifier({ jwksUrl: deadUrl }).verify(token));
    expect(dead.code).toBe('unavailable');
    expect(dead.message).toMatch(new RegExp(`^cannot fetch the signing keys from ${deadUrl.replace(/\./g, '\\.')}: .*ECONNREFUSED`));

    served = { status: 500, keys: [] };
    const failing = await failure(verifier({ jwksUrl }).verify(token));
    expect(failing.code).toBe('unavailable');
    expect(failing.message).toMatch(/^cannot fetch the signing keys from http:\/\/127\.0\.0\.1:\d+\/jwks: .*200 OK/);
  });

  it('refuses a JWKS URL that is not http(s) or holds credentials', async () => {
    const error = await failure(() => TokenVerifier.fromOptions({ jwksUrl: 'ftp://idp.example/jwks' }));
    expect(error.message).toBe("the auth JWKS URL 'ftp://idp.example/jwks' must be an http:// or https:// URL");
    // Credentials in the URL would end up in error messages; fetch() refuses them anyway.
    const withCredentials = await failure(() => TokenVerifier.fromOptions({ jwksUrl: 'https://user:pw@idp.example/jwks' }));
    expect(withCredentials.message).toBe("the auth JWKS URL 'https://idp.example/jwks' must not hold credentials");
  });
});

describe('auth configuration', () => {
  it('reads the options from flags, environment and the config file', () => {
    const file = join(dir, 'config.json');
    writeFileSync(file, JSON.stringify({ authSecret: SECRET, authIssuer: 'from-file', authAudience: 'file-aud' }));
    const { config } = loadConfig(['--config', file, '--auth-audience', 'flag-aud'], { AUTH_ISSUER: 'from-env' });
    expect(authOptionsOf(config)).toEqual({ secret: SECRET, issuer: 'from-env', audience: 'flag-aud' });
  });

  it('leaves every auth option unset by default (anonymous mode)', () => {
    const { config } = loadConfig([], {});
    expect(authOptionsOf(config)).toEqual({});
    expect(TokenVerifier.fromOptions(authOptionsOf(config))).toBeUndefined();
  });

  it('resolves the public key path and the JWKS URL', async () => {
    const { path } = await keyFile('EdDSA');
    const { config } = loadConfig(['--auth-public-key', path, '--auth-jwks-url', 'https://idp.example/.well-known/jwks.json'], {});
    expect(authOptionsOf(config)).toEqual({ publicKeyFile: path, jwksUrl: 'https://idp.example/.well-known/jwks.json' });
  });

  it.each([
    [['--auth-jwks-url', 'ftp://idp.example/jwks'], "auth-jwks-url: 'ftp://idp.example/jwks' must be an http:// or https:// URL"],
    [['--auth-jwks-url', 'idp.example/jwks'], "auth-jwks-url: 'idp.example/jwks' is not a URL"],
    [['--auth-public-key', '/nonexistent/key.pem'], 'auth-public-key: cannot read /nonexistent/key.pem: no such file'],
  ])('refuses %j', (args, message) => {
    let error: MeshError | undefined;
    try {
      loadConfig(args, {});
    } catch (err) {
      error = err as MeshError;
    }
    expect(error?.code).toBe('bad_request');
    expect(error?.message).toBe(message);
  });
});

describe('meshmq token', () => {
  const cli = (args: string[], env: Record<string, string> = {}) => {
    const { AUTH_SECRET: _s, AUTH_ISSUER: _i, AUTH_AUDIENCE: _a, MESHMQ_CONFIG: _c, ...rest } = process.env;
    return run(process.execPath, [CLI, ...args], { env: { ...rest, ...env } });
  };

  it('prints one token the node accepts, with the permissions asked for', async () => {
    const { stdout, stderr } = await cli(
      [
        '--',
        'token',
        '--sub',
        'alice',
        '--publish',
        'orders.*',
        '--publish',
        'audit,billing.>',
        '--subscribe',
        'orders.>',
        '--consume',
        'orders.*',
        '--ttl',
        '2h',
      ],
      { AUTH_SECRET: SECRET },
    );
    expect(stderr).toBe('');
    expect(stdout).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+\n$/);
    const identity = await verifier({ secret: SECRET }).verify(stdout.trim());
    expect(identity.sub).toBe('alice');
    expect(identity.permissions.toJSON()).toEqual({
      publish: ['orders.*', 'audit', 'billing.>'],
      subscribe: ['orders.>'],
      consume: ['orders.*'],
      admin: false,
    });
    const lifetime = identity.expiresAt! - Date.now();
    expect(lifetime).toBeGreaterThan(2 * 3600_000 - 60_000);
    expect(lifetime).toBeLessThanOrEqual(2 * 3600_000 + 1000);
  });

  it('takes secret, issuer and audience from the config file, so the token passes the node checks', async () => {
    const file = join(dir, 'node.json');
    writeFileSync(file, JSON.stringify({ authSecret: SECRET, authIssuer: 'meshmq-prod', authAudience: 'brokers' }));
    const { stdout } = await cli(['token', '--config', file, '--sub', 'ops', '--admin']);
    const identity = await verifier({ secret: SECRET, issuer: 'meshmq-prod', audience: 'brokers' }).verify(stdout.trim());
    expect(identity.permissions.can('admin')).toBe(true);
    expect(identity.expiresAt! - Date.now()).toBeLessThanOrEqual(3600_000 + 1000);
  });

  it('exits 2 with a way forward when no secret is configured or input is bad', async () => {
    const noSecret = await cli(['token', '--sub', 'alice']).then(
      () => undefined,
      (err: { code: number; stderr: string; stdout: string }) => err,
    );
    expect(noSecret?.code).toBe(2);
    expect(noSecret?.stdout).toBe('');
    expect(noSecret?.stderr).toContain('meshmq token: no auth secret configured: set AUTH_SECRET, --auth-secret, or "authSecret" in the --config file');

    const badPattern = await cli(['token', '--sub', 'alice', '--publish', 'ord*'], { AUTH_SECRET: SECRET }).then(
      () => undefined,
      (err: { code: number; stderr: string }) => err,
    );
    expect(badPattern?.code).toBe(2);
    expect(badPattern?.stderr).toContain("invalid topic pattern 'ord*'");
  });

  it('documents itself, and the main help names it', async () => {
    const { stdout } = await cli(['token', '--help']);
    expect(stdout).toContain('Usage: meshmq token --sub <name> [options]');
    expect(stdout).toContain('--ttl <duration>');
    const main = await cli(['--help']);
    expect(main.stdout).toContain('meshmq token [options]');
  });
});
