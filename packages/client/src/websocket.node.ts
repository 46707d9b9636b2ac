import type { IncomingMessage } from 'node:http';
import { type ErrorCode, isErrorCode, MeshError } from '@meshmq/shared';
import WebSocket from 'ws';
import type { SocketOpener, WebSocketLike } from './websocket.js';

/** The most of a refusal's body read; a MeshMQ node's error body is far smaller. */
const MAX_REFUSAL_BYTES = 16 * 1024;

/** The code of a refusal whose body does not name one. */
const CODE_OF_STATUS: Record<number, ErrorCode> = {
  400: 'bad_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  429: 'rate_limited',
};

/**
 * Node (and any runtime resolving the `default` condition): the `ws` package,
 * since Node 20 has no global WebSocket. The token goes in an
 * `Authorization: Bearer` header, never in the URL (URLs end up in logs), and
 * a refused handshake is read: its error becomes the attempt's error.
 */
export function defaultOpener(): SocketOpener {
  return (url, token) => {
    const ws = new WebSocket(url, token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } });
    let refusal: MeshError | undefined;
    // With a listener, `ws` leaves the failed handshake to us: read the answer, then drop the socket.
    ws.on('unexpected-response', (_req, res) => {
      void readBody(res).then((body) => {
        refusal = refusalOf(url, res.statusCode ?? 0, body);
        ws.terminate();
      });
    });
    return { socket: ws as unknown as WebSocketLike, refusal: () => refusal };
  };
}

/** The body of a response as text, up to MAX_REFUSAL_BYTES; never rejects. */
function readBody(res: IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = () => resolve(Buffer.concat(chunks).toString('utf8'));
    res.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_REFUSAL_BYTES) chunks.push(chunk);
      else res.destroy();
    });
    res.once('end', done);
    res.once('close', done);
    res.once('error', done);
  });
}

/** The error of a refused handshake: the node's `{ error: { code, message } }`, else one named by the status. */
function refusalOf(url: string, status: number, body: string): MeshError {
  let error: { code?: unknown; message?: unknown } | undefined;
  try {
    error = (JSON.parse(body) as { error?: { code?: unknown; message?: unknown } } | null)?.error;
  } catch {
    // Not a MeshMQ node's answer (a proxy's page, say): the status tells what it can.
  }
  const code = isErrorCode(error?.code) ? error.code : (CODE_OF_STATUS[status] ?? 'unavailable');
  const reason = typeof error?.message === 'string' && error.message !== '' ? error.message : `HTTP ${status}`;
  return new MeshError(code, `${url} refused the connection: ${reason}`);
}
