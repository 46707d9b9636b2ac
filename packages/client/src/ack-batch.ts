import { type AckResult, LIMITS, MeshError, RETRYABLE_CODES, type RequestBody } from '@meshmq/shared';

/** Sends one `ack` frame and resolves to its result. */
export type SendAck = (request: RequestBody<'ack'>) => Promise<AckResult>;

interface Waiting {
  offset: number;
  resolve(): void;
  reject(error: unknown): void;
}

/**
 * An ack the node could not settle for a passing reason (its storage failed
 * for that offset alone) is sent again by itself, with the request's retries;
 * after a `maybe_stored`, a `not_found` may mean the first one was applied.
 */
async function sendAlone(send: SendAck, frame: { op: 'ack'; topic: string; group: string; epoch: string }, waiting: Waiting, code: string): Promise<void> {
  try {
    await send({ ...frame, offset: waiting.offset });
    waiting.resolve();
  } catch (err) {
    const error = MeshError.from(err);
    if (code === 'maybe_stored' && error.code === 'not_found') {
      waiting.reject(
        new MeshError(
          'maybe_stored',
          `ack of offset ${waiting.offset} may have been applied: the node could not say at first, and sending it again found it no longer leased to this member (${error.message})`,
          { cause: error },
        ),
      );
    } else waiting.reject(error);
  }
}

/** Runs `fn` after the current turn of the event loop (its I/O callbacks and promise reactions). */
const nextTurn: (fn: () => void) => void = typeof setImmediate === 'function' ? (fn) => void setImmediate(fn) : (fn) => void setTimeout(fn, 0);

/**
 * Gathers the acks a group member makes in one turn of the event loop into
 * one `ack` frame with `offsets` per epoch (up to LIMITS.ackOffsets each):
 * one frame, one store write and one reply for the lot instead of one each.
 * Each ack still settles on its own: its promise rejects with the reason the
 * node gives for its offset alone.
 */
export class AckBatch {
  /** Acks waiting for the end of this turn, by the epoch they were delivered with. */
  private readonly waiting = new Map<string, Waiting[]>();
  private scheduled = false;

  constructor(
    private readonly topic: string,
    private readonly group: string,
    private readonly send: SendAck,
  ) {}

  add(offset: number, epoch: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let list = this.waiting.get(epoch);
      if (!list) this.waiting.set(epoch, (list = []));
      list.push({ offset, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        nextTurn(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const batches = [...this.waiting];
    this.waiting.clear();
    for (const [epoch, list] of batches) {
      for (let i = 0; i < list.length; i += LIMITS.ackOffsets) void this.sendBatch(epoch, list.slice(i, i + LIMITS.ackOffsets));
    }
  }

  private async sendBatch(epoch: string, list: Waiting[]): Promise<void> {
    const frame = { op: 'ack' as const, topic: this.topic, group: this.group, epoch };
    try {
      if (list.length === 1) {
        await this.send({ ...frame, offset: list[0]!.offset });
        list[0]!.resolve();
        return;
      }
      const result = await this.send({ ...frame, offsets: list.map((w) => w.offset) });
      const failed = new Map((result.failed ?? []).map((f) => [f.offset, f]));
      for (const waiting of list) {
        const failure = failed.get(waiting.offset);
        if (!failure) waiting.resolve();
        else if (RETRYABLE_CODES.includes(failure.code)) void sendAlone(this.send, frame, waiting, failure.code);
        else waiting.reject(new MeshError(failure.code, failure.message));
      }
    } catch (err) {
      for (const waiting of list) waiting.reject(err);
    }
  }
}
