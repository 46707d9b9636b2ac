import { rmSync } from 'node:fs';
import { expect, it } from 'vitest';
import { EmbeddedEngine } from '@meshmq/server';
import { tempDir } from '../helpers/node-process.js';
import { engineConformance, reopenable, type EngineFactoryOptions } from './conformance.js';

/** The EmbeddedEngine checks that it is open only where it writes (assertOpen). */
const CLOSED_CHECK_ONLY_ON_WRITES = 'product bug: EmbeddedEngine checks `closed` only in its write paths';

engineConformance('embedded', {
  shared: false,
  // Left out on the embedded engine, for the product bug each names.
  knownFailures: {
    'rejects every read with unavailable at once and reports the engine down':
      `${CLOSED_CHECK_ONLY_ON_WRITES}: after close, topicInfo, listTopics, groupInfo, listGroups and pending answer from memory, ` +
      "and read fails with lmdb's own Error ('Can not renew a transaction from a closed database'), without a MeshError code",
    'rejects every change with unavailable at once and changes nothing':
      `${CLOSED_CHECK_ONLY_ON_WRITES}: after close, ensureGroup of an existing group answers from memory, claim fails with lmdb's ` +
      'own Error without a code, and ack, nack, release, releaseConsumers and configureGroup change in-memory state before the ' +
      'write that rejects (so release and releaseConsumers, after the rejected ack and nack, find nothing and resolve 0)',
    'rejects watch and unwatch with unavailable at once': `${CLOSED_CHECK_ONLY_ON_WRITES}: watch and unwatch are no-ops that resolve after close`,
  },
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
