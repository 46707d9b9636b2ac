/**
 * Connections: 10,000 idle WebSocket connections to one node (2,000 with
 * --quick), each subscribed: MeshMQ over plain ws, each subscribing to one of
 * 100 topics (created beforehand); Socket.IO, each joining one of 100 rooms;
 * a raw `ws` server, each connection kept in its set of clients. Measures the
 * server's resident memory per connection: RSS (VmRSS) with every connection
 * open and subscribed, after a settle time and a forced full GC, minus RSS
 * before any (also after a GC), over the count. The GC goes through the V8
 * inspector (SIGUSR1 on a process started with --inspect-port), the same way
 * for every server. Clients come from 5 load agents (2 with --quick), each
 * from a source address of its own (127.0.0.11, .12, …) with CONCURRENCY
 * handshakes in flight. Afterwards one message per topic (room) checks that
 * every connection still receives: `unreached` counts connections that did
 * not get theirs.
 */

import {
  BroadcastAgent,
  type Deployment,
  describeErrors,
  Inspector,
  mergeCounts,
  mergeSamples,
  NOT_STORED,
  type PeerServer,
  rssKiB,
  split,
  startPeerServer,
  startSubscribers,
} from '../broadcast.js';
import type { PublisherResult, SubscribersJob } from '../broadcast-agent.js';
import type { BenchContext } from '../context.js';
import { DURABILITY } from '../durability.js';
import { freePort, sleep } from '../proc.js';
import { medianMetrics } from '../stats.js';
import type { Row, Workload } from '../workload.js';

const TOPICS = 100;
/** Rounds at most (a round opens 10,000 connections, which takes a minute for some servers): --rounds above this is cut to it. */
const MAX_ROUNDS = 2;
const CONCURRENCY = 50;

interface System {
  name: string;
  durability: string;
  kind: 'meshmq' | 'ws' | 'socketio';
  /** Starts the server with `nodeArgs` before its script. */
  start(ctx: BenchContext, nodeArgs: string[], connections: number): Promise<Deployment & { pid: number }>;
}

function peer(kind: 'ws' | 'socketio', name: string): System {
  return {
    name,
    durability: NOT_STORED,
    kind,
    async start(_ctx, nodeArgs) {
      const server: PeerServer = await startPeerServer(kind, { nodeArgs });
      return {
        kind,
        pid: server.pid,
        subscriberUrls: [server.url],
        publishUrl: server.url,
        nodes: [{ pid: server.pid, healthUrl: server.healthUrl }],
        pids: [server.pid],
        stop: () => server.stop(),
      };
    },
  };
}

const SYSTEMS: System[] = [
  {
    name: 'meshmq embedded (1 node, ws)',
    durability: DURABILITY.fsync,
    kind: 'meshmq',
    async start(ctx, nodeArgs, connections) {
      const limit = String(connections + 1_000);
      const cluster = await ctx.startMeshNodes({
        engine: 'embedded',
        count: 1,
        nodeArgs,
        extraArgs: ['--max-connections', limit, '--max-connections-per-address', limit],
      });
      const node = cluster.nodes[0]!;
      return {
        kind: 'meshmq',
        pid: node.pid,
        subscriberUrls: [node.wsUrl],
        publishUrl: node.wsUrl,
        nodes: [{ pid: node.pid, healthUrl: `${node.url}/readyz` }],
        pids: [node.pid],
        stop: () => ctx.stop(cluster),
      };
    },
  },
  peer('ws', 'raw ws (1 node)'),
  peer('socketio', 'socket.io (1 node)'),
];

let seq = 0;

/** One round: a fresh server, its memory before and after `count` idle subscribed connections, then a delivery check. */
async function measure(ctx: BenchContext, system: System, count: number, agents: number, settleMs: number): Promise<Record<string, number | string | null>> {
  const inspectPort = await freePort();
  const dep = await system.start(ctx, [`--inspect-port=127.0.0.1:${inspectPort}`], count);
  const run = ++seq;
  const topics = system.kind === 'ws' ? ['all'] : Array.from({ length: TOPICS }, (_, i) => `conn-${process.pid}-${run}-${i}`);
  let inspector: Inspector | undefined;
  let subscribers: BroadcastAgent[] = [];
  try {
    if (system.kind === 'meshmq') {
      // The topics exist before the baseline: what is measured is the connections and their subscriptions.
      await publishOnce(dep, topics);
    }
    inspector = await Inspector.open(dep.pid, inspectPort);
    await sleep(1000);
    const heapBefore = await inspector.gc();
    await sleep(500);
    const rssBefore = rssKiB(dep.pid)!;
    const jobs: SubscribersJob[] = split(count, agents).map(({ first, count: n }, a) => ({
      role: 'subscribers',
      kind: dep.kind,
      urls: dep.subscriberUrls,
      first,
      count: n,
      topics,
      spread: true,
      // One source address per agent, so no single address needs more than its share of ephemeral ports.
      localAddresses: [`127.0.0.${11 + a}`],
      concurrency: CONCURRENCY,
    }));
    const started = performance.now();
    const { agents: started_, ready } = await startSubscribers(jobs, true);
    subscribers = started_;
    const connectS = (performance.now() - started) / 1000;
    const connected = ready.reduce((n, r) => n + r.connected, 0);
    const failed = ready.reduce((n, r) => n + r.failed, 0);
    const failures = failed > 0 ? describeErrors(mergeCounts(ready.map((r) => r.errors)), mergeSamples(ready.map((r) => r.errorSamples))) : '';
    await sleep(settleMs);
    const heapAfter = await inspector.gc();
    await sleep(500);
    const rssAfter = rssKiB(dep.pid)!;
    ctx.debug(`${system.name}: ${connected} connected in ${connectS.toFixed(1)} s; RSS ${rssBefore} → ${rssAfter} KiB; heap ${heapBefore} → ${heapAfter} B`);

    // Every connection still receives: one message per topic (room); raw ws: one broadcast.
    for (const a of subscribers) a.send('go', { expect: 1 });
    const publisher = await publishOnce(dep, topics);
    const deadline = performance.now() + 15_000;
    while (performance.now() < deadline && subscribers.reduce((n, a) => n + a.progress.unique, 0) < connected) await sleep(100);
    await sleep(300);
    const results = await Promise.all(subscribers.map((a) => a.report()));
    const reached = results.reduce((n, r) => n + r.unique, 0);
    return {
      connections: connected,
      failed,
      'RSS/conn KiB': connected > 0 ? (rssAfter - rssBefore) / connected : null,
      'heap/conn KiB': connected > 0 ? (heapAfter - heapBefore) / 1024 / connected : null,
      'RSS before MiB': rssBefore / 1024,
      'RSS after MiB': rssAfter / 1024,
      'connect s': connectS,
      unreached: connected - reached,
      dup: results.reduce((n, r) => n + r.duplicates, 0),
      refused: publisher.sent - publisher.acked,
      disconnected: results.reduce((n, r) => n + r.disconnected, 0),
      failures,
    };
  } finally {
    inspector?.close();
    await Promise.all(subscribers.map((a) => a.close(10_000)));
    await dep.stop();
  }
}

