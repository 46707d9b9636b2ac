import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/**
 * The layers of the node as docs/architecture.md draws them, checked against
 * the imports of packages/server/src: who may import whom, and no circles.
 */
const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../../packages/server/src');

/** Layer of a file, by its path under src. */
function layerOf(file: string): string {
  const [first] = file.split('/');
  if (['core', 'engine', 'transport', 'cluster', 'auth'].includes(first!)) return first!;
  if (['gate.ts', 'http-handler.ts', 'http-status.ts', 'admin-api.ts', 'node-stats.ts'].includes(file)) return 'http';
  return 'wiring';
}

/** What each layer may import from this package, besides itself and @meshmq/shared. */
const MAY_IMPORT: Record<string, string[]> = {
  engine: [],
  core: ['engine'],
  transport: ['core'],
  cluster: ['engine'],
  auth: ['wiring'],
  http: ['core', 'engine', 'auth'],
  wiring: ['core', 'engine', 'transport', 'cluster', 'auth', 'http'],
};

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sources(path);
    return name.endsWith('.ts') ? [relative(SRC, path)] : [];
  });
}

/** Files of src that `file` imports (type imports included: they tie the layers as much). */
function importsOf(file: string): string[] {
  const text = readFileSync(join(SRC, file), 'utf8');
  const out: string[] = [];
  for (const match of text.matchAll(/(?:^|\n)\s*(?:import|export)[^'";]*?from\s+'(\.{1,2}\/[^']+)'/g)) {
    out.push(relative(SRC, resolve(dirname(join(SRC, file)), match[1]!.replace(/\.js$/, '.ts'))));
  }
  return out;
}

describe('the layers of the node', () => {
  const files = sources(SRC);
  const graph = new Map(files.map((f) => [f, importsOf(f)]));

  it('finds the source and its imports', () => {
    expect(files).toContain('core/broker.ts');
    expect(graph.get('core/broker.ts')).toContain('core/session.ts');
  });

  it('imports only downwards', () => {
    const wrong: string[] = [];
    for (const [file, imports] of graph) {
      const from = layerOf(file);
      for (const target of imports) {
        const to = layerOf(target);
        if (to !== from && !MAY_IMPORT[from]!.includes(to)) wrong.push(`${file} (${from}) -> ${target} (${to})`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it('has no import circle', () => {
    const circles: string[] = [];
    const state = new Map<string, 'open' | 'done'>();
    const path: string[] = [];
    const visit = (file: string) => {
      if (state.get(file) === 'done') return;
      if (state.get(file) === 'open') {
        circles.push([...path.slice(path.indexOf(file)), file].join(' -> '));
        return;
      }
      state.set(file, 'open');
      path.push(file);
      for (const next of graph.get(file) ?? []) visit(next);
      path.pop();
      state.set(file, 'done');
    };
    for (const file of files) visit(file);
    expect(circles).toEqual([]);
  });
});
