/**
 * `npm run bench:attach [-- --rows 2000000 --rate 200]` (issue 25, item 5): the attach path against the copy path
 * on the same data, each a whole partitionTable run (approval auto, no rollback window) with the benchmark's
 * pgbench write workload at `--rate` transactions/s throughout, after a window of the same workload with no
 * migration (the baseline of the ratios). Per path: wall time, the longest lock the cut-over held, the
 * application's p99 and longest wait, failed transactions, the extra disk at the peak (database size sampled
 * every 50 ms, less the size before), the WAL written (less the workload's own, at its rate in the baseline); for the attach path also what its VALIDATE scan costs:
 * the application's p99 while it runs, the longest it held one snapshot (the xmin horizon: vacuum everywhere
 * waits for it), and that autovacuum cannot work on the table meanwhile (its lock conflicts). Prints a table and
 * writes bench-attach.json. Not part of the tests; never asserts on time.
 */
import * as fs from 'fs';
import { parseArgs } from 'util';
import type { Pool } from 'pg';
import { sleep } from '../activities/runtime/db';
import { benchWorker, createImages, freshDatabase, historySpans, pct, PgBench } from './common';
import type { PartitionTableResult } from '../workflows/partitionTable';

const { values: args } = parseArgs({
  options: {
    rows: { type: 'string', default: '2000000' },
    rate: { type: 'string', default: '200' },
    baseline: { type: 'string', default: '20' },
    db: { type: 'string', default: 'partflow_bench_attach' },
    // "attach" alone: the scale measurement of the attach path (the copy path's is docs/scale.md's)
    paths: { type: 'string', default: 'copy,attach' },
  },
});
const ROWS = Number(args.rows);
const RATE = Number(args.rate);
const TQ = 'partflow-bench-attach';
const line = (s: string) => process.stdout.write(s + '\n');

interface PathFigures {
  path: string;
  wallMs: number;
  lockHoldMs: number;
  p99Ms: number;
  maxMs: number;
  failed: number;
  extraDiskBytes: number;
  walBytes: number;
  /** the attach path's new unique index (on the history partition after the cut-over, as its primary key) */
  keyIndexBytes?: number;
  validate?: { ms: number; p99Ms: number; longestSnapshotMs: number; autovacuumBlocked: boolean };
}

/** Samples, every 50 ms while `work` runs: database size, partflow's longest-held snapshot, VALIDATE's lock. */
async function sampled<T>(pool: Pool, work: () => Promise<T>) {
  const peak = { bytes: 0, snapshotMs: 0, validateLock: false };
  let done = false;
  const loop = (async () => {
    while (!done) {
      const r = await pool.query(
        `SELECT pg_database_size(current_database())::bigint AS bytes,
                (SELECT coalesce(max(extract(epoch FROM now() - xact_start) * 1000), 0) FROM pg_stat_activity
                  WHERE query ILIKE '%VALIDATE CONSTRAINT%' AND state = 'active' AND backend_xmin IS NOT NULL) AS snap,
                EXISTS (SELECT FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                         WHERE l.relation = to_regclass('images') AND l.mode = 'ShareUpdateExclusiveLock'
                           AND l.granted AND a.query ILIKE '%VALIDATE CONSTRAINT%') AS held`,
      );
      peak.bytes = Math.max(peak.bytes, Number(r.rows[0].bytes));
      peak.snapshotMs = Math.max(peak.snapshotMs, Number(r.rows[0].snap));
      peak.validateLock ||= r.rows[0].held;
      await sleep(50);
    }
  })();
  try {
    return { result: await work(), peak };
  } finally {
    done = true;
    await loop;
  }
}

