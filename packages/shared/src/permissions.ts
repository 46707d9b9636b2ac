/**
 * What a token holder may do: the `mq` claim of an access token, compiled
 * into topic patterns that are matched on every publish and subscribe. The
 * node authorises with it; clients (the console) use it to show what a
 * token allows.
 *
 * Pattern rules:
 * - A pattern is `.`-separated segments; an exact name matches itself.
 * - `*` is exactly one whole, non-empty segment: `orders.*` matches
 *   `orders.eu`, not `orders` nor `orders.eu.x`.
 * - `>` is one or more trailing segments and only allowed last:
 *   `tenant-7.>` matches `tenant-7.a` and `tenant-7.a.b`, not `tenant-7`.
 *   `>` alone matches every topic.
 * - Wildcards are whole segments (`ord*` is invalid). Other segments use the
 *   topic-name characters `A-Z a-z 0-9 _ - :`.
 * - Reserved topics (`$dlq.<topic>`, written by the broker) are only matched
 *   by patterns that spell the `$dlq` segment: `$dlq.orders`, `$dlq.orders.*`,
 *   `$dlq.>`. A leading wildcard never matches them, so `>` and `*.orders`
 *   grant no dead-letter topic: reading one is a deliberate grant.
 */
import { z } from 'zod';
import { MeshError } from './errors.js';
import { DEAD_LETTER_PREFIX } from './names.js';

export type Action = 'publish' | 'subscribe' | 'consume' | 'admin';
type TopicAction = Exclude<Action, 'admin'>;

/** The `mq` claim as carried by a token, every field present (what hello's `auth.permissions` holds). */
export interface PermissionClaim {
  publish: string[];
  subscribe: string[];
  consume: string[];
  admin: boolean;
}

/** Longest pattern accepted, in characters (the longest topic name is 200). */
export const MAX_PATTERN_LENGTH = 200;
/** Most patterns accepted in one list of the claim. */
export const MAX_PATTERNS_PER_LIST = 100;

const SEGMENT_CHARS = /^[A-Za-z0-9_:-]+$/;
const RESERVED_SEGMENT = DEAD_LETTER_PREFIX.slice(0, -1); // '$dlq'
const ONE = '*';
const REST = '>';

/** A compiled topic pattern; matching walks the topic once, without regular expressions. */
export class TopicPattern {
  private constructor(
    private readonly source: string,
    /** Segments in order; `*` and `>` stand for themselves. */
    private readonly segments: readonly string[],
  ) {}

  /** Compiles a pattern; throws MeshError('bad_request') naming the problem. */
  static parse(pattern: string): TopicPattern {
    if (typeof pattern !== 'string') throw invalid(String(pattern), 'must be a string');
    if (pattern === '') throw new MeshError('bad_request', 'invalid topic pattern: empty');
    if (pattern.length > MAX_PATTERN_LENGTH) {
      throw new MeshError('bad_request', `invalid topic pattern: longer than ${MAX_PATTERN_LENGTH} characters`);
    }
    const segments = pattern.split('.');
    segments.forEach((segment, i) => {
      if (segment === ONE) return;
      if (segment === REST) {
        if (i !== segments.length - 1) throw invalid(pattern, `'>' must be the last segment`);
        return;
      }
      if (segment === '') throw invalid(pattern, 'empty segment');
      if (segment.includes(ONE) || segment.includes(REST)) {
        throw invalid(pattern, `wildcards '*' and '>' must be whole segments, not part of '${segment}'`);
      }
      if (segment === RESERVED_SEGMENT) {
        if (i !== 0) throw invalid(pattern, `'${RESERVED_SEGMENT}' is only allowed as the first segment`);
        if (segments.length === 1) throw invalid(pattern, `'${RESERVED_SEGMENT}' must be followed by a topic pattern`);
        return;
      }
      if (segment.includes('$')) throw invalid(pattern, `'$' is only allowed in the reserved prefix '${DEAD_LETTER_PREFIX}'`);
      if (!SEGMENT_CHARS.test(segment)) {
        throw invalid(pattern, `segment '${segment}' may only hold A-Z a-z 0-9 _ - : (or be '*' or '>')`);
      }
    });
    return new TopicPattern(pattern, segments);
  }

  /** True when the pattern holds no wildcard, so it matches only the identical name. */
  get isExact(): boolean {
    return !this.segments.includes(ONE) && !this.segments.includes(REST);
  }

