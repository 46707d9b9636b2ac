import { type NodeOptions, NodeProcess } from './node-process.js';
import { RedisProcess } from './redis-process.js';

export type EngineName = 'embedded' | 'redis';

/** Both storage engines, for describe.each: each promise that holds for both is tested on both. */
export const ENGINES: EngineName[] = ['embedded', 'redis'];

/** A node on the named engine; on Redis, over a redis-server of its own. */
export class EngineNode {
  private constructor(
    readonly node: NodeProcess,
    readonly redis: RedisProcess | undefined,
  ) {}

  static async start(engine: EngineName, options: NodeOptions = {}): Promise<EngineNode> {
    if (engine === 'embedded') return new EngineNode(await NodeProcess.start(options), undefined);
    const redis = await RedisProcess.start();
    try {
      const env = { REDIS_URL: redis.url, NODE_ID: 'solo', HEARTBEAT: '300ms', ...options.env };
      return new EngineNode(await NodeProcess.start({ ...options, env }), redis);
    } catch (err) {
      await redis.dispose();
      throw err;
    }
  }

  async dispose(): Promise<void> {
    await this.node.dispose();
    await this.redis?.dispose();
  }
}
