/**
 * The deployment files in deploy/: the image and the Kubernetes manifests name
 * only options the node documents (read from the node itself), agree with
 * each other, and work on real processes: Redis and Sentinel run with their
 * configuration files, the health checks and probes answer, and a node
 * started with exactly the StatefulSet's environment becomes ready with the
 * durability docs/guarantees.md promises for that layout.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { MeshClient } from '@meshmq/client';
import { loadConfig, mintToken, type NodeConfig, OPTION_NAMES } from '@meshmq/server';
import { DockerfileParser, type Entrypoint, Env, type Healthcheck, type Instruction } from 'dockerfile-ast';
import { StatefulSet } from 'kubernetes-models/apps/v1/StatefulSet';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import type { IContainer } from 'kubernetes-models/v1/Container';
import type { IEnvVar } from 'kubernetes-models/v1/EnvVar';
import type { IPodSpec } from 'kubernetes-models/v1/PodSpec';
import type { IProbe } from 'kubernetes-models/v1/Probe';
import { Service } from 'kubernetes-models/v1/Service';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { freePort, NodeProcess, tempDir } from '../helpers/node-process.js';
import { RedisProcess } from '../helpers/redis-process.js';
import { redisCli } from '../helpers/redis-topologies.js';
import { eventually, uniqueTopic } from '../helpers/util.js';

const run = promisify(execFile);

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DOCKERFILE = join(ROOT, 'deploy/Dockerfile');
const KUBERNETES = join(ROOT, 'deploy/kubernetes');

/** What the node documents (its --help): environment variables, and flags by name. */
const OPTION_ENVS = new Set(OPTION_NAMES.map((o) => o.env));
const OPTION_FLAGS = new Map(OPTION_NAMES.map((o) => [`--${o.flag}`, o]));

// ---- the Dockerfile -------------------------------------------------------------

const dockerfile = DockerfileParser.parse(readFileSync(DOCKERFILE, 'utf8'));

/** The instructions of the image that ships: the last stage. */
function runtimeStage(): Instruction[] {
  const instructions = dockerfile.getInstructions();
  const from = instructions.map((i) => i.getKeyword()).lastIndexOf('FROM');
  return instructions.slice(from + 1);
}

function the(keyword: string, stage = runtimeStage()): Instruction {
  const found = stage.filter((i) => i.getKeyword() === keyword);
  expect(found, `${keyword} in the runtime stage`).toHaveLength(1);
  return found[0]!;
}

/** The environment the image sets (ENV of its last stage). */
function imageEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const i of runtimeStage()) if (i instanceof Env) for (const p of i.getProperties()) env[p.getName()] = p.getValue() ?? '';
  return env;
}

/** The HEALTHCHECK's command, an exec-form array. */
function healthcheckCommand(): string[] {
  const check = the('HEALTHCHECK') as Healthcheck;
  expect(check.getSubcommand()?.getValue()).toBe('CMD');
  const json = check.getArgumentsContent()!.replace(/^CMD\s+/, '');
  return JSON.parse(json) as string[];
}

