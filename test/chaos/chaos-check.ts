/**
 * Pure helpers of the cluster chaos test: a seeded random source for the
 * chaos schedule, and the checker that turns what the actors recorded and
 * what the log holds into figures.
 */

/** mulberry32: a small seeded PRNG, so a failing chaos schedule can be replayed with CHAOS_SEED. */
export function seededRandom(seed: number): { next: () => number; between: (min: number, max: number) => number; pick: <T>(items: readonly T[]) => T } {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    between: (min, max) => min + Math.floor(next() * (max - min + 1)),
    pick: (items) => items[Math.floor(next() * items.length)]!,
  };
}

/** What every publisher sends: publisher index and its sequence number, with key `p<p>-<n>`. */
export interface Payload {
  p: number;
  n: number;
}

export interface AckedPublish extends Payload {
  offset: number;
  /** The reply said `duplicate: true`: a retry found the message already stored. */
  duplicate: boolean;
}

export interface LogEntry {
  offset: number;
  data: unknown;
  key?: string;
}

export interface LogFigures {
  /** Offsets in the log (its `last`). */
  last: number;
  /** Offsets missing from 1..last, or present twice / out of order while paging. */
  logGaps: number;
  /** Acknowledged publishes not found at their offset with their payload. */
  lost: number;
  /** Acknowledged publishes of one publisher whose offsets do not grow with n, plus log entries of one publisher out of n order. */
  reordered: number;
  /** Payloads present more than once in the log. */
  duplicated: number;
  /** Log entries that are not a payload any publisher sent, or whose key does not match. */
  foreign: number;
  /** Human-readable evidence, at most a few lines per kind. */
  problems: string[];
}

const keyOf = (d: Payload) => `p${d.p}-${d.n}`;

function isPayload(data: unknown): data is Payload {
  return (
    typeof data === 'object' &&
    data !== null &&
    typeof (data as Payload).p === 'number' &&
    typeof (data as Payload).n === 'number' &&
    Object.keys(data).length === 2
  );
}

/** Adds a line of evidence, keeping at most `max` per kind. */
function note(problems: string[], counts: Map<string, number>, kind: string, line: string, max = 5): void {
  const n = (counts.get(kind) ?? 0) + 1;
  counts.set(kind, n);
  if (n <= max) problems.push(`${kind}: ${line}`);
}

/**
 * Checks the log against the acknowledged publishes: the log is 1..last
 * gap-free, every acknowledged publish is at its offset with its payload,
 * no payload is stored twice, and each publisher's messages are in order.
 */
export function checkLog(log: LogEntry[], acked: AckedPublish[], publishers: number, sent: number[]): LogFigures {
  const problems: string[] = [];
  const counts = new Map<string, number>();
  const last = log.length === 0 ? 0 : log[log.length - 1]!.offset;
  let logGaps = 0;
  for (const [i, entry] of log.entries()) {
    if (entry.offset !== i + 1) {
      logGaps++;
      note(problems, counts, 'log gap', `position ${i} holds offset ${entry.offset}, expected ${i + 1}`);
    }
  }
  const byOffset = new Map<number, LogEntry>();
  for (const entry of log) byOffset.set(entry.offset, entry);

  let lost = 0;
  for (const a of acked) {
    const entry = byOffset.get(a.offset);
    const ok = entry !== undefined && isPayload(entry.data) && entry.data.p === a.p && entry.data.n === a.n;
    if (!ok) {
      lost++;
      note(problems, counts, 'lost', `p${a.p} n${a.n} acknowledged at offset ${a.offset}, log has ${entry ? JSON.stringify(entry.data) : 'nothing'} there`);
    }
  }

  let reordered = 0;
  const ackedBy = Array.from({ length: publishers }, () => [] as AckedPublish[]);
  for (const a of acked) ackedBy[a.p]!.push(a);
  for (const list of ackedBy) {
    list.sort((x, y) => x.n - y.n);
    for (let i = 1; i < list.length; i++) {
      if (list[i]!.offset <= list[i - 1]!.offset) {
        reordered++;
        note(problems, counts, 'reordered ack', `p${list[i]!.p}: n${list[i - 1]!.n}@${list[i - 1]!.offset} then n${list[i]!.n}@${list[i]!.offset}`);
      }
    }
  }

  let duplicated = 0;
  let foreign = 0;
  const seen = new Map<string, number>();
  const lastN = Array.from({ length: publishers }, () => -1);
  const ackedKeys = new Set(acked.map(keyOf));
  for (const entry of log) {
    if (!isPayload(entry.data) || entry.data.p < 0 || entry.data.p >= publishers || entry.data.n < 0 || entry.data.n >= (sent[entry.data.p] ?? 0)) {
      foreign++;
      note(problems, counts, 'foreign', `offset ${entry.offset} holds ${JSON.stringify(entry.data)}`);
      continue;
    }
    const k = keyOf(entry.data);
    if (entry.key !== k) {
      foreign++;
      note(problems, counts, 'foreign', `offset ${entry.offset} holds ${k} with key ${entry.key ?? '(none)'}`);
    }
    const before = seen.get(k);
    if (before !== undefined) {
      duplicated++;
      note(problems, counts, 'duplicated', `${k} at offsets ${before} and ${entry.offset}`);
      continue;
    }
    seen.set(k, entry.offset);
    // A publisher sends n+1 only after n was acknowledged, so acknowledged ones must appear in n order.
    if (ackedKeys.has(k)) {
      if (entry.data.n <= lastN[entry.data.p]!) {
        reordered++;
        note(problems, counts, 'reordered log', `${k} at offset ${entry.offset} after p${entry.data.p}-${lastN[entry.data.p]}`);
      }
      lastN[entry.data.p] = entry.data.n;
    }
  }
  return { last, logGaps, lost, reordered, duplicated, foreign, problems };
}