/** Publishes one message (sequence 0) to each topic from a publisher agent and waits for the replies. */
async function publishOnce(dep: Deployment, topics: string[]): Promise<PublisherResult> {
  const agent = new BroadcastAgent({ role: 'publisher', kind: dep.kind, url: dep.publishUrl });
  try {
    await agent.ready;
    const done = agent.wait('published');
    agent.send('go', { topics, count: 1, size: 100, window: 100, replyTimeoutMs: 15_000 });
    return (await done).result as PublisherResult;
  } finally {
    await agent.close(2000);
  }
}

export const connections: Workload = {
  name: 'connections',
  title: 'Connections: 10,000 idle WebSocket connections to one node, each subscribed (2,000 with --quick)',
  description: `Server memory per connection: (RSS with every connection open and subscribed − RSS before), after a settle time and a forced full GC (V8 inspector, the same for every server), over the connections (median of rounds); heap/conn is V8's used heap the same way. Clients from 5 load agents (2 with --quick), each from its own 127.0.0.x; at most ${MAX_ROUNDS} rounds. After measuring, one message per topic (room) checks every connection still receives: unreached counts those that did not.`,
  columns: [
    'connections',
    'failed',
    'RSS/conn KiB',
    '× raw ws',
    'heap/conn KiB',
    'RSS before MiB',
    'RSS after MiB',
    'connect s',
    'unreached',
    'dup',
    'disconnected',
  ],
  async run(ctx) {
    const { quick } = ctx.options;
    const count = quick ? 2_000 : 10_000;
    const agents = quick ? 2 : 5;
    const settleMs = quick ? 2_000 : 5_000;
    const systems = SYSTEMS.filter((s) => ctx.wants(s.name));
    const results = await ctx.alternate(
      systems,
      (s) => s.name,
      (system) => measure(ctx, system, count, agents, settleMs),
      Math.min(ctx.options.rounds, MAX_ROUNDS),
    );
    const perConn = (s: System) => {
      const rounds = results.get(s) ?? [];
      const v = medianMetrics(rounds.map(({ failures: _f, ...r }) => r))['RSS/conn KiB'];
      return typeof v === 'number' ? v : undefined;
    };
    const raw = systems.find((s) => s.kind === 'ws');
    const rows: Row[] = [];
    for (const system of systems) {
      const rounds = results.get(system) ?? [];
      if (rounds.length === 0) continue;
      const metrics = medianMetrics(rounds.map(({ failures: _f, ...r }) => r));
      for (const key of ['failed', 'unreached', 'dup', 'refused', 'disconnected']) metrics[key] = rounds.reduce((n, r) => n + (Number(r[key]) || 0), 0);
      const own = perConn(system);
      const base = raw ? perConn(raw) : undefined;
      const notes: string[] = [];
      const failures = rounds.map((r, i) => (r.failures ? `round ${i + 1}: ${r.failures}` : '')).filter(Boolean);
      if (failures.length > 0) notes.push(`connections refused or failed: ${failures.join('; ')}`);
      if (Number(metrics.refused) > 0) notes.push(`${metrics.refused} check publishes refused`);
      if (quick) notes.push(`--quick: ${count.toLocaleString('en-US')} connections, not 10,000`);
      rows.push({
        workload: 'connections',
        system: system.name,
        durability: system.durability,
        params: { target: count, topics: system.kind === 'ws' ? '-' : TOPICS },
        metrics: {
          connections: metrics.connections ?? null,
          failed: metrics.failed ?? 0,
          'RSS/conn KiB': metrics['RSS/conn KiB'] ?? null,
          '× raw ws': own !== undefined && base !== undefined && base > 0 ? `${(own / base).toFixed(2)}×` : null,
          'heap/conn KiB': metrics['heap/conn KiB'] ?? null,
          'RSS before MiB': metrics['RSS before MiB'] ?? null,
          'RSS after MiB': metrics['RSS after MiB'] ?? null,
          'connect s': metrics['connect s'] ?? null,
          unreached: metrics.unreached ?? 0,
          dup: metrics.dup ?? 0,
          disconnected: metrics.disconnected ?? 0,
        },
        rounds,
        notes,
      });
    }
    return rows;
  },
};
