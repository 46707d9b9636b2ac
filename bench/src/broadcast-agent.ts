/**
 * A load agent of the broadcast workloads (fanout, burst, connections): a
 * child process of the harness holding either many subscribers of one
 * system, or its publisher. Subscribers check every delivery: each message
 * once, in order. Over the IPC channel:
 *
 *   harness → {type:'prepare', job}     agent → {type:'ready', ready}   (connected and subscribed)
 *   harness → {type:'go', phase}        subscribers: start counting the phase's messages afresh, then
 *                                       → {type:'progress', …} every 100 ms;
 *                                       publisher: publishes the phase, then → {type:'published', result}
 *   harness → {type:'report'}           subscribers → {type:'result', result}
 *   harness → {type:'close'}            the agent closes its connections and exits
 *   agent → {type:'error', message} on failure.
 *
 * One set of connections can serve several phases (e.g. one per payload
 * size), each on a topic of its own. Times are wall-clock milliseconds with
 * sub-millisecond resolution (performance.timeOrigin + performance.now()), so
 * that the publisher's send time in a message compares with the receive time
 * in another process on the same machine.
 */
import { Buffer } from 'node:buffer';
import type { Socket } from 'socket.io-client';
import type WebSocket from 'ws';
import { createHistogram, encodeHistogram } from './hist.js';
import { makePayload } from './pipeline.js';

export type BroadcastKind = 'meshmq' | 'ws' | 'socketio';

export interface SubscribersJob {
  role: 'subscribers';
  kind: BroadcastKind;
  /** Where subscriber g (global index) connects: urls[g % urls.length] (MeshMQ: ws://…/ws; ws: ws://…; Socket.IO: http://…). */
  urls: string[];
  /** Global index of this agent's first subscriber. */
  first: number;
  count: number;
  /**
   * What each subscriber subscribes to (MeshMQ) or joins (Socket.IO): every
   * topic of `topics`, or, with `spread`, the one topic spread[g % spread.length].
   * Raw ws has no topics: every connection gets everything.
   */
  topics: string[];
  spread?: boolean;
  /** Source addresses to connect from, round-robin by subscriber (default: the OS picks). */
  localAddresses?: string[];
  /** Handshakes (and subscribes) in flight at once (default 64). */
  concurrency?: number;
  /** MeshMQ subscribe `from` (default: omitted, only messages published after the subscription). */
  from?: number;
}

export interface PublisherJob {
  role: 'publisher';
  kind: BroadcastKind;
  url: string;
}

export type BroadcastJob = SubscribersJob | PublisherJob;

/** What subscribers count in one phase. */
export interface SubscriberPhase {
  /** Messages each subscriber should get: sequence numbers 0 … expect-1. */
  expect: number;
  /** The phase's topic: a MeshMQ delivery of another topic is an error. Omitted: any of the subscriber's. */
  topic?: string;
}

/** What the publisher sends in one phase. */
export interface PublisherPhase {
  /** Each topic gets `count` messages, sequence numbers 0 … count-1 (raw ws: give one topic). */
  topics: string[];
  count: number;
  /** Payload bytes: the JSON object {s, t, p} padded to exactly this size. */
  size: number;
  /** Publishes left unanswered at most; 0: every publish sent at once, in one loop, before reading any reply. */
  window: number;
  /** How long to wait for the last replies once everything was sent. */
  replyTimeoutMs: number;
}

export interface SubscribersReady {
  connected: number;
  failed: number;
  /** Failures by code or message, with one verbatim sample each. */
  errors: Record<string, number>;
  errorSamples: Record<string, string>;
  connectMs: number;
}

export interface SubscribersResult {
  connected: number;
  /** Deliveries, all; distinct (subscriber, sequence) pairs; repeats. */
  received: number;
  unique: number;
  duplicates: number;
  /**
   * Deliveries out of the system's order: MeshMQ, an offset other than the one
   * after the subscriber's previous delivery (the first one must be offset 1
   * when subscribed `from: 1`); the peers, which have no offsets, a sequence
   * number other than the one after the previous.
   */
  outOfOrder: number;
  /** Deliveries whose sequence number is not the one after the previous delivery's: order differs from the publisher's send order. */
  notSendOrder: number;
  /** Σ over subscribers of the sequence numbers 0 … expect-1 they never got. */
  missing: number;
  /** How many subscribers had each sequence number: base64 of a Uint32Array(expect). */
  perSeq: string;
  /** The first subscriber's deliveries in arrival order, as [sequence, offset] pairs (offset 0 for the peers). */
  witness: [number, number][];
  /** Wall ms of the last new delivery (0: none). */
  lastNewAt: number;
  /** hdr histogram (µs) of send→receive over unique deliveries, encoded. */
  latency: string;
  /** Subscriber connections that closed before the report (over the agent's life). */
  disconnected: number;
  errors: Record<string, number>;
  errorSamples: Record<string, string>;
  /** CPU seconds this agent used from 'go' to the report. */
  cpuS: number;
}

