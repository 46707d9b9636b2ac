import type { GroupConsumer, GroupMessage, Message, Subscription } from '@meshmq/client';
import { errorText } from './api.js';
import { mesh } from './connection.svelte.js';

/**
 * Playground state lives in this module, not in the view, so that a live
 * subscription or a group membership keeps running while the user looks at
 * another page.
 */

/** Messages and acks each playground list keeps (older ones scroll away). */
const MAX_ITEMS = 200;

export interface Ack {
  id: number;
  topic: string;
  offset: number;
  epoch: string;
  duplicate: boolean;
  key: string | undefined;
  ms: number;
  at: number;
}

let seq = 0;

function parsePayload(format: 'json' | 'text', text: string): unknown {
  if (format === 'text') return text;
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`The payload is not valid JSON (${(err as Error).message}). Fix it, or switch the format to Text.`);
  }
}

class Publisher {
  topic = $state('demo');
  format = $state<'json' | 'text'>('json');
  payload = $state('{\n  "hello": "world"\n}');
  key = $state('');
  busy = $state(false);
  error = $state<string | null>(null);
  acks = $state.raw<Ack[]>([]);

  async publish(): Promise<void> {
    this.error = null;
    const topic = this.topic.trim();
    const key = this.key.trim() === '' ? undefined : this.key.trim();
    let data: unknown;
    try {
      if (topic === '') throw new Error('Enter a topic name.');
      data = parsePayload(this.format, this.payload);
    } catch (err) {
      this.error = errorText(err);
      return;
    }
    this.busy = true;
    const started = performance.now();
    try {
      const result = await mesh().publish(topic, data, key === undefined ? {} : { key });
      const ack: Ack = { id: ++seq, topic, ...result, key, ms: performance.now() - started, at: Date.now() };
      this.acks = [ack, ...this.acks].slice(0, 20);
    } catch (err) {
      this.error = errorText(err);
    } finally {
      this.busy = false;
    }
  }
}

export interface Received {
  id: number;
  message: Message;
  at: number;
}

class Subscriber {
  topic = $state('demo');
  fromMode = $state<'now' | 'offset'>('now');
  fromOffset = $state(1);
  busy = $state(false);
  error = $state<string | null>(null);
  /** The topic of the running subscription. */
  active = $state<string | null>(null);
  messages = $state.raw<Received[]>([]);
  gaps = $state.raw<string[]>([]);
  private subscription: Subscription | undefined;

  async subscribe(): Promise<void> {
    this.error = null;
    const topic = this.topic.trim();
    if (topic === '') {
      this.error = 'Enter a topic name.';
      return;
    }
    this.busy = true;
    this.messages = [];
    this.gaps = [];
    try {
      this.subscription = await mesh().subscribe(
        topic,
        (message) => {
          this.messages = [{ id: ++seq, message, at: Date.now() }, ...this.messages].slice(0, MAX_ITEMS);
        },
        {
          ...(this.fromMode === 'offset' ? { from: Math.max(1, Math.floor(this.fromOffset)) } : {}),
          onGap: (gap) => {
            this.gaps = [...this.gaps, `offsets ${gap.from}–${gap.to} will never arrive (${gap.reason})`];
          },
        },
      );
      this.active = topic;
    } catch (err) {
      this.error = errorText(err);
    } finally {
      this.busy = false;
    }
  }

  async unsubscribe(): Promise<void> {
    const subscription = this.subscription;
    this.subscription = undefined;
    this.active = null;
    this.error = null;
    try {
      await subscription?.unsubscribe();
    } catch (err) {
      this.error = errorText(err);
    }
  }

  clear(): void {
    this.messages = [];
  }
}

export interface Delivered {
  id: number;
  message: GroupMessage;
  state: 'unacked' | 'acking' | 'acked' | 'nacked';
  error: string | null;
  at: number;
}

class GroupPanel {
  topic = $state('demo');
  group = $state('workers');
  prefetch = $state(10);
  ackWait = $state(30_000);
  maxDeliveries = $state(5);
  startAt = $state<'new' | 'first'>('new');
  busy = $state(false);
  error = $state<string | null>(null);
  /** `topic / group` of the running membership. */
  active = $state<{ topic: string; group: string } | null>(null);
  deliveries = $state.raw<Delivered[]>([]);
  private consumer: GroupConsumer | undefined;

  async join(): Promise<void> {
    this.error = null;
    const topic = this.topic.trim();
    const group = this.group.trim();
    if (topic === '' || group === '') {
      this.error = 'Enter a topic and a group name.';
      return;
    }
    this.busy = true;
    this.deliveries = [];
    try {
      this.consumer = await mesh().consume(
        topic,
        group,
        (message) => {
          this.deliveries = [{ id: ++seq, message, state: 'unacked' as const, error: null, at: Date.now() }, ...this.deliveries].slice(0, MAX_ITEMS);
        },
        {
          autoAck: false,
          prefetch: this.prefetch,
          ackWait: this.ackWait,
          maxDeliveries: this.maxDeliveries,
          ...(this.startAt === 'first' ? { from: 1 } : {}),
        },
      );
      this.active = { topic, group };
    } catch (err) {
      this.error = errorText(err);
    } finally {
      this.busy = false;
    }
  }

  async leave(): Promise<void> {
    const consumer = this.consumer;
    this.consumer = undefined;
    this.active = null;
    this.error = null;
    try {
      await consumer?.stop();
    } catch (err) {
      this.error = errorText(err);
    }
  }

  async settle(item: Delivered, how: 'ack' | 'nack'): Promise<void> {
    this.update(item.id, { state: 'acking', error: null });
    try {
      await (how === 'ack' ? item.message.ack() : item.message.nack());
      this.update(item.id, { state: how === 'ack' ? 'acked' : 'nacked' });
    } catch (err) {
      this.update(item.id, { state: 'unacked', error: errorText(err) });
    }
  }

  private update(id: number, patch: Partial<Delivered>): void {
    this.deliveries = this.deliveries.map((d) => (d.id === id ? { ...d, ...patch } : d));
  }
}

export const publisher = new Publisher();
export const subscriber = new Subscriber();
export const groupPanel = new GroupPanel();
