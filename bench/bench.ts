/**
 * `npm run bench [-- --rows 2000000 --runs 3 --rate 200 --batch-size 5000 --max-batch-ms 50 --parallelism 2
 * --skip peer,loop,impact]`: how fast partflow copies and what it costs the application,
 * as ratios against baselines measured in the same process on the same data:
 *  - limit: one INSERT INTO <partitioned copy> SELECT * FROM <source>, the fastest a copy can go here;
 *  - loop: partflow's own batched page-range copy (the backfill activity) called in a plain loop, no Temporal;
 *  - partflow: the backfill phase of the real workflow (throttle off), timed from its history, with one stream
 *    and with `--parallelism` streams; with its scale figures: rows/s over each million rows copied, this
 *    process's peak RSS (the worker runs in it), the history's events and bytes, the verification's time and
 *    longest snapshot;
 *  - peer: pg_partman 4.7's partition_data_proc moving the same rows;
 *  - application impact: a fixed-rate pgbench write workload (custom insert/update/delete scripts, -R, per-
 *    transaction logs) with no migration, then for a whole partflow run with writes: p50/p99 during the
 *    backfill, the longest stall during the cut-over, during the rollback swap and over the whole run, and
 *    failed transactions.
 * Every timed copy starts after a CHECKPOINT so that no contestant pays for another's dirty buffers.
 * Prints a table and writes bench-results.json. Not part of the tests; never asserts on time.
 */
import * as fs from 'fs';
import { parseArgs } from 'util';
import { sleep } from '../activities/runtime/db';
import {
  benchWorker,
  createImages,
  freshDatabase,
  historySpans,
  pct,
  PgBench,
  historySize,
  peakRss,
  ratePerMillion,
  SECONDARY_INDEXES,
  stats,
} from './common';
import type { Progress } from '../workflows/definitions';
import { backfillSql } from '../src/plan';

const { values: args } = parseArgs({
  options: {
    rows: { type: 'string', default: '2000000' },
    runs: { type: 'string' },
    rate: { type: 'string', default: '200' },
    'batch-size': { type: 'string', default: '5000' },
    'max-batch-ms': { type: 'string', default: '50' },
    order: { type: 'string', default: 'time' },
    db: { type: 'string', default: 'partflow_bench' },
    parallelism: { type: 'string', default: '2' },
    skip: { type: 'string' },
  },
});
const ROWS = Number(args.rows);
// from 10 million rows on, one run without the peer, the plain loop and the pgbench run (hours otherwise)
const BIG = ROWS >= 10_000_000;
const RUNS = Number(args.runs ?? (BIG ? 1 : 3));
const SKIP = new Set((args.skip ?? (BIG ? 'peer,loop,impact' : '')).split(',').filter(Boolean));
const PARALLELISM = Number(args.parallelism);
const RATE = Number(args.rate);
const TQ = 'partflow-bench';
const mmm = (x: { min: number; median: number; max: number }, f: (n: number) => string = String) =>
  `${f(x.min)}/${f(x.median)}/${f(x.max)}`;

/** One workflow run's scale figures (bench-results.json's `scale`). */
interface ScaleRow {
  run: number;
  parallelism: number;
  backfillMs: number;
  rowsPerSecondPerMillion: number[];
  peakRssMb: number;
  walBytes: number;
  tableBytes: number;
  history: { runs: number; events: number; bytes: number; totalEvents: number; totalBytes: number };
  verify: Progress['verify'];
}
const line = (s: string) => process.stdout.write(s + '\n');

