/**
 * Latency histograms: hdr-histogram-js in its pure-JS mode (no WebAssembly),
 * values in microseconds, 3 significant digits. Histograms cross process
 * boundaries (load agents → harness) as compressed base64 strings.
 */
import hdr from 'hdr-histogram-js';

export type Histogram = ReturnType<typeof hdr.build>;

export function createHistogram(): Histogram {
  return hdr.build({ bitBucketSize: 32, autoResize: true, lowestDiscernibleValue: 1, numberOfSignificantValueDigits: 3, useWebAssembly: false });
}

export function encodeHistogram(h: Histogram): string {
  return hdr.encodeIntoCompressedBase64(h);
}

export function decodeHistogram(encoded: string): Histogram {
  return hdr.decodeFromCompressedBase64(encoded, 32, false);
}

/** Merges histograms (encoded or not) into a new one. */
export function mergeHistograms(parts: readonly (Histogram | string)[]): Histogram {
  const out = createHistogram();
  for (const part of parts) out.add(typeof part === 'string' ? decodeHistogram(part) : part);
  return out;
}

/** Percentile `p` (0–100) in milliseconds, or null for an empty histogram. */
export function percentileMs(h: Histogram, p: number): number | null {
  if (h.totalCount === 0) return null;
  return h.getValueAtPercentile(p) / 1000;
}
