/**
 * What the broadcast workloads (fanout, burst, connections) share: the
 * systems they compare (MeshMQ on 1 node and on 2 nodes over Redis, a raw
 * `ws` broadcast server, Socket.IO on one node and on two with
 * @socket.io/redis-adapter), the load agents holding the subscribers
 * (broadcast-agent.ts), one measured broadcast run with its exactly-once
 * checks, Redis command counts, and a node's memory after a forced GC.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type {
  BroadcastJob,
  BroadcastKind,
  PublisherPhase,
  PublisherResult,
  SubscriberPhase,
  SubscribersJob,
  SubscribersReady,
  SubscribersResult,
} from './broadcast-agent.js';
import type { BenchContext, Service } from './context.js';
import { DURABILITY } from './durability.js';
import { type Histogram, mergeHistograms } from './hist.js';
import { type Child, freePort, isListening, nextAgentMessage, onCleanup, sleep, startChild, waitFor } from './proc.js';

export type { BroadcastKind } from './broadcast-agent.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const AGENT = join(HERE, 'broadcast-agent.js');
const SERVER = join(HERE, 'broadcast-server.js');

/** The durability column of the raw ws and Socket.IO peers: a message is never stored, only sent to whoever is connected. */
export const NOT_STORED = 'none (in memory, not stored)';

// ---- deployments ------------------------------------------------------------------

export interface BroadcastNode {
  pid: number;
  /** The node's last output lines (for a crash report), when the bench started it itself. */
  output?: () => string;
  /** GET answers 200 while the node is ready: MeshMQ /readyz, the peers' /health. */
  healthUrl: string;
}

/** One system, started: where subscribers and the publisher connect, and what to watch. */
export interface Deployment {
  kind: BroadcastKind;
  /** One URL per node; subscriber g connects to subscriberUrls[g % n]. */
  subscriberUrls: string[];
  /** The publisher's node (always the first). */
  publishUrl: string;
  nodes: BroadcastNode[];
  /** Every server process whose CPU counts (nodes, and the Redis they use). */
  pids: number[];
  /** MeshMQ over Redis: the Redis whose commands are counted (INFO commandstats). */
  redisUrl?: string;
  stop(): Promise<void>;
}

export interface BroadcastSystem {
  /** Printed in the table, matched by --systems. */
  name: string;
  durability: string;
  kind: BroadcastKind;
  nodes: number;
  setup(ctx: BenchContext): Promise<Deployment>;
}

export interface PeerServer {
  port: number;
  pid: number;
  child: Child;
  /** ws://127.0.0.1:<port> (ws) or http://127.0.0.1:<port> (Socket.IO). */
  url: string;
  healthUrl: string;
  stop(): Promise<void>;
}

/**
 * Starts a peer of broadcast-server.ts on a free port. `nodeArgs` go before
 * the script (e.g. `--inspect-port=…`).
 */
export async function startPeerServer(kind: 'ws' | 'socketio', options: { redisUrl?: string; nodeArgs?: string[] } = {}): Promise<PeerServer> {
  const port = await freePort();
  const child = startChild(process.execPath, [...(options.nodeArgs ?? []), SERVER, kind, String(port), ...(options.redisUrl ? [options.redisUrl] : [])]);
  await waitFor(`${kind} server on ${port}`, () => isListening(port), 20_000, child);
  return {
    port,
    pid: child.pid,
    child,
    url: kind === 'ws' ? `ws://127.0.0.1:${port}` : `http://127.0.0.1:${port}`,
    healthUrl: `http://127.0.0.1:${port}/health`,
    stop: () => child.stop(2000),
  };
}

function peerDeployment(kind: 'ws' | 'socketio', servers: PeerServer[], extraPids: number[], stopExtra: () => Promise<void>): Deployment {
  return {
    kind,
    subscriberUrls: servers.map((s) => s.url),
    publishUrl: servers[0]!.url,
    nodes: servers.map((s) => ({ pid: s.pid, healthUrl: s.healthUrl, output: () => s.child.output() })),
    pids: [...servers.map((s) => s.pid), ...extraPids],
    async stop() {
      await Promise.all(servers.map((s) => s.stop()));
      await stopExtra();
    },
  };
}