export interface PublisherResult {
  sent: number;
  /** Publishes answered with success, and which: base64 of a Uint8Array(topics × count), index topic * count + seq. */
  acked: number;
  ackedMap: string;
  /** MeshMQ: the offset each acknowledged publish got (base64 of an Int32Array(topics × count), 0 when none). */
  offsets: string;
  /** Error replies and closed connections, by code, with one verbatim sample each. */
  refused: Record<string, number>;
  refusedSamples: Record<string, string>;
  /** Publishes never answered within replyTimeoutMs (Socket.IO: acknowledgements not received). */
  unanswered: number;
  /** Wall ms of the first send and of the last reply. */
  firstSendAt: number;
  lastReplyAt: number;
  cpuS: number;
}

const now = () => performance.timeOrigin + performance.now();

const send = (msg: unknown) => process.send?.(msg);

function fail(err: unknown): void {
  const message = err instanceof Error ? err.message : String(err);
  process.send?.({ type: 'error', message }, () => process.exit(1));
}

class ErrorCounts {
  counts: Record<string, number> = {};
  samples: Record<string, string> = {};
  add(code: string, message: string): void {
    this.counts[code] = (this.counts[code] ?? 0) + 1;
    if (!(code in this.samples)) this.samples[code] = message.slice(0, 300);
  }
}

function codeOf(err: unknown): string {
  if (err && typeof err === 'object' && 'code' in err && typeof (err as { code: unknown }).code === 'string') return (err as { code: string }).code;
  const message = err instanceof Error ? err.message : String(err);
  return message.replace(/\d{4,}/g, 'N').slice(0, 80);
}

const wsLib = async () => (await import('ws')).default;
const ioLib = async () => (await import('socket.io-client')).io;

// ---- subscribers -----------------------------------------------------------------

class Subscriber {
  seen = new Uint8Array(0);
  lastSeq = -1;
  lastOffset = -1;
  unique = 0;
  open = false;
  close: () => void = () => {};
}

class Subscribers {
  private readonly subs: Subscriber[] = [];
  private errors = new ErrorCounts();
  private phase: SubscriberPhase = { expect: 0 };
  private hist = createHistogram();
  private perSeq = new Uint32Array(0);
  private witness: [number, number][] = [];
  private received = 0;
  private unique = 0;
  private duplicates = 0;
  private outOfOrder = 0;
  private notSendOrder = 0;
  private disconnected = 0;
  private lastNewAt = 0;
  private cpuAtGo: NodeJS.CpuUsage | undefined;
  private progressTimer: NodeJS.Timeout | undefined;
  private closing = false;

  constructor(private readonly job: SubscribersJob) {}

  private deliver(sub: Subscriber, s: number, t: number, offset: number, topic?: string): void {
    const at = now();
    this.received++;
    const { expect } = this.phase;
    if (topic !== undefined && this.phase.topic !== undefined && topic !== this.phase.topic) {
      this.errors.add('wrong topic', `a delivery of '${topic}' during the phase of '${this.phase.topic}'`);
      return;
    }
    if (!Number.isInteger(s) || s < 0 || s >= expect) {
      this.errors.add('unexpected message', `sequence number ${s} outside 0…${expect - 1}`);
      return;
    }
    if (sub === this.subs[0]) this.witness.push([s, offset]);
    if (sub.seen[s]) {
      this.duplicates++;
      return;
    }
    sub.seen[s] = 1;
    if (offset > 0) {
      // MeshMQ: offsets one after another; subscribed from 1, the first is 1.
      const first = this.job.from === 1 ? 1 : offset;
      if (offset !== (sub.lastOffset < 0 ? first : sub.lastOffset + 1)) this.outOfOrder++;
      sub.lastOffset = offset;
    }
    if (s !== sub.lastSeq + 1) {
      this.notSendOrder++;
      if (offset === 0) this.outOfOrder++;
    }
    sub.lastSeq = s;
    sub.unique++;
    this.unique++;
    this.perSeq[s]!++;
    this.lastNewAt = at;
    this.hist.recordValue(Math.max(1, Math.round((at - t) * 1000)));
  }

