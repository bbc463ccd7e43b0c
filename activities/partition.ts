/**
 * Activities of `partitionTable`. Each is idempotent: it looks at the catalog or at partflow.runs first
 * and does only what is missing, so Temporal can run it again after a crash at any point.
 */
import { ApplicationFailure } from '@temporalio/common';
import type { Pool, PoolClient } from 'pg';
import { displayName, InputError, qualified, TableRef } from '../src/ident';
import { validatePartitionInput } from '../src/input';
import type { Logger } from '../src/logger';
import {
  buildPlan,
  FORWARD_TRIGGER,
  nextBatchSize,
  pagesPerBatch,
  Plan,
  shapeDifferences,
  STATE_SCHEMA,
} from '../src/plan';
import { bucketMonth, compareMonths, parseMonth } from '../src/partitions';
import {
  activityContext,
  classify,
  currentWorkflowId,
  inTransaction,
  isTransient,
  sleep,
  withHeartbeat,
  withLockRetry,
} from './db';
import { faultPoint } from './faults';
import { migrate } from './migrate';
import { readTableInfo } from './inspect';
import { metrics } from './metrics';
import { failure } from '../src/failures';

export interface Deps {
  pool: Pool;
  log: Logger;
}

export interface PreflightResult {
  plan: Plan;
  summary: string[];
}

export interface BackfillChunkInput {
  table: TableRef;
  copyMode: Plan['copyMode'];
  sql: Pick<
    Plan['sql'],
    'backfillBatch' | 'backfillBatchFast' | 'keyBound' | 'keyBoundFirst' | 'keyCopy' | 'keyCopyFirst'
  >;
  batchSize: number;
  sleepMs: number;
  /** stop after this long so the workflow can react to pause/throttle/rollback */
  maxMs: number;
  /** longest a batch may hold its row locks; batches shrink below batchSize to stay under it */
  maxBatchMs?: number;
}

export interface BackfillChunkResult {
  nextPage: number;
  totalPages: number;
  rowsCopied: number;
  rowsThisChunk: number;
  pagesThisChunk: number;
  batches: number;
  /** batches that met rows the sync trigger had written and were copied again with ON CONFLICT */
  mergedBatches?: number;
  elapsedMs: number;
  done: boolean;
  /** share of the walk done, 0..100 */
  percent: number;
  /** the checkpoint, readable: a page number or the last key */
  checkpoint: string;
  /** updates that moved a row to another month since the sync trigger was installed */
  rowMoves?: number;
}

export interface VerifyRange {
  partition: string;
  sourceRows: number;
  shadowRows: number;
  sourceChecksum: string;
  shadowChecksum: string;
  match: boolean;
}

export interface VerifyReport {
  ok: boolean;
  rows: number;
  ranges: VerifyRange[];
  mismatches: string[];
  elapsedMs: number;
}

export interface CutoverResult {
  alreadyDone: boolean;
  attempts: number;
  lockWaitRetries: number;
  /** how long the cut-over transaction held its locks, ms */
  lockHoldMs: number;
  rowMoves?: number;
}

export const RUNS = `${STATE_SCHEMA}.runs`;
/** The checkpoint guard of a page batch: the checkpoint it started from, and the same table file. */
const SAME_FILE_AT = (param: string) =>
  `next_page = ${param} AND (filenode IS NULL OR filenode = pg_relation_filenode(to_regclass(format('%I.%I', table_schema, table_name))))`;
/** Longest wait of a backfill batch for a row lock; below deadlock_timeout (1 s by default). */
const BATCH_LOCK_TIMEOUT_MS = 200;
const BATCH_LOCK_ATTEMPTS = 30;

/**
 * What the backfill learns per table, in memory (another worker starts afresh and adapts within a batch or
 * two): `size`, the batch size (pages, or keys in key mode) under the time budget — a batch that took
 * longer shrinks the next one in proportion, a quick one lets it grow back towards the operator's batchSize;
 * `mergeLeft`, how many more batches use ON CONFLICT because a recent one met rows the trigger had written.
 */
const tuning = new Map<string, { size?: number; mergeLeft: number }>();
const MERGE_BATCHES = 20;
function tuningOf(key: string): { size?: number; mergeLeft: number } {
  let t = tuning.get(key);
  if (!t) tuning.set(key, (t = { mergeLeft: 0 }));
  return t;
}

/** What the partitioning path's DDL locks: the table, the copy, the old table (and their partitions). */
function lockedBy(plan: Plan): { relations: string[] } {
  return { relations: [qualified(plan.table), qualified(plan.shadow), qualified(plan.old)] };
}

async function relOid(c: PoolClient, ref: TableRef): Promise<{ oid: number; relkind: string } | null> {
  const r = await c.query(
    `SELECT c.oid::int AS oid, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`,
    [ref.schema, ref.name],
  );
  return r.rowCount ? r.rows[0] : null;
}

/**
 * Inside a forward step's DDL transaction: this workflow's run is still active. beginUndo's UPDATE waits for
 * the row lock taken here, so once the undo has begun no forward DDL of the run can commit.
 */
