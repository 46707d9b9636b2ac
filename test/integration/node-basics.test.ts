import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NodeProcess } from '../helpers/node-process.js';
import { RawClient } from '../helpers/raw-client.js';

describe('a single node', () => {
  let node: NodeProcess;
  beforeAll(async () => {
    node = await NodeProcess.start();
  });
  afterAll(async () => {
    await node?.dispose();
  });

  it('answers /healthz with JSON', async () => {
    const res = await fetch(`${node.url}/healthz`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('application/json');
    const body = (await res.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ status: 'ok', engine: 'embedded' });
  });

  it('says hello with its own URL among the nodes', async () => {
    const client = await RawClient.connect(node.wsUrl);
    const reply = await client.ok({ op: 'hello' });
    expect(reply.nodes).toEqual([node.url]);
    expect(reply.protocol).toBe(1);
    await client.close();
  });

  it('publishes and delivers to a subscriber in offset order', async () => {
    const sub = await RawClient.connect(node.wsUrl);
    // Subscribing does not create the topic: it has no epoch until the first publish.
    const subscribed = await sub.ok({ op: 'subscribe', topic: 'basics' });
    expect(subscribed).toMatchObject({ epoch: '', first: 1, last: 0, recovered: true });
    const pub = await RawClient.connect(node.wsUrl);
    const offsets: number[] = [];
    const epochs = new Set<unknown>();
    for (let i = 0; i < 20; i++) {
      const reply = await pub.ok({ op: 'publish', topic: 'basics', data: { i } });
      offsets.push(reply.offset as number);
      epochs.add(reply.epoch);
    }
    expect(offsets).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    expect(epochs.size).toBe(1);
    const got = await sub.waitForMessages(20, 'basics');
    expect(got.map((m) => m.offset)).toEqual(offsets);
    expect(new Set(got.map((m) => m.epoch))).toEqual(epochs);
    expect(got.map((m) => (m.data as { i: number }).i)).toEqual(offsets.map((o) => o - 1));
    await Promise.all([sub.close(), pub.close()]);
  });
});