export function wsBroadcastSystem(): BroadcastSystem {
  return {
    name: 'raw ws broadcast (1 node)',
    durability: NOT_STORED,
    kind: 'ws',
    nodes: 1,
    async setup() {
      const server = await startPeerServer('ws');
      return peerDeployment('ws', [server], [], async () => {});
    },
  };
}

export function socketIoSystem(nodes: 1 | 2): BroadcastSystem {
  return {
    name: nodes === 1 ? 'socket.io (1 node)' : 'socket.io + redis-adapter (2 nodes)',
    durability: NOT_STORED,
    kind: 'socketio',
    nodes,
    async setup(ctx) {
      if (nodes === 1) return peerDeployment('socketio', [await startPeerServer('socketio')], [], async () => {});
      // The adapter's Redis only relays pub/sub: no persistence needed or claimed.
      const redis: Service = await ctx.startRedis('none');
      const servers: PeerServer[] = [];
      try {
        for (let i = 0; i < nodes; i++) servers.push(await startPeerServer('socketio', { redisUrl: redis.url }));
      } catch (err) {
        await Promise.all(servers.map((s) => s.stop()));
        await ctx.stop(redis);
        throw err;
      }
      return peerDeployment('socketio', servers, redis.pids, () => ctx.stop(redis));
    },
  };
}

/** MeshMQ, every message persisted: the embedded engine (1 node) or 2 nodes over a Redis of the bench's with AOF appendfsync always. */
export function meshSystem(nodes: 1 | 2, extraArgs: string[] = []): BroadcastSystem {
  return {
    name: nodes === 1 ? 'meshmq embedded (1 node, ws)' : 'meshmq redis engine (2 nodes, ws), AOF always',
    durability: DURABILITY.fsync,
    kind: 'meshmq',
    nodes,
    async setup(ctx) {
      if (nodes === 1) {
        const cluster = await ctx.startMeshNodes({ engine: 'embedded', count: 1, extraArgs });
        return meshDeployment(cluster, [], undefined, () => ctx.stop(cluster));
      }
      const redis = await ctx.startRedis('always');
      const cluster = await ctx.startMeshNodes({ engine: 'redis', count: nodes, redis: redis.url, extraArgs });
      return meshDeployment(cluster, redis.pids, redis.url, async () => {
        await ctx.stop(cluster);
        await ctx.stop(redis);
      });
    },
  };
}

function meshDeployment(
  cluster: { nodes: { url: string; wsUrl: string; pid: number; port: number }[]; pids: number[]; output(): Record<number, string> },
  extraPids: number[],
  redisUrl: string | undefined,
  stop: () => Promise<void>,
): Deployment {
  return {
    kind: 'meshmq',
    subscriberUrls: cluster.nodes.map((n) => n.wsUrl),
    publishUrl: cluster.nodes[0]!.wsUrl,
    nodes: cluster.nodes.map((n) => ({ pid: n.pid, healthUrl: `${n.url}/readyz`, output: () => cluster.output()[n.port] ?? '' })),
    pids: [...cluster.pids, ...extraPids],
    ...(redisUrl ? { redisUrl } : {}),
    stop,
  };
}

/**
 * Nodes whose process exited, or whose health URL did not answer 200 at any
 * try within `withinMs` (a node still busy with a burst gets that long), with why.
 */
