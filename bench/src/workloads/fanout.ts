/**
 * Fan-out: 500 WebSocket subscribers on one topic, one publisher keeping
 * `--window` publishes unanswered, for each payload size. Deliveries per
 * second until every subscriber had every message, publish→delivery latency
 * (send time in the message), and for MeshMQ over Redis the Redis commands
 * per delivery. Subscribers run in 4 load-agent processes, the publisher in a
 * fifth; each checks every message arrives once and in order.
 *
 * Systems: MeshMQ on 1 node (embedded engine) and on 2 nodes over Redis
 * (AOF appendfsync always), every message persisted before it is
 * acknowledged; a raw `ws` broadcast server; Socket.IO on 1 node (a room);
 * Socket.IO on 2 nodes with @socket.io/redis-adapter. The peers store
 * nothing: their durability column says so. On 2 nodes the subscribers are
 * split over both and the publisher is on the first.
 */
import {
  type BroadcastOutcome,
  BroadcastSession,
  type BroadcastSystem,
  type Deployment,
  describeErrors,
  exitedNodes,
  meshSystem,
  socketIoSystem,
  wsBroadcastSystem,
} from '../broadcast.js';
import { mergeHistograms, percentileMs } from '../hist.js';
import { medianMetrics } from '../stats.js';
import type { Row, Workload } from '../workload.js';

const SUBSCRIBERS = 500;
const AGENTS = 4;
/**
 * Messages per run, the same for every system (and each subscriber gets every one): with equal counts the queue a
 * saturated system builds, and so its latency, compares across systems. 400 × 500 = 200,000 deliveries a run.
 */
const MESSAGES = 400;
const QUICK_MESSAGES = 200;
/** Round 1 warms each system up first: this many messages per size, on a topic of their own, not measured. */
const WARMUP = 100;

