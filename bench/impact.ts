/**
 * `npm run bench:impact [-- --rows 1000000 --runs 3 --seconds 15 --configs none,trigger,...]`: where the
 * application's p99 during a copy comes from (issue 24, item 2). One pgbench write workload (the benchmark's:
 * -c 4 -R 200, insert 5 : update 4 : delete 1) runs for the whole benchmark; the benchmark goes through the
 * configurations below in turn, `--seconds` each, `--runs` rounds, and prints per configuration the p50, p99 and
 * max of the transactions that overlapped its windows, as ratios against the `none` windows just before and
 * after it (their transactions pooled; `--configs none,workflow,none,trigger` puts one next to each), with the
 * copy's rate:
 *  - none: no migration;
 *  - trigger: the key log's trigger installed, nothing applied, no copy;
 *  - apply: the trigger and the key log applied every 100 ms, no copy;
 *  - bound: the backfill activity called in a plain loop (no Temporal) with the default application-latency
 *    bound; bound-noapply: the same without the key log's apply between batches (a diagnosis only: such a copy
 *    is not exact); free: the loop without the bound;
 *  - probe: the loop with the bound's commit probe running but a bound so high that it never slows the copy;
 *    paced: the loop with no bound and a fixed pause of `--pause-ms` (default 100) after each batch;
 *  - short: the loop with the bound and batches of at most `--short-ms` (default 10 ms) instead of 50;
 *  - workflow: the real workflow's backfill phase (with the bound), driven through Temporal.
 * pgbench runs in rounds of `--round-seconds` (default 60), each opening its 4 connections anew: an
 * application's pool keeps its connections, and a trigger's first call in a backend costs about 1.4 ms once
 * (`npm run bench:ops` prints it); `--round-seconds 5` gives the figures of the stops before 2026-12-05's sixth.
 * Not part of the tests; never asserts on time.
 */
import { spawnSync } from 'child_process';
import { parseArgs } from 'util';
import { sleep } from '../activities/runtime/db';
import { drainKeyLog } from '../activities/partition/keylog';
import { backfillSql, Plan } from '../src/plan';
import { DEFAULT_REPLICA_BOUNDS } from '../src/replicas';
import type { Progress } from '../workflows/definitions';
import { benchWorker, createImages, freshDatabase, pct, PgBench, stats } from './common';
import type { PgbenchTx } from './pgbench';

const { values: args } = parseArgs({
  options: {
    rows: { type: 'string', default: '1000000' },
    runs: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '15' },
    rate: { type: 'string', default: '200' },
    'round-seconds': { type: 'string', default: '60' },
    'short-ms': { type: 'string', default: '10' },
    'pause-ms': { type: 'string', default: '100' },
    configs: { type: 'string', default: 'none,trigger,apply,bound,bound-noapply,short,free,workflow' },
    db: { type: 'string', default: 'partflow_bench_impact' },
  },
});
const ROWS = Number(args.rows);
const SECONDS = Number(args.seconds);
const CONFIGS = args.configs!.split(',');
/** each configuration once in the tables ("none" may run more than once a round, between the others) */
const SHOWN = [...new Set(CONFIGS)];
const TQ = 'partflow-bench-impact';
const line = (s: string) => process.stdout.write(s + '\n');

interface Window {
  config: string;
  round: number;
  from: number;
  to: number;
  rows: number;
}

