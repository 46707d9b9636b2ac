import { MeshClient } from '@meshmq/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NodeProcess } from '../helpers/node-process.js';
import { RawClient } from '../helpers/raw-client.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { ConsoleBrowser, DESKTOP, NARROW, waitForAttribute, waitForText } from './browser.js';

/**
 * The built console, served by a real node, driven in headless Chromium:
 * nodes, the playground (publish, subscribe, group ack/nack), the topic
 * page, dead letters with replay and purge, and the narrow layout.
 */
describe('web console on one node', () => {
  let node: NodeProcess;
  let browser: ConsoleBrowser;
  let publisher: RawClient;

  beforeAll(async () => {
    [node, browser] = await Promise.all([NodeProcess.start(), ConsoleBrowser.launch(DESKTOP)]);
    publisher = await RawClient.connect(node.wsUrl);
  });

  afterAll(async () => {
    await publisher?.close();
    await browser?.close();
    await node?.dispose();
  });

  const page = () => browser.page;
  const byTestId = (id: string) => page().getByTestId(id);

  async function publishRaw(topic: string, data: unknown): Promise<number> {
    const reply = await publisher.ok({ op: 'publish', topic, data });
    return reply.offset as number;
  }

  /** Navigates with the console's own menu, as a user would. */
  async function open(nav: 'nodes' | 'topics' | 'dead-letters' | 'playground'): Promise<void> {
    await byTestId(`nav-${nav}`).click();
  }

  it('shows the node, connected, with rates that move when messages flow', async () => {
    await page().goto(node.url);
    const card = byTestId('node-card');
    await card.waitFor();
    expect(await card.count()).toBe(1);
    await waitForAttribute(card, 'data-status', 'up');
    expect(await card.getAttribute('data-node-url')).toBe(node.url);
    await waitForAttribute(byTestId('connection'), 'data-state', 'connected');
    expect(await card.getByTestId('rate-in').textContent()).toBe('0/s');
    const chartBefore = await card.locator('svg path').nth(1).getAttribute('d');

    // Traffic from a separate client until the card shows it.
    let flowing = true;
    const traffic = (async () => {
      for (let i = 0; flowing; i++) {
        await publishRaw('metrics.cpu', { host: `web-${i % 3}`, load: (i % 10) / 10 });
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
    try {
      await waitForText(card.getByTestId('rate-in'), (text) => text !== '0/s');
      // The chart of the rates moves too, once a sampled second has traffic in it.
      await page().waitForFunction((before) => document.querySelectorAll('[data-testid="node-card"] svg path')[1]?.getAttribute('d') !== before, chartBefore);
    } finally {
      flowing = false;
      await traffic;
    }
    expect(Number.parseInt((await card.getByTestId('connections').textContent()) ?? '0', 10)).toBeGreaterThanOrEqual(2);
    await browser.screenshot('nodes');
  });

  it('publishes from the playground, shows the acknowledgement, and lists the message on the topic page', async () => {
    await open('playground');
    const panel = byTestId('publish-panel');
    await panel.locator('input[name="publish-topic"]').fill('orders');
    await panel.locator('textarea[name="payload"]').fill('{"sku": "A-1", "qty": 2, "gift": false}');
    await panel.locator('input[name="key"]').fill('order-981');
    await byTestId('publish').click();
    const ack = byTestId('ack').first();
    await ack.waitFor();
    expect(await ack.getByTestId('ack-offset').textContent()).toBe('1');
    expect(await ack.textContent()).toContain('stored');
    expect(await ack.textContent()).toMatch(/\d+\.\d ms/);

    // Same key again: the node answers with the original offset, marked duplicate.
    await byTestId('publish').click();
    await waitForText(byTestId('ack').first(), (text) => text.includes('duplicate'));
    expect(await byTestId('ack').first().getByTestId('ack-offset').textContent()).toBe('1');

    // A text payload, no key.
    await panel.locator('input[name="key"]').fill('');
    await panel.getByText('Text', { exact: true }).click();
    await panel.locator('textarea[name="payload"]').fill('plain words');
    await byTestId('publish').click();
    await waitForText(byTestId('ack').first().getByTestId('ack-offset'), (text) => text === '2');
    await browser.screenshot('playground-publish');

    // Follow the link of the acknowledgement to the topic page.
    await byTestId('ack').first().getByRole('link', { name: 'orders' }).click();
    await waitForText(byTestId('topic-title'), (text) => text === 'orders');
    const messages = byTestId('message');
    await waitForText(byTestId('messages'), (text) => text.includes('#2') && text.includes('#1'));
    expect(await messages.count()).toBe(2);
    expect(await messages.first().getAttribute('data-offset')).toBe('2');
    expect(await messages.first().getByTestId('payload').textContent()).toBe('"plain words"');
    // Pretty-printed JSON, with the idempotency key.
    expect(await messages.nth(1).getByTestId('payload').textContent()).toBe('{\n  "sku": "A-1",\n  "qty": 2,\n  "gift": false\n}');
    expect(await messages.nth(1).textContent()).toContain('key order-981');
    expect(await byTestId('topic-count').textContent()).toBe('2');
    await byTestId('groups-empty').waitFor();
  });

  it('lists topics with counts and offsets', async () => {
    await open('topics');
    const row = page().locator('[data-testid="topic-row"][data-topic="orders"]');
    await row.waitFor();
    const cells = await row.locator('td').allTextContents();
    expect(cells[0]).toBe('orders');
    expect(cells.slice(1, 4)).toEqual(['2', '1', '2']);
    await page().locator('[data-testid="topic-row"][data-topic="metrics.cpu"]').waitFor();
    await browser.screenshot('topics');
  });

  it('subscribes live and receives a message published by a separate SDK client', async () => {
    await open('playground');
    const panel = byTestId('subscribe-panel');
    await panel.locator('input[name="subscribe-topic"]').fill('chat.lobby');
    await byTestId('subscribe').click();
    await byTestId('subscribe-waiting').waitFor();

    const other = new MeshClient({ url: node.url });
    try {
      const { offset } = await other.publish('chat.lobby', { from: 'ada', text: 'hello from another client' });
      const received = panel.locator(`[data-testid="received-message"][data-offset="${offset}"]`);
      await received.waitFor();
      expect(await received.getByTestId('payload').textContent()).toContain('hello from another client');
    } finally {
      await other.close();
    }

    // From an offset: replays what is retained, then goes on live.
    await byTestId('unsubscribe').click();
    await publishRaw('chat.lobby', { from: 'bob', text: 'second' });
    await panel.getByText('From offset', { exact: true }).click();
    await panel.locator('input[name="from-offset"]').fill('1');
    await byTestId('subscribe').click();
    await waitForText(byTestId('received'), (text) => text.includes('#1') && text.includes('#2'));
    await publishRaw('chat.lobby', { from: 'ada', text: 'third' });
    await panel.locator('[data-testid="received-message"][data-offset="3"]').waitFor();
    expect(await panel.getByTestId('received-message').count()).toBe(3);
  });

  it('joins a group and acks and nacks each message by hand', async () => {
    const panel = byTestId('group-panel');
    await panel.locator('input[name="group-topic"]').fill('jobs');
    await panel.locator('input[name="group"]').fill('workers');
    await byTestId('join').click();
    await byTestId('group-waiting').waitFor();

    await publishRaw('jobs', { job: 'resize', id: 1 });
    await publishRaw('jobs', { job: 'resize', id: 2 });
    const first = panel.locator('[data-testid="delivery"][data-offset="1"]');
    const second = panel.locator('[data-testid="delivery"][data-offset="2"][data-delivery="1"]');
    await first.waitFor();
    await second.waitFor();

    await first.getByTestId('ack-button').click();
    await waitForAttribute(first, 'data-state', 'acked');

    await second.getByTestId('nack-button').click();
    await waitForAttribute(second, 'data-state', 'nacked');
    const redelivered = panel.locator('[data-testid="delivery"][data-offset="2"][data-delivery="2"]');
    await redelivered.waitFor();
    await browser.screenshot('playground-group');
    await redelivered.getByTestId('ack-button').click();
    await waitForAttribute(redelivered, 'data-state', 'acked');

    // The topic page shows the group: a member here, nothing pending, one redelivery.
    await panel.getByRole('link', { name: 'jobs' }).click();
    const row = page().locator('[data-testid="group-row"][data-group="workers"]');
    await row.waitFor();
    await waitForText(row.getByTestId('group-pending'), (text) => text === '0');
    const cells = await row.locator('td').allTextContents();
    expect(cells[1]).toBe('1'); // members here
    expect(cells[5]).toBe('1'); // redeliveries
    await row.getByRole('button', { name: 'Pending' }).click();
    await byTestId('pending-empty').waitFor();
    await browser.screenshot('topic');

    await open('playground');
    await byTestId('leave').click();
    await byTestId('join').waitFor();
  });

  it('dead-letters a message after its last delivery, then replays it to the topic and purges', async () => {
    const panel = byTestId('group-panel');
    await panel.locator('input[name="group-topic"]').fill('payments');
    await panel.locator('input[name="group"]').fill('fragile');
    await panel.locator('input[name="max-deliveries"]').fill('1');
    await byTestId('join').click();
    await byTestId('group-waiting').waitFor();

    await publishRaw('payments', { payment: 'p-17', amount: 42.5, currency: 'EUR' });
    const delivery = panel.locator('[data-testid="delivery"][data-offset="1"]');
    await delivery.waitFor();
    await delivery.getByTestId('nack-button').click();
    await waitForAttribute(delivery, 'data-state', 'nacked');

    // maxDeliveries 1: the nack sends it to $dlq.payments.
    await open('dead-letters');
    const row = page().locator('[data-testid="dlq-row"][data-topic="payments"]');
    await row.waitFor();
    await row.getByRole('link', { name: 'payments' }).click();
    const letter = page().locator('[data-testid="dead-letter"][data-offset="1"]');
    await letter.waitFor();
    const text = await letter.textContent();
    expect(text).toContain('was offset 1 of payments');
    expect(text).toContain('fragile');
    expect(text).toContain('max_deliveries');
    expect(await letter.getByLabel('Delivery history').textContent()).toContain('dead-lettered');
    expect(await letter.getByTestId('payload').textContent()).toContain('"payment": "p-17"');
    await browser.screenshot('dead-letters');

    await letter.getByTestId('replay').click();
    await waitForText(byTestId('dlq-feedback'), (t) => t.includes('Replayed dead letter #1 to payments: offset 2'));
    await waitForText(letter.getByTestId('replayed'), (t) => t.includes('#2'));
    // A second click does not store it twice: the idempotency key makes it a duplicate.
    await letter.getByTestId('replay').click();
    await waitForText(byTestId('dlq-feedback'), (t) => t.includes('already replayed') && t.includes('offset 2'));

    // The group member, still joined while we looked elsewhere, gets the replayed message.
    await open('playground');
    const replayed = panel.locator('[data-testid="delivery"][data-offset="2"]');
    await replayed.waitFor();
    expect(await replayed.getByTestId('payload').textContent()).toContain('p-17');
    await replayed.getByTestId('ack-button').click();
    await waitForAttribute(replayed, 'data-state', 'acked');
    await byTestId('leave').click();

    // Purge empties the dead-letter topic.
    await page().goto(`${node.url}/dead-letters/payments`);
    await byTestId('purge').click();
    await byTestId('purge-confirm').click();
    await waitForText(byTestId('dlq-feedback'), (t) => t.includes('Purged 1 dead letter'));
    await byTestId('empty-state').waitFor();
  });

  it("shows the node's own error message, not a stack trace", async () => {
    await open('playground');
    const panel = byTestId('publish-panel');
    await panel.locator('input[name="publish-topic"]').fill('$dlq.orders');
    await panel.getByText('JSON', { exact: true }).click();
    await panel.locator('textarea[name="payload"]').fill('{"x": 1}');
    await byTestId('publish').click();
    const error = panel.getByTestId('error');
    await waitForText(error, (t) => t.includes("topic '$dlq.orders' is written by the broker only"));
    expect(await error.textContent()).not.toMatch(/at \w+ \(|Error:/);

    // Invalid JSON is caught before sending, with a hint.
    await panel.locator('input[name="publish-topic"]').fill('orders');
    await panel.locator('textarea[name="payload"]').fill('{"x": ');
    await byTestId('publish').click();
    await waitForText(error, (t) => t.includes('not valid JSON'));
  });

  it('shows reconnecting, then recovered, when the connection drops, and the live subscription goes on without a gap', async () => {
    const proxy = await TcpProxy.start(node.port);
    try {
      await page().goto(`${proxy.url}/playground`);
      await waitForAttribute(byTestId('connection'), 'data-state', 'connected');
      // Record every state the indicator shows, however briefly.
      await page().evaluate(() => {
        const el = document.querySelector('[data-testid="connection"]')!;
        const seen: string[] = [el.getAttribute('data-state') ?? ''];
        (window as unknown as { seenStates: string[] }).seenStates = seen;
        new MutationObserver(() => seen.push(el.getAttribute('data-state') ?? '')).observe(el, { attributes: true });
      });
      const panel = byTestId('subscribe-panel');
      await panel.locator('input[name="subscribe-topic"]').fill('ticker');
      await byTestId('subscribe').click();
      await byTestId('subscribe-waiting').waitFor();
      const first = await publishRaw('ticker', { price: 101 });
      await panel.locator(`[data-testid="received-message"][data-offset="${first}"]`).waitFor();

      proxy.cutAll();
      // Published while the console is cut off: the resumed subscription still delivers it.
      await publishRaw('ticker', { price: 102 });
      await waitForAttribute(byTestId('connection'), 'data-state', 'recovered');
      expect(await byTestId('connection').textContent()).toContain('Recovered');
      const seen = await page().evaluate(() => (window as unknown as { seenStates: string[] }).seenStates);
      expect(seen.indexOf('reconnecting')).toBeGreaterThan(0);
      expect(seen.indexOf('recovered')).toBeGreaterThan(seen.indexOf('reconnecting'));
      await browser.screenshot('connection-recovered');

      await publishRaw('ticker', { price: 103 });
      await panel.locator(`[data-testid="received-message"][data-offset="${first + 2}"]`).waitFor();
      const offsets = await panel.getByTestId('received-message').evaluateAll((els) => els.map((el) => Number(el.getAttribute('data-offset'))));
      expect(offsets).toEqual([first + 2, first + 1, first]);
      expect(await panel.getByTestId('error').count()).toBe(0);
      // "Recovered" gives way to "Connected" after a few seconds.
      await waitForAttribute(byTestId('connection'), 'data-state', 'connected', 15_000);
    } finally {
      // Leave the proxy's page first: a console still on it would try to reconnect to a closed port.
      await page().goto('about:blank');
      await proxy.close();
    }
  });

  it('works at a narrow width', async () => {
    await page().setViewportSize(NARROW);
    try {
      for (const [name, path] of [
        ['nodes', '/'],
        ['topics', '/topics'],
        ['topic', '/topics/orders'],
        ['dead-letters', '/dead-letters'],
        ['playground', '/playground'],
      ] as const) {
        await page().goto(`${node.url}${path}`);
        await page().locator('main h1').waitFor();
        // Let the first poll land before measuring.
        await page()
          .waitForLoadState('networkidle')
          .catch(() => undefined);
        await page().waitForTimeout(300);
        expect(await browser.overflowsHorizontally(), `${path} overflows at ${NARROW.width}px`).toBe(false);
        await browser.screenshot(`narrow-${name}`);
      }
      // The menu is still reachable.
      await open('topics');
      await page().locator('[data-testid="topic-row"][data-topic="orders"]').waitFor();
    } finally {
      await page().setViewportSize(DESKTOP);
    }
  });

  it('had no console errors in the browser', () => {
    expect(browser.errors).toEqual([]);
  });
});