/** The absolute paths that a command's text names in quotes ('/healthz'). */
function pathsIn(text: string): string[] {
  return [...text.matchAll(/['"](\/[\w./-]*)['"]/g)].map((m) => m[1]!);
}

// ---- the Kubernetes manifests -----------------------------------------------------

interface Kustomization {
  resources: string[];
  configMapGenerator?: Array<{ name: string; files: string[] }>;
  images?: Array<{ name: string; newName?: string; newTag?: string }>;
}

interface Manifest {
  file: string;
  object: any;
}

/** The model that validates each kind the manifests may hold, by apiVersion and kind. */
const MODELS: Record<string, new (data: never) => { validate(): void }> = {
  'v1/Service': Service,
  'apps/v1/StatefulSet': StatefulSet,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy,
};

const kustomization = parseYaml(readFileSync(join(KUBERNETES, 'kustomization.yaml'), 'utf8')) as Kustomization;

function readManifests(): Manifest[] {
  const manifests: Manifest[] = [];
  for (const file of kustomization.resources) {
    for (const doc of parseAllDocuments(readFileSync(join(KUBERNETES, file), 'utf8'))) {
      expect(doc.errors, `YAML errors in ${file}`).toEqual([]);
      const object = doc.toJS();
      if (object !== null) manifests.push({ file, object });
    }
  }
  return manifests;
}

const manifests = readManifests();

function find(kind: string, name: string): Manifest['object'] {
  const found = manifests.filter((m) => m.object.kind === kind && m.object.metadata.name === name);
  expect(found, `${kind} ${name}`).toHaveLength(1);
  return found[0]!.object;
}

function containerOf(statefulSetName: string, name: string): IContainer {
  const container = podSpecOf(statefulSetName).containers.find((c) => c.name === name);
  expect(container, `container ${name} of ${statefulSetName}`).toBeDefined();
  return container!;
}

function podSpecOf(statefulSetName: string): IPodSpec {
  return find('StatefulSet', statefulSetName).spec.template.spec as IPodSpec;
}

/** True when every label of `selector` is among `labels`. */
function selects(selector: Record<string, string> | undefined, labels: Record<string, string> | undefined): boolean {
  return selector !== undefined && Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

/** What a pod's environment would hold: values from the downward API and Secrets, and $(VAR) expanded as Kubernetes does. */
interface PodValues {
  fields: Record<string, string>;
  /** By `<secret>/<key>`. */
  secrets: Record<string, string>;
}

function resolveEnv(env: IEnvVar[], values: PodValues): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of env) {
    let value: string | undefined;
    if (entry.value !== undefined) {
      // Kubernetes expands $(VAR) only for variables defined earlier in the list; any other is left as it is written.
      value = entry.value.replace(/\$\((\w+)\)/g, (_, name: string) => {
        expect(out, `${entry.name} refers to $(${name}), which must be defined before it`).toHaveProperty(name);
        return out[name]!;
      });
    } else if (entry.valueFrom?.fieldRef) {
      value = values.fields[entry.valueFrom.fieldRef.fieldPath];
    } else if (entry.valueFrom?.secretKeyRef) {
      const { name, key } = entry.valueFrom.secretKeyRef;
      value = values.secrets[`${name}/${key}`];
    }
    expect(value, `a value for ${entry.name}`).toBeDefined();
    out[entry.name] = value!;
  }
  return out;
}

/** The variables of `env` that are not options of the node: each must only be spliced into a later one. */
function helperVariables(env: IEnvVar[]): string[] {
  return env
    .filter((e) => !OPTION_ENVS.has(e.name))
    .map((e) => {
      const usedLater = env.slice(env.indexOf(e) + 1).some((other) => other.value?.includes(`$(${e.name})`));
      expect(usedLater, `${e.name} is no option of the node (see meshmq --help) and nothing uses it`).toBe(true);
      return e.name;
    });
}

/** The `--flags` of an argument list, each checked against the node's options. */
function checkFlags(args: string[]): void {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const flag = arg.split('=')[0]!;
    expect(arg.startsWith('--'), `'${arg}' where a --flag was expected`).toBe(true);
    const option = OPTION_FLAGS.get(flag);
    expect(option, `${flag} is an option of the node (meshmq --help)`).toBeDefined();
    if (!option!.boolean && !arg.includes('=')) i++;
  }
}

/** Directives of a redis.conf or sentinel.conf, one array of words each. */
function directives(text: string): string[][] {
  return text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => line.split(/\s+/));
}

function directive(conf: string[][], ...words: string[]): string[] {
  const found = conf.filter((d) => words.every((w, i) => d[i] === w));
  expect(found, `one '${words.join(' ')}' directive`).toHaveLength(1);
  return found[0]!.slice(words.length);
}

const redisConfText = readFileSync(join(KUBERNETES, 'redis/redis.conf'), 'utf8');
const sentinelConfText = readFileSync(join(KUBERNETES, 'redis/sentinel.conf'), 'utf8');

/** The secrets the manifests read, with values of the kind kustomization.yaml says to create. */
const SECRETS = {
  'meshmq-redis/password': randomBytes(32).toString('hex'),
  'meshmq-auth/auth-secret': randomBytes(48).toString('base64'),
  'meshmq-auth/metrics-token': randomBytes(32).toString('hex'),
};
const POD = { fields: { 'metadata.name': 'meshmq-0', 'metadata.namespace': 'default' }, secrets: SECRETS };