export const fanout: Workload = {
  name: 'fanout',
  title: `Fan-out: ${SUBSCRIBERS} WebSocket subscribers on one topic, 1 publisher`,
  description: `Deliveries/s from the first publish until every subscriber had every message (median of the rounds that lost nothing); publish→delivery latency of all rounds merged (the publisher keeps --window publishes unanswered, so this is latency under full load, mostly queueing); server CPU-s per million deliveries (nodes + their Redis); Redis commands per delivery (INFO commandstats) for MeshMQ over Redis; "× peer" is MeshMQ's deliveries/s over Socket.IO's on as many nodes. Subscribers in ${AGENTS} load agents, the publisher in its own; ${MESSAGES} messages a run (${QUICK_MESSAGES} with --quick) for every system, after an unmeasured warm-up of ${WARMUP} in round 1.`,
  columns: [
    'deliveries/s',
    '× peer',
    'p50 ms',
    'p99 ms',
    'server CPU-s/M',
    'client CPU-s/M',
    'Redis calls/delivery',
    'dup',
    'lost',
    'out of order',
    'disconnected',
    'nodes down',
  ],
  async run(ctx) {
    const { quick, window, sizes, rounds } = ctx.options;
    const systems = [meshSystem(1), socketIoSystem(1), wsBroadcastSystem(), meshSystem(2), socketIoSystem(2)].filter((s) => ctx.wants(s.name));
    const deployments = new Map<BroadcastSystem, Promise<Deployment>>();
    const deploy = (s: BroadcastSystem) => {
      let d = deployments.get(s);
      if (!d) {
        d = s.setup(ctx);
        deployments.set(s, d);
      }
      return d;
    };
    const key = (s: BroadcastSystem, size: number) => `${s.name}/${size}`;
    const warmed = new Set<string>();
    /** Systems a node of which exited: why, so that later rounds say so instead of running against it. */
    const dead = new Map<BroadcastSystem, string>();
    const messages = quick ? QUICK_MESSAGES : MESSAGES;
    const topic = (system: BroadcastSystem, what: string, size: number) => `fanout-${process.pid}-${systems.indexOf(system)}-${what}-${size}`;
    // One session per system for the whole workload: 500 connections made once, subscribed up front to a topic per
    // size and round (and a warm-up topic per size), so each round only publishes.
    const sessions = new Map<BroadcastSystem, Promise<BroadcastSession>>();
    const session = (system: BroadcastSystem) => {
      let s = sessions.get(system);
      if (!s) {
        s = deploy(system).then((dep) =>
          BroadcastSession.open(ctx, dep, {
            subscribers: SUBSCRIBERS,
            agents: AGENTS,
            topics: sizes.flatMap((size) => ['warm', ...Array.from({ length: rounds }, (_, r) => `r${r + 1}`)].map((what) => topic(system, what, size))),
          }),
        );
        sessions.set(system, s);
      }
      return s;
    };
    try {
      const results = await ctx.alternate(
        systems,
        (s) => s.name,
        async (system, round) => {
          const gone = dead.get(system);
          if (gone) throw new Error(gone);
          const subs = await session(system);
          const dep = await deploy(system);
          const outs = new Map<number, BroadcastOutcome & { exited?: string[]; round?: number }>();
          for (const size of sizes) {
            if (!warmed.has(key(system, size))) {
              warmed.add(key(system, size));
              const warm = await subs.phase({ topic: topic(system, 'warm', size), messages: WARMUP, size, window, stallMs: 20_000, settleMs: 0 });
              if (warm.lost > 0 || warm.stalled) throw new Error(`warm-up: ${warm.lost} deliveries lost${warm.stalled ? ', stalled' : ''}`);
            }
            const out = await subs.phase({
              topic: topic(system, `r${round}`, size),
              messages,
              size,
              window,
              stallMs: 20_000,
              settleMs: 300,
            });
            ctx.debug(
              `${system.name} ${size} B: ${Math.round((out.deliveries / Math.max(1, out.elapsedMs)) * 1000)} deliveries/s, lost ${out.lost}, dup ${out.duplicates}`,
            );
            const exited = exitedNodes(dep);
            outs.set(size, Object.assign(out, { exited, round }));
            if (exited.length > 0) {
              // The rest of this system's runs would measure a broken cluster: stop here, say why.
              dead.set(system, `in round ${round} at ${size} B, ${exited.join('; ')}`);
              break;
            }
          }
          return outs;
        },
      );
      const outsOf = (system: BroadcastSystem, size: number) => (results.get(system) ?? []).flatMap((m) => (m.has(size) ? [m.get(size)!] : []));
      const rate = (system: BroadcastSystem, size: number) => {
        const v = rowMetrics(outsOf(system, size)).metrics['deliveries/s'];
        return typeof v === 'number' ? v : undefined;
      };
      const rows: Row[] = [];
      for (const size of sizes) {
        for (const system of systems) {
          const outs = outsOf(system, size);
          if (outs.length === 0) continue;
          const { metrics, raw, notes } = rowMetrics(outs);
          const peer = system.kind === 'meshmq' ? systems.find((p) => p.kind === 'socketio' && p.nodes === system.nodes) : undefined;
          const own = rate(system, size);
          const theirs = peer ? rate(peer, size) : undefined;
          rows.push({
            workload: 'fanout',
            system: system.name,
            durability: system.durability,
            size,
            params: { subscribers: SUBSCRIBERS, nodes: system.nodes, msgs: messages },
            metrics: {
              'deliveries/s': metrics['deliveries/s'] ?? null,
              '× peer': own !== undefined && theirs !== undefined && theirs > 0 ? `${(own / theirs).toFixed(2)}×` : null,
              'p50 ms': metrics['p50 ms'] ?? null,
              'p99 ms': metrics['p99 ms'] ?? null,
              'server CPU-s/M': metrics['server CPU-s/M'] ?? null,
              'client CPU-s/M': metrics['client CPU-s/M'] ?? null,
              'Redis calls/delivery': metrics['Redis calls/delivery'] ?? null,
              dup: metrics.dup ?? 0,
              lost: metrics.lost ?? 0,
              'out of order': metrics['out of order'] ?? 0,
              disconnected: metrics.disconnected ?? 0,
              'nodes down': outs.reduce((n, o) => n + (o.exited?.length ?? 0), 0),
            },
            rounds: raw,
            notes: [...notes, ...outs.flatMap((o) => (o.exited ?? []).map((e) => `round ${o.round}: ${e}`))],
          });
        }
      }
      return rows;
    } finally {
      for (const s of sessions.values()) await s.then((x) => x.close()).catch(() => {});
      for (const d of deployments.values()) await d.then((x) => x.stop()).catch(() => {});
    }
  },
};

/** One round's figures. */
export function roundMetrics(out: BroadcastOutcome): Record<string, number | null> {
  const perM = (x: number) => (out.deliveries > 0 ? (x / out.deliveries) * 1e6 : null);
  return {
    // A rate only from a round in which every subscriber got every acknowledged message: a round that lost some ended early.
    'deliveries/s': out.elapsedMs > 0 && out.deliveries > 0 && out.lost === 0 && !out.stalled ? (out.deliveries / out.elapsedMs) * 1000 : null,
    'p50 ms': percentileMs(out.latency, 50),
    'p99 ms': percentileMs(out.latency, 99),
    // A server process that exited during the run no longer reports its CPU time: no figure then.
    'server CPU-s/M': out.serverCpuS >= 0 ? perM(out.serverCpuS) : null,
    'client CPU-s/M': perM(out.clientCpuS),
    'Redis calls/delivery': out.redisCalls !== undefined && out.deliveries > 0 ? out.redisCalls / out.deliveries : null,
    'Redis calls': out.redisCalls ?? null,
    deliveries: out.deliveries,
    refused: Object.values(out.publisher.refused).reduce((n, c) => n + c, 0),
    dup: out.duplicates,
    lost: out.lost,
    'out of order': out.outOfOrder,
    'not in send order': out.notSendOrder,
    'wrong offset': out.wrongOffset,
    'no reply': out.publisher.unanswered,
    unacked: out.unacked,
    disconnected: out.disconnected,
  };
}

