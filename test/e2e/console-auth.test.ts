import { MeshClient } from '@meshmq/client';
import { mintToken } from '@meshmq/server';
import type { PermissionClaim } from '@meshmq/shared';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NodeProcess } from '../helpers/node-process.js';
import { ConsoleBrowser, DESKTOP, NARROW, waitForAttribute, waitForText } from './browser.js';

const SECRET = 'console-auth-test-secret-0123456789abcdef';

function token(sub: string, permissions: Partial<PermissionClaim>, ttlMs = 600_000, secret = SECRET): Promise<string> {
  return mintToken({ secret, sub, permissions, ttlMs });
}

const LIMITED = { publish: ['demo'], subscribe: ['demo'] };

/**
 * The console on a node with authentication, in headless Chromium: it asks
 * for a token before connecting, shows who is signed in, hides what the
 * token may not do, and asks again when the node refuses the token or it
 * expires.
 */
describe('web console on a node that requires tokens', () => {
  let node: NodeProcess;
  let browser: ConsoleBrowser;
  /** Every WebSocket the page opened, by URL. */
  const sockets: string[] = [];
  /** Every admin API request the page made. */
  const adminRequests: string[] = [];

  beforeAll(async () => {
    [node, browser] = await Promise.all([NodeProcess.start({ env: { AUTH_SECRET: SECRET } }), ConsoleBrowser.launch(DESKTOP)]);
    browser.page.on('websocket', (ws) => sockets.push(ws.url()));
    browser.page.on('request', (req) => {
      if (new URL(req.url()).pathname.startsWith('/api/')) adminRequests.push(req.url());
    });
  });

  afterAll(async () => {
    await browser?.close();
    await node?.dispose();
  });

  const page = () => browser.page;
  const byTestId = (id: string) => page().getByTestId(id);
  const dialog = () => byTestId('token-dialog');

  async function signIn(jwt: string): Promise<void> {
    await dialog().locator('input[name="token"]').fill(jwt);
    await byTestId('sign-in').click();
  }

  async function signOut(): Promise<void> {
    await byTestId('sign-out').click();
    await dialog().waitFor();
  }

  /** Takes the same screenshot at 390 px, and checks that nothing scrolls sideways there. */
  async function narrowScreenshot(name: string): Promise<void> {
    await page().setViewportSize(NARROW);
    try {
      expect(await browser.overflowsHorizontally(), `${name} overflows at ${NARROW.width}px`).toBe(false);
      await browser.screenshot(`${name}-narrow`);
    } finally {
      await page().setViewportSize(DESKTOP);
    }
  }

  it('asks for a token before it connects, and refuses a paste that is not one without sending it', async () => {
    await page().goto(node.url);
    await dialog().waitFor();
    expect(await dialog().textContent()).toContain('meshmq token');
    await waitForAttribute(byTestId('connection'), 'data-state', 'signed-out');
    await browser.screenshot('auth-dialog');
    await narrowScreenshot('auth-dialog');

    await signIn('not-a-token');
    await waitForText(byTestId('token-problem'), (t) => t.includes('not an access token'));
    // An expired token is refused by the console itself, saying when it expired.
    const expired = await new SignJWT({ mq: { admin: true } })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('ops')
      .setExpirationTime(Math.floor(Date.now() / 1000) - 60)
      .sign(new TextEncoder().encode(SECRET));
    await signIn(expired);
    await waitForText(byTestId('token-problem'), (t) => /^Your token expired at \d\d:\d\d:\d\d\.$/.test(t));

    expect(sockets).toEqual([]);
    expect(adminRequests).toEqual([]);
  });

  it('signs in with an admin token: shows who is signed in, and every view works', async () => {
    // Pasted as copied from a request header, scheme and all.
    await signIn(`Bearer ${await token('ops', { admin: true })}`);
    await dialog().waitFor({ state: 'detached' });
    await waitForText(byTestId('who-sub'), (t) => t === 'ops');
    expect(await byTestId('who').textContent()).toContain('admin');
    expect(await byTestId('who-expiry').textContent()).toMatch(/^expires in (9|10) min$/);
    await waitForAttribute(byTestId('connection'), 'data-state', 'connected');

    const card = byTestId('node-card');
    await waitForAttribute(card, 'data-status', 'up');
    for (const view of ['nodes', 'topics', 'dead-letters']) expect(await byTestId(`nav-${view}`).getAttribute('aria-disabled')).toBeNull();
    await browser.screenshot('auth-admin');
    await narrowScreenshot('auth-admin');

    await byTestId('nav-topics').click();
    await page().locator('main h1', { hasText: 'Topics' }).waitFor();
    expect(await byTestId('error').count()).toBe(0);
    // The token travels on the WebSocket URL, as the SDK does in browsers.
    expect(sockets).toHaveLength(1);
    expect(new URL(sockets[0]!).searchParams.get('token')).toBeTruthy();
  });

  it('signs out: forgets the token and asks again', async () => {
    await signOut();
    expect(await page().evaluate(() => sessionStorage.length)).toBe(0);
    expect(await byTestId('who').count()).toBe(0);
  });

  it('with a limited token: lands on the Playground, disables the admin views, and allows only its own topics', async () => {
    await page().goto(node.url);
    await dialog().waitFor();
    const requestsBefore = adminRequests.length;
    await signIn(await token('alice', LIMITED));
    await waitForText(byTestId('who-sub'), (t) => t === 'alice');
    await page().waitForURL(`${node.url}/playground`);
    expect(await byTestId('who').textContent()).not.toContain('admin');

    for (const view of ['nodes', 'topics', 'dead-letters']) {
      const item = byTestId(`nav-${view}`);
      expect(await item.getAttribute('aria-disabled')).toBe('true');
      expect(await item.getAttribute('title')).toContain('admin permission');
    }

    // Subscribe to demo, publish to demo: the message arrives.
    const subscribePanel = byTestId('subscribe-panel');
    await subscribePanel.locator('input[name="subscribe-topic"]').fill('demo');
    await byTestId('subscribe').click();
    await byTestId('subscribe-waiting').waitFor();
    const publishPanel = byTestId('publish-panel');
    await publishPanel.locator('input[name="publish-topic"]').fill('demo');
    await publishPanel.locator('textarea[name="payload"]').fill('{"from": "alice"}');
    await byTestId('publish').click();
    const ack = byTestId('ack').first();
    await ack.waitFor();
    const offset = await ack.getByTestId('ack-offset').textContent();
    const received = subscribePanel.locator(`[data-testid="received-message"][data-offset="${offset}"]`);
    await received.waitFor();
    expect(await received.getByTestId('payload').textContent()).toContain('"from": "alice"');
    // Topic pages need admin: the acknowledgement names the topic without linking to it.
    expect(await ack.getByRole('link', { name: 'demo' }).count()).toBe(0);

    // Another topic: the button is disabled, and says why.
    await publishPanel.locator('input[name="publish-topic"]').fill('other');
    expect(await byTestId('publish').isDisabled()).toBe(true);
    const hint = await byTestId('publish-hint').textContent();
    expect(hint).toContain('may not publish to other');
    expect(hint).toContain('It may publish to demo');
    expect(await byTestId('publish').getAttribute('aria-describedby')).toBe('publish-hint');
    // It may consume nothing: joining a group is disabled.
    await byTestId('group-panel').locator('input[name="group-topic"]').fill('demo');
    expect(await byTestId('join').isDisabled()).toBe(true);
    expect(await byTestId('consume-hint').textContent()).toContain('may not join groups of any topic');
    await browser.screenshot('auth-limited');
    await narrowScreenshot('auth-limited');

    // Visiting an admin view explains instead of failing.
    await page().goto(`${node.url}/topics`);
    const panel = byTestId('needs-admin');
    await waitForText(panel, (t) => t.includes('This token (alice) does not have the admin permission'));
    expect(await byTestId('error').count()).toBe(0);
    expect(await byTestId('notice').count()).toBe(0);
    await browser.screenshot('auth-limited-topics');
    await narrowScreenshot('auth-limited-topics');

    // The console never asked the admin API with this token.
    expect(adminRequests.slice(requestsBefore)).toEqual([]);
  });

  it('asks again, saying so, when the token expires; a new one continues in place', async () => {
    await signOut();
    await signIn(await token('brief', LIMITED, 3000));
    await waitForText(byTestId('who-sub'), (t) => t === 'brief');
    await byTestId('nav-playground').click();
    // Remembered across the expiry unless the page reloads.
    await page().evaluate(() => ((window as unknown as { marker: number }).marker = 1));
    const subscribePanel = byTestId('subscribe-panel');
    await subscribePanel.locator('input[name="subscribe-topic"]').fill('demo');
    await byTestId('subscribe').click();
    await byTestId('subscribe-waiting').waitFor();

    // The node closes the connection when the token expires (4001); the dialog says why.
    await waitForText(byTestId('token-reason'), (t) => /^Your token expired at \d\d:\d\d:\d\d\.$/.test(t), 15_000);
    expect(await dialog().getByRole('heading').textContent()).toBe('Sign in again');
    expect(await byTestId('connection').getAttribute('data-state')).toBe('signed-out');
    await browser.screenshot('auth-expired');
    expect(await byTestId('notice').count()).toBe(0);

    // A new token for the same subject: the same page goes on, the subscription resumes.
    await signIn(await token('brief', LIMITED));
    await dialog().waitFor({ state: 'detached' });
    await waitForAttribute(byTestId('connection'), 'data-state', 'recovered');
    expect(await page().evaluate(() => (window as unknown as { marker?: number }).marker)).toBe(1);
    const other = new MeshClient({ url: node.url, token: await token('bob', { publish: ['demo'] }) });
    try {
      const { offset } = await other.publish('demo', { after: 'expiry' });
      await subscribePanel.locator(`[data-testid="received-message"][data-offset="${offset}"]`).waitFor();
    } finally {
      await other.close();
    }
  });

  it("brings the dialog back with the node's reason for a token it refuses", async () => {
    await signOut();
    const errorsBefore = browser.errors.length;
    await signIn(await token('mallory', { admin: true }, 600_000, `${SECRET}-not-the-nodes`));
    await waitForText(byTestId('token-reason'), (t) => t.startsWith('The node refused the token:') && t.includes('signature'));
    // A browser logs the refused handshake, and the admin API's 401 that told the console why; nothing else, and only once.
    const logged = browser.errors.splice(errorsBefore);
    expect(logged).toHaveLength(2);
    expect(logged.filter((e) => e.includes('WebSocket connection to') && e.includes('/ws?token='))).toHaveLength(1);
    expect(logged.filter((e) => e.includes('status of 401') && e.includes('/api/nodes'))).toHaveLength(1);
  });

  it('had no other console errors in the browser', () => {
    expect(browser.errors).toEqual([]);
  });
});
