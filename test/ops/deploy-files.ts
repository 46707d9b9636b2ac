import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

/**
 * The monitoring files the project ships (deploy/), read as the ops tests
 * need them: the alert rules, their unit tests, the scrape configuration and
 * the Grafana dashboard's queries.
 */

const repo = (path: string) => fileURLToPath(new URL(`../../${path}`, import.meta.url));

export const PROMETHEUS_DIR = repo('deploy/prometheus');
export const ALERTS_FILE = repo('deploy/prometheus/alerts.yml');
export const ALERT_TESTS_FILE = repo('deploy/prometheus/alerts.test.yml');
export const PROMETHEUS_CONFIG_FILE = repo('deploy/prometheus/prometheus.yml');
export const DASHBOARD_FILE = repo('deploy/grafana/meshmq-dashboard.json');
export const OPERATIONS_DOC = repo('docs/operations.md');

/** The scrape job the rules name. */
export const JOB = 'meshmq';

export interface AlertRule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export interface RulesFile {
  groups: Array<{ name: string; rules: AlertRule[] }>;
}

export function readYaml<T>(file: string): T {
  return parse(readFileSync(file, 'utf8')) as T;
}

export function alertRules(): AlertRule[] {
  return readYaml<RulesFile>(ALERTS_FILE).groups.flatMap((g) => g.rules);
}

export interface AlertTestsFile {
  rule_files: string[];
  tests: Array<{
    name?: string;
    alert_rule_test?: Array<{
      eval_time: string;
      alertname: string;
      exp_alerts?: Array<{ exp_labels?: Record<string, string>; exp_annotations?: Record<string, string> }>;
    }>;
  }>;
}

export interface ScrapeConfig {
  job_name: string;
  authorization?: { type?: string; credentials_file?: string };
  static_configs?: Array<{ targets: string[] }>;
  [key: string]: unknown;
}

export interface PrometheusConfig {
  global?: Record<string, string>;
  rule_files?: string[];
  alerting?: unknown;
  scrape_configs: ScrapeConfig[];
}

interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { type: string; uid: string };
  targets?: Array<{ expr?: string; refId: string }>;
  panels?: Panel[];
}

export interface TemplateVariable {
  name: string;
  type: string;
  query?: string | { query: string };
}

export interface Dashboard {
  schemaVersion: number;
  panels: Panel[];
  templating: { list: TemplateVariable[] };
}

export function dashboard(): Dashboard {
  return JSON.parse(readFileSync(DASHBOARD_FILE, 'utf8')) as Dashboard;
}

/** Every panel, those inside collapsed rows included. */
export function dashboardPanels(board = dashboard()): Panel[] {
  return board.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
}

/** Every PromQL query of the dashboard's panels, as written (with Grafana's variables). */
export function dashboardQueries(board = dashboard()): Array<{ panel: string; refId: string; expr: string }> {
  return dashboardPanels(board).flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, refId: t.refId, expr: t.expr ?? '' })));
}

/**
 * A dashboard query made plain PromQL: each Grafana variable (`$name`,
 * `${name}`) replaced by its value. Throws on a variable it has no value
 * for, so a new one cannot slip by untested.
 */
export function withVariables(expr: string, values: Record<string, string>): string {
  return expr.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, braced: string | undefined, bare: string | undefined) => {
    const name = (braced ?? bare)!;
    const value = values[name];
    if (value === undefined) throw new Error(`no value for Grafana variable $${name} in ${expr}`);
    return value;
  });
}

/** The anchor GitHub gives a Markdown heading. */
export function githubAnchor(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

/** The metric names a query reads: MeshMQ's own, prom-client's defaults, and `up`. */
export function metricNames(expr: string): string[] {
  const code = expr.replace(/"[^"]*"/g, '""'); // label values are no names
  return [...new Set(code.match(/\b(?:meshmq|process|nodejs)_\w+|\bup\b(?=\s*[{)\s])/g) ?? [])];
}