/** Medians over rounds; latency from the merged histogram; problem counts summed; notes naming every error. */
export function rowMetrics(outs: BroadcastOutcome[]): {
  metrics: Record<string, number | string | null>;
  raw: Record<string, number | null>[];
  notes: string[];
} {
  const raw = outs.map(roundMetrics);
  const metrics = medianMetrics(raw);
  const merged = mergeHistograms(outs.map((o) => o.latency));
  metrics['p50 ms'] = percentileMs(merged, 50);
  metrics['p99 ms'] = percentileMs(merged, 99);
  for (const key of ['refused', 'no reply', 'dup', 'lost', 'out of order', 'not in send order', 'wrong offset', 'unacked', 'disconnected'])
    metrics[key] = raw.reduce((n, r) => n + (r[key] ?? 0), 0);
  const notes: string[] = [];
  const refusals: Record<string, number> = {};
  const refusalSamples: Record<string, string> = {};
  const errors: Record<string, number> = {};
  const samples: Record<string, string> = {};
  for (const o of outs) {
    for (const [k, n] of Object.entries(o.publisher.refused)) refusals[k] = (refusals[k] ?? 0) + n;
    for (const [k, m] of Object.entries(o.publisher.refusedSamples)) refusalSamples[k] ??= m;
    for (const [k, n] of Object.entries(o.errors)) errors[k] = (errors[k] ?? 0) + n;
    for (const [k, m] of Object.entries(o.errorSamples)) samples[k] ??= m;
  }
  if (Object.keys(refusals).length > 0) notes.push(`publishes refused over ${outs.length} round(s): ${describeErrors(refusals, refusalSamples)}`);
  if (Object.keys(errors).length > 0) notes.push(`subscriber errors over ${outs.length} round(s): ${describeErrors(errors, samples)}`);
  const unacked = metrics.unacked as number;
  if (unacked > 0) notes.push(`${unacked} deliveries of messages whose publish was not acknowledged`);
  const noReply = metrics['no reply'] as number;
  if (noReply > 0) notes.push(`${noReply} publishes never answered (no acknowledgement within the reply timeout)`);
  const wrong = metrics['wrong offset'] as number;
  if (wrong > 0) notes.push(`${wrong} witness deliveries carried another message than the one acknowledged at that offset`);
  const reordered = metrics['not in send order'] as number;
  if (reordered > 0 && outs[0]?.subscribers.some((s) => s.witness.some(([, offset]) => offset > 0))) {
    // Where it happens, from a witness subscriber: the first offsets that carry another message than the next one sent.
    const examples: string[] = [];
    for (const o of outs) {
      let prev = -1;
      for (const [seq, offset] of o.subscribers[0]?.witness ?? []) {
        if (seq !== prev + 1 && examples.length < 4) examples.push(`offset ${offset} holds message ${seq + 1} of the ${o.publisher.sent} sent`);
        prev = seq;
      }
    }
    notes.push(
      `${reordered} deliveries in offset order but not in the order the publisher sent them on its one connection (${Math.round(reordered / outs.length / (outs[0]?.subscriberCount ?? 1))} messages a round per subscriber; e.g. ${examples.join(', ')})`,
    );
  }
  const last = outs[outs.length - 1];
  if (last?.redisCommands && last.deliveries > 0) {
    const top = Object.entries(last.redisCommands).sort((a, b) => b[1] - a[1]);
    notes.push(
      `Redis commands of the last round (INFO commandstats, commands run by scripts included): ${last.redisCalls} for ${last.deliveries} deliveries of ${last.publisher.acked} messages: ${top
        .slice(0, 8)
        .map(([name, n]) => `${name} ×${n}`)
        .join(', ')}`,
    );
  }
  const stalled = outs.filter((o) => o.stalled).length;
  if (stalled > 0) notes.push(`${stalled} round(s) ended by the stall timeout: subscribers stopped receiving before they had every acknowledged message`);
  return { metrics, raw, notes };
}
