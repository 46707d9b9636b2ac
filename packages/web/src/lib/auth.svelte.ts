/**
 * The access token for a node that requires authentication. It is kept in
 * sessionStorage only: it lives as long as the browser tab and is never
 * written anywhere that outlives it.
 */
const KEY = 'meshmq.console.token';

function load(): string | null {
  try {
    return sessionStorage.getItem(KEY);
  } catch {
    return null;
  }
}

export const auth = $state({
  token: load(),
  /** Set when the node answered `unauthorized`: the console asks for a token. */
  required: false,
  /** The node's message from the last `unauthorized` answer. */
  message: '',
});

export function setToken(token: string | null): void {
  auth.token = token && token.trim() !== '' ? token.trim() : null;
  auth.required = false;
  try {
    if (auth.token) sessionStorage.setItem(KEY, auth.token);
    else sessionStorage.removeItem(KEY);
  } catch {
    // storage disabled: the token lives in memory for this page only
  }
}
