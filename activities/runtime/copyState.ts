/**
 * A partitionTable run's own columns in the run store (partflow.runs, one row per table) and its parallel
 * copy's stream ranges (partflow.backfill_streams): where the copy's walk is, the sync trigger's fence, and the
 * cut-over's record. The partitioning activities read and write them only through these functions. Checkpoint
 * writes commit only while the run is `active`.
 */
import type { Pool, PoolClient } from 'pg';
import { failure } from '../../src/failures';
import { displayName, TableRef } from '../../src/ident';
import { STATE_SCHEMA } from '../../src/plan';
import { RUNS } from './runStore';

type Db = Pool | PoolClient;

/** A parallel copy's page ranges, one row per stream */
export const STREAMS = `${STATE_SCHEMA}.backfill_streams`;

/** The table's row as the copy reads it. */
export interface RunRow {
  run_state: string;
  next_page: string;
  total_pages: string | null;
  rows_copied: string;
  cutover_done: boolean;
  workflow_id: string;
  last_key: string[] | null;
  max_key: string[] | null;
  /** the plan claimRun stored, JSON */
  plan: string | null;
}

/** The run's row of the table, or null. */
export async function runState(db: Db, table: TableRef): Promise<RunRow | null> {
  const r = await db.query(`SELECT * FROM ${RUNS} WHERE table_schema = $1 AND table_name = $2`, [
    table.schema,
    table.name,
  ]);
  return r.rowCount ? r.rows[0] : null;
}

/**
 * The claim's write, inside its transaction (after the registry's check): the table's row becomes this run's,
 * with every column of an earlier, ended run's copy reset, and the stream ranges an earlier run left are
 * deleted. Returns null when claimed, or the run that holds the row (this very run, seen again by a retry
 * after its commit, included).
 */
export async function claimTableRow(
  c: PoolClient,
  table: TableRef,
  run: { workflowId: string; runId: string | null },
  planJson: string,
): Promise<{ workflow_id: string; run_id: string | null } | null> {
  // a run that holds the row is seen without waiting for its lock (a step's fence holds it FOR SHARE for as
  // long as the step's transaction lasts): the claim, under the registry's lock, must not wait behind it
  const held = await c.query(
    `SELECT workflow_id, run_id FROM ${RUNS}
      WHERE table_schema = $1 AND table_name = $2 AND run_state IN ('active', 'undoing', 'cleanup')`,
    [table.schema, table.name],
  );
  if (held.rowCount) return held.rows[0];
  const r = await c.query(
    `INSERT INTO ${RUNS} AS r (table_schema, table_name, workflow_id, run_id, run_state, plan)
     VALUES ($1, $2, $3, $5, 'active', $4)
     ON CONFLICT (table_schema, table_name) DO UPDATE
        SET workflow_id = EXCLUDED.workflow_id, run_id = EXCLUDED.run_id, run_state = 'active',
            updated_at = now(), plan = EXCLUDED.plan, next_page = 0, total_pages = NULL, rows_copied = 0,
            cutover_done = false, started_at = now(), last_key = NULL, max_key = NULL, trigger_fence = NULL,
            filenode = NULL, rewrites = 0, standbys = NULL, cutover_columns = NULL,
            cutover_partitions = NULL, rollback_lost = NULL
      WHERE r.run_state NOT IN ('active', 'undoing', 'cleanup')
     RETURNING workflow_id`,
    [table.schema, table.name, run.workflowId, planJson, run.runId],
  );
  if (r.rowCount) return null;
  const cur = await c.query(`SELECT workflow_id, run_id FROM ${RUNS} WHERE table_schema = $1 AND table_name = $2`, [
    table.schema,
    table.name,
  ]);
  return cur.rows[0] ?? { workflow_id: '?', run_id: null };
}

/** A parallel copy's ranges from an earlier run of the table: deleted (in the claim's transaction). */
export async function clearStreams(c: PoolClient, table: TableRef): Promise<void> {
  await c.query(`DELETE FROM ${STREAMS} WHERE table_schema = $1 AND table_name = $2`, [table.schema, table.name]);
}

/** Whether partflow's run store exists (a database partflow never set up has none). */
export async function runsExist(db: Db): Promise<boolean> {
  return (await db.query(`SELECT to_regclass($1) IS NOT NULL AS ok`, [RUNS])).rows[0].ok;
}

/** The row's `workflow_id` and stored `plan` (JSON text), or undefined. */
export async function storedPlanRow(
  db: Db,
  table: TableRef,
): Promise<{ workflow_id: string; plan: string | null } | undefined> {
  if (!(await runsExist(db))) return undefined;
  const r = await db.query(`SELECT workflow_id, plan FROM ${RUNS} WHERE table_schema = $1 AND table_name = $2`, [
    table.schema,
    table.name,
  ]);
  return r.rows[0];
}