/** The MeshMQ container of the StatefulSet, and the environment its pod meshmq-0 gets. */
function meshmqPod() {
  const container = containerOf('meshmq', 'meshmq');
  const env = resolveEnv(container.env ?? [], POD);
  return { container, env };
}

/** The node's configuration in that pod: the image's environment, then the pod's, then its args. */
function meshmqConfig(): NodeConfig {
  const { container, env } = meshmqPod();
  return loadConfig(container.args ?? [], { ...imageEnv(), ...env }).config;
}

describe('deploy/Dockerfile', () => {
  it('sets only options the node documents, and they parse', () => {
    for (const name of Object.keys(imageEnv())) expect(OPTION_ENVS, `ENV ${name}`).toContain(name);
    const cmd = runtimeStage().find((i) => i.getKeyword() === 'CMD');
    const args = cmd ? (JSON.parse(cmd.getArgumentsContent()!) as string[]) : [];
    checkFlags(args);
    const { config } = loadConfig(args, imageEnv());
    // Reachable from outside the container: the node then requires an authentication key.
    expect(config.host).toBe('0.0.0.0');
    expect(the('EXPOSE').getArgumentsContent()).toBe(String(config.port));
    expect(the('VOLUME').getArgumentsContent()).toBe(config.dataDir);
  });

  it('runs the built CLI as a user other than root, and stops it with SIGTERM (a drain)', () => {
    const entrypoint = (the('ENTRYPOINT') as Entrypoint).getJSONStrings().map((s) => s.getJSONValue());
    expect(entrypoint).toEqual(['node', 'packages/server/dist/cli.js']);
    expect(existsSync(join(ROOT, entrypoint[1]!))).toBe(true);
    expect(the('WORKDIR').getArgumentsContent()).toBe('/app');
    expect(the('USER').getArgumentsContent()!.split(':')[0]).not.toMatch(/^(root|0)$/);
    expect(the('STOPSIGNAL').getArgumentsContent()).toBe('SIGTERM');
  });

  it('installs with every workspace package manifest in place, as a frozen lockfile needs', () => {
    const lockfile = parseYaml(readFileSync(join(ROOT, 'pnpm-lock.yaml'), 'utf8')) as { importers: Record<string, unknown> };
    const build = dockerfile.getInstructions();
    const install = build.findIndex((i) => i.getKeyword() === 'RUN' && /pnpm install --frozen-lockfile/.test(i.getArgumentsContent() ?? ''));
    expect(install).toBeGreaterThan(0);
    const copied = build
      .slice(0, install)
      .filter((i) => i.getKeyword() === 'COPY')
      .flatMap((i) =>
        i
          .getArguments()
          .slice(0, -1)
          .map((a) => a.getValue()),
      );
    for (const importer of Object.keys(lockfile.importers)) {
      expect(copied, `COPY of ${importer}'s package.json before the install`).toContain(importer === '.' ? 'package.json' : `${importer}/package.json`);
    }
    for (const file of ['pnpm-lock.yaml', 'pnpm-workspace.yaml']) expect(copied).toContain(file);
  });
});

