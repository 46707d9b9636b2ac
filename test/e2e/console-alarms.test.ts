import { mintToken } from '@meshmq/server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NodeProcess } from '../helpers/node-process.js';
import { RawClient } from '../helpers/raw-client.js';
import { RedisProcess } from '../helpers/redis-process.js';
import { eventually, uniqueTopic } from '../helpers/util.js';
import { ConsoleBrowser, DESKTOP, NARROW, waitForAttribute, waitForText } from './browser.js';

const SECRET = 'console-alarms-test-secret-0123456789abcdef';

/**
 * The alarm banner of the console, in headless Chromium, on a node of a
 * two-node cluster over a real Redis with authentication: it shows every
 * node's alarms on every page, says which node it cannot hear from while
 * Redis is down, clears when the condition ends, and says so when its own
 * node cannot be reached.
 */
describe('web console alarm banner (cluster over Redis)', () => {
  let redis: RedisProcess;
  let a: NodeProcess;
  let b: NodeProcess;
  let browser: ConsoleBrowser;
  let admin: string;
  const topic = uniqueTopic('alarms');

  beforeAll(async () => {
    [redis, browser, admin] = await Promise.all([
      RedisProcess.start(),
      ConsoleBrowser.launch(DESKTOP),
      mintToken({ secret: SECRET, sub: 'ops', permissions: { admin: true }, ttlMs: 600_000 }),
    ]);
    const env = (id: string) => ({ REDIS_URL: redis.url, NODE_ID: id, HEARTBEAT: '300ms', NODE_DOWN_AFTER: '1500ms', AUTH_SECRET: SECRET });
    [a, b] = await Promise.all([NodeProcess.start({ env: env('node-a') }), NodeProcess.start({ env: env('node-b') })]);
  });

  afterAll(async () => {
    await browser?.close();
    await Promise.all([a?.dispose(), b?.dispose()]);
    await redis?.dispose();
  });

  const page = () => browser.page;
  const byTestId = (id: string) => page().getByTestId(id);
  const banner = () => byTestId('alarms');
  const alarm = (id: string, node: string) => banner().locator(`[data-testid="alarm"][data-alarm-id="${id}"][data-node="${node}"]`);

  it('shows no alarm while all is well', async () => {
    await page().goto(a.url);
    await byTestId('token-dialog').locator('input[name="token"]').fill(admin);
    await byTestId('sign-in').click();
    await waitForAttribute(page().locator('[data-testid="node-card"][data-node-id="node-a"]'), 'data-status', 'up');
    await waitForAttribute(page().locator('[data-testid="node-card"][data-node-id="node-b"]'), 'data-status', 'up');
    await waitForAttribute(banner(), 'data-state', 'read');
    // Both nodes answered, with nothing to report.
    await waitForAttribute(banner(), 'data-count', '0');
    expect(await byTestId('alarms-missing').count()).toBe(0);
    expect(await byTestId('alarms-unknown').count()).toBe(0);
  });

  it('shows the dead letters of a member on the other node, on every page, with a link to them', async () => {
    const member = await RawClient.connect(`${b.wsUrl}?token=${admin}`);
    const publisher = await RawClient.connect(`${a.wsUrl}?token=${admin}`);
    try {
      await member.ok({ op: 'subscribe', topic, group: 'billing', maxDeliveries: 1 });
      await publisher.ok({ op: 'publish', topic, data: { order: 1 } });
      const [message] = await member.waitForMessages(1, topic, 'billing');
      await member.ok({ op: 'nack', topic, group: 'billing', offset: message!.offset });
    } finally {
      await Promise.all([member.close(), publisher.close()]);
    }

    const line = alarm(`dead_letters:${topic}`, 'node-b');
    await line.waitFor();
    expect(await line.getAttribute('data-severity')).toBe('warning');
    expect(await line.getByTestId('alarm-summary').textContent()).toContain(`Messages of topic '${topic}' are arriving in its dead letters`);
    expect(await line.getByTestId('alarm-action').textContent()).toContain(`look at $dlq.${topic}`);
    expect(await line.textContent()).toContain('node-b');

    // The link leads to the topic's dead letters; the banner stays on that page, and on the others.
    await line.getByRole('link', { name: /Dead letters/ }).click();
    await page().waitForURL(`${a.url}/dead-letters/${encodeURIComponent(topic)}`);
    await alarm(`dead_letters:${topic}`, 'node-b').waitFor();
    await browser.screenshot('alarms-dead-letters');
    for (const view of ['topics', 'playground', 'nodes']) {
      await byTestId(`nav-${view}`).click();
      await alarm(`dead_letters:${topic}`, 'node-b').waitFor();
    }
  });

  it('shows redis_down while Redis is stopped, naming the node it cannot hear from, and clears when Redis is back', async () => {
    await redis.kill();
    const down = alarm('redis_down', 'node-a');
    await down.waitFor({ timeout: 15_000 });
    expect(await down.getAttribute('data-severity')).toBe('critical');
    expect(await down.getByTestId('alarm-summary').textContent()).toContain('Redis is unreachable');
    expect(await down.getByTestId('alarm-action').textContent()).toContain('Check that Redis');
    // node-b raised the same alarm, but its answer travels over Redis: the banner says its alarms are not known.
    await waitForText(byTestId('alarms-missing'), (t) => t.includes('node-b') && t.includes('not known'), 15_000);
    // The critical alarm comes first.
    expect(await banner().getByTestId('alarm').first().getAttribute('data-alarm-id')).toBe('redis_down');
    await browser.screenshot('alarms-redis-down');
    await page().setViewportSize(NARROW);
    try {
      expect(await browser.overflowsHorizontally(), `the banner overflows at ${NARROW.width}px`).toBe(false);
      await browser.screenshot('alarms-redis-down-narrow');
    } finally {
      await page().setViewportSize(DESKTOP);
    }

    // The same port and data directory: Redis comes back with its data.
    await redis.start();
    await byTestId('alarms-missing').waitFor({ state: 'detached', timeout: 15_000 });
    // node-b answers again (still with redis_down until its next look), with its dead letters still recent.
    await alarm(`dead_letters:${topic}`, 'node-b').waitFor({ timeout: 15_000 });
    const redisDown = banner().locator('[data-alarm-id="redis_down"]');
    await eventually(async () => (await redisDown.count()) === 0, 15_000, 'redis_down to clear on both nodes');
    await browser.screenshot('alarms-redis-back');
  });

  it('had no console errors in the browser while the nodes answered', () => {
    expect(browser.errors).toEqual([]);
  });

  it('says the alarms are unknown while its own node cannot be reached, and reads them again when it is back', async () => {
    await a.kill();
    await waitForText(byTestId('alarms-unknown'), (t) => t.includes('Cannot read the alarms from node-a') && t.includes('cannot reach the node'), 15_000);
    expect(await banner().getAttribute('data-state')).toBe('unknown');
    // What was last read is not shown as if it were current.
    expect(await banner().getByTestId('alarm').count()).toBe(0);
    await browser.screenshot('alarms-node-unreachable');

    await a.start();
    await byTestId('alarms-unknown').waitFor({ state: 'detached', timeout: 15_000 });
    await alarm(`dead_letters:${topic}`, 'node-b').waitFor({ timeout: 15_000 });
    // A browser logs each request to a node that is gone; nothing else.
    const unexpected = browser.errors.filter((e) => !e.includes('ERR_CONNECTION_REFUSED') && !e.includes('WebSocket connection to'));
    expect(unexpected).toEqual([]);
  });
});
