import { createServer, type Server, type Socket } from 'node:net';
import { RedisEngine } from '@meshmq/server';
import { MeshError } from '@meshmq/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/**
 * A stand-in for Redis that speaks just enough RESP for the engine to
 * connect and register a topic, and answers everything else the engine asks
 * of a topic (the publish script, XRANGE, HMGET) with the error reply in
 * `errorLine`: a reply real Redis does not send, but a proxy in between or a
 * broken server might, and the node must still say what happened.
 */
class FakeRedis {
  errorLine = '';
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();

  private constructor() {
    this.server = createServer((socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      let buffered = Buffer.alloc(0);
      socket.on('data', (chunk: Buffer) => {
        buffered = Buffer.concat([buffered, chunk]);
        for (;;) {
          const parsed = parseCommand(buffered);
          if (!parsed) break;
          buffered = buffered.subarray(parsed.length);
          socket.write(this.answer(parsed.args));
        }
      });
    });
  }

  static async start(): Promise<FakeRedis> {
    const fake = new FakeRedis();
    await new Promise<void>((resolve) => fake.server.listen(0, '127.0.0.1', resolve));
    return fake;
  }

  get url(): string {
    const address = this.server.address();
    if (address === null || typeof address === 'string') throw new Error('not listening');
    return `redis://127.0.0.1:${address.port}`;
  }

  private answer(args: string[]): string {
    const name = args[0]!.toUpperCase();
    if (name === 'HELLO') {
      return '%7\r\n+server\r\n+redis\r\n+version\r\n+7.0.15\r\n+proto\r\n:3\r\n+id\r\n:1\r\n+mode\r\n+standalone\r\n+role\r\n+master\r\n+modules\r\n*0\r\n';
    }
    if (name === 'PING') return '+PONG\r\n';
    if (name === 'CONFIG') return '*0\r\n';
    // The topic registry script (one key, the registry set): the topic is new.
    if (name === 'EVALSHA' && args[2] === '1' && args[3]!.endsWith('topics')) return ':1\r\n';
    if (['EVALSHA', 'EVAL', 'XRANGE', 'HMGET'].includes(name)) return `-${this.errorLine}\r\n`;
    return '+OK\r\n';
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** One RESP command (an array of bulk strings) from the front of `data`, or undefined until it is complete. */
function parseCommand(data: Buffer): { args: string[]; length: number } | undefined {
  let at = 0;
  const line = () => {
    const end = data.indexOf('\r\n', at);
    if (end < 0) return undefined;
    const text = data.toString('latin1', at, end);
    at = end + 2;
    return text;
  };
  const header = line();
  if (header === undefined) return undefined;
  if (!header.startsWith('*')) throw new Error(`the fake Redis reads arrays of bulk strings only, got '${header}'`);
  const args: string[] = [];
  for (let i = 0; i < Number(header.slice(1)); i++) {
    const size = line();
    if (size === undefined) return undefined;
    const length = Number(size.slice(1));
    if (data.length < at + length + 2) return undefined;
    args.push(data.toString('utf8', at, at + length));
    at += length + 2;
  }
  return { args, length: at };
}

async function failure(work: Promise<unknown>): Promise<MeshError> {
  try {
    await work;
  } catch (err) {
    if (err instanceof MeshError) return err;
    throw err;
  }
  throw new Error('it succeeded');
}

/**
 * Every failure has a code a caller can act on and a message that says what
 * happened (issue 14: a burst got `internal` with the message `Redis: `).
 * An error reply without text tells nothing of what Redis did, so a write
 * answered with one may have been stored.
 */
describe('a Redis error reply that says nothing', () => {
  let redis: FakeRedis;
  let engine: RedisEngine;
  beforeAll(async () => {
    redis = await FakeRedis.start();
    engine = new RedisEngine({ url: redis.url });
    await engine.open();
  });
  afterAll(async () => {
    await engine?.close();
    await redis?.close();
  });

  for (const [what, errorLine, said] of [
    ['an empty error reply', '', 'an empty error reply'],
    ["a bare 'ERR' (what Redis sends for a script's error_reply(''))", 'ERR ', "an error reply with no text ('ERR')"],
  ] as const) {
    it(`answers a publish that got ${what} with maybe_stored, naming the command`, async () => {
      redis.errorLine = errorLine;
      const err = await failure(engine.publish('orders', { sku: 'A-1' }, { key: 'k-1' }));
      expect(err.code).toBe('maybe_stored');
      expect(err.message).toBe(
        `Redis answered EVALSHA on 'mq:{orders}:topic:meta' with ${said}, which does not say whether it took effect: it may have been stored; send the request again with the same idempotency key to find out`,
      );
    });

    it(`answers a read that got ${what} with unavailable, naming the command`, async () => {
      redis.errorLine = errorLine;
      const err = await failure(engine.read('orders', 1, 10));
      expect(err.code).toBe('unavailable');
      expect(err.message).toMatch(
        new RegExp(
          `^Redis answered (XRANGE on 'mq:\\{orders\\}:topic:log'|HMGET on 'mq:\\{orders\\}:topic:meta') with ${literal(said)}; nothing was stored, retry later$`,
        ),
      );
    });
  }
});

function literal(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