async function main(): Promise<void> {
  const { conn, url, pool } = await freshDatabase(args.db!);
  line(`generating ${ROWS.toLocaleString('en-US')} rows of the benchmark's images table`);
  await createImages(pool, ROWS, 'time');
  const { acts, client, stop } = await benchWorker(url, TQ);
  const input = { table: 'images', batchSize: 5000, maxBatchMs: 50 };
  const windows: Window[] = [];
  let plan: Plan | null = null;
  let baselineMs = 0;
  // the idle probe the bound used last (measured again during the copy)
  let lastBaselineMs = 0;
  const setUp = async () => {
    const pre = await acts.preflight(input);
    await acts.claimRun(pre.plan.table, pre.plan);
    await acts.createShadow(pre.plan, 500);
    baselineMs = (await acts.installSyncTrigger(pre.plan, 500)).appBaselineMs;
    lastBaselineMs = baselineMs;
    plan = pre.plan;
    await pool.query('CHECKPOINT');
  };
  const tearDown = async () => {
    if (!plan) return;
    await acts.beginUndo(plan.table);
    await acts.dropSyncTrigger(plan, 500);
    await acts.dropShadow(plan, 500);
    await acts.releaseRun(plan.table, 'rolled-back');
    plan = null;
  };
  const copyLoop = async (
    until: number,
    opts: { bound: boolean; apply: boolean; maxBatchMs: number; ratio?: number; sleepMs?: number },
  ) => {
    const sql = backfillSql(plan!);
    let rows = 0;
    while (Date.now() < until) {
      const c = await acts.backfillChunk({
        table: plan!.table,
        copyMode: plan!.copyMode,
        sql: opts.apply ? sql : { ...sql, keyLog: undefined },
        batchSize: input.batchSize,
        sleepMs: opts.sleepMs ?? 0,
        maxMs: Math.max(100, until - Date.now()),
        maxBatchMs: opts.maxBatchMs,
        replica: { ...DEFAULT_REPLICA_BOUNDS, maxAppLatencyRatio: opts.bound ? (opts.ratio ?? 1.5) : null },
        ...(opts.bound ? { appBaselineMs: baselineMs } : {}),
      });
      rows += c.rowsThisChunk;
      if (c.appBaselineMs) lastBaselineMs = c.appBaselineMs;
      if (c.done) break;
    }
    return rows;
  };
  const run = async (config: string, round: number): Promise<Window> => {
    if (config !== 'none') await setUp();
    const from = Date.now();
    const until = from + SECONDS * 1000;
    let rows = 0;
    let to: number;
    try {
      // "bound@1.3", "workflow@1.3": the same with another maxAppLatencyRatio
      const [kind, at] = config.split('@');
      const ratio = at ? Number(at) : undefined;
      switch (kind) {
        case 'none':
        case 'trigger':
          await sleep(SECONDS * 1000);
          break;
        case 'apply':
          while (Date.now() < until) {
            await drainKeyLog(pool, backfillSql(plan!).keyLog!, 1000);
            await sleep(100);
          }
          break;
        case 'bound':
          rows = await copyLoop(until, { bound: true, apply: true, maxBatchMs: 50, ratio });
          break;
        case 'bound-noapply':
          rows = await copyLoop(until, { bound: true, apply: false, maxBatchMs: 50 });
          break;
        case 'short':
          rows = await copyLoop(until, { bound: true, apply: true, maxBatchMs: Number(args['short-ms']) });
          break;
        case 'probe':
          rows = await copyLoop(until, { bound: true, apply: true, maxBatchMs: 50, ratio: 1000 });
          break;
        case 'paced':
          rows = await copyLoop(until, {
            bound: false,
            apply: true,
            maxBatchMs: 50,
            sleepMs: Number(args['pause-ms']),
          });
          break;
        case 'nice':
        case 'idle': {
          // a diagnosis: the copy's backends at nice 19 (or SCHED_IDLE), possible only with the worker on the
          // database's host and allowed to renice its processes
          let stopped = false;
          const renice = (async () => {
            const done = new Set<number>();
            while (!stopped) {
              const { rows: pids } = await pool.query(
                `SELECT pid FROM pg_stat_activity WHERE application_name = 'partflow' AND datname = current_database()`,
              );
              for (const { pid } of pids)
                if (!done.has(pid)) {
                  done.add(pid);
                  spawnSync(
                    config === 'nice' ? 'renice' : 'chrt',
                    config === 'nice' ? ['-n', '19', '-p', String(pid)] : ['--idle', '-p', '0', String(pid)],
                  );
                }
              await sleep(200);
            }
          })();
          rows = await copyLoop(until, { bound: false, apply: true, maxBatchMs: 50 });
          stopped = true;
          await renice;
          break;
        }
        case 'free':
          rows = await copyLoop(until, { bound: false, apply: true, maxBatchMs: 50 });
          break;
        case 'workflow': {
          await tearDown();
          const h = await client.workflow.start('partitionTable', {
            taskQueue: TQ,
            workflowId: `impact-${Date.now()}`,
            args: [
              {
                ...input,
                approval: 'signal',
                ...(ratio ? { maxAppLatencyRatio: ratio } : {}),
              },
            ],
          });
          let p: Progress | null = null;
          for (;;) {
            p = await h.query<Progress>('progress').catch(() => null);
            if (p?.phase === 'backfill') break;
            await sleep(500);
          }
          const start = Date.now();
          const before = p?.rowsCopied ?? 0;
          await sleep(SECONDS * 1000);
          const end = Date.now();
          p = await h.query<Progress>('progress');
          await h.signal('rollback');
          await h.result();
          const w = { config, round, from: start, to: end, rows: (p?.rowsCopied ?? 0) - before };
          windows.push(w);
          return w;
        }
        default:
          throw new Error(`unknown configuration ${config}`);
      }
      to = Date.now();
    } finally {
      await tearDown();
    }
    const w = { config, round, from, to, rows };
    windows.push(w);
    return w;
  };
  // the application-latency bound's commit probe, every 40 ms for the whole benchmark on a connection of its
  // own: what it sees in each window, beside what pgbench's transactions see
  const probes: { at: number; ms: number; kind: string }[] = [];
  const KINDS: Record<string, string> = {
    txid: 'SELECT txid_current()',
    series: 'SELECT txid_current(), (SELECT sum(g) FROM generate_series(1, 5000) g)',
    pk: `SELECT * FROM images WHERE id = md5($1)::uuid`,
    like: '',
  };
  await pool.query('CREATE TABLE IF NOT EXISTS images_like (LIKE images INCLUDING INDEXES)');
  let probing = true;
  const probeConn = await pool.connect();
  const prober = (async () => {
    while (probing) {
      for (const [kind, sql] of Object.entries(KINDS)) {
        const t0 = performance.now();
        const g = String(1 + Math.floor(Math.random() * ROWS));
        if (kind === 'like')
          await probeConn.query(
            `INSERT INTO images_like SELECT * FROM images WHERE id = md5('${g}')::uuid; DELETE FROM images_like`,
          );
        else await probeConn.query(sql, kind === 'pk' ? [g] : []);
        probes.push({ at: Date.now(), ms: performance.now() - t0, kind });
        await sleep(15);
      }
    }
  })();
  // pg_stat_statements (loaded by scripts/env.sh) for pgbench's own statements, read every second: what an
  // application-statement signal would see in each window (a diagnosis for a pacer fed by it, not used by the copy)
  const statSnaps: { at: number; calls: number; total: number; sq: number }[] = [];
  const statsOn = (
    await pool
      .query(`SELECT to_regclass('pg_stat_statements') IS NOT NULL AS on`)
      .catch(() => ({ rows: [{ on: false }] }))
  ).rows[0].on as boolean;
  const statSampler = (async () => {
    while (statsOn && probing) {
      const r = await pool
        .query(
          `SELECT coalesce(sum(calls), 0)::float8 AS calls, coalesce(sum(total_exec_time), 0)::float8 AS total,
                  coalesce(sum(calls * (stddev_exec_time ^ 2 + mean_exec_time ^ 2)), 0)::float8 AS sq
             FROM pg_stat_statements
            WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND query ~ '^(INSERT INTO images \\(|UPDATE images SET|DELETE FROM images WHERE)'`,
        )
        .catch(() => null);
      if (r) statSnaps.push({ at: Date.now(), ...r.rows[0] });
      await sleep(1000);
    }
  })();
  const load = await new PgBench(conn, ROWS, Number(args.rate), { roundSeconds: Number(args['round-seconds']) }).run(
    async () => {
      await sleep(3000);
      for (let r = 1; r <= Number(args.runs); r++) {
        for (const config of CONFIGS) {
          const w = await run(config, r);
          line(
            `  round ${r} ${config}: ${w.to - w.from} ms, ${w.rows} rows copied, idle probe ${baselineMs.toFixed(2)} → ${lastBaselineMs.toFixed(2)} ms`,
          );
          await sleep(1000);
        }
      }
    },
  );
  probing = false;
  await prober;
  await statSampler;
  probeConn.release();
  const probesIn = (w: Window, kind = 'txid') =>
    probes.filter((p) => p.kind === kind && p.at >= w.from && p.at <= w.to).map((p) => p.ms);
  const within = (w: Window, sent = false) =>
    load.tx
      .filter((t: PgbenchTx) => t.startMs < w.to && t.endMs > w.from)
      .map((t) => (sent ? t.latencyMs - t.lagMs : t.latencyMs));
  // a window's baseline: the "none" windows next to it in time, the one just before and the one just after (the
  // next round's first), their transactions pooled; the machine's own drift over minutes (other tenants of the
  // host) moved one round's "none" p99 from 1.03 to 1.72 ms, as much as the copy under its bound does
  const nones = windows.filter((x) => x.config === 'none');
  const noneAround = (w: Window): Window[] =>
    [nones.filter((x) => x.to <= w.from).at(-1), nones.find((x) => x.from >= w.to)].filter((x): x is Window => !!x);
  const baseTx = (w: Window, sent = false) => noneAround(w).flatMap((x) => within(x, sent));
  const f2 = (x: number) => x.toFixed(2);
  const mmm = (xs: number[], f = f2) => {
    const s = stats(xs);
    return `${f(s.min)}/${f(s.median)}/${f(s.max)}`;
  };
  line('');
  line(
    `${ROWS.toLocaleString('en-US')} rows; pgbench -c 4 -R ${args.rate}; ${SECONDS} s per window, ${args.runs} rounds; ` +
      `min/median/max over the rounds; ratios against the "none" windows just before and after (pooled)`,
  );
  line(
    `${'config'.padEnd(14)} ${'p50 ms'.padEnd(18)} ${'p99 ms'.padEnd(18)} ${'p99 ratio'.padEnd(18)} ${'max ms'.padEnd(22)} ` +
      `${'rows/s'.padEnd(22)} probe p50 / p95 ms (median of rounds)`,
  );
  for (const config of SHOWN) {
    const of = windows.filter((w) => w.config === config);
    const lat = of.map((w) => within(w));
    const base = (w: Window) => pct(baseTx(w), 0.99);
    const p99 = lat.map((l) => pct(l, 0.99));
    line(
      `${config.padEnd(14)} ${mmm(lat.map((l) => pct(l, 0.5))).padEnd(18)} ${mmm(p99).padEnd(18)} ` +
        `${(CONFIGS.includes('none') ? mmm(of.map((w, i) => p99[i] / Math.max(0.001, base(w)))) : 'n/a').padEnd(18)} ` +
        `${mmm(lat.map((l) => Math.max(0, ...l))).padEnd(22)} ${mmm(
          of.map((w) => w.rows / ((w.to - w.from) / 1000)),
          (x) => String(Math.round(x)),
        ).padEnd(22)} ${f2(stats(of.map((w) => pct(probesIn(w), 0.5))).median)} / ${f2(
          stats(of.map((w) => pct(probesIn(w), 0.95))).median,
        )}`,
    );
  }
  line('probes (p50 / p95 / p99 ms, median of rounds):');
  for (const config of SHOWN) {
    const of = windows.filter((w) => w.config === config);
    const q = (kind: string, p: number) => f2(stats(of.map((w) => pct(probesIn(w, kind), p))).median);
    line(
      `  ${config.padEnd(14)} ` +
        Object.keys(KINDS)
          .map((k) => `${k} ${q(k, 0.5)} / ${q(k, 0.95)} / ${q(k, 0.99)}`)
          .join('   '),
    );
  }
  line("from the moment pgbench sent each transaction (its schedule lag taken off: pgbench's one client thread");
  line('waiting for a CPU on the benchmark machine; an application on its own hosts does not pay that):');
  for (const config of SHOWN) {
    const of = windows.filter((w) => w.config === config);
    const p99 = of.map((w) => pct(within(w, true), 0.99));
    const base = (w: Window) => pct(baseTx(w, true), 0.99);
    const lag = of.map((w) => {
      const sent = within(w, true);
      return pct(
        within(w).map((l, i) => l - sent[i]),
        0.99,
      );
    });
    line(
      `  ${config.padEnd(14)} p99 ${mmm(p99)} ms, ratio ${
        CONFIGS.includes('none') ? mmm(of.map((w, i) => p99[i] / Math.max(0.001, base(w)))) : 'n/a'
      }; schedule lag p99 ${mmm(lag)} ms`,
    );
  }
  if (statSnaps.length) {
    // the window's pgbench statements by their cumulative counters: mean and standard deviation of exec time
    const statOf = (w: Window) => {
      const a = statSnaps.filter((x) => x.at >= w.from).at(0);
      const b = statSnaps.filter((x) => x.at <= w.to).at(-1);
      if (!a || !b || b.calls <= a.calls) return null;
      const n = b.calls - a.calls;
      const mean = (b.total - a.total) / n;
      return { mean, sd: Math.sqrt(Math.max(0, (b.sq - a.sq) / n - mean * mean)) };
    };
    line("pg_stat_statements, pgbench's statements (server exec time, no commit or network): mean and mean + 2.33 sd,");
    line('ratios against the "none" window just before, beside pgbench\'s p99 ratio:');
    for (const config of SHOWN) {
      const of = windows.filter((w) => w.config === config);
      // the stat counters of the "none" window just before (cumulative counters do not pool)
      const none = (w: Window) => (noneAround(w)[0] ? statOf(noneAround(w)[0]) : null);
      const st = of.map(statOf);
      const ok = (i: number) => !!st[i] && !!none(of[i]);
      const idx = of.map((_, i) => i).filter(ok);
      const meanR = idx.map((i) => st[i]!.mean / none(of[i])!.mean);
      const tail = (x: { mean: number; sd: number }) => x.mean + 2.33 * x.sd;
      const tailR = idx.map((i) => tail(st[i]!) / tail(none(of[i])!));
      const appR = idx.map((i) => pct(within(of[i]), 0.99) / Math.max(0.001, pct(baseTx(of[i]), 0.99)));
      line(
        `  ${config.padEnd(14)} mean ${
          idx.length
            ? mmm(
                idx.map((i) => st[i]!.mean),
                (x) => x.toFixed(3),
              )
            : 'n/a'
        } ms, ` +
          `ratio ${idx.length ? mmm(meanR) : 'n/a'}; mean+2.33sd ratio ${idx.length ? mmm(tailR) : 'n/a'}; ` +
          `pgbench p99 ratio ${idx.length ? mmm(appR) : 'n/a'}`,
      );
    }
  }
  line(`failed transactions: ${load.failed} of ${load.tx.length + load.failed}`);
  await stop();
  await pool.end();
}

main().catch((err) => {
  process.stderr.write(`bench failed: ${err?.stack ?? err}\n`);
  process.exit(1);
});