export interface SubscriberFigures {
  /** Offsets of 1..last never delivered. */
  missing: number;
  /** Deliveries of an offset already delivered. */
  duplicates: number;
  /** Deliveries whose offset is not the previous one + 1 (after the first). */
  outOfOrder: number;
  /** Deliveries whose data differs from the log's at that offset. */
  mismatched: number;
  /** Acknowledged offsets this subscriber never saw. */
  missedAcked: number;
  problems: string[];
}

/** A fan-out subscriber from offset 1 must have seen exactly 1..last, in order, with the log's data. */
export function checkSubscriber(name: string, delivered: Array<{ offset: number; data: unknown }>, log: LogEntry[], ackedOffsets: number[]): SubscriberFigures {
  const problems: string[] = [];
  const counts = new Map<string, number>();
  const last = log.length === 0 ? 0 : log[log.length - 1]!.offset;
  const byOffset = new Map(log.map((e) => [e.offset, e]));
  const seen = new Set<number>();
  let duplicates = 0;
  let outOfOrder = 0;
  let mismatched = 0;
  let previous = 0;
  for (const d of delivered) {
    if (seen.has(d.offset)) {
      duplicates++;
      note(problems, counts, `${name} duplicate`, `offset ${d.offset} again after ${previous}`);
    }
    if (d.offset !== previous + 1) {
      outOfOrder++;
      note(problems, counts, `${name} out of order`, `offset ${d.offset} after ${previous}`);
    }
    const entry = byOffset.get(d.offset);
    if (!entry || JSON.stringify(entry.data) !== JSON.stringify(d.data)) {
      mismatched++;
      note(
        problems,
        counts,
        `${name} mismatch`,
        `offset ${d.offset} delivered ${JSON.stringify(d.data)}, log has ${entry ? JSON.stringify(entry.data) : 'nothing'}`,
      );
    }
    seen.add(d.offset);
    previous = d.offset;
  }
  let missing = 0;
  for (let o = 1; o <= last; o++) {
    if (!seen.has(o)) {
      missing++;
      note(problems, counts, `${name} missing`, `offset ${o}`);
    }
  }
  const missedAcked = ackedOffsets.filter((o) => !seen.has(o)).length;
  return { missing, duplicates, outOfOrder, mismatched, missedAcked, problems };
}

export interface GroupDelivery {
  member: number;
  offset: number;
  delivery: number;
  data: unknown;
}

export interface GroupFigures {
  deliveries: number;
  /** Offsets of 1..last the group never handed to the application. */
  undelivered: number;
  /** Deliveries with a delivery count above 1. */
  redelivered: number;
  /** Deliveries of an offset the application had already been given (at-least-once duplicates). */
  duplicatesToApp: number;
  /** Deliveries whose data differs from the log's. */
  mismatched: number;
  problems: string[];
}

export function checkGroup(deliveries: GroupDelivery[], log: LogEntry[]): GroupFigures {
  const problems: string[] = [];
  const counts = new Map<string, number>();
  const byOffset = new Map(log.map((e) => [e.offset, e]));
  const seen = new Set<number>();
  let redelivered = 0;
  let duplicatesToApp = 0;
  let mismatched = 0;
  for (const d of deliveries) {
    if (d.delivery > 1) redelivered++;
    if (seen.has(d.offset)) duplicatesToApp++;
    seen.add(d.offset);
    const entry = byOffset.get(d.offset);
    if (!entry || JSON.stringify(entry.data) !== JSON.stringify(d.data)) {
      mismatched++;
      note(
        problems,
        counts,
        'group mismatch',
        `offset ${d.offset} delivered ${JSON.stringify(d.data)}, log has ${entry ? JSON.stringify(entry.data) : 'nothing'}`,
      );
    }
  }
  let undelivered = 0;
  for (const entry of log) {
    if (!seen.has(entry.offset)) {
      undelivered++;
      note(problems, counts, 'group never delivered', `offset ${entry.offset}`);
    }
  }
  return { deliveries: deliveries.length, undelivered, redelivered, duplicatesToApp, mismatched, problems };
}
