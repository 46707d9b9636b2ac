import { describeError, MeshError } from '@meshmq/shared';
import { AbortError, ClientClosedError, ClientOfflineError, ConnectionTimeoutError, ErrorReply, RootNodesUnavailableError, TimeoutError } from 'redis';

/**
 * What a failed Redis command means for the caller: every way node-redis or
 * Redis can fail a command, mapped to a MeshError whose code says whether
 * anything may have been stored (docs/protocol.md).
 */

/** A command as error messages name it. */
export interface CommandInfo {
  /** Upper-case command name. */
  name: string;
  /** The key it touches, when known. */
  key: string | undefined;
  timeoutMs: number;
}

/** The command's connection answered nothing for the command timeout after the command was written: Redis may or may not have run it. */
export class NoAnswerError extends Error {
  constructor() {
    super('Redis answered nothing on the connection for the command timeout');
  }
}

/** Commands that change nothing: when their answer is lost, nothing was stored either. */
const READ_ONLY = new Set([
  'GET',
  'HGET',
  'HGETALL',
  'HMGET',
  'SMEMBERS',
  'SCARD',
  'XRANGE',
  'XREVRANGE',
  'XLEN',
  'XINFO',
  'XPENDING',
  'EXISTS',
  'TYPE',
  'SCAN',
  'INFO',
  'CONFIG',
  'PING',
  'SSUBSCRIBE',
  'SUNSUBSCRIBE',
]);

/**
 * Error replies that mean Redis refused the command without running it, by
 * their first word, with what to tell the caller. Each maps to `unavailable`:
 * nothing was stored, and the same request may succeed later.
 */
const REFUSALS: Record<string, string> = {
  OOM: 'Redis is out of memory (maxmemory reached) and refuses writes',
  BUSY: 'Redis is busy running a long script and answers nothing else until it ends',
  MISCONF: 'Redis refuses writes because it cannot persist to disk (stop-writes-on-bgsave-error)',
  NOREPLICAS: 'Redis refuses writes because too few replicas are connected (min-replicas-to-write)',
  LOADING: 'Redis is loading its dataset into memory',
  MASTERDOWN: 'the Redis replica lost its link to the primary and does not serve stale data',
  READONLY: 'the Redis server is a read-only replica (a failover is under way)',
  CLUSTERDOWN: 'the Redis Cluster is down',
  TRYAGAIN: 'the Redis Cluster is moving the keys of this command',
  NOAUTH: "Redis refused the node's credentials (check the REDIS_URL user and password)",
  WRONGPASS: "Redis refused the node's credentials (check the REDIS_URL user and password)",
  NOPERM: "the node's Redis user lacks a permission it needs (check its ACL)",
};

/** The error reply raised by the MeshMQ scripts for a group or pending entry that is not there. */
const NOT_FOUND_REPLY = 'MESHMQ_NOT_FOUND ';
/** The error reply raised by the MeshMQ scripts for something past a configured limit. */
const LIMIT_REPLY = 'MESHMQ_LIMIT ';

export function label(command: CommandInfo): string {
  return command.key === undefined ? command.name : `${command.name} on '${command.key}'`;
}

export function unreachable(command: CommandInfo, cause?: unknown): MeshError {
  const why = cause === undefined ? '' : ` (${describeError(cause)})`;
  return new MeshError('unavailable', `Redis is unreachable${why}; ${label(command)} was not sent, nothing was stored, retry later`, { cause });
}

