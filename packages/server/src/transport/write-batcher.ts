import type { Duplex } from 'node:stream';

/**
 * Gathers what a socket is sent during one turn of the event loop into one
 * write. A busy node answers a publish, delivers it and answers its ack as
 * three frames; written one by one they cost a system call each, the largest
 * single cost the node had under load. Corked sockets are released together
 * once the turn's callbacks and promise reactions have run.
 */
export class WriteBatcher {
  private readonly corked = new Set<Duplex>();
  private scheduled = false;

  /**
   * Holds the socket's writes until the end of this turn. A socket with
   * writes already pending is left alone: the stream gathers what queues
   * behind them into one write by itself, and holding more would only keep
   * a second copy of a slow reader's backlog.
   */
  hold(socket: Duplex): void {
    if (this.corked.has(socket) || socket.writableLength > 0) return;
    socket.cork();
    this.corked.add(socket);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.release);
    }
  }

  /** Writes what is held now: before a socket is closed or the node stops, so that nothing held is dropped. */
  readonly release = (): void => {
    this.scheduled = false;
    const sockets = [...this.corked];
    this.corked.clear();
    for (const socket of sockets) socket.uncork();
  };
}
