/**
 * What one connection may hold and send (docs/security.md). Each is a node
 * option with this default; hello tells clients the values.
 */
export interface ConnectionLimits {
  /** Fan-out subscriptions plus group memberships of one connection. */
  maxSubscriptions: number;
  /** Requests of one connection being handled at once; more get `rate_limited`. */
  maxInflight: number;
  /** Publishes per second one connection may sustain; 0 means no limit. */
  publishRate: number;
  /** Publishes one connection may send at once after being idle (the token bucket's size). */
  publishBurst: number;
  /** Encoded message data one history reply carries at most (always at least one message). */
  historyMaxBytes: number;
}

export const DEFAULT_CONNECTION_LIMITS: ConnectionLimits = {
  maxSubscriptions: 1000,
  maxInflight: 1024,
  publishRate: 20_000,
  publishBurst: 20_000,
  historyMaxBytes: 4 * 1024 * 1024,
};

/**
 * Outgoing bytes queued on a connection above which the node stops producing
 * for it (deliveries wait, the transport stops reading its requests) until
 * the client reads.
 */
export const HIGH_WATER_MARK = 4 * 1024 * 1024;

/**
 * A token bucket: `rate` tokens a second, at most `burst` saved up. `take`
 * answers 0 when a token was taken, otherwise how many ms until one is
 * there.
 */
export class TokenBucket {
  private tokens: number;
  private at: number;

  constructor(
    private readonly rate: number,
    private readonly burst: number,
    now = Date.now(),
  ) {
    this.tokens = burst;
    this.at = now;
  }

  take(now = Date.now()): number {
    if (this.rate <= 0) return 0;
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) * this.rate) / 1000);
    this.at = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - this.tokens) * 1000) / this.rate);
  }
}
