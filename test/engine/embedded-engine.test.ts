import { rmSync } from 'node:fs';
import { EmbeddedEngine } from '@meshmq/server';
import { expect, it } from 'vitest';
import { tempDir } from '../helpers/node-process.js';
import { type EngineFactoryOptions, engineConformance, reopenable } from './conformance.js';

engineConformance('embedded', {
  shared: false,
  create(options: EngineFactoryOptions = {}) {
    const dataDir = tempDir('meshmq-engine-');
    return reopenable(() => new EmbeddedEngine({ dataDir, ...options }), {
      cleanup: () => rmSync(dataDir, { recursive: true, force: true }),
    });
  },
});

it('embedded: a restart hands every lease back at once, since no member survives it', async () => {
  const dataDir = tempDir('meshmq-engine-');
  let engine = new EmbeddedEngine({ dataDir });
  await engine.open();
  await engine.ensureGroup('jobs', 'g', { startAt: 1, ackWaitMs: 60_000 });
  await engine.publish('jobs', 1);
  await engine.claim('jobs', 'g', 'old-process', 1);
  await engine.close();
  engine = new EmbeddedEngine({ dataDir });
  await engine.open();
  const { deliveries } = await engine.claim('jobs', 'g', 'new-process', 1);
  expect(deliveries.map((d) => [d.message.offset, d.delivery])).toEqual([[1, 2]]);
  await engine.close();
  rmSync(dataDir, { recursive: true, force: true });
});
