import { ERROR_CODES } from '@meshmq/shared';

/** Where a frame went. */
export type Channel = 'ws' | 'socket.io' | 'socket.io raw' | 'http' | 'http raw';

/** Longest excerpt of a triggering frame kept in a finding. */
const EXCERPT_CHARS = 400;
/** Findings of one kind kept in full; the rest are only counted. */
const MAX_FINDINGS_KEPT = 20;

/** A short, printable excerpt of a frame (escaped, so control characters show). */
export function excerpt(frame: string | Buffer): string {
  const text = typeof frame === 'string' ? frame : `<${frame.length} bytes> ${frame.subarray(0, EXCERPT_CHARS).toString('latin1')}`;
  const escaped = JSON.stringify(text.length > EXCERPT_CHARS ? `${text.slice(0, EXCERPT_CHARS)}…(${text.length} chars)` : text);
  return escaped;
}

/**
 * What a fuzz run saw: frames sent per channel, error codes received,
 * connection outcomes, and findings (anything the node must never do), each
 * with the frame that triggered it.
 */
export class Tally {
  readonly sent: Record<Channel, number> = { ws: 0, 'socket.io': 0, 'socket.io raw': 0, http: 0, 'http raw': 0 };
  /** Bytes of the frames sent, per channel (as written by the fuzzer, before transport framing). */
  readonly bytes: Record<Channel, number> = { ws: 0, 'socket.io': 0, 'socket.io raw': 0, http: 0, 'http raw': 0 };
  readonly codes = new Map<string, number>();
  readonly httpStatuses = new Map<string, number>();
  /** Expected ways connections ended (close 1009 after an oversized frame, ...), by description. */
  readonly closes = new Map<string, number>();
  /** Handshakes refused as they should be (no or bad token), per channel. */
  readonly refused = new Map<string, number>();
  /** Findings by kind: each entry names the frame that triggered it. */
  readonly findings = new Map<string, string[]>();
  private readonly findingCounts = new Map<string, number>();
  longestErrorMessage = 0;

  count(channel: Channel, bytes: number): void {
    this.sent[channel] += 1;
    this.bytes[channel] += bytes;
  }

  get total(): number {
    return Object.values(this.sent).reduce((a, b) => a + b, 0);
  }

  bump(map: Map<string, number>, key: string): void {
    map.set(key, (map.get(key) ?? 0) + 1);
  }

  /** Records a finding: something the node must never do. */
  finding(kind: string, detail: string): void {
    this.findingCounts.set(kind, (this.findingCounts.get(kind) ?? 0) + 1);
    const list = this.findings.get(kind) ?? [];
    if (list.length < MAX_FINDINGS_KEPT) list.push(detail);
    this.findings.set(kind, list);
  }

  get findingTotal(): number {
    let n = 0;
    for (const c of this.findingCounts.values()) n += c;
    return n;
  }

  /**
   * Checks one error the node answered with (an error frame, a Socket.IO
   * refusal, an admin API error body): a known code other than `internal`,
   * and a message that says something.
   */
  error(channel: Channel, error: { code?: unknown; message?: unknown }, trigger: () => string): void {
    const code = typeof error.code === 'string' ? error.code : `<${typeof error.code}>`;
    this.bump(this.codes, code);
    if (!(ERROR_CODES as readonly string[]).includes(code)) this.finding('unknown error code', `${channel}: ${code} for ${trigger()}`);
    if (code === 'internal') this.finding('internal error', `${channel}: ${JSON.stringify(error.message)} for ${trigger()}`);
    if (typeof error.message !== 'string' || error.message.trim() === '') {
      this.finding('error without a message', `${channel}: ${JSON.stringify(error)} for ${trigger()}`);
    } else {
      this.longestErrorMessage = Math.max(this.longestErrorMessage, error.message.length);
    }
  }

  /** Every counter and finding as printable lines. */
  report(): string {
    const sorted = (map: Map<string, number>) =>
      [...map.entries()]
        .sort((a, b) => b[1] - a[1])
        .map(([k, v]) => `${k}=${v}`)
        .join(' ');
    const lines = [
      `frames sent: ${this.total} (${Object.entries(this.sent)
        .map(([k, v]) => `${k}=${v}`)
        .join(' ')})`,
      `bytes sent: ${Object.entries(this.bytes)
        .map(([k, v]) => `${k}=${(v / 1024 / 1024).toFixed(1)} MiB`)
        .join(' ')}`,
      `error codes: ${sorted(this.codes)}`,
      `http statuses: ${sorted(this.httpStatuses)}`,
      `connections ended as expected: ${sorted(this.closes)}`,
      `handshakes refused: ${sorted(this.refused)}`,
      `longest error message: ${this.longestErrorMessage} chars`,
      `findings: ${this.findingTotal}`,
    ];
    for (const [kind, list] of this.findings) {
      lines.push(`  ${kind} (${this.findingCounts.get(kind)}):`);
      for (const detail of list) lines.push(`    ${detail}`);
    }
    return lines.join('\n');
  }
}
