/**
 * The pipeline every throughput and latency workload runs: one publisher
 * keeping up to `window` publishes unacknowledged (optionally paced to a
 * fixed rate), one consumer acking each message, publish→delivery latency
 * from a timestamp in the message, and exactly-once / at-least-once checks.
 */
import { type Body, type Driver, errorCode, openDriver } from './drivers.js';
import { createHistogram, encodeHistogram } from './hist.js';
import type { PipelineJob, PipelineResult } from './pipeline-types.js';

const PAD = 'x'.repeat(1 << 20);

/** The message: a JSON object {s: sequence, t: send time (performance.now(), ms), p: padding}, exactly `size` bytes encoded. */
export function makePayload(seq: number, t: number, size: number): { payload: { s: number; t: number; p: string }; body: string } {
  const bare = JSON.stringify({ s: seq, t, p: '' });
  const pad = Math.max(0, size - bare.length);
  const payload = { s: seq, t, p: PAD.slice(0, pad) };
  return { payload, body: JSON.stringify(payload) };
}

function readBody(body: Body): { s: number; t: number } {
  return typeof body === 'string' ? (JSON.parse(body) as { s: number; t: number }) : body;
}

/** Publishes `count` messages through `driver` and waits until the consumer has each acknowledged one. */
async function runOnce(driver: Driver, job: PipelineJob, count: number, measure: boolean): Promise<PipelineResult> {
  const stallMs = job.stallMs ?? 30_000;
  const seen = new Uint8Array(count);
  const acked = new Uint8Array(count);
  const all = createHistogram();
  const first = createHistogram();
  const last = createHistogram();
  const firstCut = Math.ceil(count * 0.1);
  const lastCut = Math.floor(count * 0.9);
  const errors: Record<string, number> = {};
  const errorSamples: Record<string, string> = {};
  const countError = (code: string, err: unknown) => {
    errors[code] = (errors[code] ?? 0) + 1;
    if (!(code in errorSamples)) errorSamples[code] = err instanceof Error ? err.message : String(err);
  };
  let received = 0;
  let unique = 0;
  let duplicates = 0;
  let ackErrors = 0;
  let lastNewAt = 0;
  let progressAt = performance.now();
  let sent = 0;
  let ackedCount = 0;
  let publishErrors = 0;
  let publishDoneAt = 0;
  let wake: (() => void) | undefined;
  const poke = () => wake?.();

  const onMessage = (body: Body) => {
    const now = performance.now();
    received++;
    const { s, t } = readBody(body);
    if (s < 0 || s >= count) return;
    if (seen[s]) {
      duplicates++;
      return;
    }
    seen[s] = 1;
    unique++;
    lastNewAt = now;
    progressAt = now;
    if (measure) {
      const us = Math.max(1, Math.round((now - t) * 1000));
      all.recordValue(us);
      if (s < firstCut) first.recordValue(us);
      if (s >= lastCut) last.recordValue(us);
    }
    if (unique === ackedCount && sent === count) poke();
  };
  const onAckError = (err: unknown) => {
    ackErrors++;
    countError(`ack: ${errorCode(err)}`, err);
  };
  if (measure) {
    // The consumer of a measured run was started by prepare; deliveries go to the handler in effect.
    handler.current = onMessage;
    handler.ackError = onAckError;
  } else {
    await driver.consume(onMessage, onAckError);
  }

  const cpuBefore = process.cpuUsage();
  const start = performance.now();
  const window = Math.max(1, job.window);
  const interval = job.rate ? 1000 / job.rate : 0;
  let inflight = 0;
  let next = 0;
  await new Promise<void>((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    const pump = () => {
      timer = undefined;
      while (inflight < window && next < count) {
        let t = performance.now();
        if (interval > 0) {
          const due = start + next * interval;
          if (t < due) {
            timer = setTimeout(pump, Math.max(0, due - t - 0.2));
            return;
          }
          // Latency counts from when the message was due, not from when the pacer got to it (no coordinated omission).
          t = due;
        }
        const seq = next++;
        const { payload, body } = makePayload(seq, t, job.size);
        inflight++;
        sent++;
        driver.publish(body, payload).then(
          () => {
            acked[seq] = 1;
            ackedCount++;
            settle();
          },
          (err: unknown) => {
            publishErrors++;
            countError(errorCode(err), err);
            settle();
          },
        );
      }
      if (next >= count && inflight === 0) resolve();
    };
    const settle = () => {
      inflight--;
      if (next >= count && inflight === 0) {
        publishDoneAt = performance.now();
        resolve();
      } else if (timer === undefined) pump();
    };
    pump();
  });
  if (publishDoneAt === 0) publishDoneAt = performance.now();
  progressAt = Math.max(progressAt, performance.now());

  // Wait until every acknowledged message was delivered, or nothing new came for stallMs.
  const missingAcked = () => {
    let missing = 0;
    for (let i = 0; i < count; i++) if (acked[i] && !seen[i]) missing++;
    return missing;
  };
  let stalled = false;
  while (unique < ackedCount || missingAcked() > 0) {
    await new Promise<void>((resolve) => {
      wake = resolve;
      setTimeout(resolve, 250);
    });
    wake = undefined;
    if (unique >= count) break;
    if (performance.now() - progressAt > stallMs) {
      stalled = true;
      break;
    }
  }
  // Redeliveries may trail the last new message; give them a moment to show as duplicates.
  if (measure) await new Promise((r) => setTimeout(r, 100));
  const cpu = process.cpuUsage(cpuBefore);
  const end = lastNewAt > 0 ? lastNewAt : performance.now();
  return {
    sent,
    acked: ackedCount,
    publishErrors,
    errors,
    errorSamples,
    received,
    unique,
    duplicates,
    missing: missingAcked(),
    ackErrors,
    elapsedMs: Math.max(end, publishDoneAt) - start,
    publishMs: publishDoneAt - start,
    latency: encodeHistogram(all),
    latencyFirst: encodeHistogram(first),
    latencyLast: encodeHistogram(last),
    clientCpuS: (cpu.user + cpu.system) / 1e6,
    stalled,
  };
}

/** Indirection so the measured run's consumer can be started during prepare, before 'go'. */
const handler: { current: (body: Body) => void; ackError: (err: unknown) => void } = {
  current: () => {},
  ackError: () => {},
};

/**
 * Connects, warms up on a separate queue, creates the measured queue and starts
 * its consumer; returns `go`, which runs the measured pipeline and closes.
 */
export async function preparePipeline(job: PipelineJob): Promise<{ go: () => Promise<PipelineResult>; close: () => Promise<void> }> {
  const warmup = job.warmup ?? 0;
  if (warmup > 0) {
    const warm = openDriver(job.driver);
    try {
      await warm.prepare(`${job.queue}-warm`, job.window);
      const r = await runOnce(warm, { ...job, rate: undefined, stallMs: 20_000 }, warmup, false);
      if (r.stalled) throw new Error(`warm-up stalled: ${r.unique} of ${warmup} delivered, errors ${JSON.stringify(r.errors)}`);
    } finally {
      await warm.close();
    }
  }
  const driver = openDriver(job.driver);
  await driver.prepare(job.queue, job.window);
  await driver.consume(
    (body) => handler.current(body),
    (err) => handler.ackError(err),
  );
  return {
    go: () => runOnce(driver, job, job.count, true),
    close: () => driver.close(),
  };
}