async function fence(c: PoolClient, table: TableRef): Promise<void> {
  const wf = currentWorkflowId() ?? 'local';
  const r = await c.query(
    `SELECT 1 FROM ${RUNS} WHERE table_schema = $1 AND table_name = $2 AND workflow_id = $3 AND run_state = 'active' FOR SHARE`,
    [table.schema, table.name, wf],
  );
  if (!r.rowCount) {
    throw failure(
      `The partflow run of ${displayName(table)} (workflow ${wf}) is being undone or is over; this step does nothing.`,
      'RunUndone',
    );
  }
}

/** The columns of what is now `plan.table` (after the cut-over: the partitioned table), as names and types in order. */
async function newTableColumns(c: PoolClient | Pool, plan: Plan): Promise<string[]> {
  const r = await c.query(
    `SELECT quote_ident(attname) || ' ' || format_type(atttypid, atttypmod) AS x FROM pg_attribute
      WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum`,
    [qualified(plan.table)],
  );
  return r.rows.map((x) => x.x);
}

/**
 * Why swapping back now would lose something, or null: a column added, renamed or retyped on the new table
 * during the rollback window has no place in the old one.
 */
async function rollbackLoss(c: PoolClient | Pool, plan: Plan): Promise<string | null> {
  const r = await c.query(
    `SELECT cutover_done, cutover_columns FROM ${RUNS} WHERE table_schema = $1 AND table_name = $2`,
    [plan.table.schema, plan.table.name],
  );
  const row = r.rows[0];
  if (!row?.cutover_done || !row.cutover_columns) return null;
  const diff = shapeDifferences(row.cutover_columns, await newTableColumns(c, plan));
  if (!diff.length) return null;
  return `Rolling back ${displayName(plan.table)} now would lose what changed on it since the cut-over (column ${diff.join('; column ')}), which ${displayName(plan.old)} does not have; undo that change and signal rollback again, or finalize.`;
}

/**
 * Under the cut-over's lock: the source still has the shape the copy was built from, and partflow's
 * triggers were never disabled (a disabled trigger, even one enabled again, changes its catalog row: the
 * copy may have missed writes). Either difference refuses the cut-over with the reason; nothing is swapped.
 */
async function checkUnchanged(c: PoolClient, plan: Plan): Promise<void> {
  const t = displayName(plan.table);
  if (plan.sourceShape) {
    const now = (await c.query(plan.sql.shape, [plan.tableOid])).rows.map((r) => r.x as string);
    const diff = shapeDifferences(plan.sourceShape, now);
    if (diff.length) {
      throw failure(
        `Table ${t} changed after the plan was made (${diff.join('; ')}), so the copy does not match it; not cutting over: the run rolls back, start it again after the change.`,
        'TableChanged',
      );
    }
  }
  const st = await c.query(`SELECT trigger_fence FROM ${RUNS} WHERE table_schema = $1 AND table_name = $2`, [
    plan.table.schema,
    plan.table.name,
  ]);
  const recorded: string | null = st.rows[0]?.trigger_fence ?? null;
  if (recorded !== null) {
    const fence = (await c.query(plan.sql.triggerFence, [plan.tableOid])).rows[0].fence;
    if (fence !== recorded) {
      throw failure(
        `partflow's sync triggers on ${t} were disabled, dropped or altered during the run (${recorded} then, ${fence || 'none'} now), so writes may have bypassed the copy; not cutting over: the run rolls back, start it again.`,
        'CopyDiverged',
      );
    }
  }
}

