import { decodeJwt } from 'jose';

/** A compact JWS: header.payload.signature, each base64url. */
const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/** What the console reads from a token before the node has seen it. */
export interface TokenClaims {
  sub: string;
  /** ms since the Unix epoch; null for a token without `exp`. */
  expiresAt: number | null;
}

/**
 * Reads a token's `sub` and `exp` without verifying it (only the node can),
 * so that the console never sends a token that cannot work: a paste that is
 * not a JWT, or one that has already expired, is refused here with a reason,
 * and the browser logs no failed handshake. Throws an Error saying what is
 * wrong.
 */
export function readToken(token: string, now = Date.now()): TokenClaims {
  const notAToken = new Error('This is not an access token: a token is a JWT, three base64url parts separated by dots (eyJ….eyJ….…).');
  if (!JWT_SHAPE.test(token)) throw notAToken;
  let payload: ReturnType<typeof decodeJwt>;
  try {
    payload = decodeJwt(token);
  } catch {
    throw notAToken;
  }
  const { sub, exp } = payload;
  if (typeof sub !== 'string' || sub === '') throw new Error('This token names no subject (sub): the node would refuse it.');
  if (exp !== undefined && typeof exp !== 'number') throw new Error('This token has an invalid expiry (exp): the node would refuse it.');
  const expiresAt = exp === undefined ? null : exp * 1000;
  if (expiresAt !== null && expiresAt <= now) throw new Error(expiredText(expiresAt, now));
  return { sub, expiresAt };
}

/** "Your token expired at 17:03:05." (with the date when it was not today). */
export function expiredText(expiresAt: number, now = Date.now()): string {
  const at = new Date(expiresAt);
  const sameDay = at.toDateString() === new Date(now).toDateString();
  const when = sameDay ? at.toLocaleTimeString('en-GB') : at.toLocaleString('en-GB', { dateStyle: 'medium', timeStyle: 'medium' });
  return `Your token expired at ${when}.`;
}
