/**
 * A small seeded PRNG (sfc32) so a fuzz run can be replayed from its seed.
 * Each lane of the fuzzer draws from its own stream (`fork`), so the frames
 * a lane sends do not depend on how the lanes interleave.
 */
export class Prng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    // splitmix32 spreads the seed over the four words of state.
    let s = seed >>> 0;
    const next = () => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next();
    for (let i = 0; i < 12; i++) this.uint32();
  }

  /** A seed for a run: FUZZ_SEED when set (to replay), else a random one. */
  static seedFromEnv(env: NodeJS.ProcessEnv = process.env): number {
    const given = env.FUZZ_SEED;
    if (given !== undefined && given !== '') {
      const n = Number(given);
      if (!Number.isSafeInteger(n)) throw new Error(`FUZZ_SEED must be an integer, got '${given}'`);
      return n >>> 0;
    }
    return (Math.random() * 2 ** 32) >>> 0;
  }

  uint32(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) >>> 0;
    return t;
  }

  /** A float in [0, 1). */
  next(): number {
    return this.uint32() / 2 ** 32;
  }

  /** An integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from an empty list');
    return items[Math.floor(this.next() * items.length)]!;
  }

  /** Picks by weight: `[[weight, value], ...]`. */
  weighted<T>(choices: ReadonlyArray<readonly [number, T]>): T {
    let total = 0;
    for (const [w] of choices) total += w;
    let r = this.next() * total;
    for (const [w, value] of choices) {
      if ((r -= w) < 0) return value;
    }
    return choices.at(-1)![1];
  }

  /** An independent stream for a lane, derived from this one. */
  fork(): Prng {
    return new Prng(this.uint32());
  }
}
