import { rmSync } from 'node:fs';
import { EmbeddedEngine, type Engine } from '@meshmq/server';
import { tempDir } from '../helpers/node-process.js';
import { engineConformance, type EngineFactoryOptions } from './conformance.js';

engineConformance('embedded', {
  async create(options: EngineFactoryOptions = {}) {
    const dataDir = tempDir('meshmq-engine-');
    const make = () => new EmbeddedEngine({ dataDir, ...options });
    let engine: Engine = make();
    await engine.open();
    return {
      get engine() {
        return engine;
      },
      async reopen() {
        await engine.close();
        engine = make();
        await engine.open();
        return engine;
      },
      async dispose() {
        await engine.close();
        rmSync(dataDir, { recursive: true, force: true });
      },
    };
  },
});
