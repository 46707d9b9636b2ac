import { type Action, type AuthInfo, Permissions } from '@meshmq/shared';
import { expiredText, readToken } from './token.js';

/**
 * Who the console acts as. A node with authentication wants a token on every
 * connection and admin request; the console keeps the one the user gave in
 * sessionStorage only (it lives as long as the browser tab and is never
 * written anywhere that outlives it), asks for it before connecting, and asks
 * again, with the node's reason, when the node refuses it or it expires.
 */

/** What the node wants from clients, from `/healthz`; unknown until it answered. */
export type AuthMode = 'token' | 'anonymous' | 'unknown';

const STORAGE_KEY = 'meshmq.console.token';

function load(): string | null {
  try {
    return sessionStorage.getItem(STORAGE_KEY);
  } catch {
    return null;
  }
}

function store(token: string | null): void {
  try {
    if (token) sessionStorage.setItem(STORAGE_KEY, token);
    else sessionStorage.removeItem(STORAGE_KEY);
  } catch {
    // storage disabled: the token lives in memory for this page only
  }
}

function grantsOf(who: AuthInfo): Permissions {
  try {
    return Permissions.fromClaim(who.permissions);
  } catch {
    return Permissions.NONE;
  }
}

class Session {
  mode = $state<AuthMode>('unknown');
  token = $state<string | null>(load());
  /**
   * Non-null while the console asks for a token: why (the node's reason, or
   * '' when it simply has none yet). The token dialog shows while it is set.
   */
  prompt = $state<string | null>(null);
  /** Who the console's connection acts as (its hello or last refresh); kept while reconnecting. */
  who = $state.raw<AuthInfo | null>(null);
  /** What `who` may do, matched exactly as the node matches (the same Permissions). */
  readonly grants = $derived(this.who ? grantsOf(this.who) : null);

  /** The token the node refused; never sent again. */
  private refused: string | null = null;
  /** The token a node accepted (a hello answered it). */
  private accepted: string | null = null;
  /** Tokens whose failed connection was checked with the admin API and not refused. */
  private readonly checked = new Set<string>();
  /** A check of the current token in progress: connections wait for its verdict. */
  private checking: Promise<void> | undefined;
  /** Connection attempts waiting for the user to sign in. */
  private waiters: Array<() => void> = [];

  /** Reads `/healthz`: does the node want a token? */
  async detectMode(): Promise<void> {
    try {
      const res = await fetch('/healthz', { cache: 'no-store', headers: { accept: 'application/json' } });
      const body = (await res.json()) as { auth?: unknown };
      // Nodes from before authentication do not say: they have none.
      this.mode = body.auth === 'token' ? 'token' : 'anonymous';
    } catch {
      // The node did not answer: act on what the connection finds out.
      this.mode = 'unknown';
    }
  }

  /**
   * May the signed-in token do `action` (on `topic`)? Undefined while that is
   * not known yet (not connected since the page loaded). A node without
   * authentication allows everything.
   */
  can(action: Action, topic?: string): boolean | undefined {
    if (this.mode === 'anonymous') return true;
    if (!this.grants) return undefined;
    return this.grants.can(action, topic);
  }

  /** The token to send, when there is one that may work: stored, not refused, not expired. */
  usableToken(): string | null {
    const token = this.token;
    if (token === null || token === this.refused) return null;
    try {
      readToken(token);
    } catch (err) {
      this.refuse(token, (err as Error).message);
      return null;
    }
    return token;
  }

  /**
   * The SDK's `token` function: the stored token once it may work, waiting
   * for the user to sign in when it may not (so a refused or expired token
   * never makes a handshake the node would refuse).
   */
  async connectionToken(): Promise<string> {
    for (;;) {
      await this.checking;
      const token = this.usableToken();
      if (token !== null) return token;
      this.ask(this.prompt ?? '');
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  /** Resolves once there is a token worth trying, asking for one if needed. */
  async signedIn(): Promise<void> {
    if (this.usableToken() === null) {
      this.ask(this.prompt ?? '');
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  /** Shows the token dialog with `reason` ('' for none). */
  ask(reason: string): void {
    this.prompt = reason;
  }

  /** `token` cannot work (`reason` says why): never send it again, ask for another. */
  refuse(token: string, reason: string): void {
    if (token !== this.token) return;
    this.refused = token;
    this.ask(reason);
  }

  /**
   * The node refused `token`, or closed its connection because it expired:
   * the same for the user. An expired token is said so in plain words.
   */
  refusedByNode(token: string, nodeReason: string): void {
    let expiresAt: number | null = null;
    try {
      expiresAt = readToken(token, 0).expiresAt;
    } catch {
      // not readable: the node's reason says why
    }
    this.refuse(token, expiresAt !== null && expiresAt <= Date.now() ? expiredText(expiresAt) : `The node refused the token: ${nodeReason}`);
  }

  /** A connection with `token` was greeted: this is who the console is. */
  connected(token: string | null, who: AuthInfo): void {
    this.accepted = token;
    this.who = who;
  }

  /**
   * Takes a token from the dialog. Throws an Error with the reason when it
   * cannot work (not a JWT, expired). A token for another subject than the
   * one signed in reloads the page: what the old one subscribed to is not
   * the new one's.
   */
  signIn(input: string): void {
    // A token copied from a request's header comes with its scheme.
    const token = input.trim().replace(/^Bearer\s+/i, '');
    const claims = readToken(token);
    this.token = token;
    store(token);
    if (this.who && this.who.sub !== claims.sub) {
      location.reload();
      return;
    }
    this.refused = null;
    this.prompt = null;
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }

  /** Forgets the token and starts over (the page reloads, the dialog asks for a new one). */
  signOut(): void {
    store(null);
    location.reload();
  }

  /**
   * A connection attempt with the current token failed, and a browser does
   * not say why (a refused handshake looks like a network error). Unless the
   * token worked before, ask the admin API, which answers a refused token with
   * 401 and the node's reason; connections wait for the verdict.
   */
  attemptFailed(check: (token: string) => Promise<string | null>): void {
    const token = this.token;
    if (this.mode !== 'token' || token === null || token === this.refused || token === this.accepted || this.checked.has(token) || this.checking) return;
    this.checking = (async () => {
      const refusal = await check(token);
      if (refusal === null) this.checked.add(token);
      else this.refusedByNode(token, refusal);
      this.checking = undefined;
    })();
  }
}

export const session = new Session();
