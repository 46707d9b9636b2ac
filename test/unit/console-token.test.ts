import { SignJWT, UnsecuredJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { readToken } from '../../packages/web/src/lib/token.js';

const key = new TextEncoder().encode('console-token-test-secret-0123456789abcdef');
const nowSec = Math.floor(Date.now() / 1000);

/**
 * What the console reads from a pasted token before sending it (it cannot
 * verify it; the node does): enough to refuse a paste that cannot work.
 */
describe("the console's reading of a token", () => {
  it('reads the subject and expiry of a token', async () => {
    const token = await new SignJWT({ mq: { admin: true } })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('ops')
      .setExpirationTime(nowSec + 60)
      .sign(key);
    expect(readToken(token)).toEqual({ sub: 'ops', expiresAt: (nowSec + 60) * 1000 });
    const forever = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('svc').sign(key);
    expect(readToken(forever)).toEqual({ sub: 'svc', expiresAt: null });
  });

  it('refuses what is not a token, a token without a subject, and an expired one, saying why', async () => {
    expect(() => readToken('')).toThrow('This is not an access token');
    expect(() => readToken('abc.def')).toThrow('This is not an access token');
    expect(() => readToken('Bearer eyJhbGciOiJIUzI1NiJ9.e30.x')).toThrow('This is not an access token');
    const anonymous = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setExpirationTime(nowSec + 60)
      .sign(key);
    expect(() => readToken(anonymous)).toThrow('names no subject');
    const badExpiry = `${new UnsecuredJWT({ sub: 'x' }).encode().split('.')[0]}.${Buffer.from(JSON.stringify({ sub: 'x', exp: 'soon' })).toString('base64url')}.`;
    expect(() => readToken(badExpiry)).toThrow('invalid expiry');
    const expired = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('ops')
      .setExpirationTime(nowSec - 60)
      .sign(key);
    expect(() => readToken(expired)).toThrow(/^Your token expired at \d\d:\d\d:\d\d\.$/);
    // At the expiry itself it is already expired (the node closes the connection then).
    expect(() => readToken(expired, (nowSec - 60) * 1000)).toThrow('Your token expired');
  });
});
