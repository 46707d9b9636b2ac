import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type BrowserContext, chromium, type Locator, type Page } from 'playwright-core';

/** Where e2e screenshots go (git-ignored with the rest of test/artifacts/). */
export const SCREENSHOT_DIR = fileURLToPath(new URL('../artifacts/screenshots/', import.meta.url));

/** The machine's Chromium; no test downloads a browser. */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

export const DESKTOP = { width: 1280, height: 800 };
export const NARROW = { width: 390, height: 844 };

/**
 * A headless Chromium with a fresh profile, and one page that records every
 * console error and uncaught page error so a test can assert there were none.
 */
export class ConsoleBrowser {
  readonly errors: string[] = [];

  private constructor(
    private readonly context: BrowserContext,
    readonly page: Page,
    private readonly profileDir: string,
  ) {
    page.on('console', (message) => {
      if (message.type() === 'error') this.errors.push(`console.error: ${message.text()} (${message.location().url})`);
    });
    page.on('pageerror', (error) => this.errors.push(`page error: ${error.message}`));
  }

  static async launch(viewport = DESKTOP): Promise<ConsoleBrowser> {
    const profileDir = mkdtempSync(join(tmpdir(), 'meshmq-chromium-'));
    // A persistent context is how Playwright takes a user-data dir: a fresh one per browser.
    const context = await chromium.launchPersistentContext(profileDir, {
      executablePath: CHROMIUM_PATH,
      headless: true,
      viewport,
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync'],
    });
    const page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(10_000);
    return new ConsoleBrowser(context, page, profileDir);
  }

  async screenshot(name: string): Promise<string> {
    mkdirSync(SCREENSHOT_DIR, { recursive: true });
    const path = join(SCREENSHOT_DIR, `${name}.png`);
    // From the top, so that sticky headers sit where they belong in a full-page shot.
    await this.page.evaluate(() => window.scrollTo(0, 0));
    await this.page.screenshot({ path, fullPage: true });
    return path;
  }

  /** True when the page is wider than the viewport (something forces horizontal scrolling). */
  async overflowsHorizontally(): Promise<boolean> {
    return this.page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
  }

  async close(): Promise<void> {
    await this.context.close().catch(() => undefined);
    rmSync(this.profileDir, { recursive: true, force: true });
  }
}

/** Polls a locator's text until `accept` returns true; returns the text. */
export async function waitForText(locator: Locator, accept: (text: string) => boolean, timeoutMs = 10_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    try {
      last = (await locator.textContent({ timeout: 1000 })) ?? '';
      if (accept(last)) return last;
    } catch {
      // not attached yet
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms; last text: ${JSON.stringify(last)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Polls a locator's attribute until it equals `value`. */
export async function waitForAttribute(locator: Locator, name: string, value: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: string | null = null;
  for (;;) {
    last = await locator.getAttribute(name, { timeout: 1000 }).catch(() => null);
    if (last === value) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${name}=${value}; last: ${last}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