  private lost(sub: Subscriber, code: string, message: string): void {
    if (!sub.open || this.closing) return;
    sub.open = false;
    this.disconnected++;
    this.errors.add(code, message);
  }

  private async connectOne(g: number, local: string | undefined): Promise<void> {
    const { kind, urls } = this.job;
    const url = urls[g % urls.length]!;
    const topics = this.job.spread ? [this.job.topics[g % this.job.topics.length]!] : this.job.topics;
    const sub = new Subscriber();
    if (kind === 'socketio') {
      const io = await ioLib();
      const socket: Socket = io(url, {
        transports: ['websocket'],
        forceNew: true,
        reconnection: false,
        timeout: 120_000,
        ...(local ? { localAddress: local } : {}),
      } as Parameters<typeof io>[1]);
      sub.close = () => socket.close();
      socket.on('m', (d: { s: number; t: number }) => this.deliver(sub, d.s, d.t, 0));
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', () => resolve());
        socket.once('connect_error', (err) => {
          socket.close();
          reject(err);
        });
      });
      for (const room of topics) {
        await new Promise<void>((resolve, reject) => {
          socket.timeout(120_000).emit('join', room, (err: unknown) => (err ? reject(new Error('join: no ack within 120 s')) : resolve()));
        });
      }
      socket.on('disconnect', (reason) => this.lost(sub, `disconnect: ${reason}`, `socket.io disconnect: ${reason}`));
      sub.open = true;
    } else {
      const WebSocketClass = await wsLib();
      const ws: WebSocket = new WebSocketClass(url, { perMessageDeflate: false, handshakeTimeout: 120_000, ...(local ? { localAddress: local } : {}) });
      sub.close = () => ws.terminate();
      await new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve());
        ws.once('error', reject);
      });
      ws.on('error', (err) => this.errors.add(`socket: ${codeOf(err)}`, err.message));
      if (kind === 'ws') {
        ws.on('message', (raw) => {
          const d = JSON.parse(raw.toString()) as { s: number; t: number };
          this.deliver(sub, d.s, d.t, 0);
        });
      } else {
        const waiting = new Map<number, (err?: Error) => void>();
        ws.on('message', (raw) => {
          const frame = JSON.parse(raw.toString()) as {
            op: string;
            id?: number;
            topic?: string;
            offset?: number;
            code?: string;
            message?: string;
            data?: { s: number; t: number };
          };
          if (frame.op === 'message') this.deliver(sub, frame.data!.s, frame.data!.t, frame.offset!, frame.topic);
          else if (frame.op === 'ok' && frame.id !== undefined) waiting.get(frame.id)?.();
          else if (frame.op === 'error') {
            if (frame.id !== undefined && waiting.has(frame.id)) waiting.get(frame.id)!(Object.assign(new Error(String(frame.message)), { code: frame.code }));
            else this.errors.add(String(frame.code), String(frame.message));
          } else this.errors.add(frame.op, JSON.stringify(frame).slice(0, 300));
        });
        const from = this.job.from;
        await Promise.all(
          topics.map(
            (topic, i) =>
              new Promise<void>((resolve, reject) => {
                waiting.set(i + 1, (err) => {
                  waiting.delete(i + 1);
                  if (err) reject(err);
                  else resolve();
                });
                ws.send(JSON.stringify({ op: 'subscribe', id: i + 1, topic, ...(from !== undefined ? { from } : {}) }));
              }),
          ),
        );
      }
      ws.on('close', (code, reason) => this.lost(sub, `close ${code}`, `connection closed: ${code} ${reason.toString()}`));
      sub.open = true;
    }
    this.subs.push(sub);
  }

  async prepare(): Promise<SubscribersReady> {
    const { count, first, localAddresses } = this.job;
    const started = now();
    const connectErrors = new ErrorCounts();
    let nextIndex = 0;
    let failed = 0;
    const worker = async () => {
      while (nextIndex < count) {
        const g = first + nextIndex++;
        const local = localAddresses && localAddresses.length > 0 ? localAddresses[g % localAddresses.length] : undefined;
        try {
          await this.connectOne(g, local);
        } catch (err) {
          failed++;
          connectErrors.add(codeOf(err), err instanceof Error ? err.message : String(err));
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(count, this.job.concurrency ?? 64) }, worker));
    return { connected: this.subs.length, failed, errors: connectErrors.counts, errorSamples: connectErrors.samples, connectMs: now() - started };
  }

  go(phase: SubscriberPhase): void {
    this.phase = phase;
    for (const sub of this.subs) {
      sub.seen = new Uint8Array(phase.expect);
      sub.lastSeq = -1;
      sub.lastOffset = -1;
      sub.unique = 0;
    }
    this.hist = createHistogram();
    this.perSeq = new Uint32Array(phase.expect);
    this.witness = [];
    this.received = this.unique = this.duplicates = this.outOfOrder = this.notSendOrder = 0;
    this.lastNewAt = 0;
    this.errors = new ErrorCounts();
    this.cpuAtGo = process.cpuUsage();
    clearInterval(this.progressTimer);
    this.progressTimer = setInterval(() => send({ type: 'progress', unique: this.unique, lastNewAt: this.lastNewAt, disconnected: this.disconnected }), 100);
  }

  report(): SubscribersResult {
    clearInterval(this.progressTimer);
    const cpu = process.cpuUsage(this.cpuAtGo);
    let missing = 0;
    for (const sub of this.subs) missing += this.phase.expect - sub.unique;
    return {
      connected: this.subs.length,
      received: this.received,
      unique: this.unique,
      duplicates: this.duplicates,
      outOfOrder: this.outOfOrder,
      notSendOrder: this.notSendOrder,
      missing,
      perSeq: Buffer.from(this.perSeq.buffer, this.perSeq.byteOffset, this.perSeq.byteLength).toString('base64'),
      witness: this.witness,
      lastNewAt: this.lastNewAt,
      latency: encodeHistogram(this.hist),
      disconnected: this.disconnected,
      errors: this.errors.counts,
      errorSamples: this.errors.samples,
      cpuS: (cpu.user + cpu.system) / 1e6,
    };
  }

  close(): void {
    this.closing = true;
    for (const sub of this.subs) {
      try {
        sub.close();
      } catch {
        // already closed
      }
    }
  }
}

