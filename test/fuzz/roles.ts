import { randomBytes } from 'node:crypto';
import { mintToken } from '@meshmq/server';
import { SignJWT } from 'jose';
import type { Vocabulary } from './generators.js';
import type { Prng } from './prng.js';

/** Topics fuzzers may write: only principals allowed to write them (by token, or admin) name them validly. */
export const FUZZ_TOPICS = [
  'fuzz.a',
  'fuzz.b',
  'fuzz.c.d',
  'fuzz.e:f',
  'fuzz._x',
  'fuzz.big',
  'fuzz.dl',
  `fuzz.${'t'.repeat(195)}`,
  '$dlq.fuzz.a',
  '$dlq.fuzz.dl',
];
export const FUZZ_GROUPS = ['g1', 'g2', 'workers', 'dead', 'g.x:y', `G${'g'.repeat(99)}`];

/** Who a fuzz lane connects as. */
export interface Role {
  name: string;
  /** Undefined: no token at all. */
  token: string | undefined;
  /** Whether the node must accept the token at the handshake. */
  accepted: boolean;
  /** May use the admin API. */
  admin: boolean;
  vocab: Vocabulary;
}

/** An HS256-signed token with any payload and header (expired, odd algorithms, broken claims). */
async function signRaw(secret: string, payload: Record<string, unknown>, alg = 'HS256'): Promise<string> {
  return new SignJWT(payload).setProtectedHeader({ alg, typ: 'JWT' }).sign(new TextEncoder().encode(secret));
}

/** Tokens the node must refuse at the handshake, each for another reason. */
async function refusedTokens(secret: string): Promise<Array<[string, string | undefined]>> {
  const now = Math.floor(Date.now() / 1000);
  const b64 = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
  return [
    ['no token', undefined],
    ['empty token', ''],
    ['garbage token', 'not-a-jwt'],
    ['expired token', await signRaw(secret, { sub: 'old', exp: now - 3600, mq: { admin: true } })],
    ['wrong secret', await mintToken({ secret: randomBytes(32).toString('hex'), sub: 'x', permissions: { admin: true }, ttlMs: 3_600_000 })],
    ['alg none', `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub: 'x', mq: { admin: true } })}.`],
    ['HS512 token', await signRaw(secret, { sub: 'x', exp: now + 3600, mq: { admin: true } }, 'HS512')],
    ['bad mq claim', await signRaw(secret, { sub: 'x', exp: now + 3600, mq: { publsh: ['>'] } })],
    ['no sub', await signRaw(secret, { exp: now + 3600, mq: { admin: true } })],
    ['token over 8 KiB', `${'a'.repeat(8200)}.b.c`],
  ];
}

export interface RoleSetup {
  secret: string;
  /** Topics written before the run, compared after it: only principals that cannot write them may name them. */
  recordedTopics: string[];
  /** Topics the well-behaved clients use. */
  steadyTopics: string[];
  maxMessageBytes: number;
}

/**
 * The principals of a fuzz run: an admin (whose frames never name the
 * recorded topics, since it may write anything), a member (publish and
 * consume only `fuzz.>`, read everything: its frames name every topic), one
 * with no permission at all, and tokens the node must refuse.
 */
export async function makeRoles(setup: RoleSetup): Promise<{ roles: Role[]; adminToken: string }> {
  const { secret } = setup;
  const ttlMs = 3_600_000;
  const mint = (sub: string, permissions: Parameters<typeof mintToken>[0]['permissions']) => mintToken({ secret, sub, permissions, ttlMs });
  const memberPermissions = { publish: ['fuzz.>'], subscribe: ['>', '$dlq.>'], consume: ['fuzz.>'] };
  const [admin, admin2, member, member2, nobody, nobody2] = await Promise.all([
    mint('fuzz-admin', { admin: true }),
    mint('fuzz-admin', { admin: true }),
    mint('fuzz-member', memberPermissions),
    mint('fuzz-member', memberPermissions),
    mint('fuzz-nobody', {}),
    mint('fuzz-nobody', {}),
  ]);
  const refused = await refusedTokens(secret);
  // `auth` requests carry: the principal's own kind of token (accepted), another subject's (forbidden), refused ones.
  const authTokens = (own: string) => [own, own, member, nobody, admin, ...refused.map(([, t]) => t).filter((t): t is string => !!t)];
  const epochs: string[] = [];
  const vocab = (topics: string[], own: string): Vocabulary => ({
    topics,
    groups: FUZZ_GROUPS,
    tokens: authTokens(own),
    epochs,
    maxMessageBytes: setup.maxMessageBytes,
  });
  const everything = [...FUZZ_TOPICS, ...setup.recordedTopics, ...setup.recordedTopics.map((t) => `$dlq.${t}`), ...setup.steadyTopics];
  const roles: Role[] = [
    { name: 'admin', token: admin, accepted: true, admin: true, vocab: vocab(FUZZ_TOPICS, admin2) },
    { name: 'member', token: member, accepted: true, admin: false, vocab: vocab(everything, member2) },
    { name: 'nobody', token: nobody, accepted: true, admin: false, vocab: vocab(everything, nobody2) },
    ...refused.map(([name, token]): Role => ({ name, token, accepted: false, admin: false, vocab: vocab(everything, nobody2) })),
  ];
  return { roles, adminToken: admin };
}

/** True when text an admin principal would send names a topic it must leave alone. */
export function namesProtectedTopic(text: string, protectedTopics: readonly string[]): boolean {
  return protectedTopics.some((topic) => text.includes(topic));
}

/** A role for the next connection: mostly one the node accepts, sometimes one it must refuse. */
export function pickRole(rng: Prng, roles: readonly Role[], refusedShare = 0.1): Role {
  const refused = roles.filter((r) => !r.accepted);
  const accepted = roles.filter((r) => r.accepted);
  return rng.chance(refusedShare) && refused.length > 0 ? rng.pick(refused) : rng.pick(accepted);
}
