import { type ConnectionState, MeshClient } from '@meshmq/client';
import { CLOSE_CODES, MeshError } from '@meshmq/shared';
import { errorText, refusalOf } from './api.js';
import { session } from './auth.svelte.js';
import { expiredText } from './token.js';

/**
 * The console's one SDK client, connected to the node that served the page
 * (the SDK's default in a browser). Its connection state drives the
 * indicator in the header. It is created by `connect()`, once the console
 * knows whether the node wants a token.
 */
let current: MeshClient | undefined;

/** The console's client; operations before `connect()` fail with `unavailable`. */
export function mesh(): MeshClient {
  if (!current) throw new MeshError('unavailable', 'the console is not connected yet');
  return current;
}

export type IndicatorState = ConnectionState | 'recovered' | 'signed-out';

/** How long "recovered" is shown after a reconnect restored everything. */
const RECOVERED_MS = 6000;

export const connection = $state({
  state: 'idle' as ConnectionState,
  /** Node id from the hello of the current connection. */
  node: '',
  version: '',
  /** Set after a reconnect, cleared RECOVERED_MS later. */
  recovered: false,
  /** False when the reconnect lost messages (a subscription has a gap). */
  recoveredCleanly: true,
  reconnects: 0,
  lastError: '',
  /** Problems reported by the SDK with nobody else to tell (handler errors, failed auto-acks). */
  notices: [] as Array<{ id: number; at: number; text: string }>,
});

let noticeId = 0;
let recoveredTimer: ReturnType<typeof setTimeout> | undefined;

export function notify(text: string): void {
  connection.notices = [{ id: ++noticeId, at: Date.now(), text }, ...connection.notices].slice(0, 5);
}

export function dismissNotice(id: number): void {
  connection.notices = connection.notices.filter((n) => n.id !== id);
}

/**
 * Creates the client and starts connecting; failures show in the indicator,
 * never as an exception. `withToken`: the node wants a token, which comes
 * from the session (and waits for the user to sign in when there is none
 * that may work).
 */
export function connect(withToken: boolean): void {
  if (current) return;
  const client = new MeshClient({
    name: 'meshmq-console',
    reconnect: { initialDelayMs: 200, maxDelayMs: 3000 },
    // The console shows the node that served it (its admin API is that node's): it never moves to another.
    discoverNodes: false,
    ...(withToken ? { token: () => session.connectionToken() } : {}),
  });
  current = client;
  /** The token of the current connection. */
  let token: string | null = null;

  client.on('state', (state) => {
    connection.state = state;
    if (state !== 'connected') connection.recovered = false;
  });
  client.on('connected', (info) => {
    connection.node = info.node;
    connection.version = info.version;
    connection.lastError = '';
    token = withToken ? session.token : null;
    if (info.reconnect) {
      connection.reconnects++;
      connection.recovered = true;
      connection.recoveredCleanly = true;
      clearTimeout(recoveredTimer);
      recoveredTimer = setTimeout(() => (connection.recovered = false), RECOVERED_MS);
    }
  });
  client.on('auth', (who) => session.connected(token, who));
  client.on('resumed', (info) => {
    connection.recoveredCleanly = info.recovered;
  });
  client.on('disconnected', (info) => {
    connection.lastError = info.reason ? `connection closed: ${info.reason}` : `connection closed (code ${info.code})`;
    // The node closes a connection whose token expired: ask for a new one before the SDK reconnects.
    if (info.code === CLOSE_CODES.tokenExpired && token !== null) {
      const expiresAt = session.who?.expiresAt;
      session.refuse(token, expiresAt ? expiredText(expiresAt) : 'Your token expired.');
    }
  });
  client.on('connectFailed', (info) => {
    connection.lastError = errorText(info.error);
    if (!withToken || session.token === null) return;
    if (info.error.code === 'unauthorized') session.refusedByNode(session.token, info.error.message);
    else session.attemptFailed(refusalOf);
  });
  client.on('error', (error) => {
    // The SDK tries to refresh the token before it expires and cannot: the console
    // has no source of new tokens but the user. The header counts down, and the
    // dialog asks for a new token when the node closes the connection.
    if (error.code === 'unauthorized' && withToken) return;
    notify(errorText(error));
  });
  client.connect().catch(() => undefined);
}

export function indicatorState(): IndicatorState {
  if (session.prompt !== null) return 'signed-out';
  return connection.state === 'connected' && connection.recovered ? 'recovered' : connection.state;
}