export async function nodesDown(dep: Deployment, withinMs = 15_000): Promise<{ node: BroadcastNode; reason: string }[]> {
  const down: { node: BroadcastNode; reason: string }[] = [];
  for (const [i, node] of dep.nodes.entries()) {
    const which = dep.nodes.length > 1 ? `node ${i + 1} of ${dep.nodes.length}${i === 0 ? " (the publisher's)" : ''}: ` : '';
    const deadline = performance.now() + withinMs;
    let last = '';
    for (;;) {
      if (!processAlive(node.pid)) {
        last = `pid ${node.pid} exited`;
        break;
      }
      try {
        const res = await fetch(node.healthUrl, { signal: AbortSignal.timeout(3000) });
        await res.arrayBuffer();
        if (res.ok) {
          last = '';
          break;
        }
        last = `${node.healthUrl} answered ${res.status} for ${withinMs / 1000} s`;
      } catch (err) {
        last = `${node.healthUrl} did not answer within ${withinMs / 1000} s (${err instanceof Error ? err.message : String(err)})`;
      }
      if (performance.now() > deadline) break;
      await sleep(500);
    }
    if (last) down.push({ node, reason: which + last });
  }
  return down;
}

/** Nodes whose process has exited, each with the error it printed last (its own lines and the first stack frame). */
export function exitedNodes(dep: Deployment): string[] {
  const out: string[] = [];
  for (const [i, node] of dep.nodes.entries()) {
    if (processAlive(node.pid)) continue;
    const which = dep.nodes.length > 1 ? `node ${i + 1} of ${dep.nodes.length}${i === 0 ? " (the publisher's)" : ''}` : 'the node';
    out.push(`${which} (pid ${node.pid}) exited${lastWords(node)}`);
  }
  return out;
}

/** `: <what it printed last>` for a node started by the bench, or ''. */
export function lastWords(node: BroadcastNode): string {
  const output = node.output?.().trim();
  if (!output) return '';
  const lines = output.split('\n').filter((l) => l.trim() !== '');
  const firstFrame = lines.findIndex((l) => /^\s+at /.test(l));
  const head = lines.filter((l) => !/^\s+at /.test(l)).slice(-6);
  return `: ${[...head, ...(firstFrame >= 0 ? [lines[firstFrame]!.trim()] : [])].join(' | ').slice(0, 900)}`;
}

/**
 * What MeshMQ nodes logged at warn level or above since `sinceMs` (wall clock),
 * by message, with the node's index: e.g. a peer declared down, a Redis link dropped.
 */
export function nodeWarnings(dep: Deployment, sinceMs: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [i, node] of dep.nodes.entries()) {
    for (const line of (node.output?.() ?? '').split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        const entry = JSON.parse(line) as { level?: number; time?: number; msg?: string };
        if ((entry.level ?? 0) >= 40 && (entry.time ?? 0) >= sinceMs) {
          const key = `node ${i + 1}: ${entry.msg ?? line.slice(0, 120)}`;
          out[key] = (out[key] ?? 0) + 1;
        }
      } catch {
        // a line cut by the output's tail
      }
    }
  }
  return out;
}

function processAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

// ---- load agents ----------------------------------------------------------------

interface Progress {
  unique: number;
  lastNewAt: number;
  disconnected: number;
}

/** One broadcast-agent.ts process. */
export class BroadcastAgent {
  private readonly proc: ChildProcess;
  private readonly exited: Promise<void>;
  readonly ready: Promise<SubscribersReady>;
  progress: Progress = { unique: 0, lastNewAt: 0, disconnected: 0 };
  private failure: Error | undefined;

  constructor(job: BroadcastJob) {
    this.proc = fork(AGENT, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: [] });
    const proc = this.proc;
    onCleanup(() => this.kill());
    this.exited = new Promise((resolve) => {
      if (proc.exitCode !== null || proc.signalCode !== null) resolve();
      else proc.once('exit', () => resolve());
    });
    proc.on('message', (msg: { type: string } & Partial<Progress> & { message?: string }) => {
      if (msg.type === 'progress') this.progress = { unique: msg.unique ?? 0, lastNewAt: msg.lastNewAt ?? 0, disconnected: msg.disconnected ?? 0 };
      else if (msg.type === 'error') this.failure = new Error(`load agent: ${msg.message}`);
    });
    this.ready = this.wait('ready').then((m) => m.ready as SubscribersReady);
    this.ready.catch(() => {});
    proc.send({ type: 'prepare', job });
  }

  /** Waits for the next message of `type`; rejects on an error message or the agent's exit. */
  wait(type: string): Promise<Record<string, unknown>> {
    if (this.failure) return Promise.reject(this.failure);
    return nextAgentMessage(this.proc, type, 'load agent: ');
  }

  send(type: string, phase?: SubscriberPhase | PublisherPhase): void {
    if (this.proc.connected) this.proc.send(phase ? { type, phase } : { type });
  }

  async report(): Promise<SubscribersResult> {
    const reply = this.wait('result');
    this.send('report');
    return (await reply).result as SubscribersResult;
  }

  kill(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }

  /** Asks the agent to close its connections and exit; kills it after `ms`. */
  async close(ms = 5000): Promise<void> {
    this.send('close');
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.exited, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
    clearTimeout(timer);
    this.kill();
    await this.exited;
  }
}