// ---- publisher -----------------------------------------------------------------

/** Sends one publish and calls back once with null (success, with MeshMQ's offset) or the refusal: code and message. */
type Done = (code: string | null, message?: string, offset?: number) => void;
type PublishFn = (topic: string, seq: number, size: number, done: Done) => void;

class Publisher {
  private publish: PublishFn | undefined;
  private closeFn: () => void = () => {};
  private onClosed: ((message: string) => void) | undefined;
  private replyTimeoutMs = 30_000;

  constructor(private readonly job: PublisherJob) {}

  async prepare(): Promise<void> {
    const { kind, url } = this.job;
    if (kind === 'socketio') {
      const io = await ioLib();
      const socket = io(url, { transports: ['websocket'], forceNew: true, reconnection: false, timeout: 60_000 });
      this.closeFn = () => socket.close();
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', () => resolve());
        socket.once('connect_error', reject);
      });
      socket.on('disconnect', (reason) => this.onClosed?.(`publisher disconnected: ${reason}`));
      this.publish = (topic, seq, size, done) => {
        const { payload } = makePayload(seq, now(), size);
        socket.timeout(this.replyTimeoutMs).emit('pub', topic, payload, (err: unknown) => (err ? done('no ack') : done(null)));
      };
      return;
    }
    const WebSocketClass = await wsLib();
    const ws: WebSocket = new WebSocketClass(url, { perMessageDeflate: false });
    this.closeFn = () => ws.close();
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    ws.on('error', () => {});
    ws.on('close', (code, reason) => this.onClosed?.(`publisher connection closed: ${code} ${reason.toString()}`));
    if (kind === 'ws') {
      // The server answers each frame with 'a', in order.
      const waiting: (Done | undefined)[] = [];
      let head = 0;
      ws.on('message', () => {
        const done = waiting[head];
        waiting[head++] = undefined;
        done?.(null);
      });
      this.publish = (_topic, seq, size, done) => {
        waiting.push(done);
        ws.send(makePayload(seq, now(), size).body);
      };
      return;
    }
    const pending = new Map<number, Done>();
    let nextId = 1;
    ws.on('message', (raw) => {
      const frame = JSON.parse(raw.toString()) as { op: string; id: number; offset?: number; code?: string; message?: string };
      const done = pending.get(frame.id);
      if (!done) return;
      pending.delete(frame.id);
      if (frame.op === 'ok') done(null, undefined, frame.offset);
      else done(String(frame.code), String(frame.message));
    });
    this.publish = (topic, seq, size, done) => {
      const id = nextId++;
      pending.set(id, done);
      ws.send(`{"op":"publish","id":${id},"topic":${JSON.stringify(topic)},"data":${makePayload(seq, now(), size).body}}`);
    };
  }

  go(phase: PublisherPhase): Promise<PublisherResult> {
    const { topics, count, size, window, replyTimeoutMs } = phase;
    this.replyTimeoutMs = replyTimeoutMs;
    const total = topics.length * count;
    const ackedMap = new Uint8Array(total);
    const offsets = new Int32Array(total);
    const refused = new ErrorCounts();
    const cpuBefore = process.cpuUsage();
    let sent = 0;
    let answered = 0;
    let unanswered = 0;
    let acked = 0;
    let firstSendAt = 0;
    let lastReplyAt = 0;
    let next = 0;
    return new Promise<PublisherResult>((resolve) => {
      let finished = false;
      let timer: NodeJS.Timeout | undefined;
      const finish = () => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        const cpu = process.cpuUsage(cpuBefore);
        resolve({
          sent,
          acked,
          ackedMap: Buffer.from(ackedMap).toString('base64'),
          offsets: Buffer.from(offsets.buffer).toString('base64'),
          refused: refused.counts,
          refusedSamples: refused.samples,
          unanswered: unanswered + (sent - answered),
          firstSendAt,
          lastReplyAt,
          cpuS: (cpu.user + cpu.system) / 1e6,
        });
      };
      this.onClosed = (message) => {
        // Whatever is unanswered now stays so: refused by the closed connection.
        for (let i = answered; i < sent; i++) refused.add('connection closed', message);
        answered = sent;
        next = total;
        finish();
      };
      const pump = () => {
        while (next < total && (window === 0 || sent - answered < window)) {
          const index = next++;
          const topic = topics[Math.floor(index / count)]!;
          const seq = index % count;
          if (firstSendAt === 0) firstSendAt = now();
          sent++;
          this.publish!(topic, seq, size, (code, message, offset) => {
            if (finished) return;
            answered++;
            lastReplyAt = now();
            if (code === null) {
              acked++;
              ackedMap[index] = 1;
              offsets[index] = offset ?? 0;
            } else if (code === 'no ack') unanswered++;
            else refused.add(code, message ?? code);
            if (answered === total) finish();
            else if (window > 0) pump();
          });
        }
        if (next >= total && answered < total && timer === undefined) timer = setTimeout(finish, replyTimeoutMs);
      };
      pump();
    });
  }

  close(): void {
    this.closeFn();
  }
}

