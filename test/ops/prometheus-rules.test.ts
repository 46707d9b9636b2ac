import { spawn } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  ALERT_TESTS_FILE,
  ALERTS_FILE,
  type AlertTestsFile,
  alertRules,
  dashboard,
  dashboardPanels,
  dashboardQueries,
  githubAnchor,
  JOB,
  OPERATIONS_DOC,
  PROMETHEUS_CONFIG_FILE,
  PROMETHEUS_DIR,
  type PrometheusConfig,
  readYaml,
} from './deploy-files.js';

/** Debian's promtool (package `prometheus`, which .ci/run installs). */
const PROMTOOL = 'promtool';
const RUNBOOK = 'https://github.com/meshmq/meshmq/blob/main/docs/operations.md#';

/** Runs a command to its end; a command that cannot start fails the test with how to get it. */
function run(command: string, args: string[], cwd: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    child.once('error', (err) => reject(new Error(`cannot run ${command} (apt-get install prometheus): ${err.message}`)));
    child.once('close', (code) => resolve({ code, output }));
  });
}

const rules = alertRules();
const names = rules.map((r) => r.alert);

describe('the shipped Prometheus files pass promtool', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'meshmq-promtool-'));
  afterAll(() => rmSync(scratch, { recursive: true, force: true }));

  it('checks the alert rules', async () => {
    const { code, output } = await run(PROMTOOL, ['check', 'rules', ALERTS_FILE], PROMETHEUS_DIR);
    expect(output).toContain(`SUCCESS: ${rules.length} rules found`);
    expect(code).toBe(0);
  });

  it('passes the unit tests of the rules', async () => {
    const { code, output } = await run(PROMTOOL, ['test', 'rules', basename(ALERT_TESTS_FILE)], PROMETHEUS_DIR);
    expect(output).toMatch(/SUCCESS/);
    expect(output).not.toMatch(/FAILED/);
    expect(code).toBe(0);
  });

  it('checks the scrape configuration, with the token file it names beside it', async () => {
    // The shipped files unchanged, in a directory that also holds the token file (never in the repository).
    const config = readYaml<PrometheusConfig>(PROMETHEUS_CONFIG_FILE);
    copyFileSync(PROMETHEUS_CONFIG_FILE, join(scratch, 'prometheus.yml'));
    copyFileSync(ALERTS_FILE, join(scratch, basename(ALERTS_FILE)));
    const tokenFile = config.scrape_configs[0]!.authorization!.credentials_file!;
    writeFileSync(join(scratch, tokenFile), 'a-metrics-token\n', { mode: 0o600 });
    const { code, output } = await run(PROMTOOL, ['check', 'config', join(scratch, 'prometheus.yml')], tmpdir());
    expect(output).toContain('SUCCESS: 1 rule files found');
    expect(output).toContain('is valid prometheus config file syntax');
    expect(output).toContain(`SUCCESS: ${rules.length} rules found`);
    expect(code).toBe(0);
  });

  it('scrapes three nodes as job meshmq with a bearer token from a file beside it, and loads alerts.yml', () => {
    const config = readYaml<PrometheusConfig>(PROMETHEUS_CONFIG_FILE);
    expect(config.rule_files).toEqual([basename(ALERTS_FILE)]);
    expect(config.scrape_configs.map((s) => s.job_name)).toContain(JOB);
    const job = config.scrape_configs.find((s) => s.job_name === JOB)!;
    expect(job.static_configs?.flatMap((s) => s.targets)).toHaveLength(3);
    // Relative: Prometheus reads it from the configuration's directory, wherever that is installed.
    expect(job.authorization?.credentials_file).toMatch(/^[^/]/);
  });
});

