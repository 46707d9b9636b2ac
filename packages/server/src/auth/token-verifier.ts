/**
 * Verifies access tokens (JWTs) against the configured keys and turns them
 * into an Identity. Every failure is a MeshError: 'unauthorized' with a reason
 * a user can act on, or 'unavailable' when the signing keys cannot be fetched.
 */
import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { MeshError, Permissions } from '@meshmq/shared';
import {
  createRemoteJWKSet,
  decodeProtectedHeader,
  errors,
  type JWTPayload,
  type JWTVerifyGetKey,
  type JWTVerifyOptions,
  type JWTVerifyResult,
  jwtVerify,
} from 'jose';

export interface AuthOptions {
  /** HS256 shared secret, at least MIN_SECRET_BYTES bytes of UTF-8. */
  secret?: string;
  /** Path to a PEM public key (SPKI) or certificate: RSA (RS256), P-256 (ES256) or Ed25519 (EdDSA). */
  publicKeyFile?: string;
  /** JWKS endpoint (RS256, ES256, EdDSA keys); cached and refetched, so keys rotate without restart. */
  jwksUrl?: string;
  /** When set, tokens must carry this `iss`. */
  issuer?: string;
  /** When set, tokens must carry this `aud` (or a list holding it). */
  audience?: string;
  /** Allowed clock skew for `exp` and `nbf`, in seconds (default DEFAULT_CLOCK_TOLERANCE_SEC). */
  clockToleranceSec?: number;
  /**
   * Shortest time between two JWKS fetches caused by a token naming an
   * unknown key id, in ms (default DEFAULT_JWKS_COOLDOWN_MS).
   */
  jwksCooldownMs?: number;
  /**
   * How often the JWKS is refetched in the background, in ms (default
   * DEFAULT_JWKS_REFRESH_MS). Handshakes never wait for it, and a failed
   * refetch keeps the last keys, so an identity-provider outage does not
   * refuse tokens whose keys are known.
   */
  jwksRefreshMs?: number;
  /**
   * How long a verified token is taken as verified again without checking it
   * (never past its exp), in ms (default VERIFIED_CACHE_MS); 0 checks every time.
   */
  verifiedCacheMs?: number;
}

export interface Identity {
  sub: string;
  permissions: Permissions;
  /** ms since epoch, null without exp */
  expiresAt: number | null;
}

/** Clock skew allowed when checking `exp` and `nbf`, by default. */
export const DEFAULT_CLOCK_TOLERANCE_SEC = 5;
/** jose's own default: a token with a new key id triggers at most one fetch per 30 s. */
export const DEFAULT_JWKS_COOLDOWN_MS = 30_000;
/** The JWKS is refetched in the background this often (10 min, jose's cache age). */
export const DEFAULT_JWKS_REFRESH_MS = 600_000;
/** A JWKS fetch taking longer than this fails as 'unavailable'. */
export const JWKS_TIMEOUT_MS = 5_000;
/** HS256 secrets shorter than this are refused: the key must be as strong as the hash. */
export const MIN_SECRET_BYTES = 32;
/** Tokens longer than this are refused before any parsing. */
export const MAX_TOKEN_LENGTH = 8 * 1024;
/** Longest `sub` accepted (it names the connection in logs and the console). */
export const MAX_SUB_LENGTH = 200;
/** How long a verified token is taken as verified again without checking its signature (never past its exp). */
export const VERIFIED_CACHE_MS = 30_000;
/** Verified tokens remembered at most (the oldest is forgotten first). */
export const VERIFIED_CACHE_SIZE = 10_000;

/** Algorithms accepted from a JWKS; a public key file accepts the one its key type implies. */
const ASYMMETRIC_ALGORITHMS = ['RS256', 'ES256', 'EdDSA'] as const;
/** Shortest RSA modulus accepted (jose refuses shorter keys for RS256 anyway). */
const MIN_RSA_BITS = 2048;

