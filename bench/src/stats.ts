/** Medians, number formatting and the printed tables. */
import type { Row } from './workload.js';

export function median(values: readonly number[]): number | null {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return null;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/**
 * Collapses per-round metrics to one record: numbers become their median over
 * the rounds that have them, strings the value of the last round. Keys keep the
 * first round's order.
 */
export function medianMetrics(rounds: readonly Record<string, number | string | null>[]): Record<string, number | string | null> {
  const keys: string[] = [];
  for (const r of rounds) for (const k of Object.keys(r)) if (!keys.includes(k)) keys.push(k);
  const out: Record<string, number | string | null> = {};
  for (const key of keys) {
    const values = rounds.map((r) => r[key]).filter((v) => v !== undefined && v !== null);
    if (values.length === 0) out[key] = null;
    else if (values.every((v) => typeof v === 'number')) out[key] = median(values as number[]);
    else out[key] = String(values[values.length - 1]);
  }
  return out;
}

/** Formats a figure for a table: thousands separators, 2–3 significant digits for small ones. */
export function formatNumber(value: number | string | null | undefined): string {
  if (value === null || value === undefined) return '-';
  if (typeof value === 'string') return value;
  if (!Number.isFinite(value)) return String(value);
  const abs = Math.abs(value);
  if (Number.isInteger(value) || abs >= 1000) return Math.round(value).toLocaleString('en-US');
  if (abs >= 100) return value.toFixed(0);
  if (abs >= 10) return value.toFixed(1);
  if (abs >= 1) return value.toFixed(2);
  if (abs === 0) return '0';
  return value.toPrecision(2);
}

/** A plain-text table (Markdown pipe table, so it pastes into docs as is). */
export function renderTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const numeric = headers.map((_, i) => rows.length > 0 && rows.every((r) => /^-?[\d,.]+( ?[a-z%×x]*)?$|^-$/.test(r[i] ?? '')));
  const line = (cells: readonly string[]) =>
    `| ${cells.map((c, i) => (numeric[i] ? (c ?? '').padStart(widths[i]!) : (c ?? '').padEnd(widths[i]!))).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (numeric[i] ? `${'-'.repeat(w + 1)}:` : '-'.repeat(w + 2))).join('|')}|`;
  return [line(headers), rule, ...rows.map(line)].join('\n');
}

/** The table of one workload: system, durability, size and params, then the metric columns. */
export function renderRows(rows: readonly Row[], columns?: readonly string[]): string {
  if (rows.length === 0) return '(no rows)';
  const metricKeys: string[] = [...(columns ?? [])];
  for (const row of rows) for (const k of Object.keys(row.metrics)) if (!metricKeys.includes(k)) metricKeys.push(k);
  const paramKeys: string[] = [];
  for (const row of rows) for (const k of Object.keys(row.params)) if (!paramKeys.includes(k)) paramKeys.push(k);
  const hasSize = rows.some((r) => r.size !== undefined);
  const headers = ['system', 'durability', ...(hasSize ? ['size'] : []), ...paramKeys, ...metricKeys];
  const body = rows.map((row) => [
    row.system,
    row.durability,
    ...(hasSize ? [row.size === undefined ? '-' : `${row.size} B`] : []),
    ...paramKeys.map((k) => formatParam(row.params[k])),
    ...metricKeys.map((k) => formatNumber(row.metrics[k])),
  ]);
  return renderTable(headers, body);
}

function formatParam(value: unknown): string {
  if (value === undefined || value === null) return '-';
  if (typeof value === 'number') return formatNumber(value);
  return String(value);
}