/** Splits `total` subscribers over `agents` agents: [first, count] each. */
export function split(total: number, agents: number): { first: number; count: number }[] {
  const out: { first: number; count: number }[] = [];
  let first = 0;
  for (let a = 0; a < agents; a++) {
    const count = Math.floor(total / agents) + (a < total % agents ? 1 : 0);
    if (count > 0) out.push({ first, count });
    first += count;
  }
  return out;
}

/** Starts subscriber agents for `jobs` and waits until every one is connected and subscribed; throws (after closing them) if any failed. */
export async function startSubscribers(jobs: SubscribersJob[], allowFailures = false): Promise<{ agents: BroadcastAgent[]; ready: SubscribersReady[] }> {
  const agents = jobs.map((job) => new BroadcastAgent(job));
  try {
    const ready = await Promise.all(agents.map((a) => a.ready));
    const failed = ready.reduce((n, r) => n + r.failed, 0);
    if (failed > 0 && !allowFailures) {
      throw new Error(
        `${failed} subscriber(s) could not connect or subscribe: ${describeErrors(mergeCounts(ready.map((r) => r.errors)), mergeSamples(ready.map((r) => r.errorSamples)))}`,
      );
    }
    return { agents, ready };
  } catch (err) {
    await Promise.all(agents.map((a) => a.close(2000)));
    throw err;
  }
}

export function mergeCounts(parts: Record<string, number>[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const p of parts) for (const [k, n] of Object.entries(p)) out[k] = (out[k] ?? 0) + n;
  return out;
}

export function mergeSamples(parts: Record<string, string>[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of parts) for (const [k, m] of Object.entries(p)) out[k] ??= m;
  return out;
}

export function describeErrors(counts: Record<string, number>, samples: Record<string, string>): string {
  return Object.entries(counts)
    .map(([code, n]) => `${code} ×${n}${samples[code] && samples[code] !== code ? ` ("${samples[code]!.slice(0, 160)}")` : ''}`)
    .join(', ');
}

// ---- broadcast runs ----------------------------------------------------------------

export interface SessionOptions {
  subscribers: number;
  /** Subscriber agents (processes). */
  agents: number;
  /** Topics every subscriber subscribes to (joins): one per phase to come. */
  topics: string[];
}

export interface PhaseOptions {
  topic: string;
  messages: number;
  size: number;
  /** Publishes unanswered at most; 0: all sent at once. */
  window: number;
  /** The phase ends when nothing new arrived for this long (after the publisher is done). */
  stallMs: number;
  /** Extra wait once every message was delivered, so that late duplicates show. */
  settleMs: number;
  /** How long the publisher waits for the last replies (default: max(stallMs, 30 s)). */
  replyTimeoutMs?: number;
}