/**
 * Maps whatever a node-redis command rejected with to a MeshError whose
 * message names the command and says what happened:
 *
 * - the command never reached Redis (the client was offline or closed, or
 *   the deadline withdrew it from the write queue): `unavailable`;
 * - Redis refused it without running it (OOM, BUSY, MISCONF, READONLY, ...):
 *   `unavailable`;
 * - a write was sent but its answer never came (deadline, or the connection
 *   dropped): `maybe_stored`; for a read, `unavailable`;
 * - a MeshMQ script's not-found reply: `not_found`;
 * - an error reply that says nothing (no text, or a bare `ERR`): Redis
 *   answered, but not what happened, so a write may have taken effect:
 *   `maybe_stored`; for a read, `unavailable`;
 * - any other error reply: `internal`, with Redis's text.
 *
 * Every message names the command and says what happened; none is empty.
 *
 * With disableOfflineQueue, node-redis fails written and unwritten commands
 * alike with the socket's error when a connection drops; such a failure is
 * treated as "sent", the answer that is never wrong.
 */
export function translateRedisError(err: unknown, command: CommandInfo): MeshError {
  if (err instanceof MeshError) return err;
  const text = describeError(err);
  const refusal = REFUSALS[text.split(' ', 1)[0]!];
  if (refusal !== undefined) {
    return new MeshError('unavailable', `${refusal}: it refused ${label(command)} (${text}); nothing was stored, retry later`, { cause: err });
  }
  if (err instanceof ErrorReply) {
    if (text.startsWith(NOT_FOUND_REPLY)) return new MeshError('not_found', text.slice(NOT_FOUND_REPLY.length), { cause: err });
    if (text.startsWith(LIMIT_REPLY)) return new MeshError('limit_exceeded', text.slice(LIMIT_REPLY.length), { cause: err });
    if (/^\s*(ERR)?\s*$/.test(err.message)) {
      const said = err.message.trim() === '' ? 'an empty error reply' : `an error reply with no text ('${err.message.trim()}')`;
      if (READ_ONLY.has(command.name)) {
        return new MeshError('unavailable', `Redis answered ${label(command)} with ${said}; nothing was stored, retry later`, { cause: err });
      }
      return new MeshError(
        'maybe_stored',
        `Redis answered ${label(command)} with ${said}, which does not say whether it took effect: it may have been stored; send the request again with the same idempotency key to find out`,
        { cause: err },
      );
    }
    return new MeshError('internal', `Redis answered ${label(command)} with an error: ${text}`, { cause: err });
  }
  if (
    err instanceof ClientOfflineError ||
    err instanceof ClientClosedError ||
    err instanceof ConnectionTimeoutError ||
    err instanceof RootNodesUnavailableError
  ) {
    return unreachable(command, err);
  }
  if (err instanceof AbortError) {
    // Withdrawn by the link's deadline before node-redis wrote it.
    return new MeshError(
      'unavailable',
      `Redis answered nothing on its connection for ${command.timeoutMs} ms while ${label(command)} waited to be sent; it was not sent, nothing was stored, retry later`,
      { cause: err },
    );
  }
  if (err instanceof TimeoutError) {
    // node-redis's own timeout (TimeoutError has no message; CommandTimeoutDuringMaintenanceError is one): it only withdraws a command not yet written.
    return new MeshError(
      'unavailable',
      `node-redis gave up on ${label(command)} before sending it (${err.message || 'its command timeout passed'}); it was not sent, nothing was stored, retry later`,
      { cause: err },
    );
  }
  const noAnswer = err instanceof NoAnswerError;
  if (READ_ONLY.has(command.name)) {
    const lost = noAnswer
      ? `Redis answered nothing on its connection for ${command.timeoutMs} ms after ${label(command)} was sent`
      : `the connection to Redis failed (${text}) before it answered ${label(command)}`;
    return new MeshError('unavailable', `${lost}; nothing was stored, retry later`, { cause: err });
  }
  const lost = noAnswer
    ? `Redis then answered nothing on its connection for ${command.timeoutMs} ms`
    : `the connection to Redis failed (${text}) before the answer came`;
  return new MeshError(
    'maybe_stored',
    `${label(command)} was sent but ${lost}: it may have been stored; send the request again with the same idempotency key to find out`,
    { cause: err },
  );
}

/** The URL without its password, for messages. */
export function redact(url: string): string {
  return url.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@');
}
