import { MeshClient, type ConnectionState } from '@meshmq/client';
import { errorText } from './api.js';

/**
 * The console's one SDK client, connected to the node that served the page
 * (the SDK's default in a browser). Its connection state drives the
 * indicator in the header.
 */
export const client = new MeshClient({
  name: 'meshmq-console',
  reconnect: { initialDelayMs: 200, maxDelayMs: 3000 },
  // The console shows the node that served it (its admin API is that node's): it never moves to another.
  discoverNodes: false,
});

export type IndicatorState = ConnectionState | 'recovered';

/** How long "recovered" is shown after a reconnect restored everything. */
const RECOVERED_MS = 6000;

export const connection = $state({
  state: client.state as ConnectionState,
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

client.on('state', (state) => {
  connection.state = state;
  if (state !== 'connected') connection.recovered = false;
});
client.on('connected', (info) => {
  connection.node = info.node;
  connection.version = info.version;
  connection.lastError = '';
  if (info.reconnect) {
    connection.reconnects++;
    connection.recovered = true;
    connection.recoveredCleanly = true;
    clearTimeout(recoveredTimer);
    recoveredTimer = setTimeout(() => (connection.recovered = false), RECOVERED_MS);
  }
});
client.on('resumed', (info) => {
  connection.recoveredCleanly = info.recovered;
});
client.on('disconnected', (info) => {
  connection.lastError = info.reason ? `connection closed: ${info.reason}` : `connection closed (code ${info.code})`;
});
client.on('connectFailed', (info) => {
  connection.lastError = errorText(info.error);
});
client.on('error', (error) => notify(errorText(error)));

/** Starts connecting; failures show in the indicator, never as an exception. */
export function connect(): void {
  client.connect().catch(() => undefined);
}

export function indicatorState(): IndicatorState {
  return connection.state === 'connected' && connection.recovered ? 'recovered' : connection.state;
}