describe('deploy/kubernetes', () => {
  it('lists every manifest in kustomization.yaml, each a known kind that validates', () => {
    const files = readdirSync(KUBERNETES).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml');
    expect([...kustomization.resources].sort()).toEqual(files.sort());
    for (const generator of kustomization.configMapGenerator ?? []) {
      for (const file of generator.files) expect(existsSync(join(KUBERNETES, file)), file).toBe(true);
    }
    const seen = new Set<string>();
    for (const { file, object } of manifests) {
      const where = `${file}: ${object.kind} ${object.metadata?.name}`;
      expect(typeof object.metadata?.name, where).toBe('string');
      const Model = MODELS[`${object.apiVersion}/${object.kind}`];
      expect(Model, `${where}: a known apiVersion and kind`).toBeDefined();
      expect(() => new Model!(object as never).validate(), where).not.toThrow();
      expect(seen.has(`${object.kind}/${object.metadata.name}`), `${where} is defined once`).toBe(false);
      seen.add(`${object.kind}/${object.metadata.name}`);
    }
  });

  it('wires selectors, services, config maps and disruption budgets to the pods they are for', () => {
    const statefulSets = manifests.filter((m) => m.object.kind === 'StatefulSet').map((m) => m.object);
    const podLabels = statefulSets.map((s) => s.spec.template.metadata.labels as Record<string, string>);
    const generated = new Set((kustomization.configMapGenerator ?? []).map((g) => g.name));
    for (const set of statefulSets) {
      const name = set.metadata.name as string;
      expect(selects(set.spec.selector.matchLabels, set.spec.template.metadata.labels), `${name}: selector matches its pods`).toBe(true);
      const service = find('Service', set.spec.serviceName);
      expect(service.spec.clusterIP, `${name}: its serviceName is headless`).toBe('None');
      expect(selects(service.spec.selector, set.spec.template.metadata.labels), `${name}: its service selects its pods`).toBe(true);
      const budgets = manifests.filter(
        (m) => m.object.kind === 'PodDisruptionBudget' && selects(m.object.spec.selector.matchLabels, set.spec.template.metadata.labels),
      );
      expect(
        budgets.map((b) => b.object.spec.maxUnavailable),
        `${name}: one disruption budget`,
      ).toEqual([1]);
      for (const volume of set.spec.template.spec.volumes ?? []) {
        if (volume.configMap) expect(generated, `${name}: config map ${volume.configMap.name}`).toContain(volume.configMap.name);
      }
      // Service links would put variables such as REDIS_PORT into every container.
      expect(set.spec.template.spec.enableServiceLinks, `${name}: enableServiceLinks`).toBe(false);
    }
    for (const { object } of manifests.filter((m) => m.object.kind === 'Service')) {
      expect(
        podLabels.some((labels) => selects(object.spec.selector, labels)),
        `Service ${object.metadata.name} selects pods`,
      ).toBe(true);
    }
  });

  it('gives the MeshMQ nodes only options the node documents, and they parse', () => {
    const { container } = meshmqPod();
    const helpers = helperVariables(container.env ?? []);
    // Only what splices the password and the namespace into option values.
    expect(helpers.sort()).toEqual(['POD_NAMESPACE', 'REDIS_PASSWORD']);
    // The image's entrypoint runs the node; only flags may follow.
    expect(container.command).toBeUndefined();
    checkFlags(container.args ?? []);
    const config = meshmqConfig();
    expect(config.nodeId).toBe('meshmq-0');
    expect(config.authSecret).toBe(SECRETS['meshmq-auth/auth-secret']);
    expect(config.metricsToken).toBe(SECRETS['meshmq-auth/metrics-token']);
  });

  it('names each node by its pod and gives it a URL through the headless service, on the port the probes use', () => {
    const set = find('StatefulSet', 'meshmq');
    const config = meshmqConfig();
    const url = new URL(config.publicUrl);
    expect(url.hostname).toBe(`meshmq-0.${set.spec.serviceName}.default.svc`);
    expect(Number(url.port)).toBe(config.port);
    const { container } = meshmqPod();
    const http = container.ports?.find((p) => p.name === 'http');
    expect(http?.containerPort).toBe(config.port);
    const probes: IProbe[] = [container.readinessProbe!, container.livenessProbe!, container.startupProbe!];
    for (const probe of probes) expect(probe.httpGet?.port).toBe('http');
    expect(container.readinessProbe?.httpGet?.path).toBe('/readyz');
    expect(container.livenessProbe?.httpGet?.path).toBe('/healthz');
  });

  it('lets a node finish its drain before Kubernetes kills it, and bounds its memory', () => {
    const config = meshmqConfig();
    const grace = podSpecOf('meshmq').terminationGracePeriodSeconds!;
    expect(config.drainTimeoutMs).toBeLessThan(grace * 1000);
    // The memory alarm is a share of the cgroup's limit.
    expect(meshmqPod().container.resources?.limits?.memory).toBeDefined();
  });

  it('configures Redis and Sentinel for the strongest guarantee of docs/guarantees.md, matching REDIS_URL', () => {
    const redis = directives(redisConfText);
    expect(directive(redis, 'appendonly')).toEqual(['yes']);
    expect(directive(redis, 'appendfsync')).toEqual(['always']);
    expect(directive(redis, 'maxmemory-policy')).toEqual(['noeviction']);
    const replicas = find('StatefulSet', 'meshmq-redis').spec.replicas - 1;
    const config = meshmqConfig();
    expect(config.redisReplicas).toBeGreaterThanOrEqual(1);
    expect(config.redisReplicas).toBeLessThanOrEqual(replicas);
    expect(Number(directive(redis, 'min-replicas-to-write')[0])).toBeLessThanOrEqual(config.redisReplicas);
    const redisPort = directive(redis, 'port')[0];
    const redisSet = find('StatefulSet', 'meshmq-redis');
    expect(containerOf('meshmq-redis', 'redis').ports?.[0]?.containerPort).toBe(Number(redisPort));

    const sentinel = directives(sentinelConfText);
    // Host names resolve only when Sentinel is told so, before the monitor line.
    expect(directive(sentinel, 'sentinel', 'resolve-hostnames')).toEqual(['yes']);
    const monitorAt = sentinel.findIndex((d) => d[0] === 'sentinel' && d[1] === 'monitor');
    expect(sentinel.findIndex((d) => d[1] === 'resolve-hostnames')).toBeLessThan(monitorAt);
    const [master, host, port, quorum] = sentinel[monitorAt]!.slice(2);
    const url = /^redis\+sentinel:\/\/[^@]*@([^/]+)\/(.+)$/.exec(config.redisUrl);
    expect(url, config.redisUrl).not.toBeNull();
    expect(url![2]).toBe(master);
    expect(host).toBe(`meshmq-redis-0.${redisSet.spec.serviceName}`);
    expect(port).toBe(redisPort);
    const sentinelSet = find('StatefulSet', 'meshmq-sentinel');
    const sentinelPort = directive(sentinel, 'port')[0];
    const sentinels = Array.from({ length: sentinelSet.spec.replicas }, (_, i) => `meshmq-sentinel-${i}.${sentinelSet.spec.serviceName}:${sentinelPort}`);
    expect(url![1]!.split(',')).toEqual(sentinels);
    // Two of three agree that the primary is down: a majority, and one Sentinel lost still fails over.
    expect(Number(quorum)).toBe(2);
    expect(Number(quorum)).toBeGreaterThan(sentinels.length / 2);
  });

  it('has init scripts that a POSIX shell reads', async () => {
    for (const script of ['redis/init-redis.sh', 'redis/init-sentinel.sh']) {
      await expect(run('sh', ['-n', join(KUBERNETES, script)])).resolves.toBeDefined();
    }
  });
});