export function createPartitionActivities({ pool, log }: Deps) {
  const step = (name: string, table: TableRef) =>
    log.child({ step: name, table: displayName(table), workflowId: currentWorkflowId() });

  /** Updates that moved a row to another month so far (the trigger's counter); 0 when there is none. */
  async function rowMoves(table: TableRef): Promise<number> {
    const counter = qualified({ schema: table.schema, name: `${table.name}_pf_moves` });
    const r = await pool.query(`SELECT to_regclass($1) IS NOT NULL AS ok`, [counter]);
    if (!r.rows[0].ok) return 0;
    const v = await pool
      .query(`SELECT CASE WHEN is_called THEN last_value ELSE 0 END::bigint AS n FROM ${counter}`)
      .catch(() => null);
    return Number(v?.rows[0]?.n ?? 0);
  }

  async function runState(table: TableRef): Promise<{
    run_state: string;
    next_page: string;
    total_pages: string | null;
    rows_copied: string;
    cutover_done: boolean;
    workflow_id: string;
    last_key: string[] | null;
    max_key: string[] | null;
  } | null> {
    const r = await pool.query(`SELECT * FROM ${RUNS} WHERE table_schema = $1 AND table_name = $2`, [
      table.schema,
      table.name,
    ]);
    return r.rowCount ? r.rows[0] : null;
  }

  /**
   * The plan a step is handed must be the one partflow's preflight made and claimRun stored for this very
   * workflow: SQL is never taken from a workflow input. `sql` checks single statements (the backfill's).
   */
  async function ownPlan(
    table: TableRef,
    plan: Plan | null,
    sql: Record<string, string | undefined> = {},
  ): Promise<void> {
    const wf = currentWorkflowId() ?? 'local';
    const r = await pool.query(`SELECT to_regclass($1) IS NOT NULL AS ok`, [RUNS]);
    const row = r.rows[0].ok
      ? (
          await pool.query(`SELECT workflow_id, plan FROM ${RUNS} WHERE table_schema = $1 AND table_name = $2`, [
            table.schema,
            table.name,
          ])
        ).rows[0]
      : undefined;
    let ok = !!row && row.workflow_id === wf && typeof row.plan === 'string';
    if (ok && plan) ok = row.plan === JSON.stringify(plan);
    if (ok && Object.keys(sql).length) {
      const stored = JSON.parse(row.plan) as Plan;
      ok = Object.entries(sql).every(
        ([k, v]) => v === undefined || (stored.sql as unknown as Record<string, unknown>)[k] === v,
      );
    }
    if (!ok) {
      throw failure(
        `The plan handed to this step for ${displayName(table)} is not the one partflow made for workflow ${wf}; refusing to run its SQL.`,
        'PlanMismatch',
      );
    }
  }

  /**
   * A VACUUM FULL, CLUSTER, pg_repack or TRUNCATE gives the table a new file in which rows sit on other
   * pages: the page checkpoint means nothing there, and rows moved below it would never be copied. When the
   * file changed since the sync trigger was installed, the walk starts again from page 0 over the new file
   * (every row in it existed then or was written by the trigger since; rows copied already are skipped).
   */
  async function restartIfRewritten(table: TableRef, l: Logger): Promise<void> {
    const r = await pool.query(
      `UPDATE ${RUNS} SET next_page = 0, rewrites = rewrites + 1, updated_at = now(),
              total_pages = pg_relation_size(to_regclass(format('%I.%I', $1::text, $2::text))) / current_setting('block_size')::int,
              filenode = pg_relation_filenode(to_regclass(format('%I.%I', $1::text, $2::text)))
        WHERE table_schema = $1 AND table_name = $2 AND filenode IS NOT NULL
          AND filenode IS DISTINCT FROM pg_relation_filenode(to_regclass(format('%I.%I', $1::text, $2::text)))
       RETURNING total_pages`,
      [table.schema, table.name],
    );
    if (r.rowCount) {
      tuningOf(`pages:${qualified(table)}`).mergeLeft = 1_000_000; // every later batch may meet rows copied already
      l.warn(
        { totalPages: Number(r.rows[0].total_pages) },
        'the table was rewritten (VACUUM FULL, CLUSTER or TRUNCATE): the backfill walks its new file from page 0',
      );
    }
  }

  /**
   * One backfill batch: `copy` runs in a transaction that also advances the checkpoint in partflow.runs,
   * guarded by the checkpoint the batch started from (`where` + `params`). Returns the rows read, or -1 when
   * another attempt of the activity moved the checkpoint first (then nothing of this batch is kept).
   *
   * The batch waits at most BATCH_LOCK_TIMEOUT_MS for a row lock, well under PostgreSQL's default
   * deadlock_timeout (1 s): when an application transaction and a batch wait for each other, the batch
   * gives up and is retried, so the application's transaction is not the one the deadlock detector kills.
   * synchronous_commit is off for the batch: a batch lost in a crash loses its checkpoint with it and is
   * simply copied again.
   */
  async function guardedBatch(
    table: TableRef,
    set: string,
    where: string,
    params: unknown[],
    copy: (c: PoolClient) => Promise<number>,
  ): Promise<number> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await inTransaction(
          pool,
          async (c) => {
            const read = await copy(c);
            const u = await c.query(
              `UPDATE ${RUNS} SET ${set}, rows_copied = rows_copied + $3, updated_at = now() WHERE table_schema = $1 AND table_name = $2 AND run_state = 'active' AND ${where}`,
              [table.schema, table.name, read, ...params],
            );
            if (u.rowCount !== 1) throw Object.assign(new Error('checkpoint moved under us'), { code: 'PF001' });
            return read;
          },
          { lockTimeoutMs: BATCH_LOCK_TIMEOUT_MS, asyncCommit: true },
        );
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code === 'PF001') return -1;
        if ((code === '55P03' || code === '40P01') && attempt < BATCH_LOCK_ATTEMPTS) {
          metrics.lockWaitRetry('backfill');
          await sleep(20 + Math.random() * 80 * Math.min(attempt, 5));
          continue;
        }
        throw err;
      }
    }
  }

  /**
   * Key-range walk (PostgreSQL 13, or copyMode "keys"): find the bound `batchSize` keys ahead without
   * locks, then copy exactly (last, bound] under FOR SHARE and commit the bound as the checkpoint.
   */
  async function backfillKeys(input: BackfillChunkInput): Promise<BackfillChunkResult> {
    const l = step('backfill', input.table);
    const started = Date.now();
    const ctx = activityContext();
    let rowsThisChunk = 0;
    let batches = 0;
    try {
      const st = await runState(input.table);
      if (!st)
        throw failure(
          `No backfill checkpoint for ${displayName(input.table)}: the sync step did not run.`,
          'StateMissing',
        );
      let last = st.last_key;
      const max = st.max_key;
      let rowsCopied = Number(st.rows_copied);
      const same = (a: string[] | null, b: string[] | null) =>
        !!a && !!b && a.length === b.length && a.every((x, i) => x === b[i]);
      const tune = tuningOf(`keys:${qualified(input.table)}`);
      let size = Math.min(input.batchSize, tune.size ?? input.batchSize);
      while (max && !same(last, max) && Date.now() - started < input.maxMs) {
        if (ctx?.cancellationSignal.aborted) break;
        const b = last
          ? await pool.query(input.sql.keyBound, [...last, ...max, size])
          : await pool.query(input.sql.keyBoundFirst, [...max, size]);
        const hi: string[] = b.rows[0]?.k ?? max;
        const from = last;
        const batchStarted = Date.now();
        const read = await guardedBatch(
          input.table,
          'last_key = $5::text[]',
          'last_key IS NOT DISTINCT FROM $4::text[]',
          [from, hi],
          async (c) => {
            const r = from
              ? await c.query(input.sql.keyCopy, [...from, ...hi])
              : await c.query(input.sql.keyCopyFirst, [...hi]);
            return Number(r.rows[0].read);
          },
        );
        if (read < 0) {
          const again = await runState(input.table);
          if (again?.run_state !== 'active')
            throw failure(
              `The partflow run of ${displayName(input.table)} is being undone; the backfill stops.`,
              'RunUndone',
            );
          last = again!.last_key;
          rowsCopied = Number(again!.rows_copied);
          continue;
        }
        const took = Date.now() - batchStarted;
        metrics.batchDuration(displayName(input.table), took);
        metrics.rowsCopied(displayName(input.table), read);
        if (input.maxBatchMs) tune.size = size = nextBatchSize(size, input.batchSize, took, input.maxBatchMs);
        last = hi;
        rowsCopied += read;
        rowsThisChunk += read;
        batches++;
        ctx?.heartbeat({ rowsCopied }); // the key itself stays in partflow.runs: no row values in history
        if (input.sleepMs > 0) await sleep(input.sleepMs);
      }
      const done = !max || same(last, max);
      const est = Number(
        (
          await pool.query(`SELECT greatest(reltuples, 0)::bigint AS t FROM pg_class WHERE oid = to_regclass($1)`, [
            qualified(input.table),
          ])
        ).rows[0]?.t ?? 0,
      );
      return {
        nextPage: done ? 1 : 0,
        totalPages: 1,
        rowsCopied,
        rowsThisChunk,
        pagesThisChunk: 0,
        batches,
        elapsedMs: Date.now() - started,
        done,
        percent: done ? 100 : est > 0 ? Math.min(99.9, (rowsCopied / est) * 100) : 0,
        checkpoint: last ? `key checkpoint after ${rowsCopied} rows (partflow.runs.last_key)` : 'start',
        rowMoves: await rowMoves(input.table),
      };
    } catch (err) {
      if (isTransient(err))
        l.warn({ err: (err as Error).message }, 'transient error in backfill; Temporal will retry from the checkpoint');
      classify(err, `backfill of ${displayName(input.table)}`);
    }
  }

  return {
    /** Read-only: validates the input against the catalog and returns the full plan. */
    async preflight(rawInput: unknown): Promise<PreflightResult> {
      try {
        const opts = validatePartitionInput(rawInput);
        // reading the partition column's months may scan the table: heartbeat meanwhile
        const info = await withHeartbeat(
          () => ({ step: 'preflight' }),
          () => inTransaction(pool, (c) => readTableInfo(c, opts, currentWorkflowId()), { readOnly: true }),
        );
        const plan = buildPlan(info, opts);
        step('preflight', opts.table).info(
          { partitions: plan.partitions.length, estimatedRows: plan.estimatedRows, warnings: plan.warnings },
          'preflight passed',
        );
        return { plan, summary: plan.warnings };
      } catch (err) {
        classify(err, 'preflight');
      }
    },

    /** Records this run in partflow.runs; refuses when another workflow holds the table. */
    async claimRun(table: TableRef, plan: Plan): Promise<void> {
      const wf = currentWorkflowId() ?? 'local';
      try {
        await migrate(pool);
        const r = await pool.query(
          `INSERT INTO ${RUNS} AS r (table_schema, table_name, workflow_id, run_state, plan) VALUES ($1, $2, $3, 'active', $4)
           ON CONFLICT (table_schema, table_name) DO UPDATE
              SET workflow_id = EXCLUDED.workflow_id, run_state = 'active', updated_at = now(), plan = EXCLUDED.plan,
                  next_page = 0, total_pages = NULL, rows_copied = 0, cutover_done = false, started_at = now(),
                  last_key = NULL, max_key = NULL, trigger_fence = NULL, filenode = NULL, rewrites = 0
            WHERE r.run_state NOT IN ('active', 'undoing')
           RETURNING workflow_id`,
          [table.schema, table.name, wf, JSON.stringify(plan)],
        );
        if (r.rowCount === 0) {
          const cur = await runState(table);
          if (cur && cur.workflow_id === wf) return; // our own claim, seen again after a retry
          throw failure(
            `Table ${displayName(table)} already has a partflow run in progress (workflow ${cur?.workflow_id}); wait for it, or roll it back, before starting another.`,
            'RunInProgress',
          );
        }
      } catch (err) {
        classify(err, 'claim');
      }
    },

    /**
     * The first step of every undo: marks the run `undoing`. Waits for a forward DDL transaction in flight (it
     * holds the run's row FOR SHARE); every later one sees the state and does nothing.
     */
    async beginUndo(table: TableRef): Promise<void> {
      const wf = currentWorkflowId() ?? 'local';
      try {
        if (!(await pool.query(`SELECT to_regclass($1) IS NOT NULL AS ok`, [RUNS])).rows[0].ok) return;
        await pool.query(
          `UPDATE ${RUNS} SET run_state = 'undoing', updated_at = now() WHERE table_schema = $1 AND table_name = $2 AND workflow_id = $3 AND run_state = 'active'`,
          [table.schema, table.name, wf],
        );
      } catch (err) {
        classify(err, 'begin undo');
      }
    },

    async releaseRun(table: TableRef, state: 'done' | 'rolled-back' | 'failed'): Promise<void> {
      const wf = currentWorkflowId() ?? 'local';
      try {
        if ((await pool.query(`SELECT to_regclass($1) IS NOT NULL AS ok`, [RUNS])).rows[0].ok) {
          await pool.query(
            `UPDATE ${RUNS} SET run_state = $4, updated_at = now() WHERE table_schema = $1 AND table_name = $2 AND workflow_id = $3`,
            [table.schema, table.name, wf, state],
          );
        }
      } catch (err) {
        classify(err, 'release');
      }
    },

    /** The partitioned copy with its partitions, keys, indexes, grants; then the outbound foreign keys. */
    async createShadow(plan: Plan, lockTimeoutMs: number): Promise<{ created: boolean; foreignKeys: number }> {
      await ownPlan(plan.table, plan);
      const l = step('shadow', plan.table);
      let created = false;
      await withHeartbeat(
        () => ({ step: 'shadow' }),
        async () => {
          const existing = await inTransaction(pool, (c) => relOid(c, plan.shadow));
          if (!existing) {
            await withLockRetry(pool, l, 'shadow', lockTimeoutMs, async (c) => {
              await fence(c, plan.table);
              for (const sql of plan.sql.shadow) await c.query(sql);
            });
            created = true;
          } else if (existing.relkind !== 'p') {
            throw failure(
              `${displayName(plan.shadow)} exists and is not partflow's partitioned copy; drop or rename it first.`,
              'NameTaken',
            );
          }
          for (const [i, fk] of plan.sql.shadowForeignKeys.entries()) {
            const name = /ADD CONSTRAINT ("(?:[^"]|"")+")/.exec(fk)![1].slice(1, -1).replace(/""/g, '"');
            const has = await pool.query(
              `SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass($1) AND conname = $2`,
              [qualified(plan.shadow), name],
            );
            if (has.rowCount) continue;
            await withLockRetry(pool, l, `shadow foreign key ${i + 1}`, lockTimeoutMs, async (c) => {
              await fence(c, plan.table);
              await c.query(fk);
            });
          }
          await faultPoint('shadow', l);
        },
      );
      l.info({ created, partitions: plan.partitions.length + 1 }, 'shadow table ready');
      return { created, foreignKeys: plan.sql.shadowForeignKeys.length };
    },

    /** Compensation of createShadow. Never drops the source: checks the OID first. */
    async dropShadow(plan: Plan, lockTimeoutMs: number): Promise<void> {
      await ownPlan(plan.table, plan);
      const l = step('drop-shadow', plan.table);
      await withLockRetry(
        pool,
        l,
        'drop shadow',
        lockTimeoutMs,
        async (c) => {
          const s = await relOid(c, plan.shadow);
          if (!s) return;
          if (s.oid === plan.tableOid || s.relkind !== 'p') {
            throw failure(`Refusing to drop ${displayName(plan.shadow)}: it is not partflow's copy.`, 'Safety');
          }
          for (const sql of plan.sql.dropShadow) await c.query(sql);
        },
        lockedBy(plan),
      );
      l.info('shadow table dropped');
    },

    /**
     * Installs the forward trigger and, in the same transaction, records how many pages the backfill must
     * cover: every row on a later page was written after the trigger existed, so the trigger copied it.
     */
    async installSyncTrigger(
      plan: Plan,
      lockTimeoutMs: number,
    ): Promise<{ totalPages: number; lockWaitRetries: number }> {
      await ownPlan(plan.table, plan);
      const l = step('sync', plan.table);
      const { result, stats } = await withLockRetry(
        pool,
        l,
        'sync trigger',
        lockTimeoutMs,
        async (c) => {
          await fence(c, plan.table);
          const src = await relOid(c, plan.table);
          if (!src || src.oid !== plan.tableOid)
            throw failure(
              `Table ${displayName(plan.table)} changed since preflight (dropped or replaced); start again.`,
              'TableChanged',
            );
          const has = await c.query(`SELECT 1 FROM pg_trigger WHERE tgrelid = $1 AND tgname = $2`, [
            plan.tableOid,
            FORWARD_TRIGGER,
          ]);
          if (!has.rowCount) for (const sql of plan.sql.syncTrigger) await c.query(sql);
          await faultPoint('sync', l);
          // partflow's triggers as committed now; the cut-over refuses if they were disabled since
          const triggerFence = (await c.query(plan.sql.triggerFence, [plan.tableOid])).rows[0].fence;
          const r = await c.query(
            `UPDATE ${RUNS} SET total_pages = coalesce(total_pages, pg_relation_size($3::regclass) / current_setting('block_size')::int),
                  trigger_fence = coalesce(trigger_fence, $4), filenode = coalesce(filenode, pg_relation_filenode($3::regclass)), updated_at = now()
            WHERE table_schema = $1 AND table_name = $2 RETURNING total_pages`,
            [plan.table.schema, plan.table.name, plan.tableOid, triggerFence],
          );
          if (plan.copyMode === 'keys') {
            const mk = await c.query(plan.sql.maxKey);
            await c.query(
              `UPDATE ${RUNS} SET max_key = coalesce(max_key, $3::text[]) WHERE table_schema = $1 AND table_name = $2`,
              [plan.table.schema, plan.table.name, mk.rows[0]?.k ?? null],
            );
          }
          return Number(r.rows[0].total_pages);
        },
        lockedBy(plan),
      );
      l.info({ totalPages: result, lockWaitRetries: stats.lockWaitRetries }, 'sync trigger installed');
      return { totalPages: result, lockWaitRetries: stats.lockWaitRetries };
    },

    async dropSyncTrigger(plan: Plan, lockTimeoutMs: number): Promise<void> {
      await ownPlan(plan.table, plan);
      const l = step('drop-sync', plan.table);
      await withLockRetry(
        pool,
        l,
        'drop sync trigger',
        lockTimeoutMs,
        async (c) => {
          const src = await relOid(c, plan.table);
          if (src && src.oid === plan.tableOid) for (const sql of plan.sql.dropSyncTrigger) await c.query(sql);
          // else swapped: the trigger went with the cut-over; the counter goes in any case
          for (const sql of plan.sql.dropCounters ?? []) await c.query(sql);
        },
        lockedBy(plan),
      );
      l.info('sync trigger dropped');
    },

    /**
     * Copies page ranges until done or `maxMs` has passed. Each batch commits together with the checkpoint
     * in partflow.runs, guarded by the checkpoint it started from: a retried or duplicated attempt copies
     * nothing twice and skips nothing.
     */
    async backfillChunk(input: BackfillChunkInput): Promise<BackfillChunkResult> {
      await ownPlan(input.table, null, { ...input.sql });
      if (input.copyMode === 'keys') return backfillKeys(input);
      const plan = { table: input.table };
      const l = step('backfill', plan.table);
      const started = Date.now();
      let rowsThisChunk = 0;
      let pagesThisChunk = 0;
      let batches = 0;
      const ctx = activityContext();
      try {
        await restartIfRewritten(plan.table, l);
        const st = await runState(plan.table);
        if (!st || st.total_pages === null)
          throw failure(
            `No backfill checkpoint for ${displayName(plan.table)}: the sync step did not run.`,
            'StateMissing',
          );
        let next = Number(st.next_page);
        let total = Number(st.total_pages);
        let rowsCopied = Number(st.rows_copied);
        const dens = await pool.query(
          `SELECT reltuples::bigint AS t, relpages::bigint AS p FROM pg_class WHERE oid = to_regclass($1)`,
          [qualified(plan.table)],
        );
        const cap = pagesPerBatch(input.batchSize, Number(dens.rows[0]?.t ?? -1), Number(dens.rows[0]?.p ?? 0));
        const tune = tuningOf(`pages:${qualified(plan.table)}`);
        let per = Math.min(cap, tune.size ?? cap);
        let mergedBatches = 0;
        while (next < total && Date.now() - started < input.maxMs) {
          if (ctx?.cancellationSignal.aborted) break;
          const to = Math.min(total, next + per);
          const from = next;
          const batchStarted = Date.now();
          // the fast form unless a recent batch of this table met rows the trigger had written
          const fast = !!input.sql.backfillBatchFast && tune.mergeLeft === 0;
          if (tune.mergeLeft > 0) tune.mergeLeft--;
          const copy = (sql: string) => (c: PoolClient) =>
            c.query(sql, [`(${from},0)`, `(${to},0)`]).then(async (r) => {
              if (batches === 2) await faultPoint('backfill', l); // mid-batch: copied, not committed
              // plans made before the fast form counted rows read in a CTE (`read`); now the INSERT's row count
              return r.rows[0]?.read !== undefined ? Number(r.rows[0].read) : (r.rowCount ?? 0);
            });
          let n: number;
          try {
            n = await guardedBatch(
              plan.table,
              'next_page = $5',
              SAME_FILE_AT('$4'),
              [from, to],
              copy(fast ? input.sql.backfillBatchFast! : input.sql.backfillBatch),
            );
          } catch (err) {
            if (!fast || (err as { code?: string }).code !== '23505') throw err;
            tune.mergeLeft = MERGE_BATCHES;
            mergedBatches++;
            n = await guardedBatch(
              plan.table,
              'next_page = $5',
              SAME_FILE_AT('$4'),
              [from, to],
              copy(input.sql.backfillBatch),
            );
          }
          if (n < 0) {
            // another attempt of this activity advanced the checkpoint, or the table was rewritten: continue
            // from where the checkpoint is now
            await restartIfRewritten(plan.table, l);
            const again = await runState(plan.table);
            if (again?.run_state !== 'active')
              throw failure(
                `The partflow run of ${displayName(plan.table)} is being undone; the backfill stops.`,
                'RunUndone',
              );
            next = Number(again!.next_page);
            total = Number(again!.total_pages);
            rowsCopied = Number(again!.rows_copied);
            continue;
          }
          const took = Date.now() - batchStarted;
          metrics.batchDuration(displayName(plan.table), took);
          metrics.rowsCopied(displayName(plan.table), n);
          if (input.maxBatchMs) tune.size = per = nextBatchSize(to - from, cap, took, input.maxBatchMs);
          next = to;
          rowsCopied += n;
          rowsThisChunk += n;
          pagesThisChunk += to - from;
          batches++;
          ctx?.heartbeat({ checkpointPage: next, totalPages: total, rowsCopied });
          if (input.sleepMs > 0) await sleep(input.sleepMs);
        }
        const elapsedMs = Date.now() - started;
        l.debug({ next, total, rowsThisChunk, batches, elapsedMs }, 'backfill chunk');
        return {
          nextPage: next,
          totalPages: total,
          rowsCopied,
          rowsThisChunk,
          pagesThisChunk,
          batches,
          mergedBatches,
          elapsedMs,
          done: next >= total,
          percent: total > 0 ? Math.min(100, (next / total) * 100) : 100,
          checkpoint: `page ${next} of ${total}`,
          rowMoves: await rowMoves(plan.table),
        };
      } catch (err) {
        if (isTransient(err))
          l.warn(
            { err: (err as Error).message },
            'transient error in backfill; Temporal will retry from the checkpoint',
          );
        classify(err, `backfill of ${displayName(plan.table)}`);
      }
    },

    /** Row counts and content checksums per partition range, source against shadow, in one snapshot. */
    async verify(plan: Plan): Promise<VerifyReport> {
      await ownPlan(plan.table, plan);
      const l = step('verify', plan.table);
      const started = Date.now();
      try {
        // statistics for the copy before it becomes the table: the planner must not meet 20 empty-looking
        // partitions right after the cut-over (SHARE UPDATE EXCLUSIVE: writes go on; idempotent on retry)
        await withHeartbeat(
          () => ({ step: 'analyze' }),
          () => pool.query(`ANALYZE ${qualified(plan.shadow)}`),
        );
        l.info({ elapsedMs: Date.now() - started }, 'copy analyzed');
        const [src, dst] = await withHeartbeat(
          () => ({ step: 'verify' }),
          () =>
            inTransaction(
              pool,
              async (c) => {
                const a = await c.query(plan.sql.verifySource);
                await faultPoint('verify', l);
                const b = await c.query(plan.sql.verifyShadow);
                return [a.rows, b.rows];
              },
              { isolation: 'REPEATABLE READ', readOnly: true },
            ),
        );
        const report = compareChecksums(plan, src, dst, Date.now() - started);
        l.info(
          { ok: report.ok, rows: report.rows, mismatches: report.mismatches, elapsedMs: report.elapsedMs },
          'verification finished',
        );
        if (!report.ok) {
          metrics.verifyMismatches(displayName(plan.table), report.mismatches.length);
          throw failure(
            `Verification of ${displayName(plan.table)} failed: source and copy differ in ${report.mismatches.join(', ')}.`,
            'VerificationMismatch',
            report,
          );
        }
        return report;
      } catch (err) {
        classify(err, 'verify');
      }
    },

    /** The swap: one short transaction under lock_timeout, retried with backoff. */
    async cutover(plan: Plan, lockTimeoutMs: number): Promise<CutoverResult> {
      await ownPlan(plan.table, plan);
      const l = step('cutover', plan.table);
      const st = await runState(plan.table);
      if (st?.cutover_done) return { alreadyDone: true, attempts: 0, lockWaitRetries: 0, lockHoldMs: 0 };
      let lockedAt = 0;
      const { stats } = await withHeartbeat(
        () => ({ step: 'cutover' }),
        () =>
          withLockRetry(
            pool,
            l,
            'cutover',
            lockTimeoutMs,
            async (c) => {
              await c.query(plan.sql.cutover[0]); // LOCK TABLE: the wait is bounded by lock_timeout
              lockedAt = Date.now();
              await fence(c, plan.table);
              const src = await relOid(c, plan.table);
              if (!src || src.oid !== plan.tableOid)
                throw failure(
                  `Table ${displayName(plan.table)} changed since preflight; not cutting over.`,
                  'TableChanged',
                );
              await checkUnchanged(c, plan);
              for (const sql of plan.sql.cutover.slice(1)) await c.query(sql);
              await faultPoint('cutover', l); // renamed, not committed
              // the new table's columns as of the cut-over: a rollback that would lose a later change is refused
              const cols = await newTableColumns(c, plan);
              await c.query(
                `UPDATE ${RUNS} SET cutover_done = true, cutover_columns = $3, updated_at = now() WHERE table_schema = $1 AND table_name = $2`,
                [plan.table.schema, plan.table.name, cols],
              );
            },
            lockedBy(plan),
          ),
      );
      const lockHoldMs = Date.now() - lockedAt;
      l.info({ lockHoldMs, attempts: stats.attempts, lockWaitRetries: stats.lockWaitRetries }, 'cut over');
      return {
        alreadyDone: false,
        attempts: stats.attempts,
        lockWaitRetries: stats.lockWaitRetries,
        lockHoldMs,
        rowMoves: await rowMoves(plan.table),
      };
    },

    /** Compensation of cutover: the old table (kept in sync by the reverse trigger) takes the name back. */
    async swapBack(
      plan: Plan,
      lockTimeoutMs: number,
    ): Promise<{ swapped: boolean; lockHoldMs: number; notRestored?: string[] }> {
      await ownPlan(plan.table, plan);
      const l = step('swap-back', plan.table);
      const st = await runState(plan.table);
      let swapped = false;
      let lockedAt = Date.now();
      if (st?.cutover_done) {
        await withLockRetry(
          pool,
          l,
          'swap back',
          lockTimeoutMs,
          async (c) => {
            await c.query(plan.sql.swapBack[0]);
            lockedAt = Date.now();
            const loss = await rollbackLoss(c, plan);
            if (loss) throw failure(loss, 'TableChanged');
            for (const sql of plan.sql.swapBack.slice(1)) await c.query(sql);
            await c.query(
              `UPDATE ${RUNS} SET cutover_done = false, updated_at = now() WHERE table_schema = $1 AND table_name = $2`,
              [plan.table.schema, plan.table.name],
            );
          },
          lockedBy(plan),
        );
        swapped = true;
      }
      const lockHoldMs = swapped ? Date.now() - lockedAt : 0;
      // A re-added foreign key that rows written during the window violate stays NOT VALID (it still checks
      // new rows): the undo goes on and reports it rather than stopping half way.
      const notRestored: string[] = [];
      for (const [i, sql] of plan.sql.validateInbound.entries()) {
        try {
          await withLockRetry(pool, l, 'validate re-added foreign key', lockTimeoutMs, (c) => c.query(sql));
        } catch (err) {
          const fk = plan.inboundForeignKeys[i];
          const why = (err as Error).message;
          if (err instanceof ApplicationFailure && err.type === 'DatabaseError') {
            notRestored.push(
              `foreign key ${displayName(fk.table)}.${fk.name} is back but NOT VALID (${why}); fix the rows it names, then ALTER TABLE ${displayName(fk.table)} VALIDATE CONSTRAINT ${fk.name}`,
            );
            continue;
          }
          throw err;
        }
      }
      l.info({ swapped, lockHoldMs, notRestored }, 'swapped back to the original table');
      return { swapped, lockHoldMs, notRestored };
    },

    /** Read-only: why a rollback requested now would lose data, or null. */
    async rollbackBlocker(plan: Plan): Promise<string | null> {
      await ownPlan(plan.table, plan);
      try {
        return await rollbackLoss(pool, plan);
      } catch (err) {
        classify(err, 'rollback check');
      }
    },

    /** Ends the rollback window: the reverse trigger goes; the old table stays for the operator to drop. */
    async finalize(plan: Plan, lockTimeoutMs: number): Promise<{ rowMoves: number }> {
      await ownPlan(plan.table, plan);
      const l = step('finalize', plan.table);
      const moves = await rowMoves(plan.table);
      await withLockRetry(
        pool,
        l,
        'finalize',
        lockTimeoutMs,
        async (c) => {
          await fence(c, plan.table);
          for (const sql of plan.sql.finalize) await c.query(sql);
          for (const sql of plan.sql.dropCounters ?? []) await c.query(sql);
          await faultPoint('finalize', l);
        },
        lockedBy(plan),
      );
      l.info({ old: displayName(plan.old), rowMoves: moves }, 'reverse trigger dropped; old table kept');
      return { rowMoves: moves };
    },
  };
}

