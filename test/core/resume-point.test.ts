import { resumePoint, type TopicInfo } from '@meshmq/server';
import { describe, expect, it } from 'vitest';

/**
 * A log that began in epoch `old` and continues in `cur` from offset 11
 * (offsets 11.. of `old` were lost); retention removed 1..4; last is 20.
 */
const topic: TopicInfo = {
  topic: 'orders',
  epoch: 'cur',
  epochs: [
    { epoch: 'old', start: 1 },
    { epoch: 'cur', start: 11 },
  ],
  first: 5,
  last: 20,
  count: 16,
};

/** The same log after retention removed everything up to 12, past where `old` ended. */
const trimmed: TopicInfo = { ...topic, first: 13, count: 8 };

/** A topic that does not exist yet, as the broker describes it to a subscriber. */
const noTopic: TopicInfo = { topic: 'orders', epoch: '', epochs: [], first: 1, last: 0, count: 0 };

type Point = ReturnType<typeof resumePoint>;
const cases: Array<[string, TopicInfo, number | undefined, string | undefined, Point]> = [
  ['no from: only what comes next', topic, undefined, undefined, { from: 21 }],
  ['no from, with an epoch: still only what comes next', topic, undefined, 'old', { from: 21 }],
  ['from within the retained log', topic, 12, 'cur', { from: 12 }],
  ['from within, no epoch given', topic, 12, undefined, { from: 12 }],
  ['from the next offset', topic, 21, 'cur', { from: 21 }],
  ['from before the first retained offset', topic, 2, 'cur', { from: 5, missing: { from: 2, to: 4, reason: 'retention' } }],
  ['from before first, no epoch given', topic, 1, undefined, { from: 5, missing: { from: 1, to: 4, reason: 'retention' } }],
  ['earlier known epoch, within its part of the log', topic, 8, 'old', { from: 8 }],
  ['earlier known epoch, right after its last offset', topic, 11, 'old', { from: 11 }],
  ['earlier known epoch, before first: retention', topic, 3, 'old', { from: 5, missing: { from: 3, to: 4, reason: 'retention' } }],
  ['earlier known epoch, past its end', topic, 15, 'old', { from: 11, missing: { from: 11, to: 14, reason: 'epoch' } }],
  ['earlier known epoch, past its end and past last', topic, 30, 'old', { from: 11, missing: { from: 11, to: 29, reason: 'epoch' } }],
  ['earlier known epoch, past its end, retention past it too', trimmed, 15, 'old', { from: 13, missing: { from: 11, to: 14, reason: 'epoch' } }],
  ['unknown epoch: everything it saw is gone', topic, 15, 'lost', { from: 5, missing: { from: 1, to: 14, reason: 'epoch' } }],
  ['unknown epoch from 1: nothing seen, nothing missing (to < from)', topic, 1, 'lost', { from: 5, missing: { from: 1, to: 0, reason: 'epoch' } }],
  ['same epoch, past last: the log holds less than the client saw', topic, 25, 'cur', { from: 21, missing: { from: 21, to: 24, reason: 'epoch' } }],
  ["epoch '' means nothing seen: like no epoch", topic, 12, '', { from: 12 }],
  ["epoch '' from before first: retention, not epoch", topic, 1, '', { from: 5, missing: { from: 1, to: 4, reason: 'retention' } }],
  ['topic without messages, no from', noTopic, undefined, undefined, { from: 1 }],
  ["topic without messages, from 1 in epoch ''", noTopic, 1, '', { from: 1 }],
];

describe('resumePoint', () => {
  it.each(cases)('%s', (_name, info, from, epoch, expected) => {
    expect(resumePoint(info, from, epoch)).toEqual(expected);
  });
});
