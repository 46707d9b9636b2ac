import { type AckResult, LIMITS, MeshError, type RequestBody } from '@meshmq/shared';
import { describe, expect, it } from 'vitest';
import { AckBatch } from '../../packages/client/src/ack-batch.js';

/**
 * How the SDK gathers a group member's acks: what goes in each frame, and
 * which ack's promise a node's answer settles. (The frames reaching a real
 * node are checked in test/integration/client-groups.test.ts.)
 */
describe("the SDK's batching of acks", () => {
  const recorder = (answer: (frame: RequestBody<'ack'>) => AckResult | Promise<AckResult>) => {
    const frames: Array<RequestBody<'ack'>> = [];
    const batch = new AckBatch('t', 'g', async (frame) => {
      frames.push(frame);
      return answer(frame);
    });
    return { frames, batch };
  };

  it('sends an ack made alone with one offset', async () => {
    const { frames, batch } = recorder(() => ({}));
    await batch.add(7, 'e1');
    expect(frames).toEqual([{ op: 'ack', topic: 't', group: 'g', epoch: 'e1', offset: 7 }]);
  });

  it('puts the acks of one turn in one frame per epoch, at most LIMITS.ackOffsets offsets each', async () => {
    const { frames, batch } = recorder((frame) => ({ acked: frame.offsets?.length ?? 1, failed: [] }));
    const count = LIMITS.ackOffsets + 5;
    await Promise.all([...Array.from({ length: count }, (_, i) => batch.add(i + 1, 'e1')), batch.add(1, 'e0'), batch.add(2, 'e0')]);
    expect(frames.map((f) => [f.epoch, f.offsets?.length])).toEqual([
      ['e1', LIMITS.ackOffsets],
      ['e1', 5],
      ['e0', 2],
    ]);
    // The next turn starts a new frame.
    await batch.add(99, 'e1');
    expect(frames.at(-1)).toMatchObject({ offset: 99 });
  });

  it('fails only the acks the node names, with its code and message', async () => {
    const { batch } = recorder(() => ({ acked: 2, failed: [{ offset: 2, code: 'not_found', message: 'offset 2 is not leased to this member' }] }));
    const outcomes = await Promise.allSettled([batch.add(1, 'e'), batch.add(2, 'e'), batch.add(3, 'e')]);
    expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    const reason = (outcomes[1] as PromiseRejectedResult).reason;
    expect(reason).toBeInstanceOf(MeshError);
    expect(reason).toMatchObject({ code: 'not_found', message: 'offset 2 is not leased to this member' });
  });

  it('sends again, alone, an ack whose storage failed for it alone; after maybe_stored a not_found is maybe_stored', async () => {
    const { frames, batch } = recorder((frame) => {
      if (frame.offsets) {
        return {
          acked: 1,
          failed: [
            { offset: 2, code: 'unavailable', message: 'Redis is unreachable' },
            { offset: 3, code: 'maybe_stored', message: 'Redis did not answer' },
          ],
        };
      }
      if (frame.offset === 3) throw new MeshError('not_found', 'offset 3 is not pending');
      return {};
    });
    const outcomes = await Promise.allSettled([batch.add(1, 'e'), batch.add(2, 'e'), batch.add(3, 'e')]);
    expect(frames.slice(1).map((f) => f.offset)).toEqual([2, 3]);
    expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'fulfilled', 'rejected']);
    expect((outcomes[2] as PromiseRejectedResult).reason).toMatchObject({ code: 'maybe_stored' });
  });

  it('fails every ack of a frame the node refused as a whole', async () => {
    const { batch } = recorder(() => {
      throw new MeshError('maybe_stored', 'no answer');
    });
    const outcomes = await Promise.allSettled([batch.add(1, 'e'), batch.add(2, 'e')]);
    expect(outcomes.map((o) => o.status === 'rejected' && (o.reason as MeshError).code)).toEqual(['maybe_stored', 'maybe_stored']);
  });
});
