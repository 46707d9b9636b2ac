/**
 * Burst: 2,000 publishes of 256 B pipelined on one connection (all sent in
 * one go, before any reply is read) to a topic with 500 subscribers. Counts
 * refused publishes (any error reply, by code), lost deliveries (an
 * acknowledged message a subscriber never got, after the settle time),
 * duplicates and deliveries out of order, subscribers disconnected, and nodes
 * down afterwards (process exited, or /readyz — the peers' /health — not
 * answering 200). Each round starts its systems afresh, so a crash in one
 * round does not carry over.
 *
 * Systems: MeshMQ on 2 nodes over Redis (AOF appendfsync always; publisher on
 * node A, subscribers split over A and B) and on 1 node (embedded engine);
 * Socket.IO on 2 nodes with @socket.io/redis-adapter (same placement) and on
 * 1 node. Socket.IO publishes are `pub` events with an acknowledgement, which
 * the server sends after `io.to(room).emit`; one missing after 120 s counts as
 * `no reply`.
 */
import { type BroadcastOutcome, lastWords, meshSystem, nodesDown, nodeWarnings, runBroadcast, socketIoSystem } from '../broadcast.js';
import { percentileMs } from '../hist.js';
import { medianMetrics } from '../stats.js';
import type { Row, Workload } from '../workload.js';
import { rowMetrics } from './fanout.js';

const SUBSCRIBERS = 500;
const AGENTS = 4;
const PUBLISHES = 2_000;
const SIZE = 256;
/** Rounds at most (each starts every system afresh and delivers a million messages): --rounds above this is cut to it. */
const MAX_ROUNDS = 2;
/** The run ends once every subscriber had every acknowledged message, or nothing new came for this long. */
const SETTLE_MS = 10_000;

interface RoundResult {
  out: BroadcastOutcome;
  down: string[];
  crashed: string[];
  warnings: Record<string, number>;
}

let seq = 0;

export const burst: Workload = {
  name: 'burst',
  title: `Burst: ${PUBLISHES.toLocaleString('en-US')} publishes of ${SIZE} B pipelined on one connection, ${SUBSCRIBERS} subscribers`,
  description: `Every publish sent at once, before any reply is read; refused (error replies and closed connections, by code), no reply (Socket.IO acknowledgements not received within 120 s), lost (acknowledged messages a subscriber never got, after up to ${SETTLE_MS / 1000} s without progress), dup, out of order and disconnected subscribers are summed over rounds; nodes down after the burst (exited, or not ready at any try within 15 s); time from the first publish until every subscriber had every acknowledged message (median); Redis commands per delivery for MeshMQ over Redis. Systems start afresh each round; at most ${MAX_ROUNDS} rounds.`,
  columns: [
    'refused',
    'no reply',
    'lost',
    'dup',
    'out of order',
    'nodes down',
    'disconnected',
    'all delivered s',
    'deliveries/s',
    'p99 ms',
    'Redis calls/delivery',
    'server CPU-s/M',
  ],
  async run(ctx) {
    const systems = [meshSystem(2), meshSystem(1), socketIoSystem(2), socketIoSystem(1)].filter((s) => ctx.wants(s.name));
    const results = await ctx.alternate(
      systems,
      (s) => s.name,
      async (system): Promise<RoundResult> => {
        const dep = await system.setup(ctx);
        try {
          const started = Date.now();
          const out = await runBroadcast(ctx, dep, {
            subscribers: SUBSCRIBERS,
            agents: AGENTS,
            topic: `burst-${process.pid}-${++seq}`,
            messages: PUBLISHES,
            size: SIZE,
            window: 0,
            stallMs: SETTLE_MS,
            settleMs: 1000,
            replyTimeoutMs: 120_000,
          });
          const downNodes = await nodesDown(dep);
          // MeshMQ nodes log at warn level what went wrong (a peer declared down, a Redis link dropped): keep it.
          const warnings = nodeWarnings(dep, started);
          const down = downNodes.map((d) => d.reason);
          // A node that went down: keep what it printed last for the notes.
          const crashed = downNodes.flatMap(({ node }) => {
            const words = lastWords(node);
            return words ? [`pid ${node.pid}${words}`] : [];
          });
          return { out, down, crashed, warnings };
        } finally {
          await dep.stop();
        }
      },
      Math.min(ctx.options.rounds, MAX_ROUNDS),
    );
    const rows: Row[] = [];
    for (const system of systems) {
      const rs = results.get(system) ?? [];
      if (rs.length === 0) continue;
      const { metrics, raw, notes } = rowMetrics(rs.map((r) => r.out));
      const perRound = rs.map((r, i) => ({
        ...raw[i],
        'nodes down': r.down.length,
        'all delivered s': r.out.lost === 0 && !r.out.stalled ? r.out.elapsedMs / 1000 : null,
        'p99 ms': percentileMs(r.out.latency, 99),
        ...(r.down.some((d) => d.includes('exited')) ? { 'server CPU-s/M': null } : {}),
      }));
      const med = medianMetrics(perRound);
      const down = rs.flatMap((r, i) => r.down.map((d) => `round ${i + 1}: ${d}`));
      if (down.length > 0) notes.push(`nodes down after the burst: ${down.join('; ')}`);
      const warned = rs.flatMap((r, i) => Object.entries(r.warnings).map(([m, n]) => `round ${i + 1}: ${m} ×${n}`));
      if (warned.length > 0) notes.push(`nodes logged during the burst: ${warned.join('; ')}`);
      const last = rs.flatMap((r, i) => r.crashed.map((c) => `round ${i + 1}: ${c}`));
      if (last.length > 0) notes.push(`last output of the nodes down: ${last.join('; ')}`);
      const lostRounds = rs.filter((r) => r.out.lost > 0).length;
      if (lostRounds > 0) notes.push(`${lostRounds} of ${rs.length} round(s) lost deliveries, so "all delivered s" is the median of the other rounds`);
      rows.push({
        workload: 'burst',
        system: system.name,
        durability: system.durability,
        size: SIZE,
        params: { publishes: PUBLISHES, subscribers: SUBSCRIBERS, nodes: system.nodes },
        metrics: {
          refused: metrics.refused ?? 0,
          'no reply': metrics['no reply'] ?? 0,
          lost: metrics.lost ?? 0,
          dup: metrics.dup ?? 0,
          'out of order': metrics['out of order'] ?? 0,
          'nodes down': rs.reduce((n, r) => n + r.down.length, 0),
          disconnected: metrics.disconnected ?? 0,
          'all delivered s': med['all delivered s'] ?? null,
          'deliveries/s': metrics['deliveries/s'] ?? null,
          'p99 ms': metrics['p99 ms'] ?? null,
          'Redis calls/delivery': metrics['Redis calls/delivery'] ?? null,
          'server CPU-s/M': med['server CPU-s/M'] ?? null,
        },
        rounds: perRound,
        notes,
      });
    }
    return rows;
  },
};
