/**
 * `npm run bench [-- --rows 2000000 --runs 3]`: how fast partflow copies and what it costs the application,
 * as ratios against baselines measured in the same process on the same data:
 *  - limit: one INSERT INTO <partitioned copy> SELECT * FROM <source>, the fastest a copy can go here;
 *  - loop: partflow's own batched page-range copy (the backfill activity) called in a plain loop, no Temporal;
 *  - partflow: the backfill phase of the real workflow (throttle off), timed from its progress;
 *  - application impact: a fixed-rate writer's p50/p99/max latency with no migration and during partflow.
 * Prints a table and writes bench-results.json. Not part of the tests; never asserts on time.
 */
import * as fs from 'fs';
import { parseArgs } from 'util';
import { Client as TemporalClient, Connection } from '@temporalio/client';
import { NativeConnection, Worker } from '@temporalio/worker';
import { Client, Pool } from 'pg';
import { createActivities } from '../activities';
import { createPool } from '../activities/db';
import { Writer, WriterSpec } from '../demo/writer';
import { createLogger } from '../src/logger';
import type { Progress } from '../workflows/definitions';

const { values: args } = parseArgs({ options: { rows: { type: 'string', default: '2000000' }, runs: { type: 'string', default: '3' }, db: { type: 'string', default: 'partflow_bench' } } });
const ROWS = Number(args.rows);
const RUNS = Number(args.runs);
const TQ = 'partflow-bench';
const line = (s: string) => process.stdout.write(s + '\n');
const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return { min: s[0], median: s[Math.floor(s.length / 2)], max: s[s.length - 1] };
};
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(s.length * p))] : 0;
};