export function compareChecksums(
  plan: Pick<Plan, 'partitions' | 'defaultPartition'>,
  src: { bucket: string | null; n: string; checksum: string }[],
  dst: { bucket: string | null; n: string; checksum: string }[],
  elapsedMs: number,
): VerifyReport {
  const ranges = plan.partitions.map((p) => ({ name: p.name, from: parseMonth(p.from), to: parseMonth(p.to) }));
  const partitionOf = (bucket: string | null) => {
    const m = bucketMonth(bucket); // null for infinities: the default partition
    const r = m && ranges.find((x) => compareMonths(x.from, m) <= 0 && compareMonths(m, x.to) < 0);
    return r ? r.name : plan.defaultPartition;
  };
  const agg = (rows: typeof src) => {
    const m = new Map<string, { n: bigint; sum: bigint }>();
    for (const r of rows) {
      const part = partitionOf(r.bucket);
      const cur = m.get(part) ?? { n: 0n, sum: 0n };
      m.set(part, { n: cur.n + BigInt(r.n), sum: cur.sum + BigInt(r.checksum) });
    }
    return m;
  };
  const a = agg(src);
  const b = agg(dst);
  const names = [...plan.partitions.map((p) => p.name), plan.defaultPartition];
  const report: VerifyRange[] = names.map((partition) => {
    const x = a.get(partition) ?? { n: 0n, sum: 0n };
    const y = b.get(partition) ?? { n: 0n, sum: 0n };
    return {
      partition,
      sourceRows: Number(x.n),
      shadowRows: Number(y.n),
      sourceChecksum: x.sum.toString(16),
      shadowChecksum: y.sum.toString(16),
      match: x.n === y.n && x.sum === y.sum,
    };
  });
  const mismatches = report
    .filter((r) => !r.match)
    .map((r) => `${r.partition} (source ${r.sourceRows} rows, copy ${r.shadowRows})`);
  return {
    ok: mismatches.length === 0,
    rows: report.reduce((s, r) => s + r.sourceRows, 0),
    ranges: report,
    mismatches,
    elapsedMs,
  };
}

export type PartitionActivities = ReturnType<typeof createPartitionActivities>;
