import { MeshError } from '@meshmq/shared';

/** The WebSocket endpoint path of a node. */
export const WS_PATH = '/ws';

/**
 * The WebSocket URL of a node given by its base URL: `http(s)://` becomes
 * `ws(s)://` and a URL without a path gets `/ws`. `ws(s)://` URLs and URLs
 * with a path are kept as given. Relative URLs resolve against the page's
 * location in a browser.
 */
export function toWebSocketUrl(input: string): string {
  let url: URL;
  try {
    const base = (globalThis as { location?: { href?: string } }).location?.href;
    url = base === undefined ? new URL(input) : new URL(input, base);
  } catch {
    throw new MeshError('bad_request', `invalid MeshMQ URL '${input}'`);
  }
  if (url.protocol === 'http:') url.protocol = 'ws:';
  else if (url.protocol === 'https:') url.protocol = 'wss:';
  else if (url.protocol !== 'ws:' && url.protocol !== 'wss:') {
    throw new MeshError('bad_request', `unsupported URL scheme '${url.protocol}' in '${input}'; use http(s):// or ws(s)://`);
  }
  if (url.pathname === '' || url.pathname === '/') url.pathname = WS_PATH;
  url.hash = '';
  return url.toString();
}

/**
 * The URLs a client may connect to: the configured ones, plus those of the
 * live nodes the last hello reported. Attempts start at a random URL, to
 * spread clients over the nodes, and go round the list from there.
 */
function shuffle<T>(items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    // Uniform over 0..i, written so that Math.random() = 0 keeps the given order.
    const j = i - Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

export class UrlList {
  private readonly seeds: string[];
  private discovered: string[] = [];
  private cursor: number;
  /** Set by a move: where the next round starts, and the URL it tries last. */
  private preferred: string | undefined;
  private avoid: string | undefined;

  constructor(urls: readonly string[]) {
    // Shuffled, so that clients given the same list spread over the nodes, and again when one fails.
    this.seeds = shuffle(unique(urls.map(toWebSocketUrl)));
    if (this.seeds.length === 0) throw new MeshError('bad_request', 'no MeshMQ URL given; set `url` or `urls`');
    this.cursor = 0;
  }

  get all(): string[] {
    return unique([...this.seeds, ...this.discovered]);
  }

  /** The URLs of one round of attempts, starting at the current position. */
  round(): string[] {
    const all = this.all;
    let start = this.cursor % all.length;
    if (this.preferred !== undefined && all.includes(this.preferred)) start = all.indexOf(this.preferred);
    let order = [...all.slice(start), ...all.slice(0, start)];
    const avoid = this.avoid;
    if (avoid !== undefined) order = [...order.filter((url) => url !== avoid), ...order.filter((url) => url === avoid)];
    this.preferred = this.avoid = undefined;
    return order;
  }

  /**
   * A node that is shutting down named the nodes to move to: the next round
   * starts at a random one of them and tries the leaving node last.
   */
  moveTo(nodeUrls: readonly string[], leaving: string): void {
    const targets = this.accept(nodeUrls).filter((url) => url !== leaving);
    this.discovered = unique([...this.discovered, ...targets]);
    this.preferred = targets[Math.floor(Math.random() * targets.length)];
    this.avoid = leaving;
  }

  /** Moves the start of the next round past `url`. */
  advancePast(url: string): void {
    const all = this.all;
    const at = all.indexOf(url);
    this.cursor = at < 0 ? this.cursor + 1 : at + 1;
  }

  /**
   * Replaces the discovered URLs with the node list of a hello. Ignores
   * entries that are not URLs, and plain `ws://` ones when every configured
   * URL is secure: discovery never downgrades a client from TLS.
   */
  setDiscovered(nodeUrls: readonly string[]): void {
    this.discovered = this.accept(nodeUrls);
  }

  private accept(nodeUrls: readonly string[]): string[] {
    const secureOnly = this.seeds.every((url) => url.startsWith('wss:'));
    const mapped: string[] = [];
    for (const raw of nodeUrls) {
      try {
        const url = toWebSocketUrl(raw);
        if (!secureOnly || url.startsWith('wss:')) mapped.push(url);
      } catch {
        // A node advertising a malformed URL must not break the client.
      }
    }
    return unique(mapped);
  }
}

function unique(values: string[]): string[] {
  return [...new Set(values)];
}
