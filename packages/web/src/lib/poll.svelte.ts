import { untrack } from 'svelte';
import { errorText } from './api.js';

export interface Polled<T> {
  readonly data: T | undefined;
  readonly error: string | null;
  readonly loading: boolean;
  /** When data was last loaded successfully. */
  readonly updatedAt: number;
  refresh(): Promise<void>;
}

export interface PollOptions {
  /** Load nothing while the page is hidden (another tab, a minimised window), and load at once when it shows again. Default false. */
  pauseWhenHidden?: boolean;
}

/**
 * Loads `load()` now and every `intervalMs` while the calling component is
 * mounted. Keeps the last good data when a round fails, and reports the
 * failure as the node's message. Call during component initialisation.
 */
export function poll<T>(load: () => Promise<T>, intervalMs: number, options: PollOptions = {}): Polled<T> {
  const state = $state({ data: undefined as T | undefined, error: null as string | null, loading: true, updatedAt: 0 });
  let timer: ReturnType<typeof setTimeout> | undefined;
  let active = true;
  let running: Promise<void> | undefined;
  const paused = () => options.pauseWhenHidden === true && document.hidden;

  const tick = (): Promise<void> => {
    running ??= (async () => {
      clearTimeout(timer);
      try {
        const data = await load();
        if (!active) return;
        state.data = data;
        state.error = null;
        state.updatedAt = Date.now();
      } catch (err) {
        if (!active) return;
        state.error = errorText(err);
      } finally {
        state.loading = false;
        running = undefined;
        if (active && !paused()) timer = setTimeout(() => void tick(), intervalMs);
      }
    })();
    return running;
  };

  $effect(() => {
    active = true;
    untrack(() => void tick());
    const onVisibility = () => {
      if (paused()) clearTimeout(timer);
      else void tick();
    };
    if (options.pauseWhenHidden) document.addEventListener('visibilitychange', onVisibility);
    return () => {
      active = false;
      clearTimeout(timer);
      document.removeEventListener('visibilitychange', onVisibility);
    };
  });

  return {
    get data() {
      return state.data;
    },
    get error() {
      return state.error;
    },
    get loading() {
      return state.loading;
    },
    get updatedAt() {
      return state.updatedAt;
    },
    refresh: tick,
  };
}

/** A clock that ticks every `ms` while the component is mounted, for "x s ago" texts. */
export function clock(ms = 1000): { readonly now: number } {
  const state = $state({ now: Date.now() });
  $effect(() => {
    const timer = setInterval(() => (state.now = Date.now()), ms);
    return () => clearInterval(timer);
  });
  return state;
}
