import { randomUUID } from 'node:crypto';
import {
  DEFAULTS,
  MeshError,
  PROTOCOL_VERSION,
  isValidTopicName,
  parseRequest,
  requestIdOf,
  type AckRequest,
  type HelloResult,
  type HistoryRequest,
  type HistoryResult,
  type NackRequest,
  type PublishRequest,
  type PublishResult,
  type Request,
  type SubscribeRequest,
  type SubscribeResult,
  type UnsubscribeRequest,
} from '@meshmq/shared';
import type { TopicInfo } from '../engine/engine.js';
import type { Broker } from './broker.js';
import type { Connection } from './connection.js';
import { FanoutSubscription } from './fanout-subscription.js';
import type { GroupDispatcher, GroupMember } from './group-dispatcher.js';
import { toMessageFrame } from './message-frame.js';

interface Membership {
  dispatcher: GroupDispatcher;
  member: GroupMember;
}

/** What a request handler returns: the ok fields, and work to start once the reply is sent. */
interface Handled {
  result: object;
  afterReply?: () => void;
}

/**
 * One client connection, whatever its transport: validates each request,
 * runs it against the broker, and owns the connection's subscriptions.
 */
export class Session {
  readonly id = randomUUID();
  private readonly fanout = new Map<string, FanoutSubscription>();
  private readonly groups = new Map<string, Membership>();
  private closed = false;
  private inflight = 0;
  private idleWaiters: Array<() => void> = [];

  constructor(
    private readonly broker: Broker,
    private readonly connection: Connection,
  ) {}

  /**
   * Handles one decoded frame and sends exactly one reply for it: ok or error.
   * Never throws.
   */
  async handleFrame(frame: unknown): Promise<void> {
    const id = requestIdOf(frame);
    this.inflight++;
    try {
      const request = parseRequest(frame);
      const { result, afterReply } = await this.dispatch(request);
      this.send({ op: 'ok', id: request.id, ...result });
      afterReply?.();
    } catch (err) {
      this.sendError(id, err);
    } finally {
      if (--this.inflight === 0) for (const wake of this.idleWaiters.splice(0)) wake();
    }
  }

