import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, NodeProcess } from '../helpers/node-process.js';
import { RawClient } from '../helpers/raw-client.js';
import { RedisProcess } from '../helpers/redis-process.js';
import { ConsoleBrowser, DESKTOP, waitForAttribute, waitForText } from './browser.js';

/**
 * Two nodes that know each other through --peers (the static-peers mode for
 * nodes without Redis): the console on one shows both, and a node that stops
 * turns down without a reload.
 */
describe('web console with two nodes (static peers)', () => {
  let a: NodeProcess;
  let b: NodeProcess;
  let browser: ConsoleBrowser;

  beforeAll(async () => {
    const [portA, portB] = [await freePort(), await freePort()];
    const url = (port: number) => `http://127.0.0.1:${port}`;
    [a, b, browser] = await Promise.all([
      NodeProcess.start({ port: portA, args: ['--peers', `${url(portA)},${url(portB)}`] }),
      NodeProcess.start({ port: portB, env: { PEERS: url(portA) } }),
      ConsoleBrowser.launch(DESKTOP),
    ]);
  });

  afterAll(async () => {
    await browser?.close();
    await Promise.all([a?.dispose(), b?.dispose()]);
  });

  it('shows a card per node, and the stopped node turns down within seconds', async () => {
    const page = browser.page;
    await page.goto(a.url);
    const cardA = page.locator(`[data-testid="node-card"][data-node-url="${a.url}"]`);
    const cardB = page.locator(`[data-testid="node-card"][data-node-url="${b.url}"]`);
    await waitForAttribute(cardA, 'data-status', 'up');
    await waitForAttribute(cardB, 'data-status', 'up');
    expect(await page.getByTestId('node-card').count()).toBe(2);
    expect(await cardA.textContent()).toContain('this node');

    // Traffic on B shows on B's card, read by A from B.
    const client = await RawClient.connect(b.wsUrl);
    try {
      let flowing = true;
      const traffic = (async () => {
        for (let i = 0; flowing; i++) {
          await client.ok({ op: 'publish', topic: 'sensors', data: { i } });
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      })();
      try {
        await waitForText(cardB.getByTestId('rate-in'), (text) => text !== '0/s');
      } finally {
        flowing = false;
        await traffic;
      }
    } finally {
      await client.close();
    }
    await browser.screenshot('nodes-two-up');

    await b.stop();
    await waitForAttribute(cardB, 'data-status', 'down', 10_000);
    expect(await cardB.getByTestId('node-down-note').textContent()).toMatch(/unreachable.*Last seen/s);
    expect(await cardA.getAttribute('data-status')).toBe('up');
    expect(await page.getByTestId('connection').getAttribute('data-state')).toBe('connected');
    await browser.screenshot('nodes-one-down');
  });

  it('had no console errors in the browser', () => {
    expect(browser.errors).toEqual([]);
  });
});

/** Two nodes over one Redis: the console lists the membership, and a killed node turns down when its heartbeat expires. */
describe('web console with two nodes (cluster over Redis)', () => {
  let redis: RedisProcess;
  let a: NodeProcess;
  let b: NodeProcess;
  let browser: ConsoleBrowser;

  beforeAll(async () => {
    [redis, browser] = await Promise.all([RedisProcess.start(), ConsoleBrowser.launch(DESKTOP)]);
    const env = (id: string) => ({ REDIS_URL: redis.url, NODE_ID: id, HEARTBEAT: '300ms', NODE_DOWN_AFTER: '1500ms' });
    [a, b] = await Promise.all([NodeProcess.start({ env: env('node-a') }), NodeProcess.start({ env: env('node-b') })]);
  });

  afterAll(async () => {
    await browser?.close();
    await Promise.all([a?.dispose(), b?.dispose()]);
    await redis?.dispose();
  });

  it('shows both members with their Redis link, and the killed one turns down', async () => {
    const page = browser.page;
    await page.goto(a.url);
    const cardA = page.locator('[data-testid="node-card"][data-node-id="node-a"]');
    const cardB = page.locator('[data-testid="node-card"][data-node-id="node-b"]');
    await waitForAttribute(cardA, 'data-status', 'up');
    await waitForAttribute(cardB, 'data-status', 'up');
    expect(await page.locator('main').textContent()).toContain('cluster membership over Redis');
    expect(await cardA.getByTestId('redis-state').textContent()).toBe('up');
    expect(await cardB.getByTestId('redis-state').textContent()).toBe('up');
    await browser.screenshot('nodes-cluster-up');

    await b.kill();
    await waitForAttribute(cardB, 'data-status', 'down', 10_000);
    expect(await cardA.getAttribute('data-status')).toBe('up');
    await browser.screenshot('nodes-cluster-one-down');
  });

  it('had no console errors in the browser', () => {
    expect(browser.errors).toEqual([]);
  });
});