async function main(): Promise<void> {
  const admin = new Client({ database: 'postgres' });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${args.db} WITH (FORCE)`);
  await admin.query(`CREATE DATABASE ${args.db}`);
  await admin.end();
  const conn = { host: process.env.PGHOST, port: Number(process.env.PGPORT), user: process.env.PGUSER, database: args.db };
  const url = `postgres://${conn.user}@${conn.host}:${conn.port}/${args.db}`;
  const pool = new Pool({ ...conn, max: 4 });
  line(`generating ${ROWS.toLocaleString('en-US')} rows of a generated_images-like table (uuid key, 4 secondary indexes, 14 months)`);
  await pool.query(`CREATE TABLE images (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), user_id uuid, status varchar(20) NOT NULL DEFAULT 'done',
    generation_type varchar(30) NOT NULL DEFAULT 'product', prompt text, image_url text, expires_at timestamptz, created_at timestamptz NOT NULL DEFAULT now())`);
  await pool.query(`INSERT INTO images (user_id, status, generation_type, prompt, image_url, expires_at, created_at)
    SELECT gen_random_uuid(), (ARRAY['done','failed','pending'])[1 + g % 3], (ARRAY['product','model'])[1 + g % 2], 'prompt ' || g,
           'https://cdn.example.com/' || md5(g::text) || '.png', ts + interval '6 hours', ts
      FROM (SELECT g, now() - random() * interval '14 months' AS ts FROM generate_series(1, ${ROWS}) g) s`);
  for (const sql of [
    `CREATE INDEX ON images (user_id, status) WHERE user_id IS NOT NULL`, `CREATE INDEX ON images (expires_at)`,
    `CREATE INDEX ON images (generation_type, status, created_at)`, `CREATE INDEX ON images (created_at)`,
  ]) await pool.query(sql);
  await pool.query('VACUUM ANALYZE images');

  const log = createLogger({ component: 'bench' }).child({}, { level: 'warn' });
  const actPool = createPool(url);
  const acts = createActivities({ pool: actPool, log });
  const address = process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233';
  const nconn = await NativeConnection.connect({ address });
  const worker = await Worker.create({ connection: nconn, taskQueue: TQ, workflowsPath: require.resolve('../workflows'), activities: acts });
  const running = worker.run();
  const connection = await Connection.connect({ address });
  const client = new TemporalClient({ connection });
  const spec: WriterSpec = {
    table: 'images', id: 'id', ts: 'created_at', payload: 'image_url', newIdExpr: 'gen_random_uuid()',
    insertSql: `INSERT INTO images AS t (user_id, prompt, image_url, created_at) VALUES (gen_random_uuid(), 'bench', 'x', $1)`,
  };
  const input = { table: 'images', batchSize: 5000 };

  const results: Record<string, number[]> = { limit: [], loop: [], partflow: [], peer: [], workflowTotal: [] };
  let peerError: string | null = null;
  try {
    await pool.query(`CREATE SCHEMA IF NOT EXISTS partman`);
    await pool.query(`CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman`);
  } catch (err) {
    peerError = (err as Error).message;
  }
  const latency: Record<string, number[]> = { baseline: [], during: [] };
  const maxLat: Record<string, number[]> = { baseline: [], during: [] };
  for (let r = 1; r <= RUNS; r++) {
    line(`run ${r} of ${RUNS}`);
    // limit
    const pre = await acts.preflight(input);
    await acts.claimRun(pre.plan.table);
    await acts.createShadow(pre.plan, 500);
    const cols = pre.plan.columns.map((c) => `"${c}"`).join(', ');
    let t0 = Date.now();
    await pool.query(`INSERT INTO images_pf_shadow (${cols}) SELECT ${cols} FROM images`);
    results.limit.push(Date.now() - t0);
    await acts.dropShadow(pre.plan, 500);
    // peer: pg_partman 4.7's online path, partition_data_proc moving a copy of the source into a partition set
    // with the same keys and indexes (the copy of the source is made outside the timing)
    if (!peerError) {
      await pool.query(`DROP TABLE IF EXISTS pm_src, pm_dst CASCADE`);
      await pool.query(`DELETE FROM partman.part_config WHERE parent_table = 'public.pm_dst'`);
      await pool.query(`CREATE TABLE pm_src AS SELECT * FROM images`);
      await pool.query(`ALTER TABLE pm_src ADD PRIMARY KEY (id)`);
      const srcRows = Number((await pool.query(`SELECT count(*) AS n FROM pm_src`)).rows[0].n);
      await pool.query(`CREATE TABLE pm_dst (LIKE images INCLUDING DEFAULTS) PARTITION BY RANGE (created_at)`);
      for (const sql of [`ALTER TABLE pm_dst ADD PRIMARY KEY (id, created_at)`, `CREATE INDEX ON pm_dst (user_id, status) WHERE user_id IS NOT NULL`, `CREATE INDEX ON pm_dst (expires_at)`,
        `CREATE INDEX ON pm_dst (generation_type, status, created_at)`, `CREATE INDEX ON pm_dst (created_at)`]) await pool.query(sql);
      await pool.query(`SELECT partman.create_parent('public.pm_dst', 'created_at', 'native', 'monthly', p_premake := 3, p_start_partition := (date_trunc('month', (SELECT min(created_at) FROM pm_src)))::text)`);
      t0 = Date.now();
      await pool.query(`CALL partman.partition_data_proc('public.pm_dst', p_wait := 0, p_source_table := 'public.pm_src', p_quiet := true)`);
      results.peer.push(Date.now() - t0);
      const moved = Number((await pool.query(`SELECT count(*) AS n FROM pm_dst`)).rows[0].n);
      if (moved !== srcRows) throw new Error(`pg_partman moved ${moved} rows, expected ${srcRows}`);
      await pool.query(`DROP TABLE pm_src, pm_dst CASCADE`);
      await pool.query(`DELETE FROM partman.part_config WHERE parent_table = 'public.pm_dst'`);
    }
    // loop: partflow's backfill activity, no Temporal
    await acts.createShadow(pre.plan, 500);
    await acts.installSyncTrigger(pre.plan, 500);
    t0 = Date.now();
    for (;;) {
      const c = await acts.backfillChunk({ table: pre.plan.table, copyMode: pre.plan.copyMode, sql: pre.plan.sql, batchSize: 5000, sleepMs: 0, maxMs: 3000 });
      if (c.done) break;
    }
    results.loop.push(Date.now() - t0);
    await acts.dropSyncTrigger(pre.plan, 500);
    await acts.dropShadow(pre.plan, 500);
    await acts.releaseRun(pre.plan.table, 'rolled-back');
    // application baseline: the same writer, no migration, 20 s
    const base = new Writer(spec, conn, { lanes: 4, opsPerSecondPerLane: 25, snapshot: false, seed: r });
    await base.start();
    await new Promise((res) => setTimeout(res, 20_000));
    const bs = await base.stop();
    latency.baseline.push(bs.p99LatencyMs);
    maxLat.baseline.push(bs.maxLatencyMs);
    // partflow, with the writer running; rolled back at the approval gate so the next run starts alike
    const during = new Writer(spec, conn, { lanes: 4, opsPerSecondPerLane: 25, snapshot: false, seed: 100 + r });
    await during.start();
    const h = await client.workflow.start('partitionTable', { taskQueue: TQ, workflowId: `bench-${Date.now()}`, args: [{ ...input, approval: 'signal' }] });
    const wStart = Date.now();
    let bStart = 0;
    let bEnd = 0;
    for (;;) {
      const p = await h.query<Progress>('progress').catch(() => null);
      if (p?.phase === 'backfill' && !bStart) bStart = Date.now();
      if (bStart && !bEnd && p && p.phase !== 'backfill') bEnd = Date.now();
      if (p?.awaitingApproval) break;
      await new Promise((res) => setTimeout(res, 50));
    }
    results.partflow.push(bEnd - bStart);
    results.workflowTotal.push(Date.now() - wStart);
    const ds = await during.stop();
    latency.during.push(ds.p99LatencyMs);
    maxLat.during.push(ds.maxLatencyMs);
    await h.signal('rollback');
    await h.result();
  }
  const limit = stats(results.limit).median;
  const rps = (ms: number) => Math.round(ROWS / (ms / 1000));
  const ratio = (xs: number[]) => stats(xs.map((x) => limit / x));
  const table = [
    ['limit: INSERT ... SELECT', stats(results.limit), ratio(results.limit)],
    ['loop: partflow copy, no Temporal', stats(results.loop), ratio(results.loop)],
    ['partflow: backfill phase of the workflow', stats(results.partflow), ratio(results.partflow)],
    ...(results.peer.length ? [['peer: pg_partman partition_data_proc', stats(results.peer), ratio(results.peer)] as const] : []),
  ] as const;
  line('');
  line(`${'copy'.padEnd(42)} ${'ms (min/median/max)'.padEnd(24)} ${'rows/s (median)'.padEnd(16)} speed vs limit (min/median/max)`);
  for (const [name, ms, rt] of table) {
    line(`${name.padEnd(42)} ${`${ms.min}/${ms.median}/${ms.max}`.padEnd(24)} ${String(rps(ms.median)).padEnd(16)} ${rt.min.toFixed(2)}/${rt.median.toFixed(2)}/${rt.max.toFixed(2)}`);
  }
  const overhead = stats(results.partflow.map((p, i) => p / results.loop[i] - 1));
  line(`orchestration overhead (partflow backfill / plain loop - 1): ${(overhead.min * 100).toFixed(1)}% / ${(overhead.median * 100).toFixed(1)}% / ${(overhead.max * 100).toFixed(1)}%`);
  const p99 = stats(latency.during.map((d, i) => d / Math.max(1, latency.baseline[i])));
  line(`writer p99 latency during the run / without migration: ${p99.min.toFixed(2)}/${p99.median.toFixed(2)}/${p99.max.toFixed(2)} (baseline p99 ${stats(latency.baseline).median} ms, during ${stats(latency.during).median} ms)`);
  line(`longest single write during the run: ${stats(maxLat.during).max} ms (baseline ${stats(maxLat.baseline).max} ms)`);
  line('whole workflow to the approval gate (ms): ' + JSON.stringify(stats(results.workflowTotal)));
  if (peerError) line(`peer (pg_partman partition_data_proc) not measured: ${peerError}`);
  fs.writeFileSync('bench-results.json', JSON.stringify({ rows: ROWS, runs: RUNS, results, latency, maxLatency: maxLat, peerError }, null, 2));
  worker.shutdown();
  await running;
  await connection.close();
  await actPool.end();
  await pool.end();
}

main().catch((err) => {
  process.stderr.write(`bench failed: ${err?.stack ?? err}\n`);
  process.exit(1);
});
