/**
 * The other brokers, on loopback: found listening on their standard port, or
 * started from their Debian binary on a free port with a temp data dir. Each
 * comes with the pids whose CPU time counts as "server CPU" and the
 * durability level its acknowledgements have.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DURABILITY } from './durability.js';
import { commandOutput, findBinary, freePort, isListening, makeTempDir, pidsListeningOn, removeTempDir, startChild, waitFor } from './proc.js';

/** Thrown when a system cannot be benchmarked here; the harness prints `skipped: <system> (<reason>)`. */
export class SkipError extends Error {}

export interface Service {
  /** e.g. `redis-server (AOF everysec)`. */
  name: string;
  /** Connection URL for the usual client. */
  url: string;
  port: number;
  /** Processes whose CPU time is this service's. */
  pids: number[];
  version: string | undefined;
  /** DURABILITY label of its acknowledgements as the bench uses it. */
  durability: string;
  /** How it was found or started, for the report. */
  how: string;
  stop(): Promise<void>;
}

// ---- Redis ------------------------------------------------------------------------

export type RedisPersistence = 'none' | 'everysec' | 'always';

export function redisDurability(persistence: RedisPersistence): string {
  return persistence === 'always' ? DURABILITY.fsync : persistence === 'everysec' ? DURABILITY.everysec : DURABILITY.memory;
}

/**
 * Starts a redis-server of our own on a free port with the persistence asked:
 * `everysec` and `always` are AOF (`--appendonly yes --appendfsync …`, RDB
 * snapshots off), `none` has neither. Never uses a Redis found running, whose
 * persistence is not ours to state.
 */
export async function startRedis(persistence: RedisPersistence): Promise<Service> {
  const bin = findBinary('redis-server');
  if (!bin) throw new SkipError('no redis-server binary (Debian: apt-get install redis-server)');
  const port = await freePort();
  const dir = makeTempDir(`redis-${persistence}`);
  const args = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    dir,
    '--save',
    '',
    '--daemonize',
    'no',
    '--protected-mode',
    'no',
    '--loglevel',
    'warning',
  ];
  if (persistence === 'none') args.push('--appendonly', 'no');
  else args.push('--appendonly', 'yes', '--appendfsync', persistence);
  const child = startChild(bin, args);
  await waitFor(`redis-server on ${port}`, () => isListening(port), 15_000, child);
  const version = /v=([\d.]+)/.exec(commandOutput(bin, ['--version']) ?? '')?.[1];
  return {
    name: `redis-server (${persistence === 'none' ? 'no persistence' : `AOF ${persistence}`})`,
    url: `redis://127.0.0.1:${port}`,
    port,
    pids: [child.pid],
    version,
    durability: redisDurability(persistence),
    how: `started: ${bin} ${args.join(' ').replace(/'' /, '"" ')}`,
    async stop() {
      await child.stop();
      removeTempDir(dir);
    },
  };
}

// ---- NATS -------------------------------------------------------------------------

function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < 3; i++) if ((pa[i] ?? 0) !== (pb[i] ?? 0)) return (pa[i] ?? 0) - (pb[i] ?? 0);
  return 0;
}

/**
 * JetStream's file store acknowledges a publish once written to the OS; it
 * fsyncs in the background every `sync_interval`: fixed at 60 s up to
 * nats-server 2.9 (filestore.go `defaultSyncInterval`), 2 min by default from
 * 2.10 on, where `sync_interval` can be set, and `always` fsyncs each write.
 */
export function natsDefaultSyncInterval(version: string | undefined): string {
  if (!version) return '60 s (2.9) / 2 min (2.10+)';
  return compareVersions(version, '2.10.0') < 0 ? '60 s' : '2 min';
}

/** The version of the nats-server binary on this machine, if any. */
export function natsBinaryVersion(): string | undefined {
  const bin = findBinary('nats-server');
  return bin ? /v?(\d+\.\d+\.\d+)/.exec(commandOutput(bin, ['--version']) ?? '')?.[1] : undefined;
}

export type NatsSync = 'default' | 'everysec' | 'always';

/**
 * A JetStream-enabled nats-server. Starts one from the binary on a free port
 * (`-js -sd <tmpdir>`, or a config file with `sync_interval` for `everysec`/
 * `always`, which need nats-server 2.10+); without the binary, uses one
 * listening on 127.0.0.1:4222 at its default sync interval.
 */
