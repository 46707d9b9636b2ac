import { createShardedAdapter } from '@socket.io/redis-adapter';
import type { Logger } from 'pino';
import type { ServerOptions } from 'socket.io';
import type { RedisLink } from '../engine/redis-link.js';

type Listener = (message: string, channel: string) => void;

/**
 * @socket.io/redis-adapter's sharded adapter over the cluster's Redis link,
 * so Socket.IO rooms and broadcasts span every node. Publishing goes through
 * the link's deadline; subscriptions through the link, which never rejects
 * while Redis is down and subscribes again after a reconnect (the adapter
 * does not catch subscription failures itself).
 */
export function socketIoAdapter(link: RedisLink, channelPrefix: string, logger: Logger): ServerOptions['adapter'] {
  const pub = {
    sSubscribe: () => Promise.resolve(),
    sUnsubscribe: () => Promise.resolve(),
    sPublish: (channel: string, payload: string | Buffer) => link.sendRaw(['SPUBLISH', channel, payload], channel),
    sendCommand: (args: string[]) => link.sendRaw(args, args[2]),
  };
  const sub = {
    sSubscribe: (channel: string, listener: Listener, buffers?: boolean) =>
      link
        .subscribe(channel, listener, buffers ?? false)
        .catch((err) => logger.warn({ err, channel }, 'Socket.IO adapter subscription failed; retried on reconnect')),
    sUnsubscribe: (channel: string) => link.unsubscribe(channel).catch(() => undefined),
    sPublish: pub.sPublish,
    sendCommand: pub.sendCommand,
  };
  return createShardedAdapter(pub, sub, { channelPrefix, subscriptionMode: 'static' });
}
