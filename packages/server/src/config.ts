import { accessSync, constants, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULTS, MeshError } from '@meshmq/shared';
import { DEFAULT_ALARM_THRESHOLDS } from './alarms.js';
import type { AuthOptions } from './auth/token-verifier.js';
import { DEFAULT_CONNECTION_LIMITS } from './core/limits.js';
import { DEFAULT_DISK_FREE_LIMIT } from './engine/disk-space.js';
import type { RetentionPolicy } from './engine/engine.js';
import { DEFAULT_ADMISSION_LIMITS, normalizeOrigin } from './gate.js';
import type { LogFormat } from './logger.js';
import { DEFAULT_LABELLED_TOPICS } from './metrics.js';

/** Per-topic retention override; `match` is a topic name where `*` matches any run of characters. */
export interface TopicRule {
  match: string;
  maxMessages?: number;
  maxAgeMs?: number;
}

export interface NodeConfig {
  host: string;
  port: number;
  dataDir: string;
  nodeId: string;
  publicUrl: string;
  maxMessageBytes: number;
  dedupeWindowMs: number;
  retention: RetentionPolicy;
  topics: TopicRule[];
  retentionSweepMs: number;
  logLevel: string;
  /** `json` lines, `pretty` readable lines, or `auto`: pretty on a terminal. */
  logFormat: LogFormat;
  /** Embedded engine: publishes are refused while the data disk has fewer free bytes than this; 0 for no limit. */
  diskFreeLimit: number;
  /** The data disk is nearly full (an alarm) below this share of it free. */
  alarmDiskFree: number;
  /** Memory is high (an alarm) past this share of the node's limit. */
  alarmMemory: number;
  /** A group falls behind (an alarm) when its oldest pending delivery is older than this. */
  alarmGroupAgeMs: number;
  /** Topics that get their own `topic` label in the metrics; the rest are summed as `_other`. */
  metricsTopics: number;
  /** A bearer token that may read `/metrics` (for Prometheus) on a node with authentication; empty for none. */
  metricsToken: string;
  /** Client transports served: plain WebSocket (`ws`) and Socket.IO (`socket.io`). */
  transports: Transport[];
  /** Start even when binding beyond loopback with no authentication key (everyone may do everything). */
  insecure: boolean;
  /** Origins whose pages may connect and call the admin API besides the node's own; `*` for any. */
  allowedOrigins: string[] | '*';
  /** Host names requests may name besides localhost, IP addresses and the node's own names (DNS rebinding). */
  allowedHosts: string[];
  maxConnections: number;
  maxConnectionsPerAddress: number;
  /** Fan-out subscriptions plus group memberships per connection. */
  maxSubscriptions: number;
  /** Unanswered requests per connection. */
  maxInflight: number;
  /** Publishes per second per connection (sustained); 0: no limit. */
  maxPublishRate: number;
  /** Topics the store may hold; a publish or group join that would create one more is refused. */
  maxTopics: number;
  /** WebSocket ping interval; a connection that misses a pong is dropped. */
  keepAliveMs: number;
  /** Longest time a started WebSocket frame may take to arrive. */
  frameTimeoutMs: number;
  /** Longest time a client may take to send an HTTP request's headers (also the upgrade request). */
  headersTimeoutMs: number;
  /** Directory of the built console served at `/`; empty to serve none. */
  consoleDir: string;
  /**
   * Base URLs of other nodes whose health the admin API reports (static-peers
   * mode, until the Redis cluster membership replaces it).
   */
  peers: string[];
  /** Empty: the embedded engine. Otherwise redis://, redis+sentinel:// or redis+cluster://. */
  redisUrl: string;
  /** Replicas each publish waits for (Redis WAIT); 0 acknowledges on the primary. */
  redisReplicas: number;
  redisReplicaTimeoutMs: number;
  /** How long Redis may answer nothing on a connection that owes answers before the commands waiting on it fail (RedisLink). */
  redisCommandTimeoutMs: number;
  /** Prefix of every Redis key, so several clusters can share one Redis. */
  redisPrefix: string;
  heartbeatMs: number;
  /** A node whose heartbeat is older than this is down and its leases are taken over. */
  nodeDownAfterMs: number;
  /** Longest wait for in-flight requests when draining on SIGTERM. */
  drainTimeoutMs: number;
  /** HS256 secret clients' tokens are signed with; empty for none. No key at all: anonymous mode. */
  authSecret: string;
  /** Path of a PEM public key or certificate (RS256, ES256, EdDSA); empty for none. */
  authPublicKey: string;
  /** JWKS endpoint of the identity provider; empty for none. */
  authJwksUrl: string;
  /** Required `iss` of tokens; empty: not checked. */
  authIssuer: string;
  /** Required `aud` of tokens; empty: not checked. */
  authAudience: string;
}

