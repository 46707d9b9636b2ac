import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NodeProcess } from '../helpers/node-process.js';
import { RedisProcess } from '../helpers/redis-process.js';
import { eventually } from '../helpers/util.js';

const HEARTBEAT_MS = 300;
const NODE_DOWN_AFTER_MS = 1500;

/** The JSON lines of a node's output; every line must be one. */
function jsonLines(output: string): Array<Record<string, unknown>> {
  return output
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

/** Keys that appear more than once at the top level of a JSON object line (JSON.parse keeps the last silently). */
function duplicateKeys(line: string): string[] {
  const seen = new Set<string>();
  const duplicates: string[] = [];
  let depth = 0;
  // Walk the string: keys are strings followed by ':' at depth 1.
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') depth--;
    else if (c === '"') {
      let j = i + 1;
      while (line[j] !== '"') j += line[j] === '\\' ? 2 : 1;
      const text = line.slice(i + 1, j);
      if (depth === 1 && line[j + 1] === ':') {
        if (seen.has(text)) duplicates.push(text);
        seen.add(text);
      }
      i = j;
    }
  }
  return duplicates;
}

/**
 * What operators read: JSON lines when the output is not a terminal, pretty
 * ones on request, peers named once as `peer`, and a clean stop of the
 * cluster logged as nodes leaving, not failing.
 */
describe('logs', () => {
  let redis: RedisProcess;
  const nodes: NodeProcess[] = [];
  const env = (id: string) => ({
    REDIS_URL: redis.url,
    NODE_ID: id,
    HEARTBEAT: `${HEARTBEAT_MS}ms`,
    NODE_DOWN_AFTER: `${NODE_DOWN_AFTER_MS}ms`,
    LOG_LEVEL: 'info',
  });

  beforeAll(async () => {
    redis = await RedisProcess.start();
  });

  afterAll(async () => {
    for (const node of nodes) await node.dispose();
    await redis?.dispose();
  });

  it('writes JSON lines with each key once when the output is not a terminal; a down peer is named as peer', async () => {
    const a = await NodeProcess.start({ env: env('node-a') });
    const b = await NodeProcess.start({ env: env('node-b') });
    nodes.push(a, b);
    await eventually(() => a.logs.includes('"node is up"') && a.logs.includes('"peer":"node-b"'), 10_000, 'node-a to see node-b');
    await b.kill();
    await eventually(() => a.logs.includes('node is down; taking over its leases'), 10_000, 'node-a to see node-b down');

    const lines = jsonLines(a.logs);
    for (const line of a.logs.split('\n').filter((l) => l !== '')) expect(duplicateKeys(line), line).toEqual([]);
    const down = lines.find((l) => l.msg === 'node is down; taking over its leases');
    // The line is node-a's, about node-b: both named, each once.
    expect(down).toMatchObject({ node: 'node-a', peer: 'node-b', level: 40 });
    await a.stop();
  });

  it('logs a clean SIGTERM of the cluster as nodes leaving, never as failed', async () => {
    const [a, b, c] = [
      await NodeProcess.start({ env: env('node-c') }),
      await NodeProcess.start({ env: env('node-d') }),
      await NodeProcess.start({ env: env('node-e') }),
    ];
    nodes.push(a!, b!, c!);
    for (const node of [a!, b!, c!]) {
      await eventually(() => (node.logs.match(/"node is up"/g) ?? []).length >= 2, 10_000, 'every node to see the others');
    }
    // One node leaves first while the others serve; then the rest stop together.
    await c!.stop();
    await eventually(() => a!.logs.includes('"node left the cluster"') && b!.logs.includes('"node left the cluster"'), 10_000, 'the leave to be seen');
    await Promise.all([a!.stop(), b!.stop()]);
    for (const node of [a!, b!, c!]) {
      const lines = jsonLines(node.logs);
      // Whatever a node says about its peers during a clean stop is information, not a warning.
      const aboutPeers = lines.filter((l) => l.peer !== undefined);
      expect(aboutPeers.filter((l) => (l.level as number) >= 40)).toEqual([]);
      expect(node.logs).not.toContain('node is down');
      expect(lines.at(-1)?.msg).toBe('MeshMQ node stopped');
    }
    expect(jsonLines(a!.logs).find((l) => l.msg === 'node left the cluster')).toMatchObject({ node: 'node-c', peer: 'node-e', level: 30 });
  });

  it('writes readable lines with --log-format pretty', async () => {
    const node = await NodeProcess.start({ args: ['--log-format', 'pretty'], env: { LOG_LEVEL: 'info' } });
    nodes.push(node);
    await node.stop();
    const first = node.logs.split('\n').find((line) => line.includes('listening'));
    expect(first, node.logs).toBeDefined();
    expect(() => JSON.parse(first!)).toThrow();
    expect(first).toMatch(/INFO/);
  });
});