export interface BroadcastOutcome {
  publisher: PublisherResult;
  subscribers: SubscribersResult[];
  subscriberCount: number;
  /** Unique deliveries (subscriber, message). */
  deliveries: number;
  /** Deliveries that should have happened: acknowledged publishes × subscribers. */
  expected: number;
  /** Acknowledged messages a subscriber never got, summed over subscribers. */
  lost: number;
  /** Deliveries of messages whose publish was not acknowledged (refused, or no reply). */
  unacked: number;
  duplicates: number;
  /** Deliveries out of the system's order (MeshMQ: offsets; peers: send order). */
  outOfOrder: number;
  /** Deliveries in another order than the publisher sent them (MeshMQ: offsets need not follow send order). */
  notSendOrder: number;
  /** MeshMQ: a witness subscriber's deliveries whose offset is not the one the publisher was told for that message. */
  wrongOffset: number;
  disconnected: number;
  /** From the first publish to the last new delivery. */
  elapsedMs: number;
  latency: Histogram;
  serverCpuS: number;
  clientCpuS: number;
  /** INFO commandstats calls on the MeshMQ nodes' Redis during the phase, less the one INFO of the first count (MeshMQ over Redis only). */
  redisCalls?: number;
  /** The same by command name (commands run by scripts count under their own names, as INFO commandstats counts them). */
  redisCommands?: Record<string, number>;
  stalled: boolean;
  errors: Record<string, number>;
  errorSamples: Record<string, string>;
}

/**
 * Subscribers connected to a deployment (spread over its nodes and over
 * `agents` processes) and one publisher on its first node, each in a load
 * agent; `phase` runs one measured broadcast over them.
 */
export class BroadcastSession {
  private constructor(
    private readonly ctx: BenchContext,
    private readonly dep: Deployment,
    private readonly o: SessionOptions,
    private readonly agents: BroadcastAgent[],
    private readonly publisher: BroadcastAgent,
  ) {}

  static async open(ctx: BenchContext, dep: Deployment, o: SessionOptions): Promise<BroadcastSession> {
    const jobs: SubscribersJob[] = split(o.subscribers, o.agents).map(({ first, count }) => ({
      role: 'subscribers',
      kind: dep.kind,
      urls: dep.subscriberUrls,
      first,
      count,
      topics: o.topics,
      concurrency: 32,
      ...(dep.kind === 'meshmq' ? { from: 1 } : {}),
    }));
    const t0 = performance.now();
    const { agents } = await startSubscribers(jobs);
    ctx.debug(`${o.subscribers} subscribers connected and subscribed in ${Math.round(performance.now() - t0)} ms`);
    const publisher = new BroadcastAgent({ role: 'publisher', kind: dep.kind, url: dep.publishUrl });
    try {
      await publisher.ready;
    } catch (err) {
      await Promise.all([publisher.close(1000), ...agents.map((a) => a.close(2000))]);
      throw err;
    }
    return new BroadcastSession(ctx, dep, o, agents, publisher);
  }

  async phase(p: PhaseOptions): Promise<BroadcastOutcome> {
    const { ctx, dep, agents, publisher } = this;
    const subscribers = this.o.subscribers;
    const redis = dep.redisUrl ? await RedisCounter.open(dep.redisUrl) : undefined;
    try {
      for (const a of agents) a.progress = { unique: 0, lastNewAt: 0, disconnected: a.progress.disconnected };
      const before = await redis?.byCommand();
      const meter = ctx.cpu(dep.pids);
      const subPhase: SubscriberPhase = { expect: p.messages, topic: p.topic };
      for (const a of agents) a.send('go', subPhase);
      const published = publisher.wait('published');
      const pubPhase: PublisherPhase = {
        topics: [p.topic],
        count: p.messages,
        size: p.size,
        window: p.window,
        replyTimeoutMs: p.replyTimeoutMs ?? Math.max(p.stallMs, 30_000),
      };
      publisher.send('go', pubPhase);
      let pub: PublisherResult | undefined;
      let pubError: unknown;
      published.then(
        (m) => (pub = m.result as PublisherResult),
        (err: unknown) => (pubError = err),
      );
      const total = () => agents.reduce((n, a) => n + a.progress.unique, 0);
      let seen = -1;
      let changedAt = performance.now();
      let stalled = false;
      for (;;) {
        await sleep(100);
        if (pubError) throw pubError;
        const t = total();
        if (t !== seen) {
          seen = t;
          changedAt = performance.now();
        }
        if (pub && t >= pub.acked * subscribers) break;
        // Stalled: nothing new for stallMs once the publisher is done (or for twice as long while it still waits for replies).
        const idle = performance.now() - changedAt;
        if ((pub && idle > p.stallMs) || idle > p.stallMs * 2) {
          stalled = true;
          break;
        }
      }
      await sleep(p.settleMs);
      const serverCpuS = meter.stop();
      const after = await redis?.byCommand();
      if (!pub) pub = ((await Promise.race([published, sleep(5000).then(() => undefined)])) as { result: PublisherResult } | undefined)?.result;
      if (!pub) throw new Error(`the publisher never finished${pubError ? `: ${String(pubError)}` : ''}`);
      const results = await Promise.all(agents.map((a) => a.report()));
      let redisCommands: Record<string, number> | undefined;
      if (before && after) {
        // Less the one INFO of the first count, which the second sees.
        redisCommands = {};
        for (const [name, n] of Object.entries(after)) {
          const d = n - (before[name] ?? 0) - (name === 'info' ? 1 : 0);
          if (d > 0) redisCommands[name] = d;
        }
      }
      return outcome(p, subscribers, pub, results, serverCpuS, stalled, redisCommands);
    } finally {
      await redis?.close();
    }
  }

