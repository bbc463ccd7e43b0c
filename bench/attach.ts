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
    for (const path of ['copy', 'attach'] as const) {
      await pool.query('DROP TABLE IF EXISTS images, images_old, images_history CASCADE');
      line(`${path}: generating ${ROWS.toLocaleString('en-US')} rows (uuid key, 4 secondary indexes, 14 months)`);
      await createImages(pool, ROWS, 'time');
      await pool.query('CHECKPOINT');
      if (path === 'copy') {
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
  const [copy, attach] = figures;
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
  const ratio = (a: number, b: number) => (b > 0 ? `${(a / b).toFixed(3)}×` : 'n/a');
  line('');
  line(
    `${ROWS.toLocaleString('en-US')} rows, pgbench at ${RATE} tx/s; no migration p99 ${baseline.p99Ms.toFixed(1)} ms`,
  );
  line('| | copy path | attach path | attach / copy |');
  line('| --- | --- | --- | --- |');
  line(
    `| wall time | ${(copy.wallMs / 1000).toFixed(1)} s | ${(attach.wallMs / 1000).toFixed(1)} s | ${ratio(attach.wallMs, copy.wallMs)} |`,
  );
  line(`| longest lock (cut-over) | ${copy.lockHoldMs} ms | ${attach.lockHoldMs} ms | |`);
  line(
    `| application p99 (× no migration) | ${copy.p99Ms.toFixed(1)} ms (${ratio(copy.p99Ms, baseline.p99Ms)}) | ` +
      `${attach.p99Ms.toFixed(1)} ms (${ratio(attach.p99Ms, baseline.p99Ms)}) | |`,
  );
  line(`| application longest wait | ${copy.maxMs.toFixed(1)} ms | ${attach.maxMs.toFixed(1)} ms | |`);
  line(`| failed transactions | ${copy.failed} | ${attach.failed} | |`);
  line(
    `| extra disk at the peak | ${mib(copy.extraDiskBytes)} | ${mib(attach.extraDiskBytes)} | ${ratio(attach.extraDiskBytes, copy.extraDiskBytes)} |`,
  );
  line(`| WAL written | ${mib(copy.walBytes)} | ${mib(attach.walBytes)} | ${ratio(attach.walBytes, copy.walBytes)} |`);
  const v = attach.validate!;
  line(
    `| attach: VALIDATE scan | | ${(v.ms / 1000).toFixed(1)} s, p99 ${v.p99Ms.toFixed(1)} ms ` +
      `(${ratio(v.p99Ms, baseline.p99Ms)}), one snapshot held ${v.longestSnapshotMs} ms, autovacuum of the table ` +
      `${v.autovacuumBlocked ? 'shut out (SHARE UPDATE EXCLUSIVE held)' : 'not seen shut out'} | |`,
  );
  fs.writeFileSync('bench-attach.json', JSON.stringify({ rows: ROWS, rate: RATE, baseline, figures }, null, 2));
}

main().catch((err) => {
  process.stderr.write(`${err.stack ?? err}\n`);
  process.exit(1);
});
