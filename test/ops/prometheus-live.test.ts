import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { mintToken } from '@meshmq/server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { type Frame, messagesOf } from '../helpers/frames.js';
import { NodeProcess, tempDir } from '../helpers/node-process.js';
import { PrometheusProcess } from '../helpers/prometheus-process.js';
import { RawClient } from '../helpers/raw-client.js';
import { RedisProcess } from '../helpers/redis-process.js';
import { eventually, uniqueTopic } from '../helpers/util.js';
import {
  ALERTS_FILE,
  alertRules,
  dashboard,
  dashboardQueries,
  JOB,
  metricNames,
  PROMETHEUS_CONFIG_FILE,
  type PrometheusConfig,
  type RulesFile,
  readYaml,
  withVariables,
} from './deploy-files.js';

const SECRET = 'a-test-secret-that-is-long-enough-for-hs256';
const METRICS_TOKEN = 'the-metrics-token-prometheus-scrapes-with';
/** Every `for:` of the shipped rules, shortened so that alerts fire within the test. */
const SHORT_FOR = '2s';
/** A job of its own for an embedded-engine node, whose disk metrics the cluster nodes lack; the rules' job stays the cluster. */
const STANDALONE_JOB = 'meshmq-standalone';
/** What Grafana would put for its variables: all nodes of the job, a rate window of several scrapes. */
const GRAFANA_VALUES = { job: JOB, node: '.*', __rate_interval: '1m', __interval: '15s', __range: '1h', datasource: 'prometheus' };
/** Alerts whose expressions select nothing on a healthy cluster over a Redis with AOF and appendfsync always. */
const QUIET_WHEN_HEALTHY = [
  'MeshMQNodeDown',
  'MeshMQAllNodesDown',
  'MeshMQRedisDown',
  'MeshMQRedisNotPersistent',
  'MeshMQRedisNotCrashSafe',
  'MeshMQPublishErrors',
];

const instanceOf = (node: NodeProcess) => `127.0.0.1:${node.port}`;

/**
 * The shipped alert rules, scrape configuration and dashboard against a real
 * Prometheus scraping real nodes through the metrics token: every expression
 * evaluates without error, every metric it reads is one a node exports, and
 * a node killed with -9 raises MeshMQNodeDown.
 */
