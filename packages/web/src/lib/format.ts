const numberFormat = new Intl.NumberFormat('en-US');

export function num(n: number): string {
  return numberFormat.format(n);
}

/** 0, 0.4, 12, 1.2k, 3.4M */
export function rate(n: number): string {
  if (n === 0) return '0';
  if (n < 10) return n.toFixed(1).replace(/\.0$/, '');
  if (n < 1000) return Math.round(n).toString();
  if (n < 1_000_000) return `${(n / 1000).toFixed(1).replace(/\.0$/, '')}k`;
  return `${(n / 1_000_000).toFixed(1).replace(/\.0$/, '')}M`;
}

/** 512 B, 1.5 KiB, 64 MiB: the same units as the node's messages. */
export { formatBytes as bytes } from '@meshmq/shared';

/** 850 ms, 12 s, 4 min, 3 h 20 min, 2 d 4 h */
export function duration(ms: number): string {
  if (!Number.isFinite(ms)) return '∞';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60 ? `${s % 60} s` : ''}`.trim();
  const h = Math.floor(m / 60);
  if (h < 24) return `${h} h ${m % 60 ? `${m % 60} min` : ''}`.trim();
  const d = Math.floor(h / 24);
  return `${d} d ${h % 24 ? `${h % 24} h` : ''}`.trim();
}

export function ago(ts: number | null | undefined, now = Date.now()): string {
  if (ts === null || ts === undefined || ts === 0) return '—';
  const ms = now - ts;
  if (ms < 1500) return 'just now';
  return `${duration(ms)} ago`;
}

/** 14:03:27, the local time of day to the second. */
export function timeOfDay(ts: number): string {
  const d = new Date(ts);
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** 14:03:27.042 */
export function time(ts: number): string {
  return `${timeOfDay(ts)}.${String(new Date(ts).getMilliseconds()).padStart(3, '0')}`;
}

export function dateTime(ts: number): string {
  const d = new Date(ts);
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time(ts)}`;
}

/** Pretty JSON for display: strings shown as JSON too, so their type stays visible. */
export function pretty(value: unknown): string {
  try {
    return JSON.stringify(value, null, 2) ?? String(value);
  } catch {
    return String(value);
  }
}

/** A one-line preview of a payload. */
export function preview(value: unknown, max = 120): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** A coarse duration for people: 40 s, 12 min, 3 h, 2 d. */
export function roughly(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86_400)} d`;
}