  async close(): Promise<void> {
    await Promise.all([this.publisher.close(2000), ...this.agents.map((a) => a.close(5000))]);
  }
}

/** Opens a session for one phase on its own topic, runs it, closes. */
export async function runBroadcast(ctx: BenchContext, dep: Deployment, o: Omit<SessionOptions, 'topics'> & PhaseOptions): Promise<BroadcastOutcome> {
  const session = await BroadcastSession.open(ctx, dep, { subscribers: o.subscribers, agents: o.agents, topics: [o.topic] });
  try {
    return await session.phase(o);
  } finally {
    await session.close();
  }
}

function outcome(
  p: PhaseOptions,
  subscriberCount: number,
  pub: PublisherResult,
  subs: SubscribersResult[],
  serverCpuS: number,
  stalled: boolean,
  redisCommands: Record<string, number> | undefined,
): BroadcastOutcome {
  const acked = Buffer.from(pub.ackedMap, 'base64');
  const offsets = new Int32Array(new Uint8Array(Buffer.from(pub.offsets, 'base64')).buffer);
  const perSeq = new Uint32Array(p.messages);
  for (const s of subs) {
    // Copied into a buffer of its own: a decoded Buffer may sit at an offset a Uint32Array cannot view.
    const counts = new Uint32Array(new Uint8Array(Buffer.from(s.perSeq, 'base64')).buffer);
    for (let i = 0; i < p.messages; i++) perSeq[i]! += counts[i]!;
  }
  let lost = 0;
  let unacked = 0;
  for (let i = 0; i < p.messages; i++) {
    if (acked[i]) lost += subscriberCount - perSeq[i]!;
    else unacked += perSeq[i]!;
  }
  // Each agent's first subscriber is a witness: the message it got at an offset is the one whose publish was answered with that offset.
  let wrongOffset = 0;
  for (const s of subs) for (const [seq, offset] of s.witness) if (offset > 0 && acked[seq] && offsets[seq] !== offset) wrongOffset++;
  const lastNewAt = Math.max(...subs.map((s) => s.lastNewAt));
  return {
    publisher: pub,
    subscribers: subs,
    subscriberCount,
    deliveries: subs.reduce((n, s) => n + s.unique, 0),
    expected: pub.acked * subscriberCount,
    lost,
    unacked,
    duplicates: subs.reduce((n, s) => n + s.duplicates, 0),
    outOfOrder: subs.reduce((n, s) => n + s.outOfOrder, 0),
    notSendOrder: subs.reduce((n, s) => n + s.notSendOrder, 0),
    wrongOffset,
    disconnected: subs.reduce((n, s) => n + s.disconnected, 0),
    elapsedMs: lastNewAt > 0 ? lastNewAt - pub.firstSendAt : 0,
    latency: mergeHistograms(subs.map((s) => s.latency)),
    serverCpuS,
    clientCpuS: subs.reduce((n, s) => n + s.cpuS, pub.cpuS),
    ...(redisCommands ? { redisCalls: Object.values(redisCommands).reduce((n, c) => n + c, 0), redisCommands } : {}),
    stalled,
    errors: mergeCounts(subs.map((s) => s.errors)),
    errorSamples: mergeSamples(subs.map((s) => s.errorSamples)),
  };
}

