import { MeshError } from '@meshmq/shared';
import { unref } from './timers.js';

/**
 * The access token (a JWT) a client presents: a string, or a function the
 * SDK calls for a current token before each connection attempt and before the
 * connection's token expires.
 */
export type TokenOption = string | (() => string | Promise<string>);

/** Where a client's tokens come from. */
export class Credentials {
  constructor(
    private readonly option: TokenOption | undefined,
    /** How long the token function may take. */
    private readonly timeoutMs: number,
  ) {
    if (option !== undefined && typeof option !== 'function' && (typeof option !== 'string' || option === '')) {
      throw new MeshError('bad_request', "option 'token' must be a non-empty string or a function returning one");
    }
  }

  /** True when a new token can be had: the option is a function. */
  get refreshable(): boolean {
    return typeof this.option === 'function';
  }

  /**
   * The token to present now; undefined without the option. Rejects when the
   * function throws (with its MeshError's code, else `unauthorized`), returns
   * something that is not a token (`unauthorized`), or takes longer than
   * `timeoutMs` (`unavailable`).
   */
  async get(): Promise<string | undefined> {
    const option = this.option;
    if (typeof option !== 'function') return option;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new MeshError('unavailable', `the token function did not return within ${this.timeoutMs} ms`)), this.timeoutMs);
      unref(timer);
    });
    let token: unknown;
    try {
      token = await Promise.race([Promise.resolve().then(option), late]);
    } catch (err) {
      if (err instanceof MeshError) throw err;
      throw new MeshError('unauthorized', `the token function failed: ${MeshError.from(err).message}`, { cause: err });
    } finally {
      clearTimeout(timer);
    }
    if (typeof token !== 'string' || token === '') {
      throw new MeshError('unauthorized', `the token function returned ${token === '' ? 'an empty string' : typeof token}, not a token`);
    }
    return token;
  }
}
