/**
 * JSON as the fuzzer writes it: a small value tree whose text can say what
 * JSON.stringify never writes (numbers out of double range, `-0`, duplicate
 * keys, `__proto__` as a plain key), and which converts to a JS value for
 * clients that serialise themselves (socket.io-client).
 */

/** A token written exactly as given: `1e400`, `-0`, `1E+2`, 400 digits. */
export class Raw {
  constructor(readonly text: string) {}
}

/** An object as written: keys in order, duplicates allowed. */
export class Obj {
  constructor(readonly pairs: Array<[string, Json]> = []) {}

  set(key: string, value: Json): this {
    this.pairs.push([key, value]);
    return this;
  }

  has(key: string): boolean {
    return this.pairs.some(([k]) => k === key);
  }

  without(...keys: string[]): Obj {
    return new Obj(this.pairs.filter(([k]) => !keys.includes(k)));
  }
}

export type Json = null | boolean | number | string | Raw | Obj | Json[];

/** The JSON text of `value` (recursive: generated trees are shallow; deep nesting is written as text). */
export function toText(value: Json): string {
  if (value === null || typeof value === 'boolean') return String(value);
  if (typeof value === 'number') return Number.isFinite(value) ? JSON.stringify(value) : 'null';
  if (typeof value === 'string') return JSON.stringify(value);
  if (value instanceof Raw) return value.text;
  if (value instanceof Obj) return `{${value.pairs.map(([k, v]) => `${JSON.stringify(k)}:${toText(v)}`).join(',')}}`;
  return `[${value.map(toText).join(',')}]`;
}

/**
 * The JS value a JSON parser would make of `value`'s text (the last of
 * duplicate keys wins, `__proto__` is an own key), for clients that encode
 * values themselves.
 */
export function toValue(value: Json): unknown {
  if (value instanceof Raw) {
    try {
      return JSON.parse(value.text) as unknown;
    } catch {
      return value.text;
    }
  }
  if (value instanceof Obj) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of value.pairs) Object.defineProperty(out, k, { value: toValue(v), enumerable: true, writable: true, configurable: true });
    return out;
  }
  if (Array.isArray(value)) return value.map(toValue);
  return value;
}