// ---- Redis command counts -----------------------------------------------------------

/** Reads `INFO commandstats` of a Redis: every command's `calls` (each read is itself one call, of INFO). */
export class RedisCounter {
  private constructor(private readonly client: { sendCommand(args: string[]): Promise<unknown>; close(): Promise<void> | void }) {}

  static async open(url: string): Promise<RedisCounter> {
    const { createClient } = await import('redis');
    const client = createClient({ url });
    client.on('error', () => {});
    await client.connect();
    return new RedisCounter(client as unknown as { sendCommand(args: string[]): Promise<unknown>; close(): Promise<void> });
  }

  /** Calls per command name. */
  async byCommand(): Promise<Record<string, number>> {
    const text = String(await this.client.sendCommand(['INFO', 'commandstats']));
    const out: Record<string, number> = {};
    for (const m of text.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) out[m[1]!] = Number(m[2]);
    return out;
  }

  async close(): Promise<void> {
    try {
      await this.client.close();
    } catch {
      // gone
    }
  }
}

// ---- memory of a server process ---------------------------------------------------

/** Resident set size of a process in KiB (VmRSS), or undefined when it is gone. */
export function rssKiB(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The V8 inspector of a Node.js process started with `--inspect-port=127.0.0.1:<port>`,
 * opened by sending it SIGUSR1 (what `node inspect -p <pid>` does): forces a full
 * GC and reads the heap, the same way for MeshMQ and for the peers, none of
 * which needs a hook of its own.
 */
export class Inspector {
  private nextId = 1;
  private readonly pending = new Map<number, (reply: { result?: unknown; error?: { message: string } }) => void>();

  private constructor(private readonly ws: import('ws').default) {
    ws.on('message', (raw) => {
      const msg = JSON.parse(raw.toString()) as { id?: number; result?: unknown; error?: { message: string } };
      if (msg.id === undefined) return;
      this.pending.get(msg.id)?.(msg);
      this.pending.delete(msg.id);
    });
  }

  static async open(pid: number, port: number): Promise<Inspector> {
    process.kill(pid, 'SIGUSR1');
    await waitFor(`the inspector of pid ${pid} on ${port}`, () => isListening(port), 10_000);
    const res = await fetch(`http://127.0.0.1:${port}/json/list`);
    const [target] = (await res.json()) as { webSocketDebuggerUrl: string }[];
    if (!target) throw new Error(`no inspector target on ${port}`);
    const { default: WebSocket } = await import('ws');
    const ws = new WebSocket(target.webSocketDebuggerUrl, { perMessageDeflate: false });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    return new Inspector(ws);
  }

  call(method: string, params: Record<string, unknown> = {}): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${method}: no answer within 60 s`));
      }, 60_000);
      this.pending.set(id, (reply) => {
        clearTimeout(timer);
        if (reply.error) reject(new Error(`${method}: ${reply.error.message}`));
        else resolve(reply.result);
      });
      this.ws.send(JSON.stringify({ id, method, params }));
    });
  }

  /** Two full GCs, then the V8 heap in use (bytes). */
  async gc(): Promise<number> {
    await this.call('HeapProfiler.collectGarbage');
    await this.call('HeapProfiler.collectGarbage');
    const usage = (await this.call('Runtime.getHeapUsage')) as { usedSize: number };
    return usage.usedSize;
  }

  close(): void {
    this.ws.close();
  }
}
