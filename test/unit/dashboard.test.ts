/** docs/grafana/partflow-dashboard.json asks only for metrics partflow defines, and shows every one of them. */
import * as fs from 'fs';
import * as path from 'path';
import { dashboardMetrics } from '../helpers/dashboard';

const ROOT = path.join(__dirname, '..', '..');

test('every partflow metric the dashboard queries is one the worker defines, and each defined one is shown', () => {
  const src = fs.readFileSync(path.join(ROOT, 'activities', 'runtime', 'metrics.ts'), 'utf8');
  const defined = [...src.matchAll(/'(partflow_[a-z_]+)'/g)].map((m) => m[1]).sort();
  expect(defined.length).toBeGreaterThanOrEqual(10);
  expect(dashboardMetrics().filter((n) => n.startsWith('partflow_'))).toEqual(defined);
});

test('the dashboard is importable: unique panel ids, a Prometheus datasource variable, every panel queries', () => {
  const dash = JSON.parse(fs.readFileSync(path.join(ROOT, 'docs', 'grafana', 'partflow-dashboard.json'), 'utf8'));
  const ids = dash.panels.map((p: { id: number }) => p.id);
  expect(new Set(ids).size).toBe(ids.length);
  expect(dash.templating.list[0]).toMatchObject({ name: 'datasource', type: 'datasource', query: 'prometheus' });
  for (const p of dash.panels) expect(p.targets.length).toBeGreaterThan(0);
});