interface OptionSpec {
  flag: string;
  env: string;
  help: string;
  parse: (value: string) => unknown;
  key: keyof NodeConfig;
  /** A flag without a value (`--insecure`); its variable takes true/false/1/0. */
  boolean?: true;
}

const int = (name: string) => (value: string) => {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) throw new MeshError('bad_request', `${name}: expected a non-negative integer, got '${value}'`);
  return n;
};

const BYTE_UNITS: Record<string, number> = { '': 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 };

/** A size: bytes, or a number with KiB, MiB or GiB. */
const byteSize = (name: string) => (value: string) => {
  const match = /^(\d+)\s*(KiB|MiB|GiB)?$/.exec(value.trim());
  const n = match ? Number(match[1]) * BYTE_UNITS[match[2] ?? '']! : Number.NaN;
  if (!Number.isSafeInteger(n)) throw new MeshError('bad_request', `${name}: expected bytes, or a number with KiB, MiB or GiB, got '${value}'`);
  return n;
};

const positiveInt = (name: string) => (value: string) => {
  const n = int(name)(value);
  if (n === 0) throw new MeshError('bad_request', `${name}: expected a positive integer, got '${value}'`);
  return n;
};

const parseBoolean = (name: string) => (value: string) => {
  const v = value.trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(v)) return true;
  if (['0', 'false', 'no', 'off', ''].includes(v)) return false;
  throw new MeshError('bad_request', `${name}: expected true or false, got '${value}'`);
};

/** Parses a comma-separated list of origins (`https://app.example.com`), or `*`. */
function parseOrigins(value: string): string[] | '*' {
  if (value.trim() === '*') return '*';
  return value
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part !== '')
    .map((part) => {
      const origin = normalizeOrigin(part);
      if (origin === undefined || !/^https?:/.test(origin))
        throw new MeshError('bad_request', `allowed-origins: '${part}' is not an origin such as https://app.example.com`);
      return origin;
    });
}

function parseHostList(value: string): string[] {
  return value
    .split(',')
    .map((part) => part.trim().toLowerCase())
    .filter((part) => part !== '')
    .map((part) => {
      if (!/^[a-z0-9.-]+$/.test(part)) throw new MeshError('bad_request', `allowed-hosts: '${part}' is not a host name`);
      return part;
    });
}

export type Transport = 'ws' | 'socket.io';

const ratio = (name: string) => (value: string) => {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0 || n > 1) throw new MeshError('bad_request', `${name}: expected a share from 0 to 1, got '${value}'`);
  return n;
};

function parseLogFormat(value: string): LogFormat {
  if (value === 'auto' || value === 'json' || value === 'pretty') return value;
  throw new MeshError('bad_request', `log-format: expected auto, json or pretty, got '${value}'`);
}

function parseTransports(value: string): Transport[] {
  const names = [
    ...new Set(
      value
        .split(',')
        .map((part) => part.trim())
        .filter((part) => part !== ''),
    ),
  ];
  if (names.length === 0) throw new MeshError('bad_request', 'transports: name at least one of ws, socket.io');
  for (const name of names) {
    if (name !== 'ws' && name !== 'socket.io') throw new MeshError('bad_request', `transports: '${name}' is not ws or socket.io`);
  }
  return names as Transport[];
}

/** Default --max-topics. */
export const DEFAULT_MAX_TOPICS = 100_000;

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses `1500`, `1500ms`, `30s`, `5m`, `12h` or `7d` into milliseconds. */
export function parseDuration(value: string | number, name = 'duration'): number {
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) return value;
  const match = /^(\d+)(ms|s|m|h|d)?$/.exec(String(value).trim());
  if (!match) throw new MeshError('bad_request', `${name}: expected a duration such as 1500, 30s, 5m, 12h or 7d, got '${value}'`);
  return Number(match[1]) * UNITS[match[2] ?? 'ms']!;
}

const duration = (name: string) => (value: string) => parseDuration(value, name);

