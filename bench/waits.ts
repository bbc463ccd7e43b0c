/**
 * `npm run bench:waits [-- --rows 300000 --months 58 --premake 60 --runs 3 --rate 100]`: the longest wait
 * partflow causes an application statement, per workflow. A generated_images-like table with `--months` months
 * of rows and `--premake` months made ahead (about 120 partitions: the most partitionTable makes) and a `users` table it references; pgbench writes at a fixed
 * rate with per-transaction logs (insert 5 : update 4 : delete 1 on images, 1 update of a user) through:
 *  - no migration, on the plain table (the machine's own noise);
 *  - partitionTable, start to finalize done (cut-over, rollback window, finalize with `--months` partitions);
 *  - no migration again, on the partitioned table;
 *  - fixConstraints: a foreign key images.user_id → users (orphans set to NULL) and NOT NULL on images.prompt
 *    (NULLs filled), on every partition;
 *  - maintainPartitions: the oldest 12 months detached (premake unchanged).
 * Latency counts from the scheduled start (pgbench -R), so a stalled client's queued transactions count too.
 * For the longest transaction of each workflow, names the activities that ran meanwhile. Prints min/median/max
 * over the runs and writes bench-waits.json. Never asserts.
 */
import * as fs from 'fs';
import { parseArgs } from 'util';
import { sleep } from '../activities/runtime/db';
import type { Progress } from '../workflows/definitions';
import { activitySpans, runningAt } from '../demo/history';
import { benchWorker, createImages, freshDatabase, pct, PgBench, stats } from './common';
import { LockWaitSampler } from '../demo/lockwaits';
import type { PgbenchTx } from './pgbench';

const { values: args } = parseArgs({
  options: {
    rows: { type: 'string', default: '300000' },
    months: { type: 'string', default: '58' },
    premake: { type: 'string', default: '60' },
    runs: { type: 'string', default: '3' },
    rate: { type: 'string', default: '100' },
    'base-seconds': { type: 'string', default: '20' },
    db: { type: 'string', default: 'partflow_bench_waits' },
  },
});
const ROWS = Number(args.rows);
const MONTHS = Number(args.months);
const USERS = 5000;
const TQ = 'partflow-bench-waits';
const line = (s: string) => process.stdout.write(s + '\n');

type Figures = {
  max: number;
  p99: number;
  tx: number;
  failed: number;
  worst: string;
  lockWait: number;
  lockWaitOn: string;
};
const SETS = [
  'no migration, plain',
  'partitionTable',
  'no migration, partitioned',
  'fixConstraints',
  'maintainPartitions',
];

