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