  /** Resolves once no request of this connection is being handled. */
  idle(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Tells the client to reconnect elsewhere (the node is draining). */
  move(nodes: string[]): void {
    this.send({ op: 'move', reason: 'draining', nodes });
  }

  /** Closes the underlying connection; the transport then calls close(). */
  disconnect(code: number, reason: string): void {
    this.connection.close(code, reason);
  }

  /** Sends an error frame; used by transports for frames that never decoded. */
  sendError(id: string | number | null, err: unknown): void {
    const error = MeshError.from(err);
    if (error.code === 'internal') this.broker.logger.error({ err, session: this.id }, 'request failed');
    this.send({ op: 'error', id, code: error.code, message: error.message });
  }

  /** Releases every subscription; group leases go back to the group at once. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const sub of this.fanout.values()) {
      this.broker.removeFanout(sub);
      this.broker.unwatchTopic(sub.topic);
    }
    this.fanout.clear();
    const leaving = [...this.groups.values()];
    this.groups.clear();
    await Promise.all(leaving.map((m) => this.leave(m)));
    this.broker.sessionClosed(this);
  }

  private send(frame: Parameters<Connection['send']>[0]): void {
    if (!this.closed) this.connection.send(frame);
  }

  private dispatch(request: Request): Promise<Handled> {
    if (this.closed) throw new MeshError('unavailable', 'the connection is closing');
    switch (request.op) {
      case 'hello':
        return Promise.resolve({ result: this.hello() });
      case 'ping':
        return Promise.resolve({ result: { ts: Date.now() } });
      case 'publish':
        return this.publish(request).then((result) => ({ result }));
      case 'subscribe':
        return request.group === undefined ? this.subscribe(request) : this.join(request, request.group);
      case 'unsubscribe':
        return this.unsubscribe(request).then(() => ({ result: {} }));
      case 'ack':
        return this.ack(request).then(() => ({ result: {} }));
      case 'nack':
        return this.nack(request).then(() => ({ result: {} }));
      case 'history':
        return this.history(request).then((result) => ({ result }));
    }
  }

  private hello(): HelloResult {
    return {
      node: this.broker.options.nodeId,
      version: this.broker.options.version,
      protocol: PROTOCOL_VERSION,
      nodes: this.broker.options.nodeUrls(),
      limits: { maxMessageBytes: this.broker.options.maxMessageBytes, dedupeWindowMs: this.broker.options.dedupeWindowMs },
    };
  }

  private async publish(request: PublishRequest): Promise<PublishResult> {
    if (!isValidTopicName(request.topic)) {
      throw new MeshError('forbidden', `topic '${request.topic}' is written by the broker only`);
    }
    const json = JSON.stringify(request.data);
    const size = Buffer.byteLength(json);
    if (size > this.broker.options.maxMessageBytes) {
      throw new MeshError(
        'payload_too_large',
        `'data' is ${size} bytes encoded; the limit is ${this.broker.options.maxMessageBytes}`,
      );
    }
    const outcome = await this.broker.engine.publish(request.topic, request.data, request.key === undefined ? { json } : { key: request.key, json });
    if (!outcome.duplicate) this.broker.countIn(request.topic);
    return outcome;
  }

  private async subscribe(request: SubscribeRequest): Promise<Handled> {
    const { topic } = request;
    if (request.prefetch !== undefined || request.ackWait !== undefined || request.maxDeliveries !== undefined) {
      throw new MeshError('bad_request', "'prefetch', 'ackWait' and 'maxDeliveries' apply to group subscriptions only");
    }
    if (this.fanout.has(topic)) throw new MeshError('bad_request', `already subscribed to topic '${topic}'`);
    // Watch before reading the edge, so nothing published in between is missed.
    await this.broker.watchTopic(topic);
    let info: TopicInfo;
    try {
      info = await this.broker.engine.topicInfo(topic);
      if (request.epoch === info.epoch && request.from !== undefined && request.from - 1 > info.last) {
        // The client saw more of this epoch than the log holds: it lost its newest messages.
        info = await this.broker.engine.fence(topic, info.epoch, request.from - 1);
      }
    } catch (err) {
      this.broker.unwatchTopic(topic);
      throw err;
    }
    if (this.closed || this.fanout.has(topic)) {
      this.broker.unwatchTopic(topic);
      throw new MeshError(this.closed ? 'unavailable' : 'bad_request', this.closed ? 'the connection is closing' : `already subscribed to topic '${topic}'`);
    }
    const { from, missing } = resumePoint(info, request.from, request.epoch);
    const result: SubscribeResult = { epoch: info.epoch, first: info.first, last: info.last, recovered: missing === undefined, from };
    if (missing) result.missing = missing;
    const subscription = new FanoutSubscription(
      topic,
      this.broker.engine,
      this.connection,
      from,
      info.epoch,
      (count) => this.broker.countOut(count),
      (err) => this.broker.logger.error({ err, topic, session: this.id }, 'subscription delivery failed'),
    );
    this.fanout.set(topic, subscription);
    this.broker.addFanout(subscription);
    this.connection.joinTopic?.(topic);
    return { result, afterReply: () => subscription.start(info.last) };
  }

  private async join(request: SubscribeRequest, group: string): Promise<Handled> {
    const { topic } = request;
    const key = membershipKey(topic, group);
    if (this.groups.has(key)) throw new MeshError('bad_request', `already a member of group '${group}' of topic '${topic}'`);
    const options: Parameters<Broker['engine']['ensureGroup']>[2] = {};
    if (request.ackWait !== undefined) options.ackWaitMs = request.ackWait;
    if (request.maxDeliveries !== undefined) options.maxDeliveries = request.maxDeliveries;
    if (request.from !== undefined) options.startAt = request.from;
    await this.broker.watchTopic(topic);
    let info, topicInfo;
    try {
      info = await this.broker.engine.ensureGroup(topic, group, options);
      topicInfo = await this.broker.engine.topicInfo(topic);
    } catch (err) {
      this.broker.unwatchTopic(topic);
      throw err;
    }
    if (this.closed || this.groups.has(key)) {
      this.broker.unwatchTopic(topic);
      throw new MeshError(this.closed ? 'unavailable' : 'bad_request', this.closed ? 'the connection is closing' : `already a member of group '${group}' of topic '${topic}'`);
    }
    const dispatcher = this.broker.dispatcher(topic, group);
    const member: GroupMember = {
      consumer: `${this.broker.options.nodeId}/${this.id}/${group}`,
      connection: this.connection,
      prefetch: request.prefetch ?? DEFAULTS.prefetch,
      inflight: new Map(),
    };
    this.groups.set(key, { dispatcher, member });
    const result: SubscribeResult = {
      epoch: topicInfo.epoch,
      first: topicInfo.first,
      last: topicInfo.last,
      recovered: true,
      group,
      prefetch: member.prefetch,
      ackWait: info.ackWaitMs,
      maxDeliveries: info.maxDeliveries,
    };
    return { result, afterReply: () => dispatcher.add(member) };
  }

  private async unsubscribe(request: UnsubscribeRequest): Promise<void> {
    if (request.group === undefined) {
      const sub = this.fanout.get(request.topic);
      if (!sub) throw new MeshError('not_found', `not subscribed to topic '${request.topic}'`);
      this.fanout.delete(request.topic);
      this.broker.removeFanout(sub);
      this.connection.leaveTopic?.(request.topic);
      this.broker.unwatchTopic(request.topic);
      return;
    }
    const key = membershipKey(request.topic, request.group);
    const membership = this.groups.get(key);
    if (!membership) throw this.notMember(request.topic, request.group);
    this.groups.delete(key);
    await this.leave(membership);
  }

  private async leave({ dispatcher, member }: Membership): Promise<void> {
    try {
      await dispatcher.remove(member.consumer);
    } catch (err) {
      this.broker.logger.error({ err, topic: dispatcher.topic, group: dispatcher.group }, 'releasing group leases failed');
    } finally {
      this.broker.releaseDispatcher(dispatcher);
      this.broker.unwatchTopic(dispatcher.topic);
    }
  }

  private async ack(request: AckRequest): Promise<void> {
    const membership = this.groups.get(membershipKey(request.topic, request.group));
    if (!membership) throw this.notMember(request.topic, request.group);
    await membership.dispatcher.ack(membership.member, request.offset, request.epoch);
  }

  private async nack(request: NackRequest): Promise<void> {
    const membership = this.groups.get(membershipKey(request.topic, request.group));
    if (!membership) throw this.notMember(request.topic, request.group);
    await membership.dispatcher.nack(membership.member, request.offset, request.delay ?? 0, request.epoch);
  }

  private async history(request: HistoryRequest): Promise<HistoryResult> {
    const info = await this.broker.engine.topicInfo(request.topic);
    const messages = await this.broker.engine.read(
      request.topic,
      request.from ?? info.first,
      request.limit ?? DEFAULTS.historyLimit,
    );
    return { epoch: info.epoch, first: info.first, last: info.last, messages: messages.map((m) => toMessageFrame(m)) };
  }

  private notMember(topic: string, group: string): MeshError {
    return new MeshError('not_found', `this connection is not a member of group '${group}' of topic '${topic}'`);
  }
}

/**
 * Where a fan-out subscription starts and what the client asked for that it
 * will not get as it knew it: offsets removed by retention, or offsets of an
 * earlier epoch that were lost and hold other messages now.
 */
export function resumePoint(
  info: TopicInfo,
  requested: number | undefined,
  epoch: string | undefined,
): { from: number; missing?: { from: number; to: number } } {
  if (requested === undefined) return { from: info.last + 1 };
  let from = requested;
  if (epoch !== undefined && epoch !== info.epoch) {
    const i = info.epochs.findIndex((e) => e.epoch === epoch);
    if (i < 0) {
      // A log the client read from is gone entirely: its offsets mean nothing here.
      return { from: info.first, missing: { from: 1, to: requested - 1 } };
    }
    const end = info.epochs[i + 1]!.start - 1;
    if (requested - 1 > end) return { from: Math.max(end + 1, info.first), missing: { from: end + 1, to: requested - 1 } };
  }
  if (from < info.first) return { from: info.first, missing: { from, to: info.first - 1 } };
  return { from };
}

function membershipKey(topic: string, group: string): string {
  return `${topic}\u0000${group}`;
}