/**
 * A Sentinel started from sentinel.conf as init-sentinel.sh completes it,
 * monitoring `primaryPort` on loopback (the test's address and ports in
 * place of the pods' names).
 */
async function startSentinel(primaryPort: number, password: string): Promise<{ port: number; stop: () => void }> {
  const port = await freePort();
  const dir = tempDir('meshmq-sentinel-');
  const master = directive(directives(sentinelConfText), 'sentinel', 'monitor')[0]!;
  const conf = [
    sentinelConfText.replace(/^sentinel monitor (\S+) \S+ \S+/m, `sentinel monitor $1 127.0.0.1 ${primaryPort}`),
    'sentinel announce-ip 127.0.0.1',
    `sentinel auth-pass ${master} ${password}`,
    `port ${port}`,
    'bind 127.0.0.1',
    `dir ${dir}`,
    '',
  ].join('\n');
  writeFileSync(join(dir, 'sentinel.conf'), conf);
  const child: ChildProcess = spawn('redis-server', [join(dir, 'sentinel.conf'), '--sentinel'], { stdio: 'ignore' });
  const stop = () => {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await eventually(async () => (await redisCli(port, 'SENTINEL', 'get-master-addr-by-name', master)).includes(String(primaryPort)), 10_000, 'the Sentinel');
  } catch (err) {
    stop();
    throw err;
  }
  return { port, stop };
}

/** GET `path` with a Host header of our choosing (fetch does not let one set it). */
function getWithHost(url: string, path: string, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(new URL(path, url), { headers: { host } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });
}

