import type { ErrorCode, RequestOp } from '@meshmq/shared';

/**
 * What the core reports as it works, for the node's metrics (metrics.ts
 * implements it). Calls are cheap and synchronous; the core never waits for
 * an observer.
 */
export interface BrokerObserver {
  /** A publish was stored (not a duplicate). */
  published(topic: string): void;
  /** A publish request was answered, `seconds` after its frame arrived (ok or error). */
  publishAnswered(seconds: number): void;
  /** A message went to a fan-out subscriber or a group member, `lagSeconds` after it was stored. */
  delivered(kind: 'fanout' | 'group', topic: string, lagSeconds: number): void;
  /** A group delivery beyond the first of a message. */
  redelivered(topic: string, group: string): void;
  /** `count` deliveries were acked (one `ack` frame may settle many). */
  acked(topic: string, group: string, count: number): void;
  nacked(topic: string, group: string): void;
  /** Messages a group's claim moved to the dead-letter topic. */
  deadLettered(topic: string, group: string, count: number): void;
  /** A request was answered with an error; `op` is 'unknown' for frames that name no known request. */
  refused(op: RequestOp | 'unknown', code: ErrorCode): void;
}

/** One observer that tells every one of `observers` that has the method. */
export function allOf(...observers: Array<Partial<BrokerObserver>>): BrokerObserver {
  const each =
    <K extends keyof BrokerObserver>(name: K) =>
    (...args: Parameters<BrokerObserver[K]>) => {
      for (const observer of observers) (observer[name] as ((...a: Parameters<BrokerObserver[K]>) => void) | undefined)?.apply(observer, args);
    };
  return {
    published: each('published'),
    publishAnswered: each('publishAnswered'),
    delivered: each('delivered'),
    redelivered: each('redelivered'),
    acked: each('acked'),
    nacked: each('nacked'),
    deadLettered: each('deadLettered'),
    refused: each('refused'),
  };
}
