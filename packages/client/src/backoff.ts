export interface BackoffOptions {
  /** Delay before the first retry. Default 100 ms. */
  initialDelayMs?: number;
  /** Largest delay. Default 5000 ms. */
  maxDelayMs?: number;
  /**
   * Share of each delay that is random, 0 to 1. Default 0.5: a delay of
   * `d` becomes a random value between `d/2` and `d`, so that clients
   * disconnected together do not all come back at once.
   */
  jitter?: number;
}

export const BACKOFF_DEFAULTS: Required<BackoffOptions> = { initialDelayMs: 100, maxDelayMs: 5000, jitter: 0.5 };

/** Capped exponential backoff with jitter. */
export class Backoff {
  private readonly initial: number;
  private readonly max: number;
  private readonly jitter: number;
  private attempt = 0;

  constructor(options: BackoffOptions = {}) {
    this.initial = Math.max(1, options.initialDelayMs ?? BACKOFF_DEFAULTS.initialDelayMs);
    this.max = Math.max(this.initial, options.maxDelayMs ?? BACKOFF_DEFAULTS.maxDelayMs);
    this.jitter = Math.min(1, Math.max(0, options.jitter ?? BACKOFF_DEFAULTS.jitter));
  }

  /** The next delay in ms; each call doubles the base up to the cap. */
  next(): number {
    const base = Math.min(this.max, this.initial * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    // Never below 1 ms, even with jitter 1: a retry is always a timer away.
    return Math.max(1, Math.round(base * (1 - this.jitter * Math.random())));
  }

  reset(): void {
    this.attempt = 0;
  }
}
