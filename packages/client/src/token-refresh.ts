import { type AuthInfo, type AuthResult, MeshError } from '@meshmq/shared';
import type { Link } from './link.js';
import type { Credentials } from './token.js';

/** The token is refreshed at most this long before it expires… */
export const REFRESH_MARGIN_MS = 60_000;
/** …and at most this share of its remaining lifetime before, for short-lived tokens. */
export const REFRESH_MARGIN_SHARE = 1 / 3;
/** Attempts to refresh a token, spread over the margin, before the node closes the connection. */
export const REFRESH_ATTEMPTS = 3;

export interface TokenRefreshHost {
  /** Sends `auth` on `link` only. */
  request(link: Link, frame: { op: 'auth'; token: string }): Promise<AuthResult>;
  /** The connection acts with a new token now. */
  refreshed(link: Link, auth: AuthInfo): void;
  error(error: MeshError): void;
}

/**
 * Keeps one connection's token current, when tokens come from a function:
 * before the token expires it gets a new one and hands it to the node with
 * `auth`, on the same connection. A failed attempt is reported and tried
 * again, up to REFRESH_ATTEMPTS times before the expiry; after that the node
 * closes the connection (4001) and the client reconnects with a new token.
 */
export class TokenRefresh {
  private timer: ReturnType<typeof setTimeout> | undefined;
  private stopped = false;

  constructor(
    private readonly link: Link,
    private readonly credentials: Credentials,
    private readonly host: TokenRefreshHost,
  ) {
    void link.closed.then(() => this.stop());
  }

  /** Plans the refresh of a token with this expiry. */
  start(auth: AuthInfo): void {
    clearTimeout(this.timer);
    const { expiresAt } = auth;
    if (this.stopped || !this.credentials.refreshable || expiresAt === null) return;
    const margin = Math.min(REFRESH_MARGIN_MS, (expiresAt - Date.now()) * REFRESH_MARGIN_SHARE);
    if (margin <= 0) return;
    this.schedule(expiresAt, margin, 0);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** Attempt `attempt` (from 0) goes at an even share of the margin before the expiry. */
  private schedule(expiresAt: number, margin: number, attempt: number): void {
    const at = expiresAt - margin + (attempt * margin) / REFRESH_ATTEMPTS;
    this.timer = setTimeout(() => void this.refresh(expiresAt, margin, attempt), Math.max(0, at - Date.now()));
  }

  private async refresh(expiresAt: number, margin: number, attempt: number): Promise<void> {
    let auth: AuthResult;
    try {
      const token = (await this.credentials.get())!;
      auth = await this.host.request(this.link, { op: 'auth', token });
      if (auth.expiresAt !== null && auth.expiresAt <= expiresAt) {
        throw new MeshError(
          'unauthorized',
          `the token function returned a token that expires no later than the current one (${new Date(auth.expiresAt).toISOString()})`,
        );
      }
      this.link.token = token;
    } catch (err) {
      if (this.stopped) return;
      const error = MeshError.from(err);
      const last = attempt + 1 >= REFRESH_ATTEMPTS;
      const then = last
        ? `; the node closes the connection when the token expires at ${new Date(expiresAt).toISOString()}, and the client reconnects with a new one`
        : '; trying again';
      this.host.error(
        new MeshError(error.code, `refreshing the token failed (attempt ${attempt + 1} of ${REFRESH_ATTEMPTS}): ${error.message}${then}`, { cause: error }),
      );
      if (!last) this.schedule(expiresAt, margin, attempt + 1);
      return;
    }
    if (this.stopped) return;
    this.host.refreshed(this.link, auth);
    this.start(auth);
  }
}