/** The bytes of an HS256 secret; throws MeshError('bad_request') for a secret too short. */
export function secretBytesOf(secret: string): Uint8Array {
  const bytes = new TextEncoder().encode(secret);
  if (bytes.length < MIN_SECRET_BYTES) {
    throw new MeshError(
      'bad_request',
      `the auth secret is ${bytes.length} bytes; it must be at least ${MIN_SECRET_BYTES} (generate one with: openssl rand -base64 48)`,
    );
  }
  return bytes;
}

/** Reads a PEM public key or certificate and names the one algorithm it verifies. */
function loadPublicKey(path: string): { key: KeyObject; algorithm: (typeof ASYMMETRIC_ALGORITHMS)[number] } {
  let pem: string;
  try {
    pem = readFileSync(path, 'utf8');
  } catch (err) {
    throw new MeshError('bad_request', `cannot read the auth public key ${path}: ${(err as Error).message}`);
  }
  if (pem.includes('PRIVATE KEY-----')) {
    throw new MeshError('bad_request', `${path} holds a private key; give the node only the public key (openssl pkey -in key.pem -pubout)`);
  }
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch {
    throw new MeshError('bad_request', `${path} is not a PEM public key (BEGIN PUBLIC KEY) or certificate (BEGIN CERTIFICATE)`);
  }
  const type = key.asymmetricKeyType;
  if (type === 'rsa') {
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < MIN_RSA_BITS) throw new MeshError('bad_request', `${path}: RSA key of ${bits} bits; at least ${MIN_RSA_BITS} are required`);
    return { key, algorithm: 'RS256' };
  }
  if (type === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') return { key, algorithm: 'ES256' };
  if (type === 'ed25519') return { key, algorithm: 'EdDSA' };
  const curve = key.asymmetricKeyDetails?.namedCurve;
  throw new MeshError('bad_request', `${path}: ${type}${curve ? ` (${curve})` : ''} keys are not supported; use RSA (RS256), P-256 (ES256) or Ed25519 (EdDSA)`);
}

/** A URL as safe to print: without credentials or query. */
function printable(url: URL): string {
  return `${url.origin}${url.pathname}`;
}

/** A claim value from a token, quoted and cut short for an error message. */
function quote(value: unknown): string {
  const text = Array.isArray(value) ? value.map(String).join(', ') : String(value);
  return `'${text.length > 100 ? `${text.slice(0, 100)}...` : text}'`;
}

function isoSeconds(value: unknown): string {
  return typeof value === 'number' && Number.isFinite(value) ? new Date(value * 1000).toISOString() : String(value);
}

/** Why a fetch failed: fetch() hides the socket error (ECONNREFUSED...) in `cause`. */
function fetchFailure(err: unknown): string {
  const outer = err as Error & { cause?: Error & { code?: string } };
  return outer.cause?.message || outer.cause?.code || outer.message || String(err);
}

const unauthorized = (reason: string) => new MeshError('unauthorized', reason);

export class TokenVerifier {
  private readonly verifyOptions: JWTVerifyOptions;
  private readonly getKey: JWTVerifyGetKey;
  /** Digests of tokens verified lately, oldest first, with until when each may be taken as verified. */
  private readonly verified = new Map<string, { identity: Identity; until: number }>();
  private readonly verifiedCacheMs: number;