// ---- IPC ----------------------------------------------------------------------------

let subscribers: Subscribers | undefined;
let publisher: Publisher | undefined;

process.on('message', (msg: { type: string; job?: BroadcastJob; phase?: SubscriberPhase & PublisherPhase }) => {
  try {
    if (msg.type === 'prepare' && msg.job) {
      const job = msg.job;
      if (job.role === 'subscribers') {
        subscribers = new Subscribers(job);
        subscribers.prepare().then((ready) => send({ type: 'ready', ready }), fail);
      } else {
        publisher = new Publisher(job);
        publisher.prepare().then(() => send({ type: 'ready', ready: { connected: 1, failed: 0, errors: {}, errorSamples: {}, connectMs: 0 } }), fail);
      }
    } else if (msg.type === 'go' && msg.phase) {
      if (subscribers) subscribers.go(msg.phase);
      else if (publisher) publisher.go(msg.phase).then((result) => send({ type: 'published', result }), fail);
      else fail(new Error('go before prepare'));
    } else if (msg.type === 'report') {
      if (subscribers) send({ type: 'result', result: subscribers.report() });
    } else if (msg.type === 'close') {
      subscribers?.close();
      publisher?.close();
      setTimeout(() => process.exit(0), 200);
    }
  } catch (err) {
    fail(err);
  }
});

process.on('disconnect', () => process.exit(0));
