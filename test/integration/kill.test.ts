/**
 * A worker process SIGKILLed in the middle of the backfill, with writers running: a new worker resumes
 * from the checkpoint committed with the last batch, and the result matches the writers' record.
 * Uses the compiled worker (dist/), as an operator runs it.
 */
import { dashboardMetrics } from '../helpers/dashboard';
import type { ChildProcess } from 'child_process';
import * as os from 'os';
import * as path from 'path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Client } from 'pg';
import { compareWithRecord, Writer } from '../../demo/writer';
import { writeBundle } from '../../worker/bundle';
import { createTestDb, TestDb } from '../helpers/pg';
import { createTable } from '../helpers/tables';
import { startDevServer } from '../helpers/temporal';
import { waitFor } from '../helpers/workflow';
import { spawnWorker } from '../helpers/worker';

const TQ = 'partflow-kill';
let env: TestWorkflowEnvironment;
let db: TestDb;
const procs: ChildProcess[] = [];

const METRICS = `127.0.0.1:${19000 + (process.pid % 500)}`;
const logLines: string[] = [];

function startWorker(address: string, bundle?: string): ChildProcess {
  const p = spawnWorker(
    {
      ...(bundle ? { PARTFLOW_WORKFLOW_BUNDLE: bundle } : {}),
      TEMPORAL_ADDRESS: address,
      PARTFLOW_TASK_QUEUE: TQ,
      DATABASE_URL: db.url,
      PARTFLOW_LOG_LEVEL: 'info',
      PARTFLOW_LOG_JSON: '1',
      PARTFLOW_METRICS_ADDRESS: METRICS,
    },
    'pipe',
  );
  let buf = '';
  p.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    const lines = buf.split('\n');
    buf = lines.pop()!;
    logLines.push(...lines);
  });
  procs.push(p);
  return p;
}

beforeAll(async () => {
  db = await createTestDb('kill');
  env = await startDevServer();
});
afterAll(async () => {
  for (const p of procs) p.kill('SIGKILL');
  await env?.teardown();
  await db?.drop();
});

test('SIGKILL mid-backfill: the next worker resumes from the checkpoint; nothing lost or duplicated', async () => {
  const t = await createTable(db.pool, { schema: 'public', name: 'killed' }, 30_000, 'bigserial');
  const w = new Writer(t.spec, db.conn, { lanes: 4, opsPerSecondPerLane: 40, snapshot: true });
  await w.start();
  const address = env.address;
  const first = startWorker(address);
  const h = await env.client.workflow.start('partitionTable', {
    taskQueue: TQ,
    workflowId: `kill-${Date.now()}`,
    args: [{ table: 'killed', batchSize: 200, sleepMs: 30, approval: 'auto', rollbackWindow: '0s' }],
  });
  const p = await waitFor(h, (x) => x.phase === 'backfill' && x.checkpointPage > 5, 'backfill under way', 60_000);
  expect(p.checkpointPage).toBeLessThan(p.totalPages);
  first.kill('SIGKILL');
  await new Promise((r) => first.once('exit', r));
  const atKill = Number(
    (await db.pool.query(`SELECT next_page FROM partflow.runs WHERE table_name = 'killed'`)).rows[0].next_page,
  );
  expect(atKill).toBeGreaterThan(0);
  await new Promise((r) => setTimeout(r, 1500));
  // nothing moves while no worker runs
  expect(
    Number((await db.pool.query(`SELECT next_page FROM partflow.runs WHERE table_name = 'killed'`)).rows[0].next_page),
  ).toBe(atKill);
  // the second worker runs from a bundle built ahead of time, as the Docker image does
  const bundle = path.join(os.tmpdir(), `pf-kill-bundle-${process.pid}.js`);
  await writeBundle(bundle);
  startWorker(address, bundle);
  const result = await h.result();
  const stats = await w.stop();
  expect(result.status).toBe('done');
  expect({ errors: stats.errors, samples: stats.errorSamples }).toEqual({ errors: 0, samples: [] });
  const c = new Client(db.conn);
  await c.connect();
  const cmp = await compareWithRecord(c, t.spec, w.record);
  await c.end();
  expect({ missing: cmp.missing, extra: cmp.extra, different: cmp.different }).toEqual({
    missing: 0,
    extra: 0,
    different: 0,
  });
  expect(cmp.tableChecksum).toBe(cmp.recordChecksum);
  // the checkpoint reached the end exactly once: pages after the kill continued from where it stood
  const run = await db.pool.query(`SELECT next_page, total_pages FROM partflow.runs WHERE table_name = 'killed'`);
  expect(Number(run.rows[0].next_page)).toBe(Number(run.rows[0].total_pages));

  // the worker's own evidence: JSON log lines that carry the workflow, table and step, and /metrics
  const parsed = logLines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
  expect(
    parsed.some(
      (l) =>
        l.step === 'cutover' && l.table === 'public.killed' && l.workflowId === h.workflowId && l.msg === 'cut over',
    ),
  ).toBe(true);
  expect(
    parsed.some(
      (l) =>
        l.source === 'temporal-sdk' &&
        l.workflowId === h.workflowId &&
        l.table === 'public.killed' &&
        l.phase === 'cutover',
    ),
  ).toBe(true);
  const body = await (await fetch(`http://${METRICS}/metrics`)).text();
  const copied = /^partflow_rows_copied\{[^}]*table="public\.killed"[^}]*\} (\d+)/m.exec(body);
  expect(copied).not.toBeNull();
  expect(Number(copied![1])).toBeGreaterThan(0); // rows this second worker copied after the kill
  expect(body).toMatch(/^partflow_batch_duration_bucket\{/m);
  expect(body).toMatch(/^temporal_activity_execution_latency/m);
  // the Grafana dashboard (docs/grafana) against what this worker really serves: every partflow metric served
  // is on it, and what it shows of a partitionTable run is served under the names it queries
  const served = [...body.matchAll(/^((?:partflow|temporal)_[a-z_]+)[{ ]/gm)].map((m) => m[1]);
  const shown = dashboardMetrics();
  const base = (n: string) => n.replace(/_(bucket|sum|count|total)$/, '');
  expect(
    [...new Set(served.filter((n) => n.startsWith('partflow_')).map(base))].filter((n) => !shown.includes(n)),
  ).toEqual([]);
  for (const n of ['partflow_rows_copied', 'partflow_batch_duration', 'temporal_activity_execution_latency'])
    expect({ n, shown: shown.includes(n), served: served.map(base).includes(n) }).toEqual({
      n,
      shown: true,
      served: true,
    });
});
