import { randomUUID } from 'node:crypto';
import type { ClusterStats, NodeActivity } from '@meshmq/shared';
import type { Logger } from 'pino';
import type { RedisLink } from '../engine/redis-link.js';

/** How long a cluster-wide request waits for the other nodes by default. */
export const ACTIVITY_TIMEOUT_MS = 1500;

type Envelope = { ask: string; from: string } | { answer: string; to: string; activity: NodeActivity };

/** Adds the counts of `add` into `target`, a record without a prototype (topic names may be `__proto__`). */
function sumInto(target: Record<string, number>, add: Record<string, number>): void {
  for (const [k, v] of Object.entries(add)) target[k] = (target[k] ?? 0) + v;
}

const counts = (): Record<string, number> => Object.create(null) as Record<string, number>;

/** The cluster's totals of a set of node answers. */
export function totalsOf(nodes: NodeActivity[]): ClusterStats['totals'] {
  const totals: ClusterStats['totals'] = { connections: 0, subscriptions: 0, subscribers: counts(), members: counts(), publishRates: counts() };
  for (const n of nodes) {
    totals.connections += n.connections;
    totals.subscriptions += n.subscriptions;
    sumInto(totals.subscribers, n.subscribers);
    sumInto(totals.members, n.members);
    sumInto(totals.publishRates, n.publishRates);
  }
  return totals;
}

/**
 * Cluster-wide activity (connections, subscribers and members per topic,
 * publish rates, active alarms) over the cluster's own Redis channel, so
 * monitoring works whatever client transports a node runs. A node asks on
 * the channel; every node answers with its own; the asker takes what
 * arrived in time. With Redis down, no other node's answer can arrive.
 */
export class ClusterActivity {
  private readonly waiting = new Map<string, (activity: NodeActivity) => void>();

  constructor(
    private readonly link: RedisLink,
    private readonly channel: string,
    private readonly nodeId: string,
    private readonly local: () => NodeActivity,
    private readonly logger: Logger,
  ) {}

  start(): Promise<void> {
    return this.link.subscribe(this.channel, (payload) => this.onMessage(payload));
  }

  stop(): Promise<void> {
    return this.link.unsubscribe(this.channel).catch(() => undefined);
  }

  /**
   * This node's activity and that of each of `expected` (node ids) that
   * answers within `timeoutMs`; the others are named in `missing`. Never
   * waits longer than that, and never fails: with Redis down it answers
   * with this node alone.
   */
  async gather(expected: string[], timeoutMs = ACTIVITY_TIMEOUT_MS): Promise<ClusterStats> {
    const own = this.local();
    const others = new Map<string, NodeActivity>();
    const wanted = expected.filter((id) => id !== this.nodeId);
    if (wanted.length > 0) {
      const id = randomUUID();
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.waiting.delete(id);
          resolve();
        };
        const timer = setTimeout(done, timeoutMs);
        this.waiting.set(id, (activity) => {
          others.set(activity.node, activity);
          if (wanted.every((node) => others.has(node))) done();
        });
        this.send({ ask: id, from: this.nodeId }).catch(done);
      });
    }
    const nodes = [own, ...others.values()];
    return { nodes, missing: wanted.filter((node) => !others.has(node)), totals: totalsOf(nodes) };
  }

  private send(envelope: Envelope): Promise<unknown> {
    return this.link.command(['SPUBLISH', this.channel, JSON.stringify(envelope)], this.channel);
  }

  private onMessage(payload: string): void {
    let envelope: Envelope;
    try {
      envelope = JSON.parse(payload) as Envelope;
    } catch {
      return;
    }
    if ('ask' in envelope) {
      // A node counts itself without asking.
      if (envelope.from === this.nodeId) return;
      this.send({ answer: envelope.ask, to: envelope.from, activity: this.local() }).catch((err) =>
        this.logger.debug({ err }, 'answering a cluster activity request failed'),
      );
    } else if (envelope.to === this.nodeId) {
      this.waiting.get(envelope.answer)?.(envelope.activity);
    }
  }
}
