/**
 * The demo: the seed's database with ~1M generated_images rows over 15 months, writers busy throughout,
 * partitionTable on generated_images and credit_transactions, live progress, approval, finalize, and a
 * report checked against the writers' own record.
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { parseArgs } from 'util';
import { Client as PgClient, Pool } from 'pg';
import { WorkflowHandle } from '@temporalio/client';
import { connectClient, startPartition } from '../operator/client';
import { loadConfig } from '../src/config';
import { DEFAULT_REPLICA_BOUNDS } from '../src/replicas';
import { fillDemoData, schemaSql } from './schema';
import { activitySpans, ActivitySpan, runningAt } from './history';
import { LockWaitSampler } from './lockwaits';
import { compareWithRecord, Writer, WriterSpec } from './writer';
import type { Progress } from '../workflows/definitions';
import type { FixResult } from '../workflows/fixConstraints';
import type { FixConstraintsInput } from '../src/constraints';
import type { CreateIndexesInput } from '../src/indexes';
import type { IndexesResult } from '../workflows/createIndexes';
import { auditTable, maintainTable } from '../operator/operations';
import { createMaintenanceSchedule, DEFAULT_SCHEDULE_ID } from '../operator/schedule';
import type { MaintainResult } from '../workflows/maintainPartitions';

const { values: args } = parseArgs({
  options: {
    rows: { type: 'string', default: '1000000' },
    months: { type: 'string', default: '15' },
    db: { type: 'string', default: 'partflow_demo' },
    'ops-per-second': { type: 'string', default: '100' },
    'batch-size': { type: 'string', default: '5000' },
    // generated_images is copied by this many streams at once, credit_transactions by one
    parallelism: { type: 'string', default: '2' },
    // the writers alone this long before the runs start: their latency with no migration, to compare with
    'quiet-seconds': { type: 'string', default: '30' },
  },
});

const fmt = (n: number) => n.toLocaleString('en-US');
/** statements a window needs for its 99th percentile to be more than its slowest few */
const MIN_P99_OPS = 1000;
const line = (s: string) => process.stdout.write(s + '\n');

const SPECS: Record<string, WriterSpec> = {
  generated_images: {
    table: 'public.generated_images',
    id: 'id',
    ts: 'created_at',
    payload: 'image_url',
    newIdExpr: 'gen_random_uuid()',
    insertSql: `INSERT INTO public.generated_images AS t (user_id, industry_id, generation_type, generation_status, prompt, image_url, expires_at, created_at, updated_at)
                VALUES ((SELECT id FROM users LIMIT 1), 1, 'product', 'completed', 'demo writer', 'https://cdn.example.com/new.png', $1::timestamptz + interval '6 hours', $1, $1)`,
  },
  credit_transactions: {
    table: 'public.credit_transactions',
    id: 'id',
    ts: 'created_at',
    payload: 'description',
    newIdExpr: `nextval(pg_get_serial_sequence('public.credit_transactions', 'id'))`,
    insertSql: `INSERT INTO public.credit_transactions AS t (user_id, amount, balance_after, operation_type, description, created_at)
                VALUES ((SELECT id FROM users LIMIT 1), -1, 10, 'generation', 'demo writer', $1)`,
  },
};

