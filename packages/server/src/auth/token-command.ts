/**
 * `meshmq token`: mints an HS256 access token with the node's own secret,
 * issuer and audience, so the token passes that node's checks.
 */
import { parseArgs } from 'node:util';
import { MeshError, type PermissionClaim, Permissions } from '@meshmq/shared';
import { SignJWT } from 'jose';
import { loadConfig, parseDuration } from '../config.js';
import { MAX_SUB_LENGTH, secretBytesOf } from './token-verifier.js';

/** Lifetime of a minted token unless --ttl says otherwise. */
export const DEFAULT_TOKEN_TTL = '1h';

export const TOKEN_HELP = `Usage: meshmq token --sub <name> [options]

Prints one access token signed with the node's HS256 secret, and a newline.
The secret, issuer and audience come from the same flags, environment and
config file as the node's, so the token passes that node's checks.

Options:
  --sub <name>                     who the token is for (required)
  --publish <patterns>             topics it may publish to
  --subscribe <patterns>           topics it may subscribe to and read
  --consume <patterns>             topics it may consume as a group member
                                   (list options are repeatable and/or
                                   comma-separated: --publish 'orders.*,audit')
  --admin                          every action on every topic, and the admin API
  --ttl <duration>                 lifetime: 30s, 15m, 1h, 7d (default ${DEFAULT_TOKEN_TTL})
  --config <file>                  node config file; uses authSecret, authIssuer,
                                   authAudience [MESHMQ_CONFIG]
  --auth-secret <secret>           HS256 secret, 32+ bytes [AUTH_SECRET]
                                   (prefer the variable: flags show up in ps)
  --auth-issuer <iss>              iss claim [AUTH_ISSUER]
  --auth-audience <aud>            aud claim [AUTH_AUDIENCE]
  -h, --help                       show this help

Patterns are '.'-separated; '*' is one segment, '>' one or more trailing ones:
  meshmq token --sub billing --publish 'orders.*' --ttl 7d
  meshmq token --sub alice --subscribe 'tenant-7.>' --ttl 15m
`;

export interface MintOptions {
  /** HS256 secret, at least 32 bytes. */
  secret: string;
  sub: string;
  /** Missing lists mean none; validated like the claim of any token. */
  permissions: Partial<PermissionClaim>;
  ttlMs: number;
  issuer?: string;
  audience?: string;
}

/** Signs an HS256 token; throws MeshError('bad_request') for bad input. */
export async function mintToken(options: MintOptions): Promise<string> {
  const { sub, ttlMs } = options;
  if (sub === '' || sub.length > MAX_SUB_LENGTH) throw new MeshError('bad_request', `sub must be 1-${MAX_SUB_LENGTH} characters`);
  if (!Number.isSafeInteger(ttlMs) || ttlMs < 1000) throw new MeshError('bad_request', 'ttl must be at least 1s');
  let mq: PermissionClaim;
  try {
    mq = Permissions.fromClaim(options.permissions).toJSON();
  } catch (err) {
    throw new MeshError('bad_request', (err as Error).message);
  }
  const now = Math.floor(Date.now() / 1000);
  const jwt = new SignJWT({ mq })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(sub)
    .setIssuedAt(now)
    .setExpirationTime(now + Math.ceil(ttlMs / 1000));
  if (options.issuer) jwt.setIssuer(options.issuer);
  if (options.audience) jwt.setAudience(options.audience);
  return jwt.sign(secretBytesOf(options.secret));
}

/** Repeatable, comma-separated list flags: ['a,b', 'c'] -> ['a', 'b', 'c']. */
function listOf(values: string[] | undefined): string[] {
  return (values ?? [])
    .flatMap((value) => value.split(','))
    .map((part) => part.trim())
    .filter((part) => part !== '');
}

/** The command's flags, parsed strictly; a bad one is `bad_request`. */
function parseFlags(argv: string[]) {
  try {
    return parseArgs({
      args: argv,
      strict: true,
      options: {
        sub: { type: 'string' },
        publish: { type: 'string', multiple: true },
        subscribe: { type: 'string', multiple: true },
        consume: { type: 'string', multiple: true },
        admin: { type: 'boolean' },
        ttl: { type: 'string' },
        config: { type: 'string' },
        'auth-secret': { type: 'string' },
        'auth-issuer': { type: 'string' },
        'auth-audience': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (err) {
    throw new MeshError('bad_request', (err as Error).message);
  }
}

/** Runs `meshmq token <argv>`; resolves to the text for stdout (the token or the help). */
export async function runTokenCommand(argv: string[], env: NodeJS.ProcessEnv): Promise<string> {
  const values = parseFlags(argv);
  if (values.help) return TOKEN_HELP;
  if (values.sub === undefined) throw new MeshError('bad_request', '--sub is required');

  // The node's own loader, so flags, environment and config file resolve as they do for the node.
  const passThrough = (['config', 'auth-secret', 'auth-issuer', 'auth-audience'] as const).flatMap((flag) =>
    values[flag] === undefined ? [] : [`--${flag}`, values[flag]],
  );
  const { config } = loadConfig(passThrough, env);
  if (!config.authSecret) {
    throw new MeshError(
      'bad_request',
      'no auth secret configured: set AUTH_SECRET, --auth-secret, or "authSecret" in the --config file ' +
        '(tokens for a public key or JWKS come from the identity provider holding the private key)',
    );
  }
  const token = await mintToken({
    secret: config.authSecret,
    sub: values.sub,
    permissions: {
      publish: listOf(values.publish),
      subscribe: listOf(values.subscribe),
      consume: listOf(values.consume),
      admin: values.admin === true,
    },
    ttlMs: parseDuration(values.ttl ?? DEFAULT_TOKEN_TTL, 'ttl'),
    issuer: config.authIssuer || undefined,
    audience: config.authAudience || undefined,
  });
  return `${token}\n`;
}
