import { MeshError } from '@meshmq/shared';
import { createCluster } from 'redis';
import type { Backend, Listener } from './redis-backend.js';

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
  const cluster = createCluster({ rootNodes, defaults: clientOptions } as never) as unknown as ClusterClient;
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
    send: (args, key, abortSignal) => cluster.sendCommand(key, false, args, { abortSignal }),
    writeReplicated: (write, key, replicas, timeoutMs, abortSignal) => {
      if (key === undefined) throw new MeshError('internal', 'a replicated write on Redis Cluster needs the key that picks its shard');
      // Both are queued in the same turn on the shard primary's client, so they are written back to back on its connection
      // (where WAIT holds up the shard's other commands while it waits: node-redis keeps one connection per shard).
      const client = cluster.getNodeClientForKey(key);
      const [written, replicated] = [write, ['WAIT', String(replicas), String(timeoutMs)]].map((args) =>
        client.then((c) => c.sendCommand(args, { abortSignal })),
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
