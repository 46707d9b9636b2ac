export type Frame = Record<string, unknown> & { op: string };

/** Message frames among `frames`, optionally for one topic or group. */
export function messagesOf(frames: readonly Frame[], topic?: string, group?: string): Frame[] {
  return frames.filter((f) => f.op === 'message' && (topic === undefined || f.topic === topic) && (group === undefined || f.group === group));
}

/** Polls `current` until it holds at least `count` frames; resolves with them. */
export async function waitForCount(current: () => Frame[], count: number, timeoutMs: number): Promise<Frame[]> {
  const deadline = Date.now() + timeoutMs;
  while (current().length < count) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${count} messages, have ${current().length}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return current();
}
