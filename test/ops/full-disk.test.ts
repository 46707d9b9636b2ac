import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { groupState } from '../helpers/admin.js';
import { NodeProcess, tempDir } from '../helpers/node-process.js';
import { type Frame, RawClient } from '../helpers/raw-client.js';
import { eventually } from '../helpers/util.js';

/** Size of the small disk the test mounts. */
const DISK = '24m';
/** Messages big enough to fill it in a few dozen publishes. */
const PAYLOAD = 'x'.repeat(64 * 1024);
/** Free space the filler file leaves, for the node to fill. */
const LEFT_FOR_THE_NODE = 3 * 1024 * 1024;

/** Mounts a tmpfs of `size` at a new directory; undefined where mounting is not permitted (not root). */
function mountTmpfs(size: string): string | undefined {
  const dir = tempDir('meshmq-disk-');
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { encoding: 'utf8' });
  if (mounted.status === 0) return dir;
  rmSync(dir, { recursive: true, force: true });
  console.warn(`full-disk tests skipped: cannot mount a tmpfs here (${(mounted.stderr || mounted.error?.message || '').trim()}); CI runs as root`);
  return undefined;
}

function unmount(dir: string): void {
  spawnSync('umount', [dir]);
  rmSync(dir, { recursive: true, force: true });
}

function freeBytes(dir: string): number {
  const stats = statfsSync(dir);
  return stats.bavail * stats.bsize;
}

/** Fills the disk of `dir` but for `leave` bytes with a file the test deletes to free the space. */
function fill(dir: string, leave: number): string {
  const path = join(dir, 'filler');
  writeFileSync(path, Buffer.alloc(Math.max(0, freeBytes(dir) - leave)));
  return path;
}

/** What the test compares of a message: its offset, its number and the length of its payload (short failure output). */
interface Stored {
  offset: number;
  n: number;
  size: number;
}

function storedOf(message: { offset: number; data: unknown }): Stored {
  const data = message.data as { n: number; payload?: string };
  return { offset: message.offset, n: data.n, size: data.payload?.length ?? 0 };
}

/** Every retained message of a topic, page by page. */
async function readAll(client: RawClient, topic: string): Promise<Stored[]> {
  const all: Stored[] = [];
  for (;;) {
    const reply = await client.ok({ op: 'history', topic, from: (all.at(-1)?.offset ?? 0) + 1, limit: 1000 });
    const page = reply.messages as Array<{ offset: number; data: unknown }>;
    if (page.length === 0) return all;
    all.push(...page.map(storedOf));
  }
}

async function alarmIds(node: NodeProcess): Promise<string[]> {
  const body = (await (await fetch(`${node.url}/api/alarms`)).json()) as { alarms: Array<{ id: string }> };
  return body.alarms.map((a) => a.id);
}

const mountable = mountTmpfs('1m');
if (mountable) unmount(mountable);

/**
 * The embedded engine on a disk that fills up (a tmpfs the test mounts):
 * publishes fail with a documented `unavailable` error, nothing acknowledged
 * is damaged, the node stays up and serves reads and subscriptions, the disk
 * alarm is raised, and publishing resumes by itself once space is freed.
 */
