import { MeshError } from '@meshmq/shared';
import type { ClaimResult, Engine, GroupDelivery } from '../engine/engine.js';
import type { Connection } from './connection.js';
import { DRAIN_POLL_MS } from './fanout-subscription.js';
import { HIGH_WATER_MARK } from './limits.js';
import { toMessageFrame } from './message-frame.js';

/** One connection's membership in a group. */
export interface GroupMember {
  /** Consumer id in the engine: unique per node, connection and group. */
  readonly consumer: string;
  readonly connection: Connection;
  prefetch: number;
  /** Offsets leased to this member and their lease deadlines. */
  readonly inflight: Map<number, number>;
  /** Messages asked for by claims still under way (the dispatcher's count; start at 0). */
  claiming: number;
}

/** What a dispatcher tells its owner. */
export interface DispatchEvents {
  /** A message went to a member (its `delivery` counts earlier ones). */
  delivered(delivery: GroupDelivery): void;
  /** A claim moved messages that reached maxDeliveries to the dead-letter topic. */
  deadLettered(count: number): void;
  /** Dispatch failed (storage unreachable); it is tried again. */
  failed(err: unknown): void;
}

/** A connection's membership in a group, as the session holds it. */
export interface GroupMembership {
  readonly dispatcher: GroupDispatcher;
  readonly member: GroupMember;
}

/** The largest batch one member claims per round once a backlog shows up. */
const MAX_ROUND = 64;
/**
 * Claims under way at once per group on this node. A claim waits for the
 * store to commit its leases; letting the next one start meanwhile keeps
 * deliveries flowing at the rate acks free prefetch, instead of one store
 * round trip at a time.
 */
const MAX_CONCURRENT_DRAINS = 4;
/** After a failed pump (storage unreachable), the next try comes this much later, doubling up to the max. */
const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 5000;

/**
 * Hands a group's messages to the group's members on this node: at most
 * `prefetch` unacked deliveries per member, spread round-robin, with
 * redelivery when a lease ends or a nack delay passes. The engine owns the
 * durable state (cursor, pending entries, delivery counts); this class owns
 * who is connected and when to ask the engine for more.
 */
export class GroupDispatcher {
  private readonly members = new Map<string, GroupMember>();
  private draining = 0;
  /** Counts pump calls: a drain that saw it change while its claim was under way looks again. */
  private wanted = 0;
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;
  private retryMs = RETRY_MIN_MS;
  private closed = false;

  constructor(
    readonly topic: string,
    readonly group: string,
    private readonly engine: Engine,
    private readonly events: DispatchEvents,
  ) {}

  get size(): number {
    return this.members.size;
  }

  add(member: GroupMember): void {
    this.members.set(member.consumer, member);
    this.pump();
  }

  /** Removes a member and makes its leases deliverable to the others at once. */
  async remove(consumer: string): Promise<void> {
    const member = this.members.get(consumer);
    if (!member) return;
    this.members.delete(consumer);
    member.inflight.clear();
    try {
      await this.engine.release(this.topic, this.group, consumer);
    } finally {
      this.pump();
    }
  }

  /** Settles a delivery leased to `member`; the engine refuses one leased to anyone else. */
  async ack(member: GroupMember, offset: number, epoch?: string): Promise<void> {
    const [error] = await this.ackMany(member, [offset], epoch);
    if (error) throw error;
  }

  /** Settles deliveries leased to `member` in one store write; per offset, undefined or why it was not settled. */
  async ackMany(member: GroupMember, offsets: readonly number[], epoch?: string): Promise<Array<MeshError | undefined>> {
    const results = await this.engine.ackMany(this.topic, this.group, offsets, settleOptions(member, epoch));
    for (const [i, offset] of offsets.entries()) if (results[i] === undefined) this.forget(offset);
    this.pump();
    return results;
  }

  async nack(member: GroupMember, offset: number, delayMs: number, epoch?: string): Promise<void> {
    const dueAt = await this.engine.nack(this.topic, this.group, offset, delayMs, settleOptions(member, epoch));
    this.forget(offset);
    this.schedule(dueAt);
    this.pump();
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.members.clear();
  }