async function main(): Promise<void> {
  const rows = Number(args.rows);
  const months = Number(args.months);
  if (!Number.isInteger(rows) || rows < 1000) throw new Error('--rows must be a whole number of at least 1000.');
  const db = args.db!;
  const config = loadConfig();
  const admin = new PgClient({ database: 'postgres' });
  await admin.connect();
  line(
    `partflow demo: database ${db}, ${fmt(rows)} generated_images and as many credit_transactions over ${months} months`,
  );
  const client = await connectClient(config);
  for (const t of Object.keys(SPECS)) {
    try {
      await client.workflow.getHandle(`partition-public.${t}`).terminate('demo restarting');
    } catch {
      /* none running */
    }
  }
  await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  await admin.query(`CREATE DATABASE ${db}`);
  await admin.end();
  const pool = new Pool({ database: db, max: 4 });
  const t0 = Date.now();
  for (const sql of schemaSql({ seedIndexes: false })) await pool.query(sql);
  await fillDemoData(pool, rows, months, (m) => line(`  ${m}`));
  line(`data ready in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

  const conn = { host: process.env.PGHOST, port: Number(process.env.PGPORT), user: process.env.PGUSER, database: db };
  const dbUrl = `postgres://${conn.user}@${conn.host}:${conn.port}/${db}`;
  // One demo worker, left running afterwards so the CLI and the Web UI can be tried on the demo database.
  const pidFile = path.join(process.env.PARTFLOW_HOME ?? '.', 'demo-worker.pid');
  const script = path.join(__dirname, '..', 'worker', 'main.js');
  // The worker the pid file names ("pid, build, start time"), alive: a pid file outlives its process, and its
  // pid may since be another program's, which must be neither reused nor stopped. A process is its pid and its
  // start time (/proc/PID/stat's 22nd field, after the command's parenthesis); a file written before recorded
  // none, and then a partflow worker script among the process's arguments has to do.
  const stat = (pid: number): string[] => {
    try {
      const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      return text.slice(text.lastIndexOf(') ') + 2).split(' ');
    } catch {
      return [];
    }
  };
  const runsWorker = (pid: number) => {
    try {
      const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      return argv.some((a) => a.endsWith(`${path.sep}${path.join('worker', 'main.js')}`));
    } catch {
      return false;
    }
  };
  // The running demo worker is reused only when it runs this very build: a worker left from an older
  // checkout or build would run old code against the new demo (its pid file records what it runs).
  const build = `${script}@${newestMtime(path.join(__dirname, '..'))}`;
  const old = fs.existsSync(pidFile) ? fs.readFileSync(pidFile, 'utf8').trim().split('\n') : [];
  const oldPid = Number(old[0] ?? 0);
  const alive = (pid: number) => {
    if (!Number.isSafeInteger(pid) || pid <= 0) return false;
    const fields = stat(pid); // [0] its state (Z: a zombie), [19] its start time
    if (!fields[0] || fields[0] === 'Z') return false;
    return old[2] ? old[2] === fields[19] : runsWorker(pid);
  };
  if (oldPid && alive(oldPid) && old[1] === build) {
    line(`using the running demo worker (pid ${oldPid})`);
  } else {
    if (oldPid && alive(oldPid)) {
      process.kill(oldPid, 'SIGTERM');
      for (let i = 0; i < 100 && alive(oldPid); i++) await new Promise((r) => setTimeout(r, 100));
      line(`stopped the demo worker ${oldPid}: it ran another build`);
    }
    const logFile = path.join(process.env.PARTFLOW_HOME ?? '.', 'logs', 'demo-worker.log');
    fs.mkdirSync(path.dirname(logFile), { recursive: true });
    const out = fs.openSync(logFile, 'a');
    const workerProc = spawn(process.execPath, [script], {
      env: { ...process.env, DATABASE_URL: dbUrl },
      stdio: ['ignore', out, out],
      detached: true,
    });
    workerProc.unref();
    fs.writeFileSync(pidFile, `${workerProc.pid}\n${build}\n${stat(workerProc.pid!)[19] ?? ''}\n`);
    line(
      `started a worker (pid ${workerProc.pid}, log ${logFile}); it keeps running after the demo: kill ${workerProc.pid} to stop it`,
    );
  }
  const opsPerLane = Number(args['ops-per-second']) / 4 / Object.keys(SPECS).length;
  const writers = Object.fromEntries(
    Object.entries(SPECS).map(([t, spec]) => [
      t,
      new Writer(spec, conn, { lanes: 2, opsPerSecondPerLane: opsPerLane * 2 }),
    ]),
  );
  const before = Object.fromEntries(
    await Promise.all(
      Object.keys(SPECS).map(
        async (t) => [t, Number((await pool.query(`SELECT count(*) FROM ${t}`)).rows[0].count)] as const,
      ),
    ),
  );
  for (const w of Object.values(writers)) await w.start();
  const lockWaits = new LockWaitSampler(conn, 'partflow-demo-writer');
  await lockWaits.start();
  line(
    `writers running: ${args['ops-per-second']} ops/s of inserts, updates (also moving rows across months and changing ids) and deletes`,
  );
  // what the application's statements take with no migration, the baseline of the copy's cost below
  const quietFrom = Date.now();
  await new Promise((r) => setTimeout(r, Number(args['quiet-seconds']) * 1000));
  const quietTo = Date.now();
  line(
    `writers alone for ${args['quiet-seconds']} s: p99 ${Object.entries(writers)
      .map(([t, w]) => `${t} ${w.p99Between(quietFrom, quietTo).p99} ms`)
      .join(', ')}`,
  );

  const handles: Record<string, WorkflowHandle> = {};
  const started = Date.now();
  for (const t of Object.keys(SPECS)) {
    const parallelism = t === 'generated_images' ? Number(args.parallelism) : 1;
    handles[t] = await startPartition(
      client,
      {
        table: `public.${t}`,
        batchSize: Number(args['batch-size']),
        parallelism,
        approval: 'signal',
        rollbackWindow: '1h',
      },
      config.taskQueue,
    );
    line(`started workflow ${handles[t].workflowId} (backfill in ${parallelism} stream${parallelism > 1 ? 's' : ''})`);
  }
  const approved = new Set<string>();
  const finalized = new Set<string>();
  const phaseTimes: Record<string, Record<string, number>> = {};
  const done = new Set<string>();
  while (done.size < Object.keys(handles).length) {
    await new Promise((r) => setTimeout(r, 1000));
    for (const [t, h] of Object.entries(handles)) {
      if (done.has(t)) continue;
      let p: Progress;
      try {
        p = await h.query<Progress>('progress');
      } catch (err) {
        const d = await h.describe();
        if (d.status.name !== 'RUNNING') done.add(t);
        else line(`${t.padEnd(20)} waiting for a worker to answer (${(err as Error).message})`);
        continue;
      }
      (phaseTimes[t] ??= {})[p.phase] ??= Date.now();
      const bar = '#'.repeat(Math.round(p.percent / 5)).padEnd(20, '.');
      line(
        `${t.padEnd(20)} ${p.phase.padEnd(18)} [${bar}] ${p.percent.toFixed(1).padStart(5)}%  ${fmt(p.rowsCopied).padStart(10)} rows  ${fmt(p.rowsPerSecond).padStart(8)} rows/s  ETA ${p.etaSeconds ?? '?'} s${p.lastError ? `  last error: ${p.lastError}` : ''}`,
      );
      if (p.awaitingApproval && !approved.has(t)) {
        line(
          `${t}: verification passed (${fmt(p.verify!.rows)} rows, ${p.verify!.elapsedMs} ms); sending approveCutover`,
        );
        await h.signal('approveCutover');
        approved.add(t);
      }
      if (p.phase === 'rollback-window' && !finalized.has(t)) {
        line(
          `${t}: cut over in ${p.cutover!.lockHoldMs} ms of lock time; checking the new table, then sending finalize`,
        );
        await h.signal('finalize');
        finalized.add(t);
      }
      if (p.phase === 'done' || p.phase === 'failed' || p.phase === 'rolled-back') done.add(t);
    }
  }
  const elapsed = (Date.now() - started) / 1000;

  // The seed plan's sections 2 and 3 on the now partitioned tables, writers still running.
  line('');
  line('fixConstraints, preset seed-critical-fixes: audit first (dry run, nothing changes)');
  const fixStart = (input: FixConstraintsInput) =>
    client.workflow.start('fixConstraints', {
      taskQueue: config.taskQueue,
      workflowId: `fix-demo-${Date.now()}`,
      args: [input],
    });
  const dry: FixResult = await (await fixStart({ preset: 'seed-critical-fixes', dryRun: true })).result();
  for (const l of auditTable(dry)) line(`  ${l}`);
  const overrides = {
    fk_generated_images_user_id: { orphans: 'set-null' as const },
    fk_user_businesses_user_id: { orphans: 'delete' as const },
    contact_forms_email_pf_not_null: { nulls: { fill: 'unknown@example.invalid' } },
  };
  line(`applying with the operator's policies for what the audit found: ${JSON.stringify(overrides)}`);
  const fixT0 = Date.now();
  const fixHandle = await fixStart({ preset: 'seed-critical-fixes', overrides });
  const fixed: FixResult = await fixHandle.result();
  for (const l of auditTable(fixed)) line(`  ${l}`);
  line(
    `fixConstraints done in ${((Date.now() - fixT0) / 1000).toFixed(1)} s; every repaired row is recorded in partflow.repairs`,
  );
  // The repairs changed rows the writers may have touched: apply the recorded repairs to their record too.
  const repaired = await pool.query(
    `SELECT pk->>0 AS id FROM partflow.repairs WHERE table_name = '"public"."generated_images"' AND action = 'set-null'`,
  );
  for (const { id } of repaired.rows) {
    const row = writers.generated_images.record.get(id);
    if (row) writers.generated_images.record.set(id, JSON.stringify({ ...JSON.parse(row), user_id: null }));
  }

  // The seed plan's indexes on the partitioned tables, built without blocking the writers.
  line('');
  line("createIndexes, preset seed-indexes: the seed plan's indexes on the now partitioned tables, online");
  const indexStart = (input: CreateIndexesInput) =>
    client.workflow.start('createIndexes', {
      taskQueue: config.taskQueue,
      workflowId: `indexes-demo-${Date.now()}`,
      args: [input],
    });
  const seedOwn = { table: 'generated_images', columns: ['expires_at'], where: 'expires_at < NOW()' };
  const refused = await (await indexStart({ indexes: [seedOwn], dryRun: true })).result().then(
    () => 'built?!',
    (e: { cause?: { message?: string } }) => e.cause?.message ?? String(e),
  );
  line(`  the seed's own "(expires_at) WHERE expires_at < NOW()" is refused: ${refused}`);
  const idxT0 = Date.now();
  const indexHandle = await indexStart({ preset: 'seed-indexes' });
  const built: IndexesResult = await indexHandle.result();
  const idxT1 = Date.now();
  for (const x of built.indexes)
    line(`  ${x.name}: ${x.existed ? 'already there' : `built on ${x.built} table(s)`} — ${x.index}`);
  for (const [t, w] of Object.entries(writers)) {
    const l = w.longestBetween(idxT0, idxT1);
    line(`  writers of ${t} meanwhile: ${l.ops} statements, the longest ${l.ms} ms`);
  }
  line(`createIndexes done in ${((idxT1 - idxT0) / 1000).toFixed(1)} s`);

  // Partition upkeep from now on: a Temporal Schedule running maintainPartitions monthly; triggered once now.
  line('');
  const maintInput = {
    tables: Object.keys(SPECS).map((t) => ({
      table: `public.${t}`,
      premake: 3,
      retention: '24 months',
      archive: 'detach' as const,
      exactCounts: true,
    })),
  };
  await client.schedule
    .getHandle(DEFAULT_SCHEDULE_ID)
    .delete()
    .catch(() => undefined);
  await createMaintenanceSchedule(client, maintInput, { taskQueue: config.taskQueue });
  line(`created the Temporal Schedule ${DEFAULT_SCHEDULE_ID} (monthly, overlap skip): ${JSON.stringify(maintInput)}`);
  const sched = client.schedule.getHandle(DEFAULT_SCHEDULE_ID);
  await sched.trigger();
  let action;
  for (let i = 0; i < 100 && !action; i++) {
    action = (await sched.describe()).info.recentActions[0]?.action.workflow;
    if (!action) await new Promise((r) => setTimeout(r, 200));
  }
  const maintHandle = client.workflow.getHandle(action!.workflowId, action!.firstExecutionRunId);
  const maint: MaintainResult = await maintHandle.result();
  line('triggered it once; the health report of that run:');
  for (const l of maintainTable(maint)) line(`  ${l}`);
  line(`Schedule in the Web UI: http://localhost:8233/namespaces/${config.namespace}/schedules/${DEFAULT_SCHEDULE_ID}`);

  line('');
  line('stopping writers and checking every row they touched against their own record');
  const stats = Object.fromEntries(
    await Promise.all(Object.entries(writers).map(async ([t, w]) => [t, await w.stop()] as const)),
  );
  const waits = await lockWaits.stop();
  const spans: Record<string, ActivitySpan[]> = {
    fixConstraints: await activitySpans(fixHandle),
    createIndexes: await activitySpans(indexHandle),
  };
  for (const [t, h] of Object.entries(handles)) spans[`partitionTable ${t}`] = await activitySpans(h);
  spans.maintainPartitions = await activitySpans(maintHandle);
  const check = new PgClient(conn);
  await check.connect();
  let ok = true;
  for (const [t, h] of Object.entries(handles)) {
    const result = await h
      .result()
      .catch((e: Error) => ({ status: 'failed', error: e.message }) as Record<string, unknown>);
    const w = writers[t];
    const s = stats[t];
    const relkind = (await check.query(`SELECT relkind FROM pg_class WHERE oid = to_regclass($1)`, [`public.${t}`]))
      .rows[0]?.relkind;
    const parts = Number(
      (await check.query(`SELECT count(*) FROM pg_inherits WHERE inhparent = to_regclass($1)`, [`public.${t}`])).rows[0]
        .count,
    );
    const count = Number((await check.query(`SELECT count(*) FROM ${t}`)).rows[0].count);
    const expected = before[t] + s.inserts - s.deletes;
    const cmp = await compareWithRecord(check, SPECS[t], w.record, w.touchedIds());
    const deletedTouched = w.touchedIds().filter((k) => !w.record.has(k)).length;
    const r = result as {
      status: string;
      verify?: { rows: number; elapsedMs: number; ranges: unknown[]; chunks?: number; longestSnapshotMs?: number };
      cutover?: { lockHoldMs: number; attempts: number; lockPhases?: Record<string, number> };
      rowsCopied?: number;
      error?: string;
    };
    const good =
      r.status === 'done' &&
      relkind === 'p' &&
      count === expected &&
      maint.ok &&
      cmp.missing === 0 &&
      cmp.extra === 0 &&
      cmp.different === 0 &&
      s.errors === 0;
    ok &&= good;
    line('');
    line(`== ${t}: ${good ? 'OK' : 'PROBLEM'}`);
    line(
      `   workflow: ${r.status}${r.error ? ` (${r.error})` : ''}; now relkind '${relkind}' with ${parts} partitions; ${fmt(count)} rows (started with ${fmt(before[t])})`,
    );
    if (r.verify) {
      line(
        `   verification: ${fmt(r.verify.rows)} rows, per-partition counts and checksums equal, ${r.verify.elapsedMs} ms in ${r.verify.chunks ?? 1} chunk(s), the longest snapshot ${r.verify.longestSnapshotMs ?? r.verify.elapsedMs} ms`,
      );
      for (const v of r.verify.ranges as {
        partition: string;
        sourceRows: number;
        shadowRows: number;
        sourceChecksum: string;
        match: boolean;
      }[]) {
        line(
          `     ${v.partition.padEnd(32)} source ${fmt(v.sourceRows).padStart(9)}  copy ${fmt(v.shadowRows).padStart(9)}  checksum ${v.sourceChecksum.slice(-12).padStart(12)}  ${v.match ? 'equal' : 'DIFFERENT'}`,
        );
      }
    }
    if (r.cutover) {
      // where the lock time went: the end of each part, ms after the grant; the worker's longest stall meanwhile
      const parts = Object.entries(r.cutover.lockPhases ?? {})
        .map(([k, v]) => `${k} ${v}`)
        .join(', ');
      line(
        `   cut-over: ${r.cutover.lockHoldMs} ms holding the lock, ${r.cutover.attempts} attempt(s)` +
          (parts ? ` (${parts})` : ''),
      );
    }
    line(`   backfill: ${fmt(r.rowsCopied ?? 0)} rows copied; whole workflow ${elapsed.toFixed(1)} s`);
    line(
      `   writers: ${fmt(s.ops)} ops (${s.inserts} inserts, ${s.updates} updates, ${s.moves} month moves, ${s.rekeys} id changes, ${s.deletes} deletes), ${s.errors} errors, max latency ${s.maxLatencyMs} ms, p99 ${s.p99LatencyMs} ms`,
    );
    // the copy's cost to the application: its statements' p99 while this table was copied, against the writers alone
    const copyFrom = phaseTimes[t]?.backfill;
    const copyTo = Math.min(
      ...['verify', 'awaiting-approval', 'cutover', 'rollback-window', 'done'].map(
        (x) => phaseTimes[t]?.[x] ?? Infinity,
      ),
    );
    const quiet = w.p99Between(quietFrom, quietTo);
    if (copyFrom && Number.isFinite(copyTo)) {
      const copy = w.p99Between(copyFrom, copyTo);
      // a p99 of fewer statements is their slowest few: no figure to compare
      const ratio =
        quiet.p99 && quiet.ops >= MIN_P99_OPS && copy.ops >= MIN_P99_OPS
          ? ` (${(copy.p99 / quiet.p99).toFixed(2)}x; the default application-latency bound is ${DEFAULT_REPLICA_BOUNDS.maxAppLatencyRatio}x)`
          : ` (of ${fmt(quiet.ops)} and ${fmt(copy.ops)} statements: too few to compare)`;
      line(`   writers' p99: ${quiet.p99} ms alone before the runs, ${copy.p99} ms while ${t} was copied${ratio}`);
    }
    for (const slow of s.slowest.slice(0, 3)) {
      const during = runningAt(slow.at, spans);
      line(
        `     ${slow.ms} ms ${slow.op} at ${new Date(slow.at).toISOString().slice(11, 23)}, while ${during.join(', ') || 'no partflow activity ran'}`,
      );
    }
    if (s.errorSamples.length) line(`   writer errors: ${s.errorSamples.join(' | ')}`);
    line(
      `   independent check: ${fmt(w.touchedIds().length)} touched ids (${deletedTouched} deleted): ${cmp.missing} missing, ${cmp.extra} unexpected, ${cmp.different} different`,
    );
    line(
      `   row count: ${fmt(count)} in the table, ${fmt(expected)} expected from the writers' record (start + inserts - deletes)`,
    );
    line(`   Web UI: http://localhost:8233/namespaces/${config.namespace}/workflows/${h.workflowId}`);
  }
  await check.end();
  await pool.end();
  // what partflow's locks cost the writers, sampled from pg_stat_activity every 10 ms for the whole demo
  line('');
  const longest = waits[0];
  line(
    longest
      ? `longest lock wait of a writer statement: ${Math.round(longest.ms)} ms (${longest.what}), while ` +
          `${runningAt(longest.at, spans, longest.at + longest.ms).join(', ') || 'no partflow activity ran'}; ` +
          `${waits.filter((x) => x.ms > 100).length} waits over 100 ms`
      : 'no writer statement was seen waiting for a lock',
  );
  line('');
  line(
    ok
      ? 'demo finished: every table partitioned, nothing lost, nothing duplicated, no writer error.'
      : 'demo finished with problems (see above).',
  );
  process.exit(ok ? 0 : 1);
}

main().catch((err) => {
  process.stderr.write(`demo failed: ${err?.stack ?? err}\n`);
  process.exit(1);
});

/** The newest modification time of the compiled files below `dir`: a stamp of the build. */
function newestMtime(dir: string): number {
  let newest = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) newest = Math.max(newest, newestMtime(p));
    else if (e.name.endsWith('.js')) newest = Math.max(newest, fs.statSync(p).mtimeMs);
  }
  return Math.round(newest);
}
