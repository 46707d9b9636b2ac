import { MeshError } from '@meshmq/shared';
import { createCluster } from 'redis';
import { type Backend, type Listener, Pipeline } from './redis-backend.js';

interface ClusterClient {
  isReady: boolean;
  on(event: string, listener: (...args: never[]) => void): unknown;
  connect(): Promise<unknown>;
  close(): Promise<unknown>;
  sendCommand(key: string | undefined, readonly: boolean, args: Array<string | Buffer>, options: object): Promise<unknown>;
  getNodeClientForKey(key: string): Promise<{ sendCommand(args: string[], options: object): Promise<unknown> }>;
  sSubscribe(channel: string, listener: Listener, buffers?: boolean): Promise<unknown>;
  sUnsubscribe(channel: string): Promise<unknown>;
}

/**
 * Redis Cluster through node-redis's cluster client, which follows each
 * shard's primary (MOVED, topology refreshes) by itself.
 */
export function clusterBackend(rootNodes: Array<{ url: string }>, clientOptions: Record<string, unknown>): Backend {
  // The cluster client has command options of its own (a timeout among them), besides each shard client's.
  const { commandOptions } = clientOptions;
  const cluster = createCluster({ rootNodes, defaults: clientOptions, commandOptions } as never) as unknown as ClusterClient;
  // Progress is followed per hash slot's tag, not per shard connection (which node-redis hides): commands of one
  // topic share a lane, answers for other slots of the same shard do not count for it.
  const lanes = new Map<string, Pipeline>();
  const lane = (key: string | undefined) => {
    const tag = key === undefined ? '' : hashTag(key);
    let pipeline = lanes.get(tag);
    if (!pipeline) {
      const created: Pipeline = new Pipeline(() => {
        if (lanes.get(tag) === created) lanes.delete(tag);
      });
      lanes.set(tag, created);
      pipeline = created;
    }
    return pipeline;
  };
  return {
    get ready() {
      return cluster.isReady;
    },
    connect: async () => {
      await cluster.connect();
    },
    close: async () => {
      await cluster.close();
    },
    send: (args, key, abortSignal) => lane(key).track(cluster.sendCommand(key, false, args, { abortSignal })),
    silence: (key) => lanes.get(key === undefined ? '' : hashTag(key))?.silence() ?? 0,
    writeReplicated: (write, key, replicas, timeoutMs, abortSignal) => {
      if (key === undefined) throw new MeshError('internal', 'a replicated write on Redis Cluster needs the key that picks its shard');
      // Both are queued in the same turn on the shard primary's client, so they are written back to back on its connection
      // (where WAIT holds up the shard's other commands while it waits: node-redis keeps one connection per shard).
      const client = cluster.getNodeClientForKey(key);
      const pipeline = lane(key);
      const [written, replicated] = [write, ['WAIT', String(replicas), String(timeoutMs)]].map((args) =>
        pipeline.track(client.then((c) => c.sendCommand(args, { abortSignal }))),
      );
      return { written: written!, replicated: replicated! };
    },
    sSubscribe: (channel, listener, buffers) => cluster.sSubscribe(channel, listener, buffers),
    sUnsubscribe: (channel) => cluster.sUnsubscribe(channel),
    watch: (changed) => {
      // An 'error' event without a listener would kill the process: report it as state instead.
      cluster.on('error', (err: Error) => changed(err));
      for (const event of ['ready', 'end', 'reconnecting', 'connect']) cluster.on(event, () => changed());
    },
    // Each shard's failover is node-redis's to follow (MOVED, topology refresh).
    suspect: () => undefined,
  };
}

/** The part of a key Redis Cluster hashes: the first non-empty `{…}`, else the whole key. */
function hashTag(key: string): string {
  const open = key.indexOf('{');
  if (open < 0) return key;
  const close = key.indexOf('}', open + 1);
  return close > open + 1 ? key.slice(open + 1, close) : key;
}