describe('deploy/kubernetes on real processes: Redis, a replica and a Sentinel from its files, and a node with the StatefulSet environment', () => {
  const password = SECRETS['meshmq-redis/password'];
  let primary: RedisProcess;
  let replica: RedisProcess;
  let sentinel: { port: number; stop: () => void };
  let node: NodeProcess;
  let confDir: string;

  beforeAll(async () => {
    // redis.conf but for its `dir` (/data in the pod), which Redis enters as it reads the file: each test Redis has its own.
    confDir = tempDir('meshmq-redis-conf-');
    const configFile = join(confDir, 'redis.conf');
    writeFileSync(configFile, redisConfText.replace(/^dir .*$/m, ''));
    // As init-redis.sh completes redis.conf: the password, the address to announce, and `replicaof` on the replica.
    const announce = ['--replica-announce-ip', '127.0.0.1'];
    primary = await RedisProcess.start({ configFile, password, args: announce });
    replica = await RedisProcess.start({ configFile, password, args: [...announce, '--replicaof', '127.0.0.1', String(primary.port)] });
    const auth = ['-a', password, '--no-auth-warning'];
    // In sync, not just connected: a diskless full sync starts 5 s after the replica connects (repl-diskless-sync-delay).
    await eventually(async () => /^slave0:.*state=online/m.test(await redisCli(primary.port, ...auth, 'INFO', 'replication')), 20_000, 'the replica in sync');
    sentinel = await startSentinel(primary.port, password);

    const { env } = meshmqPod();
    // The test's one Sentinel in place of the pods' three.
    const redisUrl = env.REDIS_URL!.replace(/@[^/]+\//, `@127.0.0.1:${sentinel.port}/`);
    node = await NodeProcess.start({ env: { ...env, REDIS_URL: redisUrl } });
  }, 60_000);

  afterAll(async () => {
    await node?.dispose();
    sentinel?.stop();
    await replica?.dispose();
    await primary?.dispose();
    rmSync(confDir, { recursive: true, force: true });
  });

  it('becomes ready over Redis, and says an acknowledged publish survives a host crash and a failover', async () => {
    const body = await eventually(async () => {
      const res = await fetch(`${node.url}/readyz`);
      return res.status === 200 && ((await res.json()) as { node: string; engine: string; redis: { durability: { survives: unknown } | null } });
    }, 15_000);
    expect(body.node).toBe('meshmq-0');
    expect(body.engine).toBe('redis');
    expect(body.redis.durability?.survives).toEqual({ processKill: true, hostCrash: true, failover: true });
  });

  it('answers the probe paths without a token', async () => {
    const { container } = meshmqPod();
    for (const probe of [container.readinessProbe, container.livenessProbe, container.startupProbe]) {
      const res = await fetch(`${node.url}${probe!.httpGet!.path}`);
      expect(res.status, probe!.httpGet!.path).toBe(200);
    }
  });

  it("passes the image's HEALTHCHECK, which fails when no node answers", async () => {
    const [command, ...args] = healthcheckCommand();
    expect(pathsIn(args.join(' '))).toEqual(['/healthz']);
    const check = (port: number) =>
      run(command!, args, { env: { ...process.env, PORT: String(port) } }).then(
        () => 0,
        (err: { code?: number }) => err.code ?? -1,
      );
    expect(await check(node.port)).toBe(0);
    expect(await check(await freePort())).toBe(1);
  });

  it('accepts publishes from a token signed with the AUTH_SECRET, each kept by a replica too', async () => {
    const token = await mintToken({ secret: SECRETS['meshmq-auth/auth-secret'], sub: 'deploy-test', permissions: { publish: ['>'] }, ttlMs: 60_000 });
    const client = new MeshClient({ url: node.url, token });
    try {
      await client.connect();
      const topic = uniqueTopic('deploy');
      expect((await client.publish(topic, { n: 1 })).offset).toBe(1);
    } finally {
      await client.close();
    }
  });

  it('serves /metrics to the bearer METRICS_TOKEN and to nobody without a token', async () => {
    const scraped = await fetch(`${node.url}/metrics`, { headers: { authorization: `Bearer ${SECRETS['meshmq-auth/metrics-token']}` } });
    expect(scraped.status).toBe(200);
    expect(await scraped.text()).toContain('meshmq_');
    expect((await fetch(`${node.url}/metrics`)).status).toBe(401);
  });

  it('takes requests addressed to the client Service, and refuses other host names', async () => {
    expect(await getWithHost(node.url, '/healthz', 'meshmq.default.svc:8080')).toBe(200);
    expect(await getWithHost(node.url, '/healthz', 'meshmq:8080')).toBe(200);
    expect(await getWithHost(node.url, '/healthz', 'rebound.example.com')).toBe(403);
  });
});