  /** Asks the engine for work for every member with free prefetch; past the claims allowed at once, a running drain looks again. */
  pump(): void {
    if (this.closed) return;
    this.wanted++;
    if (this.draining >= MAX_CONCURRENT_DRAINS) return;
    this.draining++;
    void this.drain()
      .then(
        () => {
          this.retryMs = RETRY_MIN_MS;
        },
        async (err) => {
          if (err instanceof MeshError && err.code === 'not_found') {
            // The group vanished under its members (a Redis that lost its data): create it again from the
            // start of the log, since nothing says what of it the group has processed (at least once).
            await this.engine.ensureGroup(this.topic, this.group, { startAt: 1 }).catch(() => undefined);
          } else {
            this.events.failed(err);
          }
          // Nothing else may come to wake this group (a lease that ended while Redis was down): try again.
          this.schedule(Date.now() + this.retryMs);
          this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
        },
      )
      .finally(() => {
        this.draining--;
      });
  }

  private async drain(): Promise<void> {
    this.expireLeases(Date.now());
    for (const member of this.members.values()) {
      for (const deadline of member.inflight.values()) this.schedule(deadline);
    }
    let round = 1;
    for (;;) {
      // A member with no free prefetch left only because of claims under way is served when those return:
      // they look again, since this call changed `wanted`.
      const seen = this.wanted;
      const wanting = [...this.members.values()].filter((m) => free(m) > 0);
      // A member whose connection is not reading gets nothing more until it does: prefetch bounds messages, this bounds bytes.
      const hungry = wanting.filter((m) => m.connection.bufferedAmount() < HIGH_WATER_MARK);
      if (hungry.length < wanting.length) this.schedule(Date.now() + DRAIN_POLL_MS);
      if (hungry.length === 0 || this.closed) return;
      const asked = hungry.map((member) => Math.min(round, free(member)));
      for (const [i, member] of hungry.entries()) member.claiming += asked[i]!;
      let results: ClaimResult[];
      try {
        results = await Promise.all(hungry.map((member, i) => this.engine.claim(this.topic, this.group, member.consumer, asked[i]!)));
      } finally {
        for (const [i, member] of hungry.entries()) member.claiming -= asked[i]!;
      }
      let delivered = 0;
      for (const [i, result] of results.entries()) {
        const member = hungry[i]!;
        if (result.nextDueAt !== undefined) this.schedule(result.nextDueAt);
        if (result.deadLettered) this.events.deadLettered(result.deadLettered);
        for (const delivery of result.deliveries) this.deliver(member, delivery);
        delivered += result.deliveries.length;
        // Round-robin: a member just served goes to the back of the line (claims are served in line order).
        if (result.deliveries.length > 0 && this.members.get(member.consumer) === member) {
          this.members.delete(member.consumer);
          this.members.set(member.consumer, member);
        }
      }
      if (delivered === 0 && this.wanted === seen) return;
      round = Math.min(round * 2, MAX_ROUND);
    }
  }

  private deliver(member: GroupMember, delivery: GroupDelivery): void {
    if (this.members.get(member.consumer) !== member) {
      // The member left while the claim was in flight: hand the lease back.
      void this.engine.release(this.topic, this.group, member.consumer).then(
        () => this.pump(),
        (err) => this.events.failed(err),
      );
      return;
    }
    member.inflight.set(delivery.message.offset, delivery.deadline);
    this.schedule(delivery.deadline);
    member.connection.send(toMessageFrame(delivery.message, { group: this.group, delivery: delivery.delivery }));
    this.events.delivered(delivery);
  }

  /** Drops leases whose deadline passed: the engine will redeliver those messages. */
  private expireLeases(now: number): void {
    for (const member of this.members.values()) {
      for (const [offset, deadline] of member.inflight) {
        if (deadline <= now) member.inflight.delete(offset);
      }
    }
  }

  private forget(offset: number): void {
    for (const member of this.members.values()) member.inflight.delete(offset);
  }

  private schedule(at: number): void {
    if (this.closed || at >= this.timerAt) return;
    clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(
      () => {
        this.timerAt = Infinity;
        this.timer = undefined;
        this.pump();
      },
      Math.max(0, at - Date.now()) + 5,
    );
    this.timer.unref();
  }
}

/** Deliveries a member can take now: its prefetch less what it holds and what claims under way may bring it. */
function free(member: GroupMember): number {
  return member.prefetch - member.inflight.size - member.claiming;
}

function settleOptions(member: GroupMember, epoch: string | undefined) {
  return epoch === undefined ? { consumer: member.consumer } : { consumer: member.consumer, epoch };
}
