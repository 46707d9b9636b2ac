/**
 * Durability levels, the labels printed in every table's `durability` column.
 * Systems are compared only within one level. docs/benchmarks.md says why each
 * system sits where it does.
 */
export const DURABILITY = {
  /** The acknowledgement is sent only after the data was fsynced. */
  fsync: 'fsync before ack',
  /** The acknowledgement follows a write to the OS; an fsync follows within a second. */
  everysec: 'OS write, fsync ≤1 s',
  /** Nothing is fsynced by the server on its own schedule within a second or so. */
  osWrite: (interval: string) => `OS write, fsync ≤${interval}`,
  /** No persistence at all (a Redis without AOF or RDB). */
  memory: 'memory only',
} as const;

/** Sort key so tables list the strongest level first. */
export function durabilityRank(label: string): number {
  if (label === DURABILITY.fsync) return 0;
  if (label === DURABILITY.everysec) return 1;
  if (label.startsWith('OS write')) return 2;
  return 3;
}