  private constructor(options: AuthOptions) {
    this.verifiedCacheMs = options.verifiedCacheMs ?? VERIFIED_CACHE_MS;
    if (options.publicKeyFile && options.jwksUrl) {
      throw new MeshError('bad_request', 'configure either an auth public key or an auth JWKS URL, not both');
    }
    // Imported once: verification runs on every connection handshake.
    const secretKey = options.secret
      ? crypto.subtle.importKey('raw', secretBytesOf(options.secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['verify'])
      : undefined;
    const publicKey = options.publicKeyFile ? loadPublicKey(options.publicKeyFile) : undefined;
    const jwks = options.jwksUrl
      ? this.remoteKeys(options.jwksUrl, options.jwksCooldownMs ?? DEFAULT_JWKS_COOLDOWN_MS, options.jwksRefreshMs ?? DEFAULT_JWKS_REFRESH_MS)
      : undefined;

    const algorithms = [...(secretKey ? ['HS256'] : []), ...(publicKey ? [publicKey.algorithm] : []), ...(jwks ? ASYMMETRIC_ALGORITHMS : [])];
    // jose checks the header's alg against `algorithms` before asking for a key,
    // so each branch below only sees algorithms of its own key source.
    this.getKey = async (header, token) => {
      if (header.alg === 'HS256' && secretKey) return secretKey;
      if (publicKey) return publicKey.key;
      return jwks!(header, token);
    };
    this.verifyOptions = {
      algorithms,
      clockTolerance: options.clockToleranceSec ?? DEFAULT_CLOCK_TOLERANCE_SEC,
      ...(options.issuer ? { issuer: options.issuer } : {}),
      ...(options.audience ? { audience: options.audience } : {}),
    };
  }

  /** undefined when no key is configured (anonymous mode). */
  static fromOptions(options: AuthOptions): TokenVerifier | undefined {
    if (!options.secret && !options.publicKeyFile && !options.jwksUrl) return undefined;
    return new TokenVerifier(options);
  }

  async verify(token: string): Promise<Identity> {
    if (typeof token !== 'string' || token === '') throw unauthorized('malformed token');
    if (token.length > MAX_TOKEN_LENGTH) throw unauthorized(`malformed token: longer than ${MAX_TOKEN_LENGTH} characters`);
    const now = Date.now();
    // Keyed by digest: ten thousand tokens of up to 8 KiB would otherwise be kept whole.
    const digest = createHash('sha256').update(token).digest('base64');
    const cached = this.verified.get(digest);
    if (cached && cached.until > now) return cached.identity;
    const identity = await this.check(token);
    // Remembered briefly, never past the token's expiry: the console polls the admin API with the same token every second.
    const until = Math.min(now + this.verifiedCacheMs, identity.expiresAt ?? Infinity);
    if (this.verified.size >= VERIFIED_CACHE_SIZE) this.verified.delete(this.verified.keys().next().value!);
    this.verified.set(digest, { identity, until });
    return identity;
  }

  private async check(token: string): Promise<Identity> {
    let payload: JWTPayload;
    try {
      payload = (await this.verifyJwt(token)).payload;
    } catch (err) {
      throw this.describe(err, token);
    }
    const { sub, exp, mq } = payload;
    if (typeof sub !== 'string' || sub === '') throw unauthorized("token has no 'sub'");
    if (sub.length > MAX_SUB_LENGTH) throw unauthorized(`token 'sub' is longer than ${MAX_SUB_LENGTH} characters`);
    const permissions = mq === undefined ? Permissions.NONE : Permissions.fromClaim(mq);
    return { sub, permissions, expiresAt: typeof exp === 'number' ? exp * 1000 : null };
  }

  private async verifyJwt(token: string): Promise<JWTVerifyResult> {
    try {
      return await jwtVerify(token, this.getKey, this.verifyOptions);
    } catch (err) {
      // A JWKS may hold several keys that fit a token without `kid`: try each.
      if (!(err instanceof errors.JWKSMultipleMatchingKeys)) throw err;
      for await (const key of err) {
        try {
          return await jwtVerify(token, key, this.verifyOptions);
        } catch (inner) {
          if (!(inner instanceof errors.JWSSignatureVerificationFailed)) throw inner;
        }
      }
      throw new errors.JWSSignatureVerificationFailed();
    }
  }

  /** jose's view of a JWKS endpoint, with fetch failures turned into 'unavailable'. */
  private remoteKeys(jwksUrl: string, cooldownMs: number, refreshMs: number): JWTVerifyGetKey {
    let url: URL;
    try {
      url = new URL(jwksUrl);
    } catch {
      throw new MeshError('bad_request', `the auth JWKS URL '${jwksUrl}' is not a URL`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new MeshError('bad_request', `the auth JWKS URL '${printable(url)}' must be an http:// or https:// URL`);
    }
    if (url.username || url.password) {
      throw new MeshError('bad_request', `the auth JWKS URL '${printable(url)}' must not hold credentials`);
    }
    // jose fetches on the first token and whenever a token names an unknown kid
    // (at most once per cooldown). Its age-based refetch would make handshakes
    // wait for the endpoint, and fail while it is down: refresh in the background instead.
    const remote = createRemoteJWKSet(url, { cooldownDuration: cooldownMs, cacheMaxAge: Infinity, timeoutDuration: JWKS_TIMEOUT_MS });
    let refreshedAt = Date.now();
    return async (header, token) => {
      if (Date.now() - refreshedAt >= refreshMs && remote.jwks() !== undefined && !remote.reloading) {
        refreshedAt = Date.now();
        // A failed refetch keeps the last keys; the next one is due after another refreshMs.
        remote.reload().catch(() => {});
      }
      try {
        return await remote(header, token);
      } catch (err) {
        // These describe the token; anything else is the endpoint failing.
        if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys || err instanceof errors.JOSENotSupported) {
          throw err;
        }
        throw new MeshError('unavailable', `cannot fetch the signing keys from ${printable(url)}: ${fetchFailure(err)}`, { cause: err });
      }
    };
  }

  /** One human reason per jose failure; never echoes key material. */
  private describe(err: unknown, token: string): MeshError {
    if (err instanceof MeshError) return err;
    if (err instanceof errors.JWTExpired) return unauthorized(`token expired at ${isoSeconds(err.payload.exp)}`);
    if (err instanceof errors.JWTClaimValidationFailed) {
      const { claim, reason, payload } = err;
      if (reason === 'invalid') return unauthorized(`malformed token: '${claim}' must be a number`);
      if (claim === 'nbf') return unauthorized(`token is not valid before ${isoSeconds(payload.nbf)}`);
      if (claim === 'iss') {
        const expected = quote(this.verifyOptions.issuer);
        return unauthorized(
          reason === 'missing' ? `token has no issuer; expected ${expected}` : `token issuer ${quote(payload.iss)} is not the expected ${expected}`,
        );
      }
      if (claim === 'aud') {
        const expected = quote(this.verifyOptions.audience);
        return unauthorized(
          reason === 'missing'
            ? `token has no audience; expected ${expected}`
            : `token audience ${quote(payload.aud)} does not include the expected ${expected}`,
        );
      }
      return unauthorized(`token claim '${claim}' is invalid`);
    }
    if (err instanceof errors.JWSSignatureVerificationFailed) return unauthorized('token signature is invalid');
    if (err instanceof errors.JOSEAlgNotAllowed || err instanceof errors.JOSENotSupported) {
      return unauthorized(`token algorithm ${this.algorithmOf(token)} is not accepted`);
    }
    if (err instanceof errors.JWKSNoMatchingKey) {
      const { kid, alg } = this.headerOf(token);
      return unauthorized(`no signing key matches the token (${typeof kid === 'string' ? `key id ${quote(kid)}, ` : 'no key id, '}algorithm ${String(alg)})`);
    }
    if (err instanceof errors.JWSInvalid || err instanceof errors.JWTInvalid) return unauthorized('malformed token');
    if (err instanceof errors.JOSEError) return unauthorized(`malformed token: ${err.message}`);
    return MeshError.from(err);
  }

  private headerOf(token: string): Record<string, unknown> {
    try {
      return decodeProtectedHeader(token) as Record<string, unknown>;
    } catch {
      return {};
    }
  }

  private algorithmOf(token: string): string {
    const { alg } = this.headerOf(token);
    // The header is unverified input: print only what looks like an algorithm name.
    return typeof alg === 'string' && /^[A-Za-z0-9+_-]{1,20}$/.test(alg) ? alg : '(unrecognised)';
  }
}
