/**
 * partitionTable on a production-shaped Temporal: Temporal Server itself (scripts/temporal-server.sh: built
 * from its Go module, persistence and visibility in PostgreSQL), three worker processes (dist/) on one task
 * queue, writers running. The worker that runs the backfill is SIGKILLed, then the Temporal server is killed
 * and started again mid-run; the conversion ends exact. `npm run test:production` starts the server first.
 */
import { ChildProcess, execFileSync } from 'child_process';
import * as path from 'path';
import { Client as TemporalClient, Connection } from '@temporalio/client';
import { Client } from 'pg';
import { compareWithRecord, Writer } from '../../demo/writer';
import { createTestDb, TestDb } from '../helpers/pg';
import { createTable } from '../helpers/tables';
import { waitFor } from '../helpers/workflow';
import { spawnWorker } from '../helpers/worker';

const ROOT = path.join(__dirname, '..', '..');
const ADDRESS = `127.0.0.1:${process.env.PARTFLOW_TEMPORAL_SERVER_PORT ?? 7333}`;
const TQ = 'partflow-production';
let db: TestDb;
let connection: Connection;
let client: TemporalClient;
const workers = new Map<number, ChildProcess>();

function startWorker(n: number): ChildProcess {
  const p = spawnWorker(
    {
      TEMPORAL_ADDRESS: ADDRESS,
      PARTFLOW_TASK_QUEUE: TQ,
      DATABASE_URL: db.url,
      PARTFLOW_LOG_LEVEL: 'warn',
      PARTFLOW_METRICS_ADDRESS: `127.0.0.1:${19600 + n}`,
    },
    'ignore',
  );
  workers.set(p.pid!, p);
  return p;
}

const server = (verb: 'start' | 'stop' | 'kill') =>
  execFileSync('bash', [path.join(ROOT, 'scripts', 'temporal-server.sh'), verb], { stdio: 'inherit' });

beforeAll(async () => {
  db = await createTestDb('production');
  connection = await Connection.connect({ address: ADDRESS });
  client = new TemporalClient({ connection });
});

afterAll(async () => {
  for (const p of workers.values()) p.kill('SIGKILL');
  try {
    await connection?.close();
    await db?.drop();
  } finally {
    // stopped, not left to outlive the run with a pid file that a later process may come to own
    server('stop');
  }
});

test('three workers on Temporal Server with PostgreSQL: the backfill worker killed, the server restarted, exact', async () => {
  const t = await createTable(db.pool, { schema: 'public', name: 'prod' }, 60_000, 'bigserial');
  const w = new Writer(t.spec, db.conn, { lanes: 4, opsPerSecondPerLane: 40, snapshot: true });
  await w.start();
  for (const n of [1, 2, 3]) startWorker(n);
  const h = await client.workflow.start('partitionTable', {
    taskQueue: TQ,
    workflowId: `production-${Date.now()}`,
    args: [{ table: 'prod', batchSize: 200, sleepMs: 20, approval: 'auto', rollbackWindow: '0s' }],
  });
  await waitFor(h, (x) => x.phase === 'backfill' && x.checkpointPage > 5, 'backfill under way', 120_000);

  // the worker running the backfill, by the identity Temporal records for the pending activity (pid@host)
  const pending = (await h.describe()).raw.pendingActivities ?? [];
  const identity =
    pending.find((a) => ['backfillChunk', 'copyChunk'].includes(a.activityType?.name ?? ''))?.lastWorkerIdentity ?? '';
  const pid = Number(identity.split('@')[0]);
  expect(workers.has(pid)).toBe(true);
  workers.get(pid)!.kill('SIGKILL');
  workers.delete(pid);
  const afterKill = await waitFor(h, (x) => x.checkpointPage > 0, 'progress after the kill', 60_000);

  // the server itself dies mid-run and comes back (its state is in PostgreSQL)
  server('kill');
  await new Promise((r) => setTimeout(r, 2000));
  server('start');
  await waitFor(h, (x) => x.checkpointPage > afterKill.checkpointPage, 'progress after the restart', 120_000);

  const result = await h.result();
  const stats = await w.stop();
  expect(result.status).toBe('done');
  expect({ errors: stats.errors, samples: stats.errorSamples }).toEqual({ errors: 0, samples: [] });
  const c = new Client(db.conn);
  await c.connect();
  const cmp = await compareWithRecord(c, t.spec, w.record);
  const kind = (await c.query(`SELECT relkind FROM pg_class WHERE oid = 'public.prod'::regclass`)).rows[0].relkind;
  await c.end();
  expect({ kind, missing: cmp.missing, extra: cmp.extra, different: cmp.different }).toEqual({
    kind: 'p',
    missing: 0,
    extra: 0,
    different: 0,
  });
  expect(cmp.tableChecksum).toBe(cmp.recordChecksum);
});
