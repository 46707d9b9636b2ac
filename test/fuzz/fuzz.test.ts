import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { mintToken } from '@meshmq/server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NodeProcess, tempDir } from '../helpers/node-process.js';
import { eventually } from '../helpers/util.js';
import { runHttpLane, runRawHttpLane } from './http-lane.js';
import { Prng } from './prng.js';
import { cpuTimeMs, heapProbeEnv, isAlive, liveMemory, MemorySampler, MiB, mib, residentMemory } from './proc-stats.js';
import { FUZZ_TOPICS, makeRoles, type Role } from './roles.js';
import { runSocketIoLane } from './socketio-lane.js';
import { runSocketIoRawLane } from './socketio-raw-lane.js';
import { SteadyClient, type SteadyReport } from './steady-client.js';
import { RECORDED_TOPICS, settledSnapshot, snapshotRecorded, storeRecorded } from './stored-state.js';
import { Tally } from './tally.js';
import { runWsLane } from './ws-lane.js';

/** Frames of a run (FUZZ_FRAMES to change it): split over the lanes below. */
const FRAMES = Number(process.env.FUZZ_FRAMES ?? 100_000);
/** Small messages keep oversized frames cheap: the frame limit is 2 × this + 64 KiB. */
const MAX_MESSAGE_BYTES = 16 * 1024;
const MAX_FRAME_BYTES = 2 * MAX_MESSAGE_BYTES + 64 * 1024;
/**
 * How much the node's resident memory (VmRSS) may grow over the run. It
 * grows by what the allocators keep after the peaks of the run (V8 pages and
 * malloc arenas are not given back at once; the peak is about twice the
 * start), not by what the node retains: measured growth 40-115 MiB over
 * runs, while live memory grew about 5 MiB. A leak of 2 KiB a frame would pass
 * this bound; {@link LIVE_MEMORY_GROWTH_BOUND} is the sharper check.
 */
const RSS_GROWTH_BOUND = 200 * MiB;
/**
 * How much live memory (heap and Buffers in use after a full garbage
 * collection, through heap-probe.cjs) may grow: the fuzzers legitimately
 * leave up to 40 topics with their groups, dedupe keys and per-topic
 * counters (measured about 5 MiB). A leak of 160 bytes a frame would fail it.
 */
const LIVE_MEMORY_GROWTH_BOUND = 16 * MiB;
/** A frame the node has not answered after this long counts as a hang. */
const REPLY_TIMEOUT_MS = 20_000;
const STEADY_TOPICS = ['steady.ws', 'steady.sio'];
const PROTECTED = [...RECORDED_TOPICS, ...STEADY_TOPICS, 'rec.', 'steady.'];

/**
 * One node, with authentication on and small limits, takes 100,000 random
 * and mutated frames over /ws, Socket.IO (socket.io-client and raw packets)
 * and the admin API, from principals of every kind. It must stay the same
 * process, answer every frame exactly once with a known code and a message
 * (never `internal`), keep serving well-behaved clients in order, keep the
 * data stored before the run unchanged, and not grow without bound.
 *
 * Replay a run with FUZZ_SEED=<seed printed by the run>.
 */
