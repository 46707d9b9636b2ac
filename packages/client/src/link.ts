import { type AuthInfo, type HelloResult, MeshError, type ServerFrame } from '@meshmq/shared';
import { unref } from './timers.js';
import { type SocketOpener, type WebSocketLike, WS_OPEN } from './websocket.js';

/** How long a polite close may wait for the server before the socket is dropped. */
const FORCE_CLOSE_MS = 1000;

export interface CloseInfo {
  code: number;
  reason: string;
}

/**
 * One WebSocket connection to one node. Closing is immediate on our side:
 * once `close()` is called or the socket closes, no further frame is handed
 * on and `closed` resolves, whatever the socket still does.
 */
export class Link {
  /** The hello reply of this connection, once received. */
  hello: HelloResult | undefined;
  /** Who the connection acts as: from hello, then from each token refresh. */
  auth: AuthInfo | undefined;
  /** An `unauthorized` error the node sent on its own: the token expired, and the node closes the connection. */
  expiry: MeshError | undefined;
  /** The node asked the client to move elsewhere: send it nothing new. */
  draining = false;
  /** Time the last frame arrived, for the heartbeat. */
  lastFrameAt = Date.now();
  readonly closed: Promise<CloseInfo>;
  private resolveClosed!: (info: CloseInfo) => void;
  private isClosed = false;
  private forceTimer: ReturnType<typeof setTimeout> | undefined;

  private constructor(
    readonly url: string,
    /** The token the connection acts with: the one it was opened with, then each refreshed one. */
    public token: string | undefined,
    private readonly ws: WebSocketLike,
    private readonly onFrame: (link: Link, frame: ServerFrame) => void,
    private readonly onBadFrame: (link: Link, error: MeshError) => void,
  ) {
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    ws.onmessage = (event) => this.receive(event.data);
    ws.onclose = (event) => {
      clearTimeout(this.forceTimer);
      this.finish({ code: event.code, reason: event.reason });
    };
    ws.onerror = () => {
      // A close event follows every error; that is where the link ends.
    };
  }

  /**
   * Opens a WebSocket to `url` presenting `token`. Rejects with the server's
   * refusal where the implementation exposes it (`unauthorized` for a bad
   * token), else with `unavailable`, on failure or after `timeoutMs`.
   */
  static open(
    openSocket: SocketOpener,
    url: string,
    token: string | undefined,
    timeoutMs: number,
    onFrame: (link: Link, frame: ServerFrame) => void,
    onBadFrame: (link: Link, error: MeshError) => void,
  ): { link: Promise<Link>; abort: () => void } {
    let settle: ((error?: MeshError) => void) | undefined;
    const link = new Promise<Link>((resolve, reject) => {
      let socket: WebSocketLike;
      let refusal: (() => MeshError | undefined) | undefined;
      try {
        ({ socket, refusal } = openSocket(url, token));
      } catch (err) {
        reject(new MeshError('unavailable', `cannot connect to ${url}: ${describe(err)}`, { cause: err }));
        return;
      }
      const timer = setTimeout(() => settle?.(new MeshError('unavailable', `connecting to ${url} timed out after ${timeoutMs} ms`)), timeoutMs);
      settle = (error) => {
        settle = undefined;
        clearTimeout(timer);
        socket.onopen = socket.onclose = socket.onerror = null;
        if (!error) {
          resolve(new Link(url, token, socket, onFrame, onBadFrame));
          return;
        }
        socket.onerror = () => {};
        terminate(socket);
        reject(error);
      };
      let detail = '';
      socket.onerror = (event) => (detail = describe(event));
      socket.onclose = (event) =>
        settle?.(refusal?.() ?? new MeshError('unavailable', `cannot connect to ${url}: ${detail || `closed with code ${event.code}`}`));
      socket.onopen = () => settle?.();
    });
    return { link, abort: () => settle?.(new MeshError('unavailable', 'connection attempt aborted')) };
  }

  get isOpen(): boolean {
    return !this.isClosed && this.ws.readyState === WS_OPEN;
  }

  /** Sends one frame; false when the link is no longer open. */
  send(frame: object): boolean {
    if (!this.isOpen) return false;
    try {
      this.ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Ends the link now. Code 1000 closes politely (the server sees a clean
   * close), other codes drop the connection where the implementation allows.
   */
  close(code = 1000, reason = ''): void {
    if (this.isClosed) return;
    if (this.ws.terminate && code !== 1000) this.ws.terminate();
    else {
      try {
        this.ws.close(code, reason);
      } catch {
        terminate(this.ws);
      }
      if (this.ws.terminate) {
        // `ws` waits up to 30 s for the server's close frame, keeping Node alive; a server that is gone never sends it.
        this.forceTimer = setTimeout(() => terminate(this.ws), FORCE_CLOSE_MS);
        unref(this.forceTimer);
      }
    }
    this.finish({ code, reason });
  }

  private finish(info: CloseInfo): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.ws.onmessage = null;
    // Keep an error listener: the `ws` package throws on an unhandled error event.
    this.ws.onerror = () => {};
    this.resolveClosed(info);
  }

  private receive(data: unknown): void {
    if (this.isClosed) return;
    this.lastFrameAt = Date.now();
    if (typeof data !== 'string') {
      this.onBadFrame(this, new MeshError('bad_request', 'the server sent a binary frame'));
      return;
    }
    let frame: unknown;
    try {
      frame = JSON.parse(data);
    } catch {
      this.onBadFrame(this, new MeshError('bad_request', 'the server sent a frame that is not JSON'));
      return;
    }
    if (frame === null || typeof frame !== 'object' || typeof (frame as { op?: unknown }).op !== 'string') {
      this.onBadFrame(this, new MeshError('bad_request', 'the server sent a frame without an op'));
      return;
    }
    this.onFrame(this, frame as ServerFrame);
  }
}

function terminate(ws: WebSocketLike): void {
  try {
    if (ws.terminate) ws.terminate();
    else ws.close();
  } catch {
    // Closing a socket that is still connecting throws in some implementations; it is dropped either way.
  }
}

function describe(value: unknown): string {
  if (value instanceof Error) return value.message;
  const message = (value as { message?: unknown; error?: unknown } | null)?.message;
  if (typeof message === 'string' && message) return message;
  const error = (value as { error?: unknown } | null)?.error;
  if (error instanceof Error) return error.message;
  return 'connection failed';
}