/** Parses a comma-separated list of http(s) base URLs; trailing slashes are dropped. */
export function parseUrlList(value: string, name = 'peers'): string[] {
  return value
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part !== '')
    .map((part) => {
      let url: URL;
      try {
        url = new URL(part);
      } catch {
        throw new MeshError('bad_request', `${name}: '${part}' is not a URL`);
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') {
        throw new MeshError('bad_request', `${name}: '${part}' must be an http:// or https:// URL`);
      }
      return part.replace(/\/+$/, '');
    });
}

/** Parses one http(s) URL, kept as written (the JWKS endpoint). */
const httpUrl = (name: string) => (value: string) => {
  let url: URL;
  try {
    url = new URL(value.trim());
  } catch {
    throw new MeshError('bad_request', `${name}: '${value}' is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new MeshError('bad_request', `${name}: '${value}' must be an http:// or https:// URL`);
  }
  return value.trim();
};

const OPTIONS: OptionSpec[] = [
  { flag: 'port', env: 'PORT', key: 'port', help: 'HTTP port for /ws, Socket.IO, the console and health (default 8080)', parse: int('port') },
  { flag: 'host', env: 'HOST', key: 'host', help: 'interface to bind (default 127.0.0.1)', parse: String },
  { flag: 'data-dir', env: 'DATA_DIR', key: 'dataDir', help: 'data directory of the embedded engine (default ./data)', parse: String },
  { flag: 'node-id', env: 'NODE_ID', key: 'nodeId', help: 'name of this node (default <hostname>:<port>)', parse: String },
  {
    flag: 'public-url',
    env: 'PUBLIC_URL',
    key: 'publicUrl',
    help: 'URL clients use to reach this node (default http://<host>:<port>, the host name when binding 0.0.0.0)',
    parse: String,
  },
  {
    flag: 'max-message-bytes',
    env: 'MAX_MESSAGE_BYTES',
    key: 'maxMessageBytes',
    help: `largest JSON-encoded message data (default ${DEFAULTS.maxMessageBytes})`,
    parse: int('max-message-bytes'),
  },
  {
    flag: 'dedupe-window',
    env: 'DEDUPE_WINDOW',
    key: 'dedupeWindowMs',
    help: 'window for idempotent publish keys (default 2m)',
    parse: duration('dedupe-window'),
  },
  {
    flag: 'retention-messages',
    env: 'RETENTION_MESSAGES',
    key: 'retention',
    help: `messages kept per topic (default ${DEFAULTS.retentionMaxMessages})`,
    parse: int('retention-messages'),
  },
  {
    flag: 'retention-age',
    env: 'RETENTION_AGE',
    key: 'retention',
    help: 'age after which messages are removed (default 7d)',
    parse: duration('retention-age'),
  },
  {
    flag: 'retention-sweep',
    env: 'RETENTION_SWEEP',
    key: 'retentionSweepMs',
    help: 'how often age retention runs (default 10s)',
    parse: duration('retention-sweep'),
  },
  { flag: 'log-level', env: 'LOG_LEVEL', key: 'logLevel', help: 'fatal, error, warn, info, debug or trace (default info)', parse: String },
  {
    flag: 'log-format',
    env: 'LOG_FORMAT',
    key: 'logFormat',
    help: 'json, pretty, or auto: pretty on a terminal, JSON otherwise (default auto)',
    parse: parseLogFormat,
  },
  {
    flag: 'disk-free-limit',
    env: 'DISK_FREE_LIMIT',
    key: 'diskFreeLimit',
    help: 'refuse publishes (unavailable) while the data disk has less free; 0 for no limit (default 64MiB)',
    parse: byteSize('disk-free-limit'),
  },
  {
    flag: 'alarm-disk-free',
    env: 'ALARM_DISK_FREE',
    key: 'alarmDiskFree',
    help: `raise the disk alarm below this share of the data disk free, 0-1 (default ${DEFAULT_ALARM_THRESHOLDS.diskFreeRatio})`,
    parse: ratio('alarm-disk-free'),
  },
  {
    flag: 'alarm-memory',
    env: 'ALARM_MEMORY',
    key: 'alarmMemory',
    help: `raise the memory alarm past this share of the node's memory limit, 0-1 (default ${DEFAULT_ALARM_THRESHOLDS.memoryRatio})`,
    parse: ratio('alarm-memory'),
  },
  {
    flag: 'alarm-group-age',
    env: 'ALARM_GROUP_AGE',
    key: 'alarmGroupAgeMs',
    help: 'raise a group alarm when a delivery of the group has been pending longer than this (default 5m)',
    parse: duration('alarm-group-age'),
  },
  {
    flag: 'metrics-topics',
    env: 'METRICS_TOPICS',
    key: 'metricsTopics',
    help: `topics that get their own label in /metrics; the rest are summed as _other (default ${DEFAULT_LABELLED_TOPICS})`,
    parse: int('metrics-topics'),
  },
  {
    flag: 'metrics-token',
    env: 'METRICS_TOKEN',
    key: 'metricsToken',
    help: 'bearer token that may read /metrics on a node with authentication (default none: an admin token is needed)',
    parse: String,
  },
  {
    flag: 'transports',
    env: 'TRANSPORTS',
    key: 'transports',
    help: 'client transports to serve: ws, socket.io or both, comma-separated (default ws,socket.io)',
    parse: parseTransports,
  },
  {
    flag: 'insecure',
    env: 'INSECURE',
    key: 'insecure',
    boolean: true,
    help: 'start without authentication although bound beyond loopback (anyone may do anything; logged at every start)',
    parse: parseBoolean('insecure'),
  },
  {
    flag: 'allowed-origins',
    env: 'ALLOWED_ORIGINS',
    key: 'allowedOrigins',
    help: "comma-separated origins whose pages may connect, besides the node's own; * for any (default none)",
    parse: parseOrigins,
  },
  {
    flag: 'allowed-hosts',
    env: 'ALLOWED_HOSTS',
    key: 'allowedHosts',
    help: "comma-separated host names requests may use besides localhost, addresses and the public URL's (default none)",
    parse: parseHostList,
  },
  {
    flag: 'max-connections',
    env: 'MAX_CONNECTIONS',
    key: 'maxConnections',
    help: `open connections the node accepts; more get 503 (default ${DEFAULT_ADMISSION_LIMITS.maxConnections})`,
    parse: positiveInt('max-connections'),
  },
  {
    flag: 'max-connections-per-address',
    env: 'MAX_CONNECTIONS_PER_ADDRESS',
    key: 'maxConnectionsPerAddress',
    help: `open connections from one client address (default ${DEFAULT_ADMISSION_LIMITS.maxConnectionsPerAddress})`,
    parse: positiveInt('max-connections-per-address'),
  },
  {
    flag: 'max-subscriptions',
    env: 'MAX_SUBSCRIPTIONS',
    key: 'maxSubscriptions',
    help: `subscriptions and group memberships per connection (default ${DEFAULT_CONNECTION_LIMITS.maxSubscriptions})`,
    parse: positiveInt('max-subscriptions'),
  },
  {
    flag: 'max-inflight',
    env: 'MAX_INFLIGHT',
    key: 'maxInflight',
    help: `unanswered requests per connection; more get rate_limited (default ${DEFAULT_CONNECTION_LIMITS.maxInflight})`,
    parse: positiveInt('max-inflight'),
  },
  {
    flag: 'max-publish-rate',
    env: 'MAX_PUBLISH_RATE',
    key: 'maxPublishRate',
    help: `publishes per second per connection, 0 for no limit (default ${DEFAULT_CONNECTION_LIMITS.publishRate})`,
    parse: int('max-publish-rate'),
  },
  {
    flag: 'max-topics',
    env: 'MAX_TOPICS',
    key: 'maxTopics',
    help: `topics the store may hold; publishes creating more are refused (default ${DEFAULT_MAX_TOPICS})`,
    parse: positiveInt('max-topics'),
  },
  {
    flag: 'keep-alive',
    env: 'KEEP_ALIVE',
    key: 'keepAliveMs',
    help: 'WebSocket ping interval; a connection missing a pong is dropped, 0 disables (default 30s)',
    parse: duration('keep-alive'),
  },
  {
    flag: 'frame-timeout',
    env: 'FRAME_TIMEOUT',
    key: 'frameTimeoutMs',
    help: 'longest time a started WebSocket frame may take to arrive (default 30s)',
    parse: duration('frame-timeout'),
  },
  {
    flag: 'headers-timeout',
    env: 'HEADERS_TIMEOUT',
    key: 'headersTimeoutMs',
    help: 'longest time a client may take to send HTTP request headers (default 10s)',
    parse: duration('headers-timeout'),
  },
  { flag: 'console-dir', env: 'CONSOLE_DIR', key: 'consoleDir', help: 'built console to serve at / (default: the bundled one)', parse: String },
  {
    flag: 'redis-url',
    env: 'REDIS_URL',
    key: 'redisUrl',
    help: 'run as a cluster node over Redis: redis://host:port, redis+sentinel://h:p,h:p/master or redis+cluster://h:p,h:p (default: embedded engine)',
    parse: String,
  },
  {
    flag: 'redis-replicas',
    env: 'REDIS_REPLICAS',
    key: 'redisReplicas',
    help: 'replicas each publish waits for before it is acknowledged (Redis WAIT; default 0)',
    parse: int('redis-replicas'),
  },
  {
    flag: 'redis-replica-timeout',
    env: 'REDIS_REPLICA_TIMEOUT',
    key: 'redisReplicaTimeoutMs',
    help: 'how long a publish waits for those replicas (default 1s)',
    parse: duration('redis-replica-timeout'),
  },
  {
    flag: 'redis-command-timeout',
    env: 'REDIS_COMMAND_TIMEOUT',
    key: 'redisCommandTimeoutMs',
    help: 'how long Redis may answer nothing on a connection that owes answers before the commands waiting on it fail and the connection is checked; waiting behind answered commands does not count (default 1s)',
    parse: duration('redis-command-timeout'),
  },
  { flag: 'redis-prefix', env: 'REDIS_PREFIX', key: 'redisPrefix', help: 'prefix of every Redis key (default mq:)', parse: String },
  { flag: 'heartbeat', env: 'HEARTBEAT', key: 'heartbeatMs', help: 'cluster heartbeat interval (default 1s)', parse: duration('heartbeat') },
  {
    flag: 'node-down-after',
    env: 'NODE_DOWN_AFTER',
    key: 'nodeDownAfterMs',
    help: 'a node silent this long is down and its leases move (default 5s)',
    parse: duration('node-down-after'),
  },
  {
    flag: 'drain-timeout',
    env: 'DRAIN_TIMEOUT',
    key: 'drainTimeoutMs',
    help: 'on SIGTERM, longest wait for in-flight requests (default 5s)',
    parse: duration('drain-timeout'),
  },
  {
    flag: 'peers',
    env: 'PEERS',
    key: 'peers',
    help: 'comma-separated URLs of other nodes the console shows (static peers; default none)',
    parse: (value) => parseUrlList(value, 'peers'),
  },
  {
    flag: 'auth-secret',
    env: 'AUTH_SECRET',
    key: 'authSecret',
    help: 'HS256 secret (32+ bytes) that signs access tokens; with no auth key set, clients connect anonymously',
    parse: String,
  },
  {
    flag: 'auth-public-key',
    env: 'AUTH_PUBLIC_KEY',
    key: 'authPublicKey',
    help: 'PEM public key or certificate file verifying RS256, ES256 or EdDSA tokens',
    parse: String,
  },
  {
    flag: 'auth-jwks-url',
    env: 'AUTH_JWKS_URL',
    key: 'authJwksUrl',
    help: "identity provider's JWKS URL (RS256, ES256, EdDSA; keys rotate without restart)",
    parse: httpUrl('auth-jwks-url'),
  },
  { flag: 'auth-issuer', env: 'AUTH_ISSUER', key: 'authIssuer', help: 'tokens must carry this iss (default: not checked)', parse: String },
  { flag: 'auth-audience', env: 'AUTH_AUDIENCE', key: 'authAudience', help: 'tokens must carry this aud (default: not checked)', parse: String },
];

/** An option as --help lists it: its flag (without `--`), its environment variable, and whether the flag takes no value. */
export interface OptionName {
  flag: string;
  env: string;
  boolean: boolean;
}

/** Every option the node takes, `config` (the JSON file, MESHMQ_CONFIG) first: the names deployment files may use. */
export const OPTION_NAMES: readonly OptionName[] = [
  { flag: 'config', env: 'MESHMQ_CONFIG', boolean: false },
  ...OPTIONS.map((o) => ({ flag: o.flag, env: o.env, boolean: o.boolean === true })),
];

const FLAG_COLUMN = 33;

function line(flag: string, env: string, help: string): string {
  // A flag too long for its column gets a line of its own.
  const lead = flag.length < FLAG_COLUMN ? flag.padEnd(FLAG_COLUMN) : `${flag}\n${' '.repeat(FLAG_COLUMN + 2)}`;
  return `  ${lead}${help} [${env}]`;
}

export const HELP = `Usage: meshmq [options]

Runs one MeshMQ broker node. Every option can also be set by the environment
variable shown, or in a JSON file given by --config; flags win over the
environment, which wins over the file.

Options:
${line('--config <file>', 'MESHMQ_CONFIG', 'JSON file with any option below by its camelCase name')}
${' '.repeat(35)}plus "topics": [{"match": "orders.*", "maxMessages": 1000, "maxAgeMs": "1d"}]
${OPTIONS.map((o) => line(o.boolean ? `--${o.flag}` : `--${o.flag} <value>`, o.env, o.help)).join('\n')}
  -h, --help                       show this help

Commands:
  meshmq token [options]           print a signed access token (see meshmq token --help)
`;

function defaults(): Omit<NodeConfig, 'nodeId' | 'publicUrl'> {
  return {
    host: '127.0.0.1',
    port: 8080,
    dataDir: './data',
    maxMessageBytes: DEFAULTS.maxMessageBytes,
    dedupeWindowMs: DEFAULTS.dedupeWindowMs,
    retention: { maxMessages: DEFAULTS.retentionMaxMessages, maxAgeMs: DEFAULTS.retentionMaxAgeMs },
    topics: [],
    retentionSweepMs: 10_000,
    logLevel: 'info',
    logFormat: 'auto',
    diskFreeLimit: DEFAULT_DISK_FREE_LIMIT,
    alarmDiskFree: DEFAULT_ALARM_THRESHOLDS.diskFreeRatio,
    alarmMemory: DEFAULT_ALARM_THRESHOLDS.memoryRatio,
    alarmGroupAgeMs: DEFAULT_ALARM_THRESHOLDS.groupAgeMs,
    metricsTopics: DEFAULT_LABELLED_TOPICS,
    metricsToken: '',
    transports: ['ws', 'socket.io'],
    insecure: false,
    allowedOrigins: [],
    allowedHosts: [],
    maxConnections: DEFAULT_ADMISSION_LIMITS.maxConnections,
    maxConnectionsPerAddress: DEFAULT_ADMISSION_LIMITS.maxConnectionsPerAddress,
    maxSubscriptions: DEFAULT_CONNECTION_LIMITS.maxSubscriptions,
    maxInflight: DEFAULT_CONNECTION_LIMITS.maxInflight,
    maxPublishRate: DEFAULT_CONNECTION_LIMITS.publishRate,
    maxTopics: DEFAULT_MAX_TOPICS,
    keepAliveMs: 30_000,
    frameTimeoutMs: 30_000,
    headersTimeoutMs: 10_000,
    consoleDir: '',
    peers: [],
    redisUrl: '',
    redisReplicas: 0,
    redisReplicaTimeoutMs: 1000,
    redisCommandTimeoutMs: 1000,
    redisPrefix: 'mq:',
    heartbeatMs: 1000,
    nodeDownAfterMs: 5000,
    drainTimeoutMs: 5000,
    authSecret: '',
    authPublicKey: '',
    authJwksUrl: '',
    authIssuer: '',
    authAudience: '',
  };
}

function apply(config: Record<string, unknown>, spec: OptionSpec, raw: string): void {
  const value = spec.parse(raw);
  if (spec.flag === 'retention-messages') (config.retention as RetentionPolicy).maxMessages = value as number;
  else if (spec.flag === 'retention-age') (config.retention as RetentionPolicy).maxAgeMs = value as number;
  else config[spec.key] = value;
}

function fromFile(path: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new MeshError('bad_request', `cannot read config file ${path}: ${(err as Error).message}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new MeshError('bad_request', `config file ${path} must hold a JSON object`);
  }
  return parsed as Record<string, unknown>;
}

function validateRules(value: unknown): TopicRule[] {
  if (!Array.isArray(value)) throw new MeshError('bad_request', "config 'topics' must be an array");
  return value.map((rule, i) => {
    if (!rule || typeof rule.match !== 'string') throw new MeshError('bad_request', `config topics[${i}].match must be a string`);
    const out: TopicRule = { match: rule.match };
    if (rule.maxMessages !== undefined) out.maxMessages = int(`topics[${i}].maxMessages`)(String(rule.maxMessages)) as number;
    if (rule.maxAgeMs !== undefined) out.maxAgeMs = parseDuration(rule.maxAgeMs, `topics[${i}].maxAgeMs`);
    return out;
  });
}

/**
 * The one config loader: defaults, then the JSON file, then the environment,
 * then flags. Returns `help: true` when --help was asked for.
 */
export function loadConfig(argv: string[], env: NodeJS.ProcessEnv): { config: NodeConfig; help: boolean } {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      config: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
      ...Object.fromEntries(OPTIONS.map((o) => [o.flag, { type: o.boolean ? ('boolean' as const) : ('string' as const) }])),
    },
  });
  const config: Record<string, unknown> = defaults();
  const file = (values.config as string | undefined) ?? env.MESHMQ_CONFIG;
  if (file) {
    const fileValues = fromFile(file);
    for (const spec of OPTIONS) {
      const raw = fileValues[spec.key];
      if (raw === undefined || spec.key === 'retention') continue;
      apply(config, spec, String(raw));
    }
    const retention = fileValues.retention as Partial<Record<keyof RetentionPolicy, unknown>> | undefined;
    if (retention?.maxMessages !== undefined) apply(config, OPTIONS.find((o) => o.flag === 'retention-messages')!, String(retention.maxMessages));
    if (retention?.maxAgeMs !== undefined) apply(config, OPTIONS.find((o) => o.flag === 'retention-age')!, String(retention.maxAgeMs));
    if (fileValues.topics !== undefined) config.topics = validateRules(fileValues.topics);
  }
  for (const spec of OPTIONS) {
    const raw = env[spec.env];
    if (raw !== undefined && raw !== '') apply(config, spec, raw);
  }
  for (const spec of OPTIONS) {
    const raw = (values as Record<string, unknown>)[spec.flag];
    if (typeof raw === 'string') apply(config, spec, raw);
    else if (raw === true) apply(config, spec, 'true');
  }
  const partial = config as unknown as NodeConfig;
  partial.dataDir = resolve(partial.dataDir);
  if (partial.authPublicKey) partial.authPublicKey = readablePath(partial.authPublicKey, 'auth-public-key');
  partial.nodeId ||= `${hostname()}:${partial.port}`;
  // A wildcard bind address is no address for clients: advertise the host name instead.
  const advertised = partial.host === '0.0.0.0' || partial.host === '::' ? hostname() : partial.host;
  partial.publicUrl ||= `http://${advertised.includes(':') ? `[${advertised}]` : advertised}:${partial.port}`;
  return { config: partial, help: values.help === true };
}

/** The absolute path of a file the node must read at start; fails now rather than at the first token. */
function readablePath(path: string, name: string): string {
  const absolute = resolve(path);
  try {
    accessSync(absolute, constants.R_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (err as Error).message;
    throw new MeshError('bad_request', `${name}: cannot read ${absolute}: ${why}`);
  }
  return absolute;
}

/** The token verifier's options from the node config; empty values mean unset. */
export function authOptionsOf(config: NodeConfig): AuthOptions {
  const options: AuthOptions = {};
  if (config.authSecret) options.secret = config.authSecret;
  if (config.authPublicKey) options.publicKeyFile = config.authPublicKey;
  if (config.authJwksUrl) options.jwksUrl = config.authJwksUrl;
  if (config.authIssuer) options.issuer = config.authIssuer;
  if (config.authAudience) options.audience = config.authAudience;
  return options;
}

function globToRegExp(glob: string): RegExp {
  return new RegExp(
    `^${glob
      .split('*')
      .map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
      .join('.*')}$`,
  );
}

/** Resolves a topic's retention: the first matching rule's fields over the defaults. */
export function retentionResolver(config: Pick<NodeConfig, 'retention' | 'topics'>): (topic: string) => RetentionPolicy {
  const rules = config.topics.map((rule) => ({ rule, pattern: globToRegExp(rule.match) }));
  const cache = new Map<string, RetentionPolicy>();
  return (topic) => {
    let policy = cache.get(topic);
    if (!policy) {
      const hit = rules.find(({ pattern }) => pattern.test(topic))?.rule;
      policy = {
        maxMessages: hit?.maxMessages ?? config.retention.maxMessages,
        maxAgeMs: hit?.maxAgeMs ?? config.retention.maxAgeMs,
      };
      if (cache.size > 10_000) cache.clear();
      cache.set(topic, policy);
    }
    return policy;
  };
}
