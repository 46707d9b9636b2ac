/**
 * What a load agent runs: one publisher and one consumer of one queue (topic,
 * stream) of one system, in one process, so that publish→delivery latency is
 * read off one monotonic clock (performance.now()).
 */

/** How to reach a system; plain data, since it crosses into the agent process. */
export type DriverSpec =
  /** amqplib: durable classic queue, persistent messages, a confirm channel; consumer with manual ack and prefetch = window. */
  | { kind: 'rabbitmq'; url: string }
  /** nats.js: a file-storage stream per queue, js.publish awaiting the PubAck; a durable pull consumer with explicit ack. */
  | { kind: 'nats'; url: string }
  /** node-redis: XADD; a consumer group read with XREADGROUP (COUNT = window) and one XACK per message. */
  | { kind: 'redis-streams'; url: string }
  /**
   * Plain WebSocket (`ws`) speaking docs/protocol.md: publish frames; a group member with prefetch = window acking each delivery,
   * one `ack` frame per delivery, or with `ackBatch` one frame per event-loop turn naming up to 1000 `offsets`.
   */
  | { kind: 'meshmq-ws'; publishUrl: string; consumeUrl: string; ackBatch?: boolean }
  /** @meshmq/client: client.publish, client.consume (autoAck) with prefetch = window. */
  | { kind: 'meshmq-sdk'; publishUrl: string; consumeUrl: string };

export interface PipelineJob {
  driver: DriverSpec;
  /** Queue / topic / stream name; unique per run. */
  queue: string;
  /** Messages to publish (measured). */
  count: number;
  /** Payload size in bytes: a JSON object {s, t, p} padded to exactly this many bytes. */
  size: number;
  /** Publishes kept in flight (unacknowledged) at most; also the consumer's prefetch. */
  window: number;
  /** Publishes per second, paced; omitted: as fast as the window allows. */
  rate?: number;
  /** Messages published and consumed on a separate queue before measuring (default 0). */
  warmup?: number;
  /** Give up when nothing new arrived for this long (default 30 s). */
  stallMs?: number;
}

export interface PipelineResult {
  /** Publishes attempted, acknowledged, refused (error reply or exception). */
  sent: number;
  acked: number;
  publishErrors: number;
  /** Error codes or messages of refused publishes and failed acks, with counts. */
  errors: Record<string, number>;
  /** The first message seen for each error code, verbatim. */
  errorSamples: Record<string, string>;
  /** Deliveries seen, distinct messages among them, repeats, never seen. */
  received: number;
  unique: number;
  duplicates: number;
  missing: number;
  /** Failed acks (consumer side). */
  ackErrors: number;
  /** ms from the first publish until the consumer had every message (or gave up). */
  elapsedMs: number;
  /** ms from the first publish until the last publish was acknowledged. */
  publishMs: number;
  /** Encoded hdr histograms (µs) of publish→delivery: all, first 10 %, last 10 % of messages by sequence. */
  latency: string;
  latencyFirst: string;
  latencyLast: string;
  /** CPU seconds this agent (the client) used while measuring. */
  clientCpuS: number;
  /** True when the consumer stalled before having every message. */
  stalled: boolean;
}
