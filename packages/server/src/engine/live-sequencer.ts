import type { StoredMessage } from './engine.js';

interface TopicSequence {
  /** Last offset handed to the sink. */
  last: number;
  held: Map<number, StoredMessage>;
  waiters: Array<{ offset: number; resolve: () => void }>;
}

/**
 * Hands durable messages to a sink strictly in offset order per topic, holding
 * back any that become durable before their predecessors. Listeners therefore
 * see live order equal to log order, with no gap.
 */
export class LiveSequencer {
  private readonly topics = new Map<string, TopicSequence>();

  constructor(private readonly sink: (message: StoredMessage) => void) {}

  /** Starts tracking `topic` at `last` unless it is tracked already. */
  reset(topic: string, last: number): void {
    if (!this.topics.has(topic)) this.topics.set(topic, { last, held: new Map(), waiters: [] });
  }

  push(message: StoredMessage): void {
    const seq = this.topics.get(message.topic);
    if (!seq) throw new Error(`LiveSequencer: topic ${message.topic} is not tracked`);
    if (message.offset <= seq.last) return;
    seq.held.set(message.offset, message);
    let next = seq.held.get(seq.last + 1);
    while (next) {
      seq.held.delete(next.offset);
      seq.last = next.offset;
      this.sink(next);
      next = seq.held.get(seq.last + 1);
    }
    if (seq.waiters.length > 0) {
      const still = [];
      for (const waiter of seq.waiters) {
        if (waiter.offset <= seq.last) waiter.resolve();
        else still.push(waiter);
      }
      seq.waiters = still;
    }
  }

  /** Resolves once `offset` of `topic` has been handed to the sink. */
  reached(topic: string, offset: number): Promise<void> {
    const seq = this.topics.get(topic);
    if (!seq || offset <= seq.last) return Promise.resolve();
    return new Promise((resolve) => seq.waiters.push({ offset, resolve }));
  }
}