/** A batch's commit: the checkpoint moves only from where the batch started, while the run is active. */
export type CheckpointCommit = (c: PoolClient, rowsRead: number) => Promise<boolean>;

function checkpoint(table: TableRef, set: string, where: string, params: unknown[]): CheckpointCommit {
  return async (c, read) => {
    const u = await c.query(
      `UPDATE ${RUNS} SET ${set}, rows_copied = rows_copied + $3, updated_at = now()
        WHERE table_schema = $1 AND table_name = $2 AND run_state = 'active' AND ${where}`,
      [table.schema, table.name, read, ...params],
    );
    return u.rowCount === 1;
  };
}

/** The page walk's checkpoint: from page `from` to `to`, over the same table file. */
export function pageCheckpoint(table: TableRef, from: number, to: number): CheckpointCommit {
  return checkpoint(
    table,
    'next_page = $5',
    `next_page = $4 AND (filenode IS NULL OR ` +
      `filenode = pg_relation_filenode(to_regclass(format('%I.%I', table_schema, table_name))))`,
    [from, to],
  );
}

/** The key walk's checkpoint: from key `from` (null: the start) to `to`. */
export function keyCheckpoint(table: TableRef, from: string[] | null, to: string[]): CheckpointCommit {
  return checkpoint(table, 'last_key = $5::text[]', 'last_key IS NOT DISTINCT FROM $4::text[]', [from, to]);
}

/**
 * With the sync trigger: the walk's end, pages and the table file (a key walk's largest key is recorded by
 * `recordMaxKey`), and the trigger's fence. Values recorded already stay. Returns the pages to walk.
 */
export async function recordWalkStart(
  c: PoolClient,
  table: TableRef,
  tableOid: number,
  fence: string,
): Promise<number> {
  const r = await c.query(
    `UPDATE ${RUNS}
        SET total_pages = coalesce(total_pages, pg_relation_size($3::regclass) / current_setting('block_size')::int),
            trigger_fence = coalesce(trigger_fence, $4),
            filenode = coalesce(filenode, pg_relation_filenode($3::regclass)),
            updated_at = now()
      WHERE table_schema = $1 AND table_name = $2 RETURNING total_pages`,
    [table.schema, table.name, tableOid, fence],
  );
  return Number(r.rows[0].total_pages);
}

/** The key walk's end, recorded once. */
export async function recordMaxKey(c: PoolClient, table: TableRef, key: string[] | null): Promise<void> {
  await c.query(
    `UPDATE ${RUNS} SET max_key = coalesce(max_key, $3::text[]) WHERE table_schema = $1 AND table_name = $2`,
    [table.schema, table.name, key],
  );
}

/** The sync trigger's fence as recorded when it was installed, or null. */
export async function recordedTriggerFence(c: PoolClient, table: TableRef): Promise<string | null> {
  const st = await c.query(`SELECT trigger_fence FROM ${RUNS} WHERE table_schema = $1 AND table_name = $2`, [
    table.schema,
    table.name,
  ]);
  return st.rows[0]?.trigger_fence ?? null;
}

/**
 * Parallel copy: splits pages [0, total_pages) of the file recorded in the run's row into `n` ranges, one per
 * stream (in the sync trigger's transaction, so that they exist before any stream runs); on a rewrite, splits
 * the new file the same way. A split made already stays.
 */
export async function splitStreams(c: Db, table: TableRef, n: number): Promise<void> {
  await c.query(
    `INSERT INTO ${STREAMS} AS s (table_schema, table_name, stream, start_page, next_page, end_page, filenode)
     SELECT $1, $2, k, k * r.total_pages / $3, k * r.total_pages / $3, (k + 1) * r.total_pages / $3, r.filenode
       FROM ${RUNS} r, generate_series(0, $3 - 1) k
      WHERE r.table_schema = $1 AND r.table_name = $2
     ON CONFLICT (table_schema, table_name, stream) DO UPDATE
        SET start_page = EXCLUDED.start_page, next_page = EXCLUDED.next_page, end_page = EXCLUDED.end_page,
            filenode = EXCLUDED.filenode
      WHERE s.filenode IS DISTINCT FROM EXCLUDED.filenode`,
    [table.schema, table.name, n],
  );
}

/**
 * Inside one transaction: when the table's file is not the one the walk started on (a VACUUM FULL, CLUSTER,
 * pg_repack or TRUNCATE), the walk starts again from page 0 of the new file, and a parallel copy's streams
 * are split again. Returns the new file's pages, or null when the file is the same.
 */
