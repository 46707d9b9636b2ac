/** Documented defaults shared by the server and the SDK. */
export const DEFAULTS = {
  /** Largest JSON-encoded `data` of one message, in bytes. */
  maxMessageBytes: 1024 * 1024,
  /** Window in which a repeated publish `key` on one topic is recognised as a duplicate. */
  dedupeWindowMs: 2 * 60 * 1000,
  /** Group: time a member has to ack a delivery before it is redelivered. */
  ackWaitMs: 30_000,
  /** Group: deliveries after which a message moves to the dead-letter topic. */
  maxDeliveries: 5,
  /** Group: unacked deliveries a member may hold at once. */
  prefetch: 10,
  /** Retention: messages kept per topic. */
  retentionMaxMessages: 1_000_000,
  /** Retention: age after which messages are removed (7 days). */
  retentionMaxAgeMs: 7 * 24 * 60 * 60 * 1000,
  /** history: default and largest page. */
  historyLimit: 100,
  historyMaxLimit: 1000,
} as const;

export const LIMITS = {
  ackWaitMs: { min: 100, max: 12 * 60 * 60 * 1000 },
  maxDeliveries: { min: 1, max: 1000 },
  prefetch: { min: 1, max: 10_000 },
  nackDelayMs: { min: 0, max: 12 * 60 * 60 * 1000 },
  /** Most offsets one `ack` frame settles (`offsets`). */
  ackOffsets: 1000,
  keyLength: 256,
  /** Longest access token accepted, in characters. */
  tokenLength: 8192,
  /** Deepest nesting of objects and arrays accepted in `data`. */
  dataDepth: 64,
} as const;
