import { fieldsOf, type RedisLink } from '../engine/redis-link.js';

export interface RedisDurability {
  appendonly: string;
  appendfsync: string;
  save: string;
  /** Replicas connected to the primary and in sync with it (`state=online`). */
  replicas: number;
  /** Replicas each publish waits for (the node's `--redis-replicas`). */
  waitReplicas: number;
  /** Redis writes RDB snapshots (`save` set): a restart keeps what the last snapshot holds. */
  snapshots: boolean;
  /** What an acknowledged publish survives: a Redis process kill needs AOF; a host crash AOF with appendfsync always. */
  survives: { processKill: boolean; hostCrash: boolean; failover: boolean };
  /** One sentence for logs and /readyz. */
  summary: string;
}

/**
 * Reads Redis's persistence and replication settings and says what an
 * acknowledged publish survives, so that nobody mistakes a Redis without
 * persistence for a durable one.
 */
export async function describeRedisDurability(link: RedisLink, waitReplicas: number): Promise<RedisDurability> {
  let config: Record<string, string> = {};
  try {
    config = fieldsOf(await link.command(['CONFIG', 'GET', '*']));
  } catch {
    // CONFIG may be renamed or forbidden on managed Redis: say we do not know.
  }
  const info = String(await link.command(['INFO', 'replication']).catch(() => ''));
  // Replicas still syncing are connected but confirm nothing yet (a diskless sync waits 5 s by default).
  const replicas = [...info.matchAll(/^slave\d+:.*\bstate=online\b/gm)].length;
  const appendonly = config.appendonly ?? 'unknown';
  const appendfsync = config.appendfsync ?? 'unknown';
  const save = config.save ?? 'unknown';
  const aof = appendonly === 'yes';
  // RDB snapshots keep something across a restart, but not each acknowledged publish: only AOF does.
  const snapshots = save !== '' && save !== 'unknown';
  const processKill = aof;
  const hostCrash = aof && appendfsync === 'always';
  const failover = waitReplicas > 0 && replicas >= waitReplicas;
  let summary: string;
  if (appendonly === 'unknown') {
    summary = 'Redis persistence settings could not be read (CONFIG GET refused): durability unknown';
  } else if (hostCrash) {
    summary = 'acknowledged publishes survive a Redis process kill and a host crash (AOF, appendfsync always)';
  } else if (aof) {
    summary = `acknowledged publishes survive a Redis process kill; a host crash may lose up to about 1 s of them (AOF, appendfsync ${appendfsync})`;
  } else if (snapshots) {
    summary = `acknowledged publishes since the last RDB snapshot are LOST when Redis restarts (no AOF, save "${save}")`;
  } else {
    summary = 'Redis keeps nothing on disk: a Redis restart LOSES every message (no AOF, no RDB snapshots)';
  }
  summary += failover
    ? `; each publish waits for ${waitReplicas} replica(s), so it survives a failover`
    : replicas > 0
      ? `; ${replicas} replica(s) connected but publishes do not wait for them, so a failover can lose the newest ones`
      : '';
  return { appendonly, appendfsync, save, replicas, waitReplicas, snapshots, survives: { processKill, hostCrash, failover }, summary };
}