export async function startNats(sync: NatsSync = 'default'): Promise<Service> {
  const bin = findBinary('nats-server');
  if (bin) {
    const version = /v?(\d+\.\d+\.\d+)/.exec(commandOutput(bin, ['--version']) ?? '')?.[1];
    if (sync !== 'default' && (!version || compareVersions(version, '2.10.0') < 0)) {
      throw new SkipError(
        `nats-server ${version ?? '?'} cannot set sync_interval (needs 2.10+); its file store fsyncs every ${natsDefaultSyncInterval(version)}`,
      );
    }
    const port = await freePort();
    const dir = makeTempDir(`nats-${sync}`);
    let args: string[];
    if (sync === 'default') {
      args = ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', join(dir, 'js')];
    } else {
      const conf = join(dir, 'nats.conf');
      writeFileSync(
        conf,
        `listen: "127.0.0.1:${port}"\njetstream { store_dir: "${join(dir, 'js')}", sync_interval: ${sync === 'always' ? 'always' : '"1s"'} }\n`,
      );
      args = ['-c', conf];
    }
    const child = startChild(bin, args);
    await waitFor(`nats-server on ${port}`, () => isListening(port), 15_000, child);
    const durability = sync === 'always' ? DURABILITY.fsync : sync === 'everysec' ? DURABILITY.everysec : DURABILITY.osWrite(natsDefaultSyncInterval(version));
    return {
      name: `nats-server JetStream (${sync === 'default' ? `file store, default sync ${natsDefaultSyncInterval(version)}` : `sync_interval ${sync === 'always' ? 'always' : '1s'}`})`,
      url: `nats://127.0.0.1:${port}`,
      port,
      pids: [child.pid],
      version,
      durability,
      how: `started: ${bin} ${args.join(' ')}`,
      async stop() {
        await child.stop();
        removeTempDir(dir);
      },
    };
  }
  if (sync !== 'default') throw new SkipError('no nats-server binary to start with a chosen sync_interval');
  if (!(await isListening(4222))) throw new SkipError('no nats-server binary and nothing listening on 127.0.0.1:4222 (Debian: apt-get install nats-server)');
  return {
    name: 'nats-server JetStream (found on 4222, default sync)',
    url: 'nats://127.0.0.1:4222',
    port: 4222,
    pids: pidsListeningOn(4222),
    version: undefined,
    durability: DURABILITY.osWrite(natsDefaultSyncInterval(undefined)),
    how: 'found listening on 127.0.0.1:4222',
    async stop() {},
  };
}

// ---- RabbitMQ ---------------------------------------------------------------------

/**
 * RabbitMQ: the one listening on 127.0.0.1:5672 (guest/guest, or
 * BENCH_AMQP_URL), else one started from `rabbitmq-server` on free ports with
 * its own node name and data dir (takes several seconds).
 */
export async function startRabbit(): Promise<Service> {
  const envUrl = process.env.BENCH_AMQP_URL;
  const url = envUrl ?? 'amqp://guest:guest@127.0.0.1:5672';
  const port = Number(new URL(url).port || 5672);
  const durability = DURABILITY.fsync;
  if (await isListening(port)) {
    const pids = pidsListeningOn(port);
    return {
      name: 'rabbitmq-server (durable classic queue, persistent messages, publisher confirms)',
      url,
      port,
      pids,
      version: undefined,
      durability,
      how: `found listening on 127.0.0.1:${port}${pids.length === 0 ? ' (its pid is unknown: no server CPU)' : ''}`,
      async stop() {},
    };
  }
  const bin = findBinary('rabbitmq-server');
  if (!bin || envUrl)
    throw new SkipError(
      `nothing listening on 127.0.0.1:${port} and ${bin ? 'BENCH_AMQP_URL is set' : 'no rabbitmq-server binary (Debian: apt-get install rabbitmq-server)'}`,
    );
  const amqpPort = await freePort();
  const distPort = await freePort();
  const dir = makeTempDir('rabbitmq');
  const env = {
    ...process.env,
    RABBITMQ_NODE_PORT: String(amqpPort),
    RABBITMQ_NODE_IP_ADDRESS: '127.0.0.1',
    RABBITMQ_DIST_PORT: String(distPort),
    RABBITMQ_NODENAME: `bench${process.pid}@localhost`,
    RABBITMQ_MNESIA_BASE: join(dir, 'mnesia'),
    RABBITMQ_LOG_BASE: join(dir, 'log'),
    RABBITMQ_CONFIG_FILE: join(dir, 'rabbitmq'),
    RABBITMQ_ENABLED_PLUGINS_FILE: join(dir, 'enabled_plugins'),
  };
  writeFileSync(join(dir, 'rabbitmq.conf'), 'loopback_users = none\n');
  writeFileSync(join(dir, 'enabled_plugins'), '[].\n');
  const child = startChild(bin, [], { env });
  await waitFor(`rabbitmq-server on ${amqpPort}`, () => isListening(amqpPort), 60_000, child);
  return {
    name: 'rabbitmq-server (durable classic queue, persistent messages, publisher confirms)',
    url: `amqp://guest:guest@127.0.0.1:${amqpPort}`,
    port: amqpPort,
    pids: pidsListeningOn(amqpPort),
    version: undefined,
    durability,
    how: `started: ${bin} on 127.0.0.1:${amqpPort}`,
    async stop() {
      await child.stop(15_000);
      removeTempDir(dir);
    },
  };
}
