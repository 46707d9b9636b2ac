import type { ErrorCode } from '@meshmq/shared';

/** HTTP status of each error code: admin API answers and refused handshakes. */
export const HTTP_STATUS: Record<ErrorCode, number> = {
  bad_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  payload_too_large: 413,
  rate_limited: 429,
  limit_exceeded: 503,
  unavailable: 503,
  // The storage did not answer in time: the gateway-timeout of the storage behind the node.
  maybe_stored: 504,
  internal: 500,
};
