import type { Frame } from './frames.js';
import type { ProtocolClient } from './sio-client.js';
import { sleep } from './util.js';

/** One group delivery as a member received it. */
export interface Delivery {
  member: number;
  offset: number;
  delivery: number;
}

/** What came of one ack: the server's reply, or what the transport threw (e.g. the connection dropped). */
export interface AckOutcome {
  member: number;
  offset: number;
  reply?: Frame;
  thrown?: string;
}

/**
 * Acks every group delivery to `members` as it arrives and records what came
 * of each ack. It never throws and never skips a delivery, so a test polls
 * only for "enough has arrived" and then asserts on the whole history
 * (`deliveries()`, `acks`, `failedAcks()`): a duplicate or a failed ack stays
 * in the record instead of being retried past.
 */
export class GroupAcker {
  readonly acks: AckOutcome[] = [];
  private readonly handled: number[];
  private running = true;
  private readonly loop: Promise<void>;

  constructor(
    private readonly members: readonly ProtocolClient[],
    private readonly topic: string,
    private readonly group: string,
  ) {
    this.handled = members.map(() => 0);
    this.loop = this.run();
  }

  /** Every delivery so far, member by member, each in arrival order. */
  deliveries(): Delivery[] {
    return this.members.flatMap((member, i) =>
      member.messages(this.topic, this.group).map((m) => ({ member: i, offset: m.offset as number, delivery: m.delivery as number })),
    );
  }

  /** Distinct offsets delivered so far. */
  offsets(): Set<number> {
    return new Set(this.deliveries().map((d) => d.offset));
  }

  /** Offsets delivered more than once, with every delivery of each. */
  duplicates(): Array<[number, Delivery[]]> {
    const byOffset = new Map<number, Delivery[]>();
    for (const d of this.deliveries()) byOffset.set(d.offset, [...(byOffset.get(d.offset) ?? []), d]);
    return [...byOffset].filter(([, ds]) => ds.length > 1);
  }

  /** Acks whose reply was not ok, or that got no reply at all. */
  failedAcks(): AckOutcome[] {
    return this.acks.filter((a) => a.reply?.op !== 'ok');
  }

  /** Stops acking; resolves once every ack sent has an outcome. */
  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }

  private async run(): Promise<void> {
    while (this.running) {
      const sent: Array<Promise<void>> = [];
      for (const [i, member] of this.members.entries()) {
        const fresh = member.messages(this.topic, this.group).slice(this.handled[i]);
        this.handled[i]! += fresh.length;
        for (const m of fresh) sent.push(this.ack(i, member, m.offset as number));
      }
      await Promise.all(sent);
      await sleep(5);
    }
  }

  private async ack(member: number, client: ProtocolClient, offset: number): Promise<void> {
    try {
      const reply = await client.request({ op: 'ack', topic: this.topic, group: this.group, offset });
      this.acks.push({ member, offset, reply });
    } catch (err) {
      this.acks.push({ member, offset, thrown: String(err) });
    }
  }
}