describe('fuzzing one node', () => {
  const secret = randomBytes(32).toString('hex');
  let node: NodeProcess;
  let adminToken: string;
  let roles: Role[];
  let before: unknown;
  const heapFile = join(tempDir('meshmq-heap-'), 'heap.json');

  beforeAll(async () => {
    node = await NodeProcess.start({
      env: {
        ...heapProbeEnv(heapFile),
        AUTH_SECRET: secret,
        MAX_MESSAGE_BYTES: String(MAX_MESSAGE_BYTES),
        // Small enough that fuzzers run into each: limit_exceeded and rate_limited are answers to check too.
        MAX_SUBSCRIPTIONS: '16',
        MAX_INFLIGHT: '32',
        MAX_PUBLISH_RATE: '20',
        MAX_TOPICS: '40',
        RETENTION_SWEEP: '1s',
      },
    });
    ({ roles, adminToken } = await makeRoles({ secret, recordedTopics: RECORDED_TOPICS, steadyTopics: STEADY_TOPICS, maxMessageBytes: MAX_MESSAGE_BYTES }));
    await storeRecorded(node, adminToken);
    before = await settledSnapshot(node, adminToken);
  }, 60_000);

  afterAll(async () => {
    await node?.dispose();
  });

  async function health(): Promise<{ pid: number; connections: number; uptimeMs: number }> {
    return (await (await fetch(`${node.url}/healthz`)).json()) as { pid: number; connections: number; uptimeMs: number };
  }

  it('answers every hostile frame with a precise error, stays up, bounded, and changes no stored data', async () => {
    const seed = Prng.seedFromEnv();
    console.log(`fuzz seed ${seed} (replay with FUZZ_SEED=${seed})`);
    const rng = new Prng(seed);
    const pid = node.pid!;
    const healthBefore = await health();
    expect(healthBefore.pid).toBe(pid);
    const liveBefore = await liveMemory(pid, heapFile);
    const rssBefore = residentMemory(pid);
    const sampler = new MemorySampler(pid);
    const steadyToken = await mintToken({ secret, sub: 'steady', permissions: { publish: ['steady.>'], subscribe: ['steady.>'] }, ttlMs: 3_600_000 });
    const steady = await Promise.all([
      SteadyClient.start('ws', node, steadyToken, 'steady.ws'),
      SteadyClient.start('socket.io', node, steadyToken, 'steady.sio'),
    ]);

    const tally = new Tally();
    const started = Date.now();
    const cpuBefore = cpuTimeMs(pid);
    const laneTimes: string[] = [];
    const lane = (name: string, run: Promise<void>) => run.then(() => void laneTimes.push(`${name} ${((Date.now() - started) / 1000).toFixed(1)} s`));
    const common = { roles, tally, protectedTopics: PROTECTED, replyTimeoutMs: REPLY_TIMEOUT_MS, maxFrameBytes: MAX_FRAME_BYTES };
    const share = (fraction: number) => Math.round(FRAMES * fraction);
    const readableTopics = [...FUZZ_TOPICS, ...RECORDED_TOPICS, '$dlq.rec.jobs', ...STEADY_TOPICS];
    const http = { host: '127.0.0.1', port: node.port, roles, tally, protectedTopics: PROTECTED, readableTopics };
    await Promise.all([
      ...[0, 1, 2, 3].map((i) => lane(`ws#${i}`, runWsLane(rng.fork(), { ...common, wsUrl: node.wsUrl, frames: share(0.6 / 4) }))),
      ...[0, 1].map((i) => lane(`socket.io#${i}`, runSocketIoLane(rng.fork(), { ...common, url: node.url, frames: share(0.2 / 2) }))),
      ...[0, 1].map((i) =>
        lane(`socket.io raw#${i}`, runSocketIoRawLane(rng.fork(), { ...common, wsBase: `ws://127.0.0.1:${node.port}`, frames: share(0.1 / 2) })),
      ),
      lane('http', runHttpLane(rng.fork(), { ...http, frames: share(0.085), concurrency: 6 })),
      lane('http raw', runRawHttpLane(rng.fork(), { ...http, frames: share(0.015), concurrency: 4, adminToken })),
    ]);
    const fuzzMs = Date.now() - started;
    const nodeCpuMs = cpuTimeMs(pid) - cpuBefore;
    const reports: SteadyReport[] = await Promise.all(steady.map((client) => client.stop(15_000)));

    // Every fuzz and steady connection is gone: the node holds none of them.
    await eventually(async () => (await health()).connections === 0, 15_000, 'the node to hold no connection');
    const healthAfter = await health();
    const rssAfter = sampler.stop();
    const liveAfter = await liveMemory(pid, heapFile);
    const after = await snapshotRecorded(node, adminToken);
    const changed = JSON.stringify(after) === JSON.stringify(before) ? 0 : 1;
    const nodeErrors = node.logs.split('\n').filter((line) => /"level":(50|60)/.test(line));
    const nodeWarnings = node.logs.split('\n').filter((line) => /"level":40/.test(line));

    const restarts = healthAfter.pid === pid && isAlive(pid) && healthAfter.uptimeMs > healthBefore.uptimeMs ? 0 : 1;
    const steadyOk = reports.every((r) => r.problems.length === 0 && r.published > 0 && r.received === r.published);
    console.log(
      [
        `FUZZ SUMMARY frames=${tally.total} (${Object.entries(tally.sent)
          .map(([k, v]) => `${k}=${v}`)
          .join(' ')}) restarts=${restarts} ` +
          `rss=${mib(rssBefore.rss)}->${mib(rssAfter.rss)} live=${mib(liveBefore)}->${mib(liveAfter)} storedChanged=${changed} ` +
          `wellBehaved=${steadyOk ? 'ok' : 'FAILED'} codes={${[...tally.codes].map(([k, v]) => `${k}:${v}`).join(' ')}} findings=${tally.findingTotal} seed=${seed}`,
        `fuzz run: ${tally.total} frames in ${(fuzzMs / 1000).toFixed(1)} s (node CPU ${(nodeCpuMs / 1000).toFixed(1)} s), seed ${seed}`,
        `lanes done at: ${laneTimes.join(', ')}`,
        tally.report(),
        `node restarts: ${restarts} (pid ${pid} before, ${healthAfter.pid} after)`,
        `node RSS: before ${mib(rssBefore.rss)} (anon ${mib(rssBefore.anon)}), after ${mib(rssAfter.rss)} (anon ${mib(rssAfter.anon)}), peak ${mib(sampler.peak.rss)} (anon ${mib(sampler.peak.anon)}); growth ${mib(rssAfter.rss - rssBefore.rss)}, bound ${mib(RSS_GROWTH_BOUND)}`,
        `node live memory (heap + buffers) after full GC: before ${mib(liveBefore)}, after ${mib(liveAfter)}; growth ${mib(liveAfter - liveBefore)}, bound ${mib(LIVE_MEMORY_GROWTH_BOUND)}`,
        `stored data changed: ${changed} (topics ${RECORDED_TOPICS.join(', ')}, $dlq.rec.jobs, groups and pending entries)`,
        ...reports.map(
          (r) =>
            `well-behaved ${r.name}: published ${r.published}, received ${r.received} in order, retries ${r.retries}, problems ${r.problems.length}${r.problems.length ? `: ${r.problems.join('; ')}` : ''}`,
        ),
        `node log lines at level 50/60: ${nodeErrors.length}${nodeErrors.length ? `\n  ${nodeErrors.slice(0, 5).join('\n  ')}` : ''}`,
        `node log lines at level 40: ${nodeWarnings.length}${nodeWarnings.length ? `\n  ${nodeWarnings.slice(0, 5).join('\n  ')}` : ''}`,
      ].join('\n'),
    );

    expect(tally.total).toBeGreaterThanOrEqual(FRAMES);
    expect(healthAfter.pid).toBe(pid);
    expect(isAlive(pid)).toBe(true);
    expect(healthAfter.uptimeMs).toBeGreaterThan(healthBefore.uptimeMs);
    expect(after).toEqual(before);
    expect(tally.codes.get('internal') ?? 0).toBe(0);
    expect([...tally.findings.keys()]).toEqual([]);
    for (const report of reports) {
      expect(report.problems).toEqual([]);
      expect(report.published).toBeGreaterThan(0);
      expect(report.received).toBe(report.published);
    }
    expect(nodeErrors).toEqual([]);
    expect(rssAfter.rss - rssBefore.rss).toBeLessThan(RSS_GROWTH_BOUND);
    expect(liveAfter - liveBefore).toBeLessThan(LIVE_MEMORY_GROWTH_BOUND);
  }, 240_000);
});
