/**
 * What the attack reviews' tests share (attackHeld, attackSubxact, attackParked): a statement's outcome as text,
 * a run's end as text, a session at an isolation level with its snapshot taken, the table against its control,
 * the rollback window's record, the swap back's handover, the activities' results from the history.
 */
import type { WorkflowHandle } from '@temporalio/client';
import type { Pool, PoolClient } from 'pg';
import type { PartitionTableInput } from '../../src/input';
import { sleep, waitFor } from './workflow';

/** `N rows`, or the error's code and message: what the application would have seen */
export const outcome = (c: { query: PoolClient['query'] }, sql: string, args: unknown[] = []) =>
  c.query(sql, args).then(
    (r) => `${r.rowCount} rows`,
    (e: { code?: string; message: string }) => `${e.code}: ${e.message}`,
  );

/** `ok <status>`, or `failed: <message> <cause>` */
export const ended = (h: WorkflowHandle) =>
  h.result().then(
    (x) => `ok ${(x as { status: string }).status}`,
    (e) => `failed: ${(e as Error).message} ${((e as { cause?: Error }).cause?.message ?? '').slice(0, 300)}`,
  );

/** A pooled session in a transaction at `level` whose snapshot is taken (released by the caller). */
export async function sessionAt(pool: Pool, level = 'REPEATABLE READ'): Promise<PoolClient> {
  const c = await pool.connect();
  await c.query(`BEGIN ISOLATION LEVEL ${level}`);
  await c.query('SELECT count(*) FROM pg_class');
  return c;
}

/** Rows differing between t and its control (the writers' record), by id. */
export async function rowsDiffering(pool: Pool, t: string, ctl = `${t}_ctl`): Promise<number> {
  const r = await pool.query(
    `SELECT count(*)::int AS n FROM ${t} a FULL JOIN ${ctl} b USING (id) WHERE (a.*)::text IS DISTINCT FROM (b.*)::text`,
  );
  return r.rows[0].n;
}

/** What the reverse applier recorded that the old table cannot hold (partflow.runs.rollback_lost). */
export async function rollbackRecord(pool: Pool, t: string): Promise<string | null> {
  const r = await pool.query(
    `SELECT rollback_lost FROM partflow.runs WHERE table_schema = 'public' AND table_name = $1`,
    [t],
  );
  return r.rows[0]?.rollback_lost ?? null;
}

/** The reverse trigger's function on t (the new table) is the swap back's handover (false after 30 s). */
export async function reverseHandingOver(pool: Pool, t: string): Promise<boolean> {
  for (let i = 0; i < 600; i++) {
    const r = await pool.query(
      `SELECT bool_or(p.prosrc LIKE '%pg_try_advisory_xact_lock_shared%') AS on FROM pg_trigger g
         JOIN pg_proc p ON p.oid = g.tgfoid WHERE g.tgrelid = $1::regclass AND NOT g.tgisinternal`,
      [t],
    );
    if (r.rows[0]?.on === true) return true;
    await sleep(50);
  }
  return false;
}

/** The results of the run's completed activities, from its history (JSON payloads). */
export async function activityResults(h: WorkflowHandle): Promise<Record<string, unknown>[]> {
  const history = await h.fetchHistory();
  return (history.events ?? []).flatMap((e) => {
    const data = e.activityTaskCompletedEventAttributes?.result?.payloads?.[0]?.data;
    if (!data?.length) return []; // an activity that returned nothing: binary/null, no data
    const v = JSON.parse(Buffer.from(data).toString());
    return v && typeof v === 'object' ? [v as Record<string, unknown>] : [];
  });
}

/** t's oid (the name's table now). */
export async function oidOf(pool: Pool, t: string): Promise<number> {
  return Number((await pool.query(`SELECT $1::regclass::oid AS o`, [t])).rows[0].o);
}

