import { type IncomingMessage, STATUS_CODES } from 'node:http';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import { MeshError } from '@meshmq/shared';
import { ANONYMOUS, type Principal } from './core/access.js';
import { HTTP_STATUS } from './http-status.js';

/** Admission limits of a node (docs/security.md); each is a node option with this default. */
export interface AdmissionLimits {
  /** Open connections (both transports) the node accepts. */
  maxConnections: number;
  /** Open connections from one client address. */
  maxConnectionsPerAddress: number;
}

export const DEFAULT_ADMISSION_LIMITS: AdmissionLimits = {
  maxConnections: 10_000,
  maxConnectionsPerAddress: 256,
};

export interface GateOptions {
  limits?: AdmissionLimits;
  /**
   * Verifies a token into a principal; absent on a node without
   * authentication, where every request is anonymous (and allowed).
   */
  verify?: (token: string) => Promise<Principal>;
  /**
   * Origins whose browser pages may connect and call the admin API, `*` for
   * any. Clients that send no Origin (every non-browser client) are always
   * let through.
   */
  allowedOrigins: string[] | '*';
  /** The node's own origins (its public URL, the cluster's nodes), always allowed; read on each check. */
  ownOrigins: () => Iterable<string>;
  /** Host names (not addresses) requests may name besides localhost and those of the own origins. */
  allowedHosts: string[];
}

/**
 * Everything a request passes before it reaches a transport or the admin
 * API: the Host check (against DNS rebinding), the Origin check (against
 * cross-site WebSocket hijacking and cross-site requests), the connection
 * limits, and authentication: who the request acts as. Authorisation of what
 * it then does is the core's (core/access.ts).
 */
export class Gate {
  readonly limits: AdmissionLimits;
  private readonly perAddress = new Map<string, number>();
  private open = 0;

  constructor(private readonly options: GateOptions) {
    this.limits = options.limits ?? DEFAULT_ADMISSION_LIMITS;
  }

  get requiresToken(): boolean {
    return this.options.verify !== undefined;
  }

  /** Connections open now. */
  get connections(): number {
    return this.open;
  }

  /**
   * Refuses a request whose Host names a host that is not this node's. A
   * DNS-rebinding page reaches the node under the attacker's name; clients
   * using an address, `localhost` or one of the node's names pass.
   */
  checkHost(req: IncomingMessage): void {
    const header = req.headers.host;
    if (header === undefined) return;
    const host = hostnameOf(header);
    if (host === undefined) throw new MeshError('bad_request', 'the Host header is not a host');
    if (isIP(host) !== 0 || host === 'localhost' || host.endsWith('.localhost')) return;
    if (this.options.allowedHosts.includes(host)) return;
    for (const origin of this.options.ownOrigins()) if (hostnameOf(new URL(origin).host) === host) return;
    throw new MeshError('forbidden', `host '${host}' is not a name of this node; add it to --allowed-hosts`);
  }

  /**
   * Refuses a browser request from a page of another origin. A page served
   * by the very host and port the request names (its Host) is this node's own,
   * whatever name or proxy it was reached by; the Host check keeps foreign
   * names (DNS rebinding) out.
   */
  checkOrigin(req: IncomingMessage): void {
    const origin = req.headers.origin;
    if (origin === undefined || this.originAllowed(origin)) return;
    if (sameHost(origin, req.headers.host)) return;
    throw new MeshError('forbidden', `origin '${origin}' is not allowed; add it to --allowed-origins`);
  }

  /** True when pages of `origin` may use this node. */
  originAllowed(origin: string): boolean {
    const { allowedOrigins } = this.options;
    if (allowedOrigins === '*') return true;
    const normal = normalizeOrigin(origin);
    if (normal === undefined) return false;
    if (allowedOrigins.includes(normal)) return true;
    for (const own of this.options.ownOrigins()) if (normalizeOrigin(own) === normal) return true;
    return false;
  }

  /** Fails with `limit_exceeded` when one more connection from `address` would pass a limit. */
  checkCapacity(address: string): void {
    if (this.open >= this.limits.maxConnections) {
      throw new MeshError('limit_exceeded', `this node has ${this.open} connections open, its limit (--max-connections)`);
    }
    if ((this.perAddress.get(address) ?? 0) >= this.limits.maxConnectionsPerAddress) {
      throw new MeshError(
        'limit_exceeded',
        `${address} has ${this.limits.maxConnectionsPerAddress} connections open, the limit per address (--max-connections-per-address)`,
      );
    }
  }

  /** Counts a connection from `address` until the returned function is called. */
  admit(address: string): () => void {
    this.checkCapacity(address);
    this.open++;
    this.perAddress.set(address, (this.perAddress.get(address) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.open--;
      const left = (this.perAddress.get(address) ?? 1) - 1;
      if (left > 0) this.perAddress.set(address, left);
      else this.perAddress.delete(address);
    };
  }

  /**
   * Who a request acts as: anonymous on a node without authentication;
   * otherwise the token given, or the one of the request (`Authorization:
   * Bearer`, or `?token=` for browsers' WebSockets). Fails with
   * `unauthorized` naming the reason.
   */
  async authenticate(req: IncomingMessage, token: string | undefined = tokenOf(req)): Promise<Principal> {
    const verify = this.options.verify;
    if (!verify) return ANONYMOUS;
    if (token === undefined || token === '') {
      throw new MeshError('unauthorized', 'this node requires a token: send Authorization: Bearer <token> or ?token=<token>');
    }
    return verify(token);
  }
}

/** The token of a request: `Authorization: Bearer`, else the `token` query parameter. */
export function tokenOf(req: IncomingMessage): string | undefined {
  const header = req.headers.authorization;
  if (header !== undefined) {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    return match ? match[1] : '';
  }
  return new URL(req.url ?? '/', 'http://localhost').searchParams.get('token') ?? undefined;
}

/** `scheme://host[:port]` in lower case with default ports dropped, or undefined for something that is not an origin. */
export function normalizeOrigin(origin: string): string | undefined {
  try {
    const url = new URL(origin);
    if (url.origin === 'null') return undefined;
    return url.origin;
  } catch {
    return undefined;
  }
}

/** True when `origin` names the host and port of the Host header. */
function sameHost(origin: string, hostHeader: string | undefined): boolean {
  if (hostHeader === undefined) return false;
  try {
    return new URL(origin).host === new URL(`http://${hostHeader}`).host;
  } catch {
    return false;
  }
}

function hostnameOf(hostHeader: string): string | undefined {
  try {
    const { hostname } = new URL(`http://${hostHeader}`);
    return hostname.startsWith('[') ? hostname.slice(1, -1) : hostname.toLowerCase();
  } catch {
    return undefined;
  }
}

/** True for an address that only this machine can reach. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}

/**
 * Refuses an upgrade before any WebSocket exists: an HTTP status with the
 * error as JSON, then the socket is closed.
 */
export function refuseUpgrade(socket: Duplex, err: unknown): void {
  const error = MeshError.from(err);
  const status = HTTP_STATUS[error.code];
  const body = JSON.stringify({ error: { code: error.code, message: error.message } });
  const auth = error.code === 'unauthorized' ? 'WWW-Authenticate: Bearer\r\n' : '';
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${auth}Connection: close\r\n\r\n${body}`,
  );
  // A client that does not read the answer does not keep the socket.
  setTimeout(() => socket.destroy(), 1000).unref();
}