async function main(): Promise<void> {
  const { conn, url, pool } = await freshDatabase(args.db);
  const { client, stop } = await benchWorker(url, TQ);
  const pgbench = new PgBench(conn, ROWS, Number(args.rate), { users: USERS });
  const out: Record<string, Figures[]> = Object.fromEntries(SETS.map((s) => [s, []]));
  const baseSeconds = Number(args['base-seconds']);

  /** pgbench while `work` runs; the figures of the transactions that overlap the window `work` returns */
  const measure = async (
    name: string,
    work: () => Promise<{ window: [number, number]; spans?: Parameters<typeof runningAt>[1] }>,
  ) => {
    let got: Awaited<ReturnType<typeof work>> = { window: [0, 0] };
    const sampler = new LockWaitSampler(conn, 'pgbench');
    await sampler.start();
    const load = await pgbench.run(async () => {
      got = await work();
    });
    const waits = await sampler.stop();
    const [a, b] = got.window;
    const tx = load.tx.filter((t: PgbenchTx) => t.startMs < b && t.endMs > a);
    const worstTx = tx.reduce((w, t) => (t.latencyMs > w.latencyMs ? t : w), { latencyMs: 0, startMs: a, endMs: a });
    const during = got.spans ? runningAt(worstTx.startMs, got.spans, worstTx.endMs) : [];
    const latencies = tx.map((t) => t.latencyMs);
    const lw = waits[0];
    const lwDuring =
      lw && got.spans ? runningAt(lw.at, got.spans, lw.at + lw.ms).join(', ') || 'between activities' : '';
    const f: Figures = {
      max: Math.round(worstTx.latencyMs * 10) / 10,
      p99: Math.round(pct(latencies, 0.99) * 10) / 10,
      tx: tx.length,
      failed: load.failed,
      worst: got.spans ? during.join(', ') || 'between activities' : '',
      lockWait: Math.round(waits[0]?.ms ?? 0),
      lockWaitOn: lw ? `${lw.what}${lwDuring ? ` (during ${lwDuring})` : ''}` : '',
    };
    out[name].push(f);
    line(
      `  ${name}: longest ${f.max} ms${f.worst ? ` (during ${f.worst})` : ''}, p99 ${f.p99} ms, ${f.tx} transactions, ${f.failed} failed`,
    );
    if (f.lockWait) line(`    longest lock wait seen ${f.lockWait} ms, ${f.lockWaitOn}`);
  };
  const idle = async (): Promise<{ window: [number, number] }> => {
    const a = Date.now();
    await sleep(baseSeconds * 1000);
    return { window: [a, Date.now()] };
  };
  /** starts a workflow with pgbench already running, waits for it (or drives it with `drive`), returns its window */
  const run = async (
    type: string,
    input: unknown,
    drive?: (h: Awaited<ReturnType<typeof client.workflow.start>>) => Promise<void>,
  ) => {
    await sleep(2000);
    const a = Date.now();
    const h = await client.workflow.start(type, { taskQueue: TQ, workflowId: `waits-${type}-${a}`, args: [input] });
    if (drive) await drive(h);
    await h.result();
    const b = Date.now();
    await sleep(2000);
    return { window: [a, b] as [number, number], spans: { [type]: await activitySpans(h) } };
  };

  try {
    for (let r = 1; r <= Number(args.runs); r++) {
      line(
        `run ${r}: ${ROWS.toLocaleString('en-US')} rows over ${MONTHS} months (+ ${args.premake} ahead), ${USERS} users`,
      );
      await pool.query('DROP SCHEMA IF EXISTS partflow, archive CASCADE');
      await pool.query('DROP SCHEMA public CASCADE; CREATE SCHEMA public');
      await pool.query(`CREATE TABLE users (id uuid PRIMARY KEY, seen_at timestamptz)`);
      await pool.query(`INSERT INTO users SELECT md5('u' || g)::uuid FROM generate_series(1, ${USERS}) g`);
      await createImages(pool, ROWS, 'time', MONTHS);
      // one row in a hundred names no user (an orphan to repair), one in two hundred has no prompt
      await pool.query(`UPDATE images SET user_id = CASE WHEN random() < 0.01 THEN gen_random_uuid()
        ELSE md5('u' || (1 + floor(random() * ${USERS}))::int)::uuid END,
        prompt = CASE WHEN random() < 0.005 THEN NULL ELSE prompt END`);
      await pool.query('VACUUM ANALYZE images, users');
      await pool.query('CHECKPOINT');

      await measure('no migration, plain', idle);
      await measure('partitionTable', () =>
        run(
          'partitionTable',
          { table: 'images', approval: 'auto', rollbackWindow: '1h', premake: Number(args.premake) },
          async (h) => {
            for (;;) {
              const p = await h.query<Progress>('progress').catch(() => null);
              if (p?.phase === 'rollback-window') break;
              await sleep(500);
            }
            await sleep(2000);
            await h.signal('finalize');
          },
        ),
      );
      await pool.query('VACUUM ANALYZE images');
      await measure('no migration, partitioned', idle);
      await measure('fixConstraints', () =>
        run('fixConstraints', {
          fixes: [
            {
              kind: 'foreignKey',
              table: 'images',
              columns: ['user_id'],
              references: { table: 'users', columns: ['id'] },
              orphans: 'set-null',
            },
            { kind: 'notNull', table: 'images', column: 'prompt', nulls: { fill: 'none' } },
          ],
        }),
      );
      await measure('maintainPartitions', () =>
        run('maintainPartitions', {
          tables: [
            {
              table: 'public.images',
              premake: Number(args.premake),
              retention: `${MONTHS - 12} months`,
              archive: 'detach',
            },
          ],
        }),
      );
    }
  } finally {
    await stop();
    await pool.end();
  }
  const mmm = (xs: number[]) => {
    const s = stats(xs);
    return `${s.min}/${s.median}/${s.max}`;
  };
  line('');
  line(
    `pgbench -c 4 -R ${args.rate}, ${ROWS.toLocaleString('en-US')} rows, ${MONTHS} months; min/median/max over ${args.runs} runs (ms)`,
  );
  line(
    `${'during'.padEnd(28)} ${'longest statement'.padEnd(20)} ${'longest lock wait'.padEnd(20)} ${'p99'.padEnd(20)} failed   target`,
  );
  for (const name of SETS) {
    const fs_ = out[name];
    const target = name.startsWith('no migration') ? '(the noise)' : '<= 100 ms';
    line(
      `${name.padEnd(28)} ${mmm(fs_.map((f) => f.max)).padEnd(20)} ${mmm(fs_.map((f) => f.lockWait)).padEnd(20)} ${mmm(fs_.map((f) => f.p99)).padEnd(20)} ${String(fs_.reduce((n, f) => n + f.failed, 0)).padEnd(8)} ${target}`,
    );
  }
  fs.writeFileSync(
    'bench-waits.json',
    JSON.stringify({ rows: ROWS, months: MONTHS, rate: Number(args.rate), out }, null, 2),
  );
}

main().catch((err) => {
  process.stderr.write(`bench failed: ${err?.stack ?? err}\n`);
  process.exit(1);
});