describe('the alert rules', () => {
  const tests = readYaml<AlertTestsFile>(ALERT_TESTS_FILE);
  const cases = tests.tests.flatMap((t) => t.alert_rule_test ?? []);

  it('are in group meshmq, each named once', () => {
    expect(readYaml<{ groups: Array<{ name: string }> }>(ALERTS_FILE).groups.map((g) => g.name)).toEqual(['meshmq']);
    expect(new Set(names).size).toBe(names.length);
    expect(names.length).toBeGreaterThan(0);
  });

  it.each(names)('%s fires in a unit test, with its labels and annotations', (name) => {
    const firing = cases.filter((c) => c.alertname === name && (c.exp_alerts?.length ?? 0) > 0);
    expect(firing.length).toBeGreaterThan(0);
    const rule = rules.find((r) => r.alert === name)!;
    for (const c of firing) {
      for (const alert of c.exp_alerts!) {
        expect(alert.exp_labels?.severity).toMatch(/^(critical|warning)$/);
        expect(alert.exp_annotations?.runbook_url).toBe(rule.annotations?.runbook_url);
        expect(Object.keys(alert.exp_annotations ?? {}).sort()).toEqual(Object.keys(rule.annotations ?? {}).sort());
      }
    }
  });

  it.each(names)('%s stays quiet in a unit test', (name) => {
    expect(cases.filter((c) => c.alertname === name && (c.exp_alerts?.length ?? 0) === 0).length).toBeGreaterThan(0);
  });

  it('test no alert that does not exist', () => {
    expect(cases.map((c) => c.alertname).filter((n) => !names.includes(n))).toEqual([]);
    expect(tests.rule_files).toEqual([basename(ALERTS_FILE)]);
  });

  it.each(rules.map((r) => [r.alert, r] as const))('%s has a severity, a summary, a description and a runbook', (_name, rule) => {
    // MeshMQNodeAlarm passes on the severity the node gives its alarm.
    expect(rule.labels?.severity).toMatch(/^(critical|warning|\{\{ \$labels\.severity \}\})$/);
    expect(rule.annotations?.summary).toBeTruthy();
    expect(rule.annotations?.description).toBeTruthy();
    expect(rule.annotations?.runbook_url).toBe(`${RUNBOOK}${rule.alert.toLowerCase()}`);
  });

  it('each runbook anchor is a heading of docs/operations.md, and each runbook there has its alert', () => {
    const doc = readFileSync(OPERATIONS_DOC, 'utf8');
    const headings = [...doc.matchAll(/^#{1,6} (.+)$/gm)].map((m) => m[1]!);
    const anchors = new Set(headings.map(githubAnchor));
    for (const rule of rules) expect(anchors, rule.alert).toContain(rule.annotations!.runbook_url!.slice(RUNBOOK.length));
    // The runbooks are the ### headings of the Alerts section (up to the next ## heading), one per alert.
    const alertsSection = /^## Alerts$([\s\S]*?)(?=^## |(?![\s\S]))/m.exec(doc)?.[1] ?? '';
    const runbooks = [...alertsSection.matchAll(/^### (.+)$/gm)].map((m) => m[1]!);
    expect(runbooks.sort()).toEqual([...names].sort());
  });
});

describe('the Grafana dashboard', () => {
  const board = dashboard();
  const panels = dashboardPanels(board);

  it('is a Grafana 10/11 dashboard with data source, job and node variables', () => {
    expect(board.schemaVersion).toBe(39);
    const variables = board.templating.list.map((v) => [v.name, v.type]);
    expect(variables).toEqual([
      ['datasource', 'datasource'],
      ['job', 'query'],
      ['node', 'query'],
    ]);
  });

  it('gives every panel a unique id and the data source variable', () => {
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    // biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's own variable syntax
    const datasource = { type: 'prometheus', uid: '${datasource}' };
    for (const p of panels.filter((p) => p.type !== 'row')) expect(p.datasource, p.title).toEqual(datasource);
  });

  it('has a query in every panel, each scoped to the chosen job', () => {
    for (const p of panels.filter((p) => p.type !== 'row')) expect(p.targets?.length, p.title).toBeGreaterThan(0);
    for (const q of dashboardQueries(board)) expect(q.expr, `${q.panel} ${q.refId}`).toContain('job="$job"');
  });
});