async function main(): Promise<void> {
  const { conn, url, pool } = await freshDatabase(String(args.db));
  const { client, stop } = await benchWorker(url, TQ);
  const pgbench = new PgBench(conn, ROWS, RATE);
  const figures: PathFigures[] = [];
  let baseline = { p99Ms: 0, maxMs: 0 };
  // the workload's own WAL per ms (baseline window): taken off each path's WAL to leave the run's own
  let workloadWalPerMs = 0;
  try {
    const paths = String(args.paths).split(',') as ('copy' | 'attach')[];
    for (const path of paths) {
      await pool.query('DROP TABLE IF EXISTS images, images_old, images_history CASCADE');
      line(`${path}: generating ${ROWS.toLocaleString('en-US')} rows (uuid key, 4 secondary indexes, 14 months)`);
      await createImages(pool, ROWS, 'time');
      await pool.query('CHECKPOINT');
      if (path === paths[0]) {
        const w0 = (await pool.query(`SELECT pg_current_wal_lsn() AS l`)).rows[0].l;
        const b0 = Date.now();
        const base = await pgbench.run(() => sleep(Number(args.baseline) * 1000));
        const wb = (await pool.query(`SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1)::bigint AS b`, [w0])).rows[0].b;
        workloadWalPerMs = Number(wb) / (Date.now() - b0);
        baseline = { p99Ms: pct(base.latencies, 0.99), maxMs: Math.max(...base.latencies) };
        line(`  no migration: p99 ${baseline.p99Ms.toFixed(1)} ms, max ${baseline.maxMs.toFixed(1)} ms`);
      }
      const size0 = Number((await pool.query(`SELECT pg_database_size(current_database())::bigint AS b`)).rows[0].b);
      const wal0 = (await pool.query(`SELECT pg_current_wal_lsn() AS l`)).rows[0].l;
      const t0 = Date.now();
      const workflowId = `bench-${path}-${Date.now()}`;
      let result: PartitionTableResult | null = null;
      let tDone = 0;
      const input = {
        table: 'images',
        approval: 'auto',
        rollbackWindow: '0s',
        ...(path === 'attach' ? { method: 'attach' } : {}),
      };
      const { result: load, peak } = await sampled(pool, () =>
        pgbench.run(async () => {
          const h = await client.workflow.start('partitionTable', { taskQueue: TQ, workflowId, args: [input] });
          result = await h.result();
          tDone = Date.now();
        }),
      );
      const wallMs = tDone - t0;
      // the WAL from the start to now: the run's and the workload's (the workload's own rate is in the baseline)
      const wal = (await pool.query(`SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1)::bigint AS b`, [wal0])).rows[0].b;
      const r = result as unknown as PartitionTableResult;
      if (r?.status !== 'done') throw new Error(`the ${path} run ended ${r?.status}`);
      const f: PathFigures = {
        path,
        wallMs,
        lockHoldMs: r.cutover?.lockHoldMs ?? NaN,
        p99Ms: pct(load.latencies, 0.99),
        maxMs: Math.max(...load.latencies),
        failed: load.failed,
        extraDiskBytes: peak.bytes - size0,
        walBytes: Math.max(0, Number(wal) - workloadWalPerMs * (Date.now() - t0)),
      };
      if (path === 'attach') {
        const k = await pool.query(`SELECT pg_relation_size(to_regclass('images_pfo_0'))::bigint AS b`);
        f.keyIndexBytes = Number(k.rows[0].b);
        const [from, to] = (await historySpans(client.workflow.getHandle(workflowId)))('addBoundCheck');
        const during = load.tx.filter((t) => t.endMs >= from && t.startMs <= to).map((t) => t.latencyMs);
        f.validate = {
          ms: to - from,
          p99Ms: pct(during, 0.99),
          longestSnapshotMs: Math.round(peak.snapshotMs),
          autovacuumBlocked: peak.validateLock,
        };
      }
      figures.push(f);

      line(
        `  ${path}: ${(f.wallMs / 1000).toFixed(1)} s, lock ${f.lockHoldMs} ms, p99 ${f.p99Ms.toFixed(1)} ms, ` +
          `max ${f.maxMs.toFixed(1)} ms, failed ${f.failed}, extra disk ${(f.extraDiskBytes / 2 ** 20).toFixed(0)} MiB, ` +
          `WAL ${(f.walBytes / 2 ** 20).toFixed(0)} MiB`,
      );
    }
  } finally {
    await stop();
    await pool.end();
  }
  const copy = figures.find((f) => f.path === 'copy');
  const attach = figures.find((f) => f.path === 'attach');
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
  const ratio = (a: number, b: number) => (b > 0 ? `${(a / b).toFixed(3)}×` : 'n/a');
  const cell = (f: PathFigures | undefined, show: (f: PathFigures) => string) => (f ? show(f) : '-');
  const both = (get: (f: PathFigures) => number) => (copy && attach ? ratio(get(attach), get(copy)) : '');
  line('');
  line(
    `${ROWS.toLocaleString('en-US')} rows, pgbench at ${RATE} tx/s; no migration p99 ${baseline.p99Ms.toFixed(1)} ms`,
  );
  line('| | copy path | attach path | attach / copy |');
  line('| --- | --- | --- | --- |');
  const secs = (f: PathFigures) => `${(f.wallMs / 1000).toFixed(1)} s`;
  line(`| wall time | ${cell(copy, secs)} | ${cell(attach, secs)} | ${both((f) => f.wallMs)} |`);
  const lock = (f: PathFigures) => `${f.lockHoldMs} ms`;
  line(`| longest lock (cut-over) | ${cell(copy, lock)} | ${cell(attach, lock)} | |`);
  const p99 = (f: PathFigures) => `${f.p99Ms.toFixed(1)} ms (${ratio(f.p99Ms, baseline.p99Ms)})`;
  line(`| application p99 (× no migration) | ${cell(copy, p99)} | ${cell(attach, p99)} | |`);
  const max = (f: PathFigures) => `${f.maxMs.toFixed(1)} ms`;
  line(`| application longest wait | ${cell(copy, max)} | ${cell(attach, max)} | |`);
  const failed = (f: PathFigures) => String(f.failed);
  line(`| failed transactions | ${cell(copy, failed)} | ${cell(attach, failed)} | |`);
  const disk = (f: PathFigures) => mib(f.extraDiskBytes);
  line(`| extra disk at the peak | ${cell(copy, disk)} | ${cell(attach, disk)} | ${both((f) => f.extraDiskBytes)} |`);
  const wal = (f: PathFigures) => mib(f.walBytes);
  line(
    `| WAL written (less the workload's) | ${cell(copy, wal)} | ${cell(attach, wal)} | ${both((f) => f.walBytes)} |`,
  );
  if (attach?.keyIndexBytes) line(`| attach: the new unique index | | ${mib(attach.keyIndexBytes)} | |`);
  const v = attach?.validate;
  if (v) {
    line(
      `| attach: VALIDATE scan | | ${(v.ms / 1000).toFixed(1)} s, p99 ${v.p99Ms.toFixed(1)} ms ` +
        `(${ratio(v.p99Ms, baseline.p99Ms)}), one snapshot held ${v.longestSnapshotMs} ms, autovacuum of the table ` +
        `${v.autovacuumBlocked ? 'shut out (SHARE UPDATE EXCLUSIVE held)' : 'not seen shut out'} | |`,
    );
  }
  fs.writeFileSync('bench-attach.json', JSON.stringify({ rows: ROWS, rate: RATE, baseline, figures }, null, 2));
}

main().catch((err) => {
  process.stderr.write(`${err.stack ?? err}\n`);
  process.exit(1);
});
