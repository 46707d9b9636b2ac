import { rmSync } from 'node:fs';
import { EmbeddedEngine, type EmbeddedEngineOptions } from '@meshmq/server';
import { onTestFinished } from 'vitest';
import { tempDir } from '../helpers/node-process.js';

/** An open embedded engine in a fresh directory; closed and removed when the current test finishes. */
export async function tempEngine(options: Omit<EmbeddedEngineOptions, 'dataDir'> = {}): Promise<EmbeddedEngine> {
  const dataDir = tempDir('meshmq-core-');
  const engine = new EmbeddedEngine({ ...options, dataDir });
  onTestFinished(async () => {
    await engine.close();
    rmSync(dataDir, { recursive: true, force: true });
  });
  await engine.open();
  return engine;
}

/** Publishes `count` messages concurrently, each with data `{ i }` (its index in the call); resolves with their offsets. */
export async function publishMany(engine: EmbeddedEngine, topic: string, count: number): Promise<number[]> {
  const outcomes = await Promise.all(Array.from({ length: count }, (_, i) => engine.publish(topic, { i })));
  return outcomes.map((o) => o.offset);
}