async function main(): Promise<void> {
  const { conn, url, pool } = await freshDatabase(args.db);
  if (args.order !== 'time' && args.order !== 'random')
    throw new Error('--order takes "time" (rows appended in time order, as an application writes them) or "random".');
  line(
    `generating ${ROWS.toLocaleString('en-US')} rows of a generated_images-like table (uuid key, 4 secondary indexes, 14 months, ${args.order === 'time' ? 'appended in time order with a day of jitter' : 'in random time order'})`,
  );
  await createImages(pool, ROWS, args.order);

  const { acts, client, stop } = await benchWorker(url, TQ);
  const sizes = (await pool.query(`SELECT pg_total_relation_size('images')::bigint AS total`)).rows[0];
  const input = { table: 'images', batchSize: Number(args['batch-size']), maxBatchMs: Number(args['max-batch-ms']) };
  const pgbench = new PgBench(conn, ROWS, RATE);

  const results: Record<string, number[]> = {
    limit: [],
    loop: [],
    partflow: [],
    peer: [],
    workflowToGate: [],
    partflowUnderLoad: [],
    partflowUnderLoadUnbounded: [],
    workflowUnderLoad: [],
    partflowParallel: [],
  };
  const scale: ScaleRow[] = [];
  let peerError: string | null = null;
  try {
    await pool.query(`CREATE SCHEMA IF NOT EXISTS partman`);
    await pool.query(`CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman`);
  } catch (err) {
    peerError = (err as Error).message;
  }
  const impact: Record<string, number[]> = {
    baseP50: [],
    baseP99: [],
    baseMax: [],
    syncP99: [],
    syncMax: [],
    fillP50: [],
    fillP99: [],
    fillMax: [],
    unboundedP99: [],
    cutoverMax: [],
    rollbackMax: [],
    runMax: [],
    failed: [],
    transactions: [],
  };
  const checkpoint = () => pool.query('CHECKPOINT');
  // Phases are timed from the workflow's own history (activity scheduled → completed), not by polling the
  // query, which would itself load the worker; the query is polled twice a second only to know when to act.
  const startAndWatch = async (args: Record<string, unknown>, until: (p: Progress) => boolean) => {
    const h = await client.workflow.start('partitionTable', {
      taskQueue: TQ,
      workflowId: `bench-${Date.now()}`,
      args: [args],
    });
    const started = Date.now();
    for (;;) {
      const p = await h.query<Progress>('progress').catch(() => null);
      if (p && until(p)) break;
      await sleep(500);
    }
    return { h, started };
  };
  const spans = historySpans;
  for (let r = 1; r <= RUNS; r++) {
    line(`run ${r} of ${RUNS}`);
    // limit
    const pre = await acts.preflight(input);
    await acts.claimRun(pre.plan.table, pre.plan);
    await acts.createShadow(pre.plan, 500);
    const cols = pre.plan.columns.map((c) => `"${c}"`).join(', ');
    await checkpoint();
    let t0 = Date.now();
    await pool.query(`INSERT INTO images_pf_shadow (${cols}) SELECT ${cols} FROM images`);
    results.limit.push(Date.now() - t0);
    line(`  limit ${results.limit.at(-1)} ms`);
    // the copy goes with the plan's own statements: the run stays active for the loop below (dropShadow is an
    // undo step, fenced: it acts only on a run being undone)
    for (const sql of pre.plan.sql.dropShadow) await pool.query(sql);
    // peer: pg_partman 4.7's online path, partition_data_proc moving a copy of the source into a partition set
    // with the same keys and indexes (the copy of the source is made outside the timing)
    if (!peerError && !SKIP.has('peer')) {
      await pool.query(`DROP TABLE IF EXISTS pm_src, pm_dst CASCADE`);
      await pool.query(`DELETE FROM partman.part_config WHERE parent_table = 'public.pm_dst'`);
      await pool.query(`CREATE TABLE pm_src AS SELECT * FROM images`);
      await pool.query(`ALTER TABLE pm_src ADD PRIMARY KEY (id)`);
      const srcRows = Number((await pool.query(`SELECT count(*) AS n FROM pm_src`)).rows[0].n);
      await pool.query(`CREATE TABLE pm_dst (LIKE images INCLUDING DEFAULTS) PARTITION BY RANGE (created_at)`);
      await pool.query(`ALTER TABLE pm_dst ADD PRIMARY KEY (id, created_at)`);
      for (const idx of SECONDARY_INDEXES) await pool.query(`CREATE INDEX ON pm_dst ${idx}`);
      await pool.query(
        `SELECT partman.create_parent('public.pm_dst', 'created_at', 'native', 'monthly', p_premake := 3, p_start_partition := (date_trunc('month', (SELECT min(created_at) FROM pm_src)))::text)`,
      );
      await checkpoint();
      t0 = Date.now();
      await pool.query(
        `CALL partman.partition_data_proc('public.pm_dst', p_wait := 0, p_source_table := 'public.pm_src', p_quiet := true)`,
      );
      results.peer.push(Date.now() - t0);
      line(`  peer ${results.peer.at(-1)} ms`);
      const moved = Number((await pool.query(`SELECT count(*) AS n FROM pm_dst`)).rows[0].n);
      if (moved !== srcRows) throw new Error(`pg_partman moved ${moved} rows, expected ${srcRows}`);
      await pool.query(`DROP TABLE pm_src, pm_dst CASCADE`);
      await pool.query(`DELETE FROM partman.part_config WHERE parent_table = 'public.pm_dst'`);
    }
    // loop: partflow's backfill activity, no Temporal
    if (!SKIP.has('loop')) {
      await acts.createShadow(pre.plan, 500);
      await acts.installSyncTrigger(pre.plan, 500);
      await checkpoint();
      t0 = Date.now();
      for (;;) {
        const c = await acts.backfillChunk({
          table: pre.plan.table,
          copyMode: pre.plan.copyMode,
          sql: backfillSql(pre.plan),
          batchSize: input.batchSize,
          sleepMs: 0,
          maxMs: 3000,
          maxBatchMs: input.maxBatchMs,
        });
        if (c.done) break;
      }
      results.loop.push(Date.now() - t0);
      line(`  loop ${results.loop.at(-1)} ms`);
      await acts.beginUndo(pre.plan.table);
      await acts.dropSyncTrigger(pre.plan, 500);
      await acts.dropShadow(pre.plan, 500);
      await acts.releaseRun(pre.plan.table, 'rolled-back');
    } else await acts.releaseRun(pre.plan.table, 'rolled-back');
    // partflow alone: the workflow with no writers, up to the approval gate, then rolled back; with one
    // stream and with --parallelism streams
    for (const parallelism of [...new Set([1, PARALLELISM])]) {
      await checkpoint();
      const wal0 = (await pool.query('SELECT pg_current_wal_lsn() AS l')).rows[0].l;
      const { result: w, peakMb } = await peakRss(() =>
        startAndWatch({ ...input, parallelism, approval: 'signal' }, (p) => p.awaitingApproval),
      );
      const gate = Date.now();
      const [a, b] = (await spans(w.h))('copyChunk');
      (parallelism === 1 ? results.partflow : results.partflowParallel).push(Math.round(b - a));
      if (parallelism === 1) results.workflowToGate.push(gate - w.started);
      const p = await w.h.query<Progress>('progress');
      const wal = (await pool.query('SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1)::bigint AS d', [wal0])).rows[0];
      const size = await historySize(client, w.h.workflowId, w.h.firstExecutionRunId);
      const perMillion = ratePerMillion(a, size.copied);
      const { copied, ...history } = size;
      void copied;
      scale.push({
        run: r,
        parallelism,
        backfillMs: Math.round(b - a),
        rowsPerSecondPerMillion: perMillion,
        peakRssMb: peakMb,
        walBytes: Number(wal.d),
        tableBytes: Number(sizes.total),
        history,
        verify: p.verify,
      });
      line(
        `  partflow backfill, parallelism ${parallelism}: ${Math.round(b - a)} ms; to the approval gate ${gate - w.started} ms; ` +
          `WAL ${(Number(wal.d) / 2 ** 30).toFixed(2)} GiB (table with indexes ${(Number(sizes.total) / 2 ** 30).toFixed(2)} GiB); peak RSS ${peakMb} MB; history ${history.events} events, ${(history.bytes / 1024).toFixed(0)} KiB in ${history.runs} run(s); ` +
          `verification ${p.verify?.elapsedMs} ms in ${p.verify?.chunks} chunks, longest snapshot ${p.verify?.longestSnapshotMs} ms`,
      );
      if (perMillion.length) line(`    rows/s over each million copied: ${perMillion.join(' ')}`);
      await w.h.signal('rollback');
      await w.h.result();
    }
    if (SKIP.has('impact')) continue;
    // application impact: pgbench at a fixed rate, first with no migration, then for a whole run with
    // cut-over and a rollback (so that the next run starts from the same table)
    await checkpoint();
    const base = await pgbench.run(() => sleep(20_000));
    impact.baseP50.push(pct(base.latencies, 0.5));
    impact.baseP99.push(pct(base.latencies, 0.99));
    impact.baseMax.push(Math.max(...base.latencies));
    let windows = { sync: [0, 0], fill: [0, 0], cutover: [0, 0], rollback: [0, 0], run: [0, 0] };
    const load = await pgbench.run(async () => {
      await sleep(3000);
      // the sync alone: the run paused before its copy begins, 10 s with the key log's trigger and no copy
      const w = await startAndWatch({ ...input, approval: 'auto', rollbackWindow: '1h' }, () => true);
      await w.h.signal('pause');
      for (;;) {
        const p = await w.h.query<Progress>('progress');
        if (p.phase === 'backfill' && p.paused) break;
        if (p.phase !== 'preflight' && p.phase !== 'shadow' && p.phase !== 'sync' && p.phase !== 'backfill')
          throw new Error(`the run went past the copy before the pause: ${p.phase}`);
        await sleep(200);
      }
      const syncFrom = Date.now();
      await sleep(10_000);
      windows.sync = [syncFrom, Date.now()];
      await w.h.signal('resume');
      for (;;) {
        const p = await w.h.query<Progress>('progress');
        if (p.phase === 'rollback-window') break;
        await sleep(500);
      }
      await sleep(3000);
      const rb = Date.now();
      await w.h.signal('rollback');
      await w.h.result();
      const end = Date.now();
      const span = await spans(w.h);
      const [fill, cut, swap] = [span('copyChunk'), span('cutover'), span('swapBack')];
      windows = {
        sync: windows.sync,
        fill: [Math.max(fill[0], windows.sync[1]), fill[1]],
        cutover: cut,
        rollback: [Math.min(rb, swap[0]), swap[1]],
        run: [w.started, end],
      };
      results.partflowUnderLoad.push(Math.round(fill[1] - fill[0]));
      results.workflowUnderLoad.push(Math.round(cut[1] - w.started));
      await sleep(3000);
    });
    const within = ([a, b]: number[]) => load.tx.filter((t) => t.startMs < b && t.endMs > a).map((t) => t.latencyMs);
    impact.syncP99.push(pct(within(windows.sync), 0.99));
    impact.syncMax.push(Math.max(0, ...within(windows.sync)));
    impact.fillP50.push(pct(within(windows.fill), 0.5));
    impact.fillP99.push(pct(within(windows.fill), 0.99));
    impact.fillMax.push(Math.max(0, ...within(windows.fill)));
    impact.cutoverMax.push(Math.max(0, ...within(windows.cutover)));
    impact.rollbackMax.push(Math.max(0, ...within(windows.rollback)));
    impact.runMax.push(Math.max(0, ...within(windows.run)));
    impact.failed.push(base.failed + load.failed);
    impact.transactions.push(base.latencies.length + load.tx.length);
    line(
      `  pgbench: baseline p99 ${impact.baseP99.at(-1)} ms; sync only p99 ${impact.syncP99.at(-1)} ms; backfill p99 ${impact.fillP99.at(-1)} ms; cut-over max ${impact.cutoverMax.at(-1)} ms; run max ${impact.runMax.at(-1)} ms; failed ${base.failed + load.failed}`,
    );
    // the same copy without the application-latency bound: its rate, and what the application paid for it
    let unbounded = [0, 0];
    const free = await pgbench.run(async () => {
      await sleep(2000);
      const w = await startAndWatch(
        { ...input, approval: 'signal', maxAppLatencyRatio: null },
        (p) => p.awaitingApproval,
      );
      unbounded = (await spans(w.h))('copyChunk');
      results.partflowUnderLoadUnbounded.push(Math.round(unbounded[1] - unbounded[0]));
      await w.h.signal('rollback');
      await w.h.result();
    });
    impact.unboundedP99.push(
      pct(
        free.tx.filter((t) => t.startMs < unbounded[1] && t.endMs > unbounded[0]).map((t) => t.latencyMs),
        0.99,
      ),
    );
    impact.failed[impact.failed.length - 1] = (impact.failed.at(-1) ?? 0) + free.failed;
  }
  const limit = stats(results.limit).median;
  const rps = (ms: number) => Math.round(ROWS / (ms / 1000));
  const ratio = (xs: number[]) => stats(xs.map((x) => limit / x));
  const f2 = (x: number) => x.toFixed(2);
  const table = [
    ['limit: INSERT ... SELECT', results.limit],
    ['peer: pg_partman partition_data_proc', results.peer],
    ['loop: partflow copy, no Temporal', results.loop],
    ['partflow: backfill phase of the workflow', results.partflow],
    [`partflow: backfill, parallelism ${PARALLELISM}`, results.partflowParallel],
    ['partflow: backfill, pgbench writing', results.partflowUnderLoad],
  ].filter(([, xs]) => (xs as number[]).length) as [string, number[]][];
  line('');
  line(
    `${ROWS.toLocaleString('en-US')} rows (${args.order} order), ${RUNS} runs, batchSize ${input.batchSize}, maxBatchMs ${input.maxBatchMs}; figures are min/median/max over the runs`,
  );
  line(`${'copy'.padEnd(42)} ${'ms'.padEnd(22)} ${'rows/s (median)'.padEnd(16)} speed vs limit   target`);
  for (const [name, xs] of table) {
    const target = name.startsWith('partflow: backfill phase')
      ? '>= 0.90'
      : name.includes('parallelism') && PARALLELISM === 2
        ? '>= 1.40'
        : '';
    line(
      `${name.padEnd(42)} ${mmm(stats(xs)).padEnd(22)} ${String(rps(stats(xs).median)).padEnd(16)} ${mmm(ratio(xs), f2).padEnd(16)} ${target}`,
    );
  }
  if (results.loop.length) {
    const overhead = stats(results.partflow.map((p, i) => p / results.loop[i] - 1));
    line(
      `orchestration overhead (partflow backfill / plain loop - 1): ${mmm(overhead, (x) => `${(x * 100).toFixed(1)}%`)}   target <= 5%`,
    );
  }
  line(`whole workflow, no writers, start to approval gate (ms): ${mmm(stats(results.workflowToGate))}`);
  if (SKIP.size) line(`skipped: ${[...SKIP].join(', ')} (--skip; from 10 million rows on by default)`);
  scaleReport(scale);
  const json = { rows: ROWS, runs: RUNS, rate: RATE, order: args.order, input, results, impact, peerError, scale };
  if (SKIP.has('impact')) {
    fs.writeFileSync('bench-results.json', JSON.stringify(json, null, 2));
    await stop();
    await pool.end();
    return;
  }
  line(`whole workflow, pgbench writing, start to cut-over done (ms): ${mmm(stats(results.workflowUnderLoad))}`);
  line('');
  line(
    `application impact: pgbench -c 4 -R ${RATE} (insert 5 : update 4 : delete 1), latency from the scheduled start`,
  );
  const rel = (a: number[], b: number[]) => stats(a.map((x, i) => x / Math.max(0.001, b[i])));
  line(
    `  p50 no migration ${mmm(stats(impact.baseP50), f2)} ms; during the backfill ${mmm(stats(impact.fillP50), f2)} ms; ratio ${mmm(rel(impact.fillP50, impact.baseP50), f2)}`,
  );
  line(`  p99 no migration ${mmm(stats(impact.baseP99), f2)} ms (max ${mmm(stats(impact.baseMax), f2)} ms)`);
  line(
    `  p99 sync only (copy paused) ${mmm(stats(impact.syncP99), f2)} ms (max ${mmm(stats(impact.syncMax), f2)} ms); ratio ${mmm(rel(impact.syncP99, impact.baseP99), f2)}   target <= 1.2`,
  );
  line(
    `  p99 during the copy (default maxAppLatencyRatio 1.5) ${mmm(stats(impact.fillP99), f2)} ms (max ${mmm(stats(impact.fillMax), f2)} ms); ratio ${mmm(rel(impact.fillP99, impact.baseP99), f2)}   target <= 1.5 (goal 1.2)`,
  );
  line(
    `  p99 during the copy without the bound ${mmm(stats(impact.unboundedP99), f2)} ms; ratio ${mmm(rel(impact.unboundedP99, impact.baseP99), f2)}`,
  );
  const rate = (xs: number[]) => stats(xs.map((ms) => Math.round(ROWS / (ms / 1000))));
  line(
    `  the copy's rate under pgbench: with the bound ${mmm(rate(results.partflowUnderLoad))} rows/s; without ${mmm(rate(results.partflowUnderLoadUnbounded))} rows/s`,
  );
  line(
    `  longest write: no migration ${mmm(stats(impact.baseMax), f2)} ms; during the cut-over ${mmm(stats(impact.cutoverMax), f2)} ms; during the rollback swap ${mmm(stats(impact.rollbackMax), f2)} ms; whole run ${mmm(stats(impact.runMax), f2)} ms   target <= 100 ms`,
  );
  line(`  failed transactions: ${impact.failed.join(', ')} of ${impact.transactions.join(', ')}`);
  if (peerError) line(`peer (pg_partman partition_data_proc) not measured: ${peerError}`);
  fs.writeFileSync('bench-results.json', JSON.stringify(json, null, 2));
  await stop();
  await pool.end();
}

/** The scale figures of the workflow runs: flat or not, memory, history, verification. */
function scaleReport(scale: ScaleRow[]): void {
  line('');
  line(`scale (${ROWS.toLocaleString('en-US')} rows): per workflow run with no writers, start to the approval gate`);
  for (const x of scale) {
    const r = x.rowsPerSecondPerMillion;
    const q = Math.max(1, Math.floor(r.length / 4));
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
    const flat = r.length >= 2 ? (mean(r.slice(-q)) / mean(r.slice(0, q))).toFixed(2) : 'n/a';
    line(
      `  parallelism ${x.parallelism}: rows/s per million min/median/max ${r.length ? mmm(stats(r)) : 'n/a'}, last quarter / first quarter ${flat}; ` +
        `peak RSS ${x.peakRssMb} MB (goal < 300); history ${x.history.events} events / ${(x.history.bytes / 1024).toFixed(0)} KiB ` +
        `in ${x.history.runs} run(s); verification ${x.verify?.elapsedMs} ms, ${x.verify?.chunks} chunks, longest snapshot ${x.verify?.longestSnapshotMs} ms`,
    );
  }
}

main().catch((err) => {
  process.stderr.write(`bench failed: ${err?.stack ?? err}\n`);
  process.exit(1);
});