describe.skipIf(!mountable)('a full data disk', () => {
  let disk: string;
  let node: NodeProcess;
  let client: RawClient;
  const acked: Stored[] = [];

  /** Publishes one message; records it when acknowledged; returns the reply. */
  async function publish(topic: string, n: number): Promise<Frame> {
    const reply = await client.request({ op: 'publish', topic, data: { n, payload: PAYLOAD } });
    if (reply.op === 'ok' && topic === 'disk.log') acked.push({ offset: reply.offset as number, n, size: PAYLOAD.length });
    return reply;
  }

  beforeAll(async () => {
    disk = mountTmpfs(DISK)!;
    const dataDir = join(disk, 'data');
    mkdirSync(dataDir);
    // No publish floor: the disk really fills, and the write that does not fit fails.
    node = await NodeProcess.start({ dataDir, env: { DISK_FREE_LIMIT: '0' } });
    client = await RawClient.connect(node.wsUrl);
  });

  afterAll(async () => {
    await client?.close();
    await node?.kill();
    if (disk) unmount(disk);
  });

  it('refuses the publish that does not fit with unavailable, keeps serving, and resumes once space is freed', async () => {
    await client.ok({ op: 'subscribe', topic: 'disk.log', from: 1 });
    for (let n = 1; n <= 3; n++) expect((await publish('disk.log', n)).op).toBe('ok');
    const filler = fill(disk, LEFT_FOR_THE_NODE);

    let refused: Frame | undefined;
    for (let n = 4; n < 400 && !refused; n++) {
      const reply = await publish('disk.log', n);
      if (reply.op === 'error') refused = reply;
    }
    expect(refused, 'a publish to fail once the disk is full').toBeDefined();
    expect(refused).toMatchObject({ op: 'error', code: 'unavailable' });
    expect(refused!.message).toMatch(/data disk is full .*nothing was written/);
    expect(refused!.retryAfterMs).toBeGreaterThan(0);
    // Still full: the next one fails the same way, and nothing of either was stored.
    expect(await publish('disk.log', 1000)).toMatchObject({ op: 'error', code: 'unavailable' });

    // The node stays up; reads, subscriptions and the live delivery of what was acknowledged all work.
    expect((await fetch(`${node.url}/healthz`)).status).toBe(200);
    expect(await readAll(client, 'disk.log')).toEqual(acked);
    const delivered = () => client.frames.filter((f) => f.op === 'message' && f.topic === 'disk.log').map((f) => f.offset);
    await eventually(() => delivered().length === acked.length, 10_000, 'the live deliveries');
    expect(delivered()).toEqual(acked.map((m) => m.offset));
    const reader = await RawClient.connect(node.wsUrl);
    await reader.ok({ op: 'subscribe', topic: 'disk.log', from: 1 });
    await eventually(() => reader.frames.filter((f) => f.op === 'message').length === acked.length, 10_000, 'a new subscriber to replay the log');
    await reader.close();
    await eventually(async () => (await alarmIds(node)).includes('disk_nearly_full'), 10_000, 'the disk alarm');

    // Space comes back: publishing resumes by itself, the log goes on without a gap.
    rmSync(filler);
    let resumed: Frame | undefined;
    await eventually(async () => (resumed = await publish('disk.log', 2000)).op === 'ok', 10_000, 'publishing to resume');
    expect(resumed!.offset).toBe(acked.at(-2)!.offset + 1);
    await eventually(async () => !(await alarmIds(node)).includes('disk_nearly_full'), 10_000, 'the disk alarm to clear');
    expect(acked.map((m) => m.offset)).toEqual(acked.map((_, i) => i + 1));
  });

  it('keeps every acknowledged message through a kill -9 after the disk was full', async () => {
    await client.close();
    await node.kill();
    await node.start();
    client = await RawClient.connect(node.wsUrl);
    expect(await readAll(client, 'disk.log')).toEqual(acked);
    expect((await publish('disk.log', 3000)).op).toBe('ok');
  });
});

/**
 * With a publish floor (--disk-free-limit), the node refuses new messages
 * before the disk is full, so the writes that free space still fit: a group
 * member can ack what it was given.
 */
describe.skipIf(!mountable)('the publish floor of a data disk', () => {
  let disk: string;
  let node: NodeProcess;
  let client: RawClient;

  beforeAll(async () => {
    disk = mountTmpfs(DISK)!;
    const dataDir = join(disk, 'data');
    mkdirSync(dataDir);
    node = await NodeProcess.start({ dataDir, env: { DISK_FREE_LIMIT: '4MiB' } });
    client = await RawClient.connect(node.wsUrl);
  });

  afterAll(async () => {
    await client?.close();
    await node?.kill();
    if (disk) unmount(disk);
  });

  it('refuses publishes below the floor while acks still land, and resumes above it', async () => {
    await client.ok({ op: 'subscribe', topic: 'floor.jobs', group: 'workers', prefetch: 100 });
    const accepted: number[] = [];
    for (let n = 1; n <= 3; n++) accepted.push((await client.ok({ op: 'publish', topic: 'floor.jobs', data: { n } })).offset as number);
    // Below the floor, with room left on the disk. Free space is read at most once a second: a publish or two may still land.
    const filler = fill(disk, 2 * 1024 * 1024);
    let refused: Frame | undefined;
    for (let n = 4; !refused; n++) {
      const reply = await client.request({ op: 'publish', topic: 'floor.jobs', data: { n } });
      if (reply.op === 'ok') accepted.push(reply.offset as number);
      else refused = reply;
      expect(n, 'a publish to be refused below the floor').toBeLessThan(10_000);
    }
    expect(refused).toMatchObject({ code: 'unavailable' });
    expect(refused.message).toMatch(/below its limit of 4\.0 MiB \(--disk-free-limit\): the message was not written/);
    // Acks free their pending entries: they are not publishes and go through.
    // Ack as deliveries come (prefetch bounds how many are out at once) until every accepted message is acked.
    const acked = new Set<number>();
    await eventually(
      async () => {
        for (const delivery of client.frames.filter((f) => f.op === 'message' && f.group === 'workers')) {
          const offset = delivery.offset as number;
          if (acked.has(offset)) continue;
          await client.ok({ op: 'ack', topic: 'floor.jobs', group: 'workers', offset });
          acked.add(offset);
        }
        return acked.size === accepted.length;
      },
      20_000,
      'every accepted message to be delivered and acked',
    );
    expect((await groupState(node.url, 'floor.jobs', 'workers')).pending).toBe(0);
    expect((await readAll(client, 'floor.jobs')).map((m) => m.offset)).toEqual(accepted);

    rmSync(filler);
    let resumed: Frame | undefined;
    await eventually(
      async () => (resumed = await client.request({ op: 'publish', topic: 'floor.jobs', data: { n: 0 } })).op === 'ok',
      10_000,
      'publishing to resume',
    );
    expect(resumed!.offset).toBe(accepted.length + 1);
  });
});
