/** The Grafana dashboard's queries, read by its unit test and checked against a worker's /metrics. */
import * as fs from 'fs';
import * as path from 'path';

const ROOT = path.join(__dirname, '..', '..');

/** Metric names (without Prometheus' histogram suffixes) in the dashboard's queries. */
export function dashboardMetrics(): string[] {
  const dash = JSON.parse(fs.readFileSync(path.join(ROOT, 'docs', 'grafana', 'partflow-dashboard.json'), 'utf8'));
  const exprs: string[] = dash.panels.flatMap((p: { targets: { expr: string }[] }) => p.targets.map((t) => t.expr));
  const names = exprs.flatMap((e) => [...e.matchAll(/\b((?:partflow|temporal)_[a-z_]+)\b/g)].map((m) => m[1]));
  return [...new Set(names.map((n) => n.replace(/_(bucket|sum|count|total)$/, '')))].sort();
}