export async function restartWalkOnNewFile(c: PoolClient, table: TableRef): Promise<number | null> {
  const file = `to_regclass(format('%I.%I', $1::text, $2::text))`;
  const r = await c.query(
    `UPDATE ${RUNS} SET next_page = 0, rewrites = rewrites + 1, updated_at = now(),
            total_pages = pg_relation_size(${file}) / current_setting('block_size')::int,
            filenode = pg_relation_filenode(${file})
      WHERE table_schema = $1 AND table_name = $2 AND filenode IS NOT NULL
        AND filenode IS DISTINCT FROM pg_relation_filenode(${file})
     RETURNING total_pages`,
    [table.schema, table.name],
  );
  if (!r.rowCount) return null;
  const n = await c.query(`SELECT count(*)::int AS n FROM ${STREAMS} WHERE table_schema = $1 AND table_name = $2`, [
    table.schema,
    table.name,
  ]);
  if (n.rows[0].n > 0) await splitStreams(c, table, n.rows[0].n);
  return Number(r.rows[0].total_pages);
}

/** One stream's row. */
export interface StreamRow {
  start_page: string;
  next_page: string;
  end_page: string;
  filenode: string;
  rows_copied: string;
}

export async function streamRow(db: Db, t: TableRef, k: number): Promise<StreamRow> {
  const r = await db.query(`SELECT * FROM ${STREAMS} WHERE table_schema = $1 AND table_name = $2 AND stream = $3`, [
    t.schema,
    t.name,
    k,
  ]);
  if (!r.rowCount)
    throw failure(
      `No backfill stream ${k} for ${displayName(t)}: the sync step did not split the table.`,
      'StateMissing',
    );
  return r.rows[0];
}

/** A stream's checkpoint: from page `from` to `to` of its range ending at `end`, over the same table file. */
export function streamCheckpoint(
  t: TableRef,
  k: number,
  pages: { from: number; to: number; end: number },
  filenode: string,
): CheckpointCommit {
  return async (c, read) => {
    const u = await c.query(
      `UPDATE ${STREAMS} SET next_page = $5, rows_copied = rows_copied + $8
        WHERE table_schema = $1 AND table_name = $2 AND stream = $3 AND next_page = $4 AND end_page = $6
          AND filenode = $7 AND filenode = pg_relation_filenode(to_regclass(format('%I.%I', $1::text, $2::text)))`,
      [t.schema, t.name, k, pages.from, pages.to, pages.end, filenode, read],
    );
    return u.rowCount === 1;
  };
}

/** Every stream's checkpoint together: pages walked and to walk, rows copied, streams, those not done. */
export async function streamsTotal(
  db: Db,
  t: TableRef,
): Promise<{ done: number; pages: number; rows: number; n: number; left: number[] }> {
  const all = await db.query(
    `SELECT sum(next_page - start_page)::bigint AS done, sum(end_page - start_page)::bigint AS pages,
            sum(rows_copied)::bigint AS rows, count(*)::int AS n,
            coalesce(array_agg(stream ORDER BY stream) FILTER (WHERE next_page < end_page), '{}') AS left
       FROM ${STREAMS} WHERE table_schema = $1 AND table_name = $2`,
    [t.schema, t.name],
  );
  const a = all.rows[0];
  return { done: Number(a.done), pages: Number(a.pages), rows: Number(a.rows), n: a.n, left: a.left };
}

/**
 * The cut-over's record, in the cut-over's (or the swap back's) own transaction: done or undone, and with a
 * copy cut-over the new table's columns and partitions as of then (a rollback that would lose a later change
 * is refused).
 */
export async function recordCutover(
  c: PoolClient,
  table: TableRef,
  done: boolean,
  asOf?: { columns: unknown; partitions: unknown },
): Promise<void> {
  if (asOf) {
    await c.query(
      `UPDATE ${RUNS} SET cutover_done = $3, cutover_columns = $4, cutover_partitions = $5, rollback_lost = NULL,
              updated_at = now()
        WHERE table_schema = $1 AND table_name = $2`,
      [table.schema, table.name, done, asOf.columns, asOf.partitions],
    );
    return;
  }
  await c.query(
    `UPDATE ${RUNS} SET cutover_done = $3, updated_at = now() WHERE table_schema = $1 AND table_name = $2`,
    [table.schema, table.name, done],
  );
}

/** The cut-over's record as `recordCutover` left it, or undefined. */
export async function cutoverRecord(
  db: Db,
  table: TableRef,
): Promise<
  | {
      cutover_done: boolean;
      cutover_columns: string[] | null;
      cutover_partitions: unknown;
      rollback_lost: string | null;
    }
  | undefined
> {
  const r = await db.query(
    `SELECT cutover_done, cutover_columns, cutover_partitions, rollback_lost
       FROM ${RUNS} WHERE table_schema = $1 AND table_name = $2`,
    [table.schema, table.name],
  );
  return r.rows[0];
}
