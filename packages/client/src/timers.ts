/** Lets Node exit while only this timer is left; a no-op in browsers. */
export function unref(timer: unknown): void {
  (timer as { unref?: () => void }).unref?.();
}
