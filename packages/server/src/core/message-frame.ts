import type { MessageFrame } from '@meshmq/shared';
import type { StoredMessage } from '../engine/engine.js';

export function toMessageFrame(message: StoredMessage, group?: { group: string; delivery: number }): MessageFrame {
  const frame: MessageFrame = {
    op: 'message',
    topic: message.topic,
    offset: message.offset,
    epoch: message.epoch,
    ts: message.ts,
    data: message.data,
  };
  if (message.key !== undefined) frame.key = message.key;
  if (group) {
    frame.group = group.group;
    frame.delivery = group.delivery;
  }
  return frame;
}

const frames = new WeakMap<StoredMessage, { frame: MessageFrame; bytes?: Buffer }>();

/**
 * The fan-out frame of a live message, built once however many subscribers
 * get it (the broker hands the same object to all of them).
 */
export function sharedMessageFrame(message: StoredMessage): { frame: MessageFrame; encode: () => Buffer } {
  let entry = frames.get(message);
  if (!entry) frames.set(message, (entry = { frame: toMessageFrame(message) }));
  const cached = entry;
  return { frame: cached.frame, encode: () => (cached.bytes ??= Buffer.from(JSON.stringify(cached.frame))) };
}