/** The forward trigger's function of the table whose oid is `oid` is the handover's. */
export async function handingOver(pool: Pool, oid: number): Promise<boolean> {
  const r = await pool.query(
    `SELECT prosrc LIKE '%pg_try_advisory_xact_lock_shared%' AS on FROM pg_proc WHERE oid = to_regproc($1)`,
    [`partflow.fwd_${oid}`],
  );
  return r.rows[0]?.on === true;
}

/** Waits up to 30 s for the handover's function (handingOver); false if it never came. */
export async function handingOverWithin(pool: Pool, oid: number): Promise<boolean> {
  for (let i = 0; i < 600; i++) {
    if (await handingOver(pool, oid)) return true;
    await sleep(50);
  }
  return false;
}

/**
 * t (id bigint PRIMARY KEY, payload text, created_at timestamptz NOT NULL`extra`) with 2,000 rows over 60 days,
 * and its control `<t>_ctl`, a plain copy that receives the same statements.
 */
export async function tableWithControl(pool: Pool, t: string, extra = ''): Promise<void> {
  await pool.query(`CREATE TABLE ${t} (id bigint PRIMARY KEY, payload text, created_at timestamptz NOT NULL${extra})`);
  await pool.query(
    `INSERT INTO ${t} SELECT g, 'p' || g, '2026-01-01'::timestamptz + (g % 60) * interval '1 day' FROM generate_series(1, 2000) g`,
  );
  await pool.query(`CREATE TABLE ${t}_ctl (LIKE ${t} INCLUDING ALL)`);
  await pool.query(`INSERT INTO ${t}_ctl SELECT * FROM ${t}`);
}

/** Waits until t's reverse key log (`<t>_pf_rlog`) is empty, up to `ms`. */
export async function reverseLogDrained(pool: Pool, t: string, ms = 20_000): Promise<void> {
  const left = async () => (await pool.query(`SELECT count(*)::int AS n FROM ${t}_pf_rlog`)).rows[0].n as number;
  for (const until = Date.now() + ms; Date.now() < until && (await left()) > 0;) await sleep(100);
}

/**
 * t (id bigint PRIMARY KEY, email text UNIQUE, created_at, payload) with `rows` rows over 60 days and its control
 * `<t>_ctl`; partitioned by `start` with the email's uniqueness given up (acceptLostConstraints), approved, and
 * returned in its rollback window (each wait up to `timeoutMs`). `analyze` gives the planner t's size first (large tables).
 */
export async function emailsInWindow(
  pool: Pool,
  start: (input: PartitionTableInput) => Promise<WorkflowHandle>,
  t: string,
  opts: { rows: number; batchSize: number; timeoutMs: number; analyze?: boolean },
): Promise<WorkflowHandle> {
  await pool.query(
    `CREATE TABLE ${t} (id bigint PRIMARY KEY, email text UNIQUE, created_at timestamptz NOT NULL, payload text)`,
  );
  await pool.query(
    `INSERT INTO ${t} SELECT g, 'e' || g, '2026-01-01'::timestamptz + (g % 60) * interval '1 day', 'p'
       FROM generate_series(1, $1::int) g`,
    [opts.rows],
  );
  await pool.query(`CREATE TABLE ${t}_ctl (LIKE ${t} INCLUDING ALL)`);
  await pool.query(`INSERT INTO ${t}_ctl SELECT * FROM ${t}`);
  if (opts.analyze) await pool.query(`ANALYZE ${t}`);
  const h = await start({
    table: t,
    batchSize: opts.batchSize,
    approval: 'signal',
    rollbackWindow: '1h',
    acceptLostConstraints: [`${t}_email_key`],
  });
  await waitFor(h, (p) => p.phase === 'awaiting-approval', 'verified', opts.timeoutMs);
  await h.signal('approveCutover');
  await waitFor(h, (p) => p.phase === 'rollback-window', 'cut over', opts.timeoutMs);
  return h;
}
