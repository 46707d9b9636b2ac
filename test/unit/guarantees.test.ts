import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

/**
 * The guarantee matrix at the end of docs/guarantees.md names, for every
 * promise, the tests that prove it. This checks that every row names at
 * least one test, and that each named test exists: its file, and the titles
 * of its describe blocks and of the test itself, as the test file declares
 * them (read with the TypeScript parser, so nesting counts).
 */
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const GUARANTEES = join(ROOT, 'docs/guarantees.md');
const MATRIX_HEADING = '## Guarantee matrix';
/** Separates the file and the titles in a test reference: `file › describe › test`. */
const SEPARATOR = ' › ';

interface MatrixRow {
  line: number;
  promise: string;
  /** The test references of the row's last cell (code spans starting with `test/`). */
  tests: string[];
}

/** The rows of the table under MATRIX_HEADING (header and separator rows left out). */
function matrixRows(markdown: string): MatrixRow[] {
  const lines = markdown.split('\n');
  const start = lines.findIndex((l) => l.trim() === MATRIX_HEADING);
  if (start < 0) return [];
  const rows: MatrixRow[] = [];
  for (let i = start + 1; i < lines.length && !lines[i]!.startsWith('## '); i++) {
    const line = lines[i]!.trim();
    if (!line.startsWith('|')) continue;
    const cells = line
      .slice(1, line.endsWith('|') ? -1 : undefined)
      .split('|')
      .map((c) => c.trim());
    if (cells.every((c) => /^:?-+:?$/.test(c)) || cells[0] === 'promise') continue;
    const tests = [...cells.at(-1)!.matchAll(/`(test\/[^`]+)`/g)].map((m) => m[1]!);
    rows.push({ line: i + 1, promise: cells[0]!, tests });
  }
  return rows;
}

/** How a title in the source matches a written title: exactly, or as a pattern (templates, .each placeholders). */
type TitleMatcher = (title: string) => boolean;

interface Declared {
  kind: 'describe' | 'test';
  path: TitleMatcher[];
}

const SUITE_FUNCTIONS = new Set(['describe', 'suite']);
const TEST_FUNCTIONS = new Set(['it', 'test']);
const MODIFIERS = new Set(['only', 'skip', 'concurrent', 'sequential', 'fails']);
/** `describe.skipIf(condition)(…)`, `it.runIf(condition)(…)`. */
const CONDITIONS = new Set(['skipIf', 'runIf']);

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function patternMatcher(parts: string[]): TitleMatcher {
  // A substitution may be empty (a template's `${tag}` that is '' in a single run).
  const regex = new RegExp(`^${parts.map(escapeRegExp).join('.*')}$`, 's');
  return (title) => regex.test(title);
}

/** A title of `.each`: printf placeholders (%s, %d, …) and $name stand for any text. */
function eachTitleMatcher(title: string): TitleMatcher {
  return patternMatcher(
    title
      // NUL stands for an escaped %% while splitting.
      .replace(/%%/g, '\u0000')
      .split(/%[sdifjoO#]|\$[\w.]+/)
      // biome-ignore lint/suspicious/noControlCharactersInRegex: and back
      .map((p) => p.replace(/\u0000/g, '%')),
  );
}

function titleMatcher(node: ts.Expression | undefined, each: boolean): TitleMatcher | undefined {
  if (!node) return undefined;
  if (ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)) {
    const text = node.text;
    return each ? eachTitleMatcher(text) : (title) => title === text;
  }
  if (ts.isTemplateExpression(node)) return patternMatcher([node.head.text, ...node.templateSpans.map((s) => s.literal.text)]);
  return undefined;
}

/** `describe`, `it.skip`, `it.each(cases)`…: what a call's callee declares, if anything. */
function declarationOf(callee: ts.Expression): { kind: Declared['kind']; each: boolean } | undefined {
  const kindOf = (name: string) => (SUITE_FUNCTIONS.has(name) ? 'describe' : TEST_FUNCTIONS.has(name) ? 'test' : undefined);
  if (ts.isIdentifier(callee)) {
    const kind = kindOf(callee.text);
    return kind && { kind, each: false };
  }
  if (ts.isPropertyAccessExpression(callee) && ts.isIdentifier(callee.expression) && MODIFIERS.has(callee.name.text)) {
    const kind = kindOf(callee.expression.text);
    return kind && { kind, each: false };
  }
  // describe.skipIf(condition)(title, fn): a conditional declaration of a plain title.
  if (
    ts.isCallExpression(callee) &&
    ts.isPropertyAccessExpression(callee.expression) &&
    CONDITIONS.has(callee.expression.name.text) &&
    ts.isIdentifier(callee.expression.expression)
  ) {
    const kind = kindOf(callee.expression.expression.text);
    return kind && { kind, each: false };
  }
  // it.each(cases)(title, fn): the callee is itself a call of `.each`.
  if (ts.isCallExpression(callee) && ts.isPropertyAccessExpression(callee.expression) && callee.expression.name.text === 'each') {
    const inner = callee.expression.expression;
    const name = ts.isIdentifier(inner) ? inner.text : ts.isPropertyAccessExpression(inner) && ts.isIdentifier(inner.expression) ? inner.expression.text : '';
    const kind = kindOf(name);
    return kind && { kind, each: true };
  }
  return undefined;
}

/** Every describe and test a source file declares, each with the titles of the describes around it. */
function declarationsIn(file: string): Declared[] {
  const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
  const out: Declared[] = [];
  const visit = (node: ts.Node, path: TitleMatcher[]) => {
    if (ts.isCallExpression(node)) {
      const declared = declarationOf(node.expression);
      const title = declared && titleMatcher(node.arguments[0], declared.each);
      if (declared && title) {
        const inner = [...path, title];
        out.push({ kind: declared.kind, path: inner });
        for (const arg of node.arguments.slice(1)) visit(arg, inner);
        return;
      }
    }
    ts.forEachChild(node, (child) => visit(child, path));
  };
  visit(source, []);
  return out;
}

/** The file and the local modules it imports (a shared suite such as test/engine/conformance.ts declares tests for it). */
function filesDeclaringFor(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const imported = [...text.matchAll(/^import[^'";]*?from\s+'(\.{1,2}\/[^']+)'/gm)]
    .map((m) => resolve(dirname(file), m[1]!.replace(/\.js$/, '.ts')))
    .filter((f) => existsSync(f) && !f.includes(`${join('test', 'helpers')}`));
  return [file, ...imported];
}

const declarationCache = new Map<string, Declared[]>();

/** Why `reference` (`file › describe › … › test`) names no test, or undefined when it names one. */
function problemWith(reference: string): string | undefined {
  const [file, ...titles] = reference.split(SEPARATOR);
  if (!file || titles.length === 0) return `'${reference}' names a file but no test title (write file${SEPARATOR}describe${SEPARATOR}test)`;
  const path = join(ROOT, file);
  if (!existsSync(path)) return `${file} does not exist`;
  let declared = declarationCache.get(path);
  if (!declared) declarationCache.set(path, (declared = filesDeclaringFor(path).flatMap(declarationsIn)));
  const found = declared.some((d) => d.kind === 'test' && d.path.length === titles.length && d.path.every((match, i) => match(titles[i]!)));
  if (found) return undefined;
  const test = titles.at(-1)!;
  const sameTitle = declared.filter((d) => d.kind === 'test' && d.path.at(-1)!(test));
  return sameTitle.length > 0
    ? `${file} declares '${test}', but not inside describe blocks titled ${JSON.stringify(titles.slice(0, -1))}`
    : `${file} declares no test titled '${test}'`;
}

describe('the guarantee matrix in docs/guarantees.md', () => {
  const rows = matrixRows(readFileSync(GUARANTEES, 'utf8'));

  it('is there, with a row for each promise', () => {
    expect(rows.length).toBeGreaterThan(30);
  });

  it('names at least one test for every promise', () => {
    const untested = rows.filter((row) => row.tests.length === 0).map((row) => `line ${row.line}: ${row.promise}`);
    expect(untested, 'promises that name no test').toEqual([]);
  });

  it('names only tests that exist', () => {
    const problems = rows.flatMap((row) =>
      row.tests
        .map((t) => problemWith(t))
        .filter(Boolean)
        .map((p) => `line ${row.line}: ${p}`),
    );
    expect(problems, 'test references that name no test').toEqual([]);
  });

  it('would notice a test that is not there', () => {
    const crash = 'test/integration/crash.test.ts';
    expect(problemWith(`${crash} › crash recovery › keeps every acknowledged publish and group ack across kill -9`)).toBeUndefined();
    expect(problemWith(`${crash} › crash recovery › keeps every acknowledged publish across kill -9`)).toMatch(/declares no test titled/);
    expect(problemWith(`${crash} › keeps every acknowledged publish and group ack across kill -9`)).toMatch(/not inside describe blocks/);
    expect(problemWith('test/integration/no-such.test.ts › a › b')).toMatch(/does not exist/);
    expect(problemWith(crash)).toMatch(/no test title/);
    // Titles made by describe.each and by a shared suite's template match what they expand to, and nothing else.
    expect(problemWith('test/integration/broker-behaviour.test.ts › over ws › publishes idempotently by key')).toBeUndefined();
    expect(problemWith('test/integration/broker-behaviour.test.ts › under ws › publishes idempotently by key')).toBeDefined();
    expect(problemWith('test/engine/redis-engine.test.ts › redis engine conformance › groups › deletes a group and its pending entries')).toBeUndefined();
    expect(problemWith('test/engine/redis-engine.test.ts › redis engine conformance › deletes a group and its pending entries')).toBeDefined();
    const rowsOf = (cell: string) => matrixRows(`${MATRIX_HEADING}\n\n| promise | stated in | proved by |\n| --- | --- | --- |\n| p | s | ${cell} |\n`);
    expect(rowsOf('none yet')[0]!.tests).toEqual([]);
    expect(rowsOf(`\`${crash} › a › b\`<br>\`${crash} › c\``)[0]!.tests).toEqual([`${crash} › a › b`, `${crash} › c`]);
  });
});