describe('the shipped rules and dashboard in a real Prometheus', () => {
  let redis: RedisProcess;
  const cluster: NodeProcess[] = [];
  let standalone: NodeProcess;
  let prometheus: PrometheusProcess;
  let client: RawClient;
  /** Prometheus's directory: its configuration, the copy of the rules, the token file, its data. */
  let dir: string;

  beforeAll(async () => {
    redis = await RedisProcess.start();
    const env = { AUTH_SECRET: SECRET, METRICS_TOKEN, HEARTBEAT: '300ms', NODE_DOWN_AFTER: '1s' };
    const started = await Promise.all([
      NodeProcess.start({ env: { ...env, REDIS_URL: redis.url, NODE_ID: 'a' } }),
      NodeProcess.start({ env: { ...env, REDIS_URL: redis.url, NODE_ID: 'b' } }),
      NodeProcess.start({ env: { ...env, NODE_ID: 'solo' } }),
    ]);
    cluster.push(started[0], started[1]);
    standalone = started[2];

    // The shipped configuration with these nodes as targets, scraping and evaluating every second.
    dir = tempDir('meshmq-prometheus-');
    const shipped = readYaml<PrometheusConfig>(PROMETHEUS_CONFIG_FILE);
    const job = shipped.scrape_configs.find((s) => s.job_name === JOB)!;
    const { alerting: _noAlertmanagerHere, ...rest } = shipped;
    const config: PrometheusConfig = {
      ...rest,
      global: { ...shipped.global, scrape_interval: '1s', evaluation_interval: '1s' },
      scrape_configs: [
        { ...job, static_configs: [{ targets: cluster.map(instanceOf) }] },
        { ...job, job_name: STANDALONE_JOB, static_configs: [{ targets: [instanceOf(standalone)] }] },
      ],
    };
    writeFileSync(join(dir, 'prometheus.yml'), stringify(config));
    writeFileSync(join(dir, job.authorization!.credentials_file!), `${METRICS_TOKEN}\n`);
    // Only the `for:` lines change: the expressions stay the shipped ones.
    writeFileSync(join(dir, 'alerts.yml'), readFileSync(ALERTS_FILE, 'utf8').replace(/^(\s+)for: .+$/gm, `$1for: ${SHORT_FOR}`));
    prometheus = await PrometheusProcess.start(dir);
    await eventually(async () => (await prometheus.query(`up{job=~"${JOB}|${STANDALONE_JOB}"} == 1`)).data.result.length === 3, 15_000, 'all three targets up');
    // Traffic: fan-out and group deliveries, acks, a dead letter, a refused publish.
    const token = await mintToken({ secret: SECRET, sub: 'ops-test', permissions: { admin: true }, ttlMs: 60_000 });
    client = await RawClient.connect(`${cluster[0]!.wsUrl}?token=${encodeURIComponent(token)}`);
    const topic = uniqueTopic('ops');
    await client.ok({ op: 'subscribe', topic });
    await client.ok({ op: 'subscribe', topic, group: 'workers', maxDeliveries: 1 });
    for (let i = 0; i < 3; i++) await client.ok({ op: 'publish', topic, data: { i } });
    expect((await client.request({ op: 'publish', topic: 'not a topic', data: 1 })).code).toBe('bad_request');
    const deliveries = await eventually(() => {
      const group = messagesOf(client.frames, topic, 'workers');
      return messagesOf(client.frames, topic).length >= 6 && group.length >= 3 && group;
    });
    const settle = (op: string, m: Frame) => client.ok({ op, topic, group: 'workers', offset: m.offset, epoch: m.epoch });
    await settle('ack', deliveries[0]!);
    await settle('ack', deliveries[1]!);
    await settle('nack', deliveries[2]!);
  }, 40_000);

  afterAll(async () => {
    await client?.close();
    await prometheus?.dispose();
    await Promise.all([...cluster, standalone].filter(Boolean).map((n) => n.dispose()));
    await redis?.dispose();
  });

  it('runs the shipped rules with only their `for:` shortened', async () => {
    const loaded = await prometheus.api<{ groups: Array<{ rules: Array<{ name: string; duration: number }> }> }>('rules');
    expect(loaded.status).toBe('success');
    const shipped = alertRules();
    const running = loaded.data.groups.flatMap((g) => g.rules);
    expect(running.map((r) => r.name)).toEqual(shipped.map((r) => r.alert));
    expect(running.map((r) => r.duration)).toEqual(shipped.map((r) => (r.for ? Number.parseFloat(SHORT_FOR) : 0)));
    // The copy Prometheus loaded differs from the shipped file in its `for:` lines alone.
    const copy = parse(readFileSync(join(dir, 'alerts.yml'), 'utf8')) as RulesFile;
    const rules = copy.groups.flatMap((g) => g.rules);
    expect(rules.map(({ for: _, ...rule }) => rule)).toEqual(shipped.map(({ for: _, ...rule }) => rule));
  });

  it('scrapes the traffic through the metrics token', async () => {
    // The traffic, scraped: the token reached /metrics, not a 401 page.
    await eventually(
      async () => {
        const published = await prometheus.query(`sum(meshmq_messages_published_total{job="${JOB}"})`);
        const deadLettered = await prometheus.query(`sum(meshmq_messages_dead_lettered_total{job="${JOB}"})`);
        // Both nodes have read Redis's settings: AOF with appendfsync always survives a host crash.
        const crashSafe = await prometheus.query(`count(meshmq_redis_survives{job="${JOB}", event="host_crash"} == 1)`);
        return (
          Number(published.data.result[0]?.value[1]) === 3 &&
          Number(deadLettered.data.result[0]?.value[1]) === 1 &&
          Number(crashSafe.data.result[0]?.value[1]) === cluster.length
        );
      },
      15_000,
      'the publishes, the dead letter and the durability of Redis scraped',
    );
  });

  it('evaluates every alert expression without error or warning', async () => {
    for (const rule of alertRules()) {
      const answer = await prometheus.query(rule.expr);
      expect(answer, rule.alert).toMatchObject({ status: 'success' });
      expect(answer.warnings, rule.alert).toBeUndefined();
    }
  });

  it('evaluates every query of the dashboard without error or warning', async () => {
    const queries = dashboardQueries();
    expect(queries.length).toBeGreaterThan(20);
    for (const q of queries) {
      const answer = await prometheus.query(withVariables(q.expr, GRAFANA_VALUES));
      expect(answer, `${q.panel} ${q.refId}: ${q.expr}`).toMatchObject({ status: 'success' });
      expect(answer.warnings, `${q.panel} ${q.refId}`).toBeUndefined();
    }
  });

  it("finds the dashboard's job and nodes with its variables' queries", async () => {
    const values: Record<string, string[]> = {};
    for (const variable of dashboard().templating.list.filter((v) => v.type === 'query')) {
      const query = typeof variable.query === 'string' ? variable.query : variable.query!.query;
      const [, selector, label] = /^label_values\((.+),\s*(\w+)\)$/.exec(query)!;
      const answer = await prometheus.api<string[]>(`label/${label}/values`, { 'match[]': withVariables(selector!, GRAFANA_VALUES) });
      expect(answer.status).toBe('success');
      values[variable.name] = answer.data;
    }
    expect(values.job).toContain(JOB);
    expect(values.node?.sort()).toEqual(cluster.map(instanceOf).sort());
  });

  it('reads only metrics the nodes export', async () => {
    const metadata = await prometheus.api<Record<string, Array<{ type: string }>>>('metadata');
    expect(metadata.status).toBe('success');
    const exported = (name: string) => {
      const family = name.replace(/_(bucket|count|sum)$/, '');
      return name in metadata.data || metadata.data[family]?.[0]?.type === 'histogram';
    };
    const read = new Set([...alertRules().map((r) => r.expr), ...dashboardQueries().map((q) => q.expr)].flatMap(metricNames));
    read.delete('up'); // Prometheus's own, per target
    expect([...read].filter((name) => !exported(name))).toEqual([]);
    expect(read.size).toBeGreaterThan(15);
  });

  it.each(QUIET_WHEN_HEALTHY)('%s selects nothing while every node is up on a Redis with AOF', async (name) => {
    const answer = await prometheus.query(alertRules().find((r) => r.alert === name)!.expr);
    expect(answer.status).toBe('success');
    expect(answer.data.result).toEqual([]);
  });

  it('raises MeshMQNodeDown for a node killed with -9, and MeshMQClusterNodeMissing on the node left', async () => {
    const [survivor, victim] = [cluster[0]!, cluster[1]!];
    const firing = async (alertname: string) =>
      (await prometheus.alerts()).filter((a) => a.labels.alertname === alertname && a.state === 'firing').map((a) => a.labels.instance);

    await victim.kill();
    await eventually(async () => (await firing('MeshMQNodeDown')).includes(instanceOf(victim)), 20_000, 'MeshMQNodeDown firing');
    const nodeDown = (await prometheus.alerts()).find((a) => a.labels.alertname === 'MeshMQNodeDown')!;
    expect(nodeDown.labels).toMatchObject({ severity: 'critical', job: JOB, instance: instanceOf(victim) });
    expect(nodeDown.annotations.summary).toBe(`MeshMQ node ${instanceOf(victim)} is down`);
    expect(await firing('MeshMQNodeDown')).toEqual([instanceOf(victim)]);
    // The survivor's view of its cluster shrinks to itself: one node up of the two the job scrapes.
    await eventually(async () => (await firing('MeshMQClusterNodeMissing')).includes(instanceOf(survivor)), 20_000, 'MeshMQClusterNodeMissing firing');
    expect(await firing('MeshMQAllNodesDown')).toEqual([]);
  });
});