  matches(topic: string): boolean {
    const segments = this.segments;
    // Reserved topics are only reachable by naming their prefix.
    if (topic.startsWith('$') && (segments[0] === ONE || segments[0] === REST)) return false;
    let start = 0;
    for (let i = 0; i < segments.length; i++) {
      if (start > topic.length) return false; // the topic ran out of segments
      const segment = segments[i]!;
      if (segment === REST) return start < topic.length;
      let end = topic.indexOf('.', start);
      if (end === -1) end = topic.length;
      if (segment === ONE) {
        if (end === start) return false;
      } else if (end - start !== segment.length || !topic.startsWith(segment, start)) {
        return false;
      }
      start = end + 1;
    }
    return start === topic.length + 1; // every topic segment was consumed
  }

  toString(): string {
    return this.source;
  }
}

function invalid(pattern: string, problem: string): MeshError {
  return new MeshError('bad_request', `invalid topic pattern '${pattern}': ${problem}`);
}

/** The patterns of one action: exact names in a set, wildcard patterns in a list. */
class PatternList {
  private readonly exact: Set<string>;
  private readonly wildcards: TopicPattern[];

  constructor(readonly patterns: readonly TopicPattern[]) {
    this.exact = new Set(patterns.filter((p) => p.isExact).map(String));
    this.wildcards = patterns.filter((p) => !p.isExact);
  }

  matches(topic: string): boolean {
    return this.exact.has(topic) || this.wildcards.some((p) => p.matches(topic));
  }
}

const patternList = z
  .array(
    z.string({ error: 'must be a topic pattern string' }).transform((value, ctx) => {
      try {
        return TopicPattern.parse(value);
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: (err as Error).message });
        return z.NEVER;
      }
    }),
    { error: 'must be a list of topic patterns' },
  )
  .max(MAX_PATTERNS_PER_LIST, { error: `holds more than ${MAX_PATTERNS_PER_LIST} patterns` })
  .default([]);

const claimSchema = z.strictObject(
  {
    publish: patternList,
    subscribe: patternList,
    consume: patternList,
    admin: z.boolean({ error: 'must be true or false' }).default(false),
  },
  { error: 'must be an object' },
);

function describe(issue: z.core.$ZodIssue): string {
  if (issue.code === 'unrecognized_keys') {
    return `unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `'${k}'`).join(', ')}`;
  }
  const [field, index] = issue.path;
  const where = field === undefined ? '' : index === undefined ? `${String(field)}: ` : `${String(field)}[${String(index)}]: `;
  return where + issue.message;
}

export class Permissions {
  /** Anonymous mode (no key configured): everything allowed. */
  static readonly ALL: Permissions = new Permissions(true, [], [], []);
  /** A token without an `mq` claim: nothing allowed. */
  static readonly NONE: Permissions = new Permissions(false, [], [], []);

  private readonly lists: Record<TopicAction, PatternList>;

  private constructor(
    private readonly admin: boolean,
    publish: readonly TopicPattern[],
    subscribe: readonly TopicPattern[],
    consume: readonly TopicPattern[],
  ) {
    this.lists = { publish: new PatternList(publish), subscribe: new PatternList(subscribe), consume: new PatternList(consume) };
  }

  /**
   * Validates the `mq` claim; missing lists mean none. Throws
   * MeshError('unauthorized', "'mq' claim: <problem>").
   */
  static fromClaim(claim: unknown): Permissions {
    const result = claimSchema.safeParse(claim);
    if (!result.success) {
      const first = result.error.issues[0];
      throw new MeshError('unauthorized', `'mq' claim: ${first ? describe(first) : 'invalid'}`);
    }
    const { admin, publish, subscribe, consume } = result.data;
    return new Permissions(admin, publish, subscribe, consume);
  }

  /**
   * admin grants every action on every topic, and is the only grant of the
   * 'admin' action. A topic action without a topic asks about every topic,
   * which only admin grants.
   */
  can(action: Action, topic?: string): boolean {
    if (this.admin) return true;
    if (action === 'admin' || topic === undefined) return false;
    return this.lists[action].matches(topic);
  }

  toJSON(): PermissionClaim {
    const strings = (action: TopicAction) => this.lists[action].patterns.map(String);
    return { publish: strings('publish'), subscribe: strings('subscribe'), consume: strings('consume'), admin: this.admin };
  }
}
