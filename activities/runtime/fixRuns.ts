/**
 * A fixConstraints or createIndexes run in the run store (runStore.ts, partflow.fix_runs): its claim, fence,
 * undo marker and release, and the undo of a finished fixConstraints run. Forward steps commit only while
 * their run is `active`; every undo begins by marking it `undoing`.
 */
import type { Pool, PoolClient } from 'pg';
import type { Fix } from '../../src/constraints';
import type { FixInfo } from '../../src/fixSteps';
import { describeFix, tablesOf } from '../../src/constraints';
import { failure } from '../../src/failures';
import { qualified, TableRef } from '../../src/ident';
import type { Logger } from '../../src/logger';
import { activityContext, classify, inTransaction } from './db';
import { migrate } from './migrate';
import type { Deps } from './deps';
import { workflowId } from './deps';
import { FIX_RUNS, fixRun, isActive, lockRegistry, markEnded, markUndoing, runsHolding } from './runStore';

export const wfId = workflowId;
/** The workflow run: a workflow id reused later (fix-seed, say) must never undo this run's repairs. */
export const runId = (): string | null => activityContext()?.info.workflowExecution?.runId ?? null;

export function fixLog(log: Logger, step: string, fix: Fix): Logger {
  return log.child({ step, fix: describeFix(fix), workflowId: wfId() });
}

/**
 * Inside a forward step's transaction: this fixConstraints run is still `active` (FOR SHARE: beginFixUndo's
 * UPDATE waits for it). Once the undo has begun, no forward DDL or repair batch of the run can commit, even
 * from a worker that went on after its heartbeat timed out. Outside a workflow (scripts, tests) there is no
 * run to fence.
 */
export async function fixFence(c: PoolClient): Promise<void> {
  const run = runId();
  if (!run) return;
  if (!(await isActive(c, fixRun(wfId(), run)))) {
    throw failure(`fixConstraints run ${wfId()} is being undone or is over; this step does nothing.`, 'RunUndone');
  }
}

/** What a fix's DDL locks, for the look-ahead: the table (and its partitions) and the referenced table. */
export function lockedByFix(fix: Fix): { relations: string[] } {
  return { relations: [qualified(fix.table), ...(fix.kind === 'foreignKey' ? [qualified(fix.references.table)] : [])] };
}

/**
 * Records this run as active: the fence every forward step checks, and, with the tables it changes, the entry
 * maintainPartitions reads to leave those tables alone meanwhile.
 */
export async function claimFix({ pool }: Deps, tables: TableRef[] = [], kind?: string): Promise<void> {
  try {
    await migrate(pool);
    if (!runId()) return;
    await inTransaction(pool, async (c) => {
      await lockRegistry(c);
      // a table partitionTable is converting: a constraint or index added now would make its cut-over refuse, or,
      // in the rollback window, be lost by a rollback (the old table never had it)
      const held = (await runsHolding(c, tables)).find((h) => h.kind === 'partitionTable');
      if (held) {
        throw failure(
          `Table ${held.table} is being partitioned by run ${held.workflowId}; a constraint or index added now ` +
            'would make its cut-over refuse, or be lost by a rollback: wait for it to end (finalize it), then run ' +
            'again.',
          'RunInProgress',
        );
      }
      await c.query(
        `INSERT INTO ${FIX_RUNS} (workflow_id, run_id, state, tables, kind) VALUES ($1, $2, 'active', $3, $4)
         ON CONFLICT DO NOTHING`,
        [wfId(), runId(), tables.map((t) => qualified(t)), kind ?? null],
      );
    });
  } catch (err) {
    classify(err, 'claim');
  }
}

/** The first step of every undo; waits for a forward step's transaction in flight. */
export async function beginFixUndo({ pool }: Deps): Promise<void> {
  try {
    await migrate(pool);
    const run = runId();
    if (run) await markUndoing(pool, fixRun(wfId(), run));
  } catch (err) {
    classify(err, 'begin undo');
  }
}

/** The end of a run; a finished one leaves the steps it took (`undo`) for undoFixConstraints. */
export async function releaseFix(
  { pool }: Deps,
  state: 'done' | 'rolled-back' | 'failed',
  undo?: FixUndoStep[],
): Promise<void> {
  try {
    await migrate(pool);
    const run = runId();
    if (!run) return;
    await markEnded(pool, fixRun(wfId(), run), state, (param) =>
      undo ? `undo = ${param(JSON.stringify(undo))}::jsonb` : 'undo = undo',
    );
  } catch (err) {
    classify(err, 'release');
  }
}

/** One step a fixConstraints run took, with what its undo needs. */
export interface FixUndoStep {
  fixNo: number;
  step: 'index' | 'constraint' | 'repair' | 'validate';
  description: string;
  fix: Fix;
  info: FixInfo;
}

/** The run whose steps an undo reverses: its workflow and run id, and the steps in the order they were taken. */
export interface FinishedFixRun {
  workflowId: string;
  runId: string;
  steps: FixUndoStep[];
}

/**
 * Opens the undo of a finished fixConstraints run (its latest run when `runId` is not given): refuses, naming
 * the run, unless it ended `done` with its steps recorded and every table it changed is the same table still
 * (a table converted since has other constraints); marks it `undoing`, so a second undo waits or goes on.
 */
export async function openFixUndo({ pool }: Deps, workflowId: string, runId?: string): Promise<FinishedFixRun> {
  try {
    await migrate(pool);
    const r = await pool.query(
      `SELECT run_id, state, undo, kind, updated_at::text AS at FROM ${FIX_RUNS}
        WHERE workflow_id = $1 AND ($2::text IS NULL OR run_id = $2) ORDER BY updated_at DESC LIMIT 1`,
      [workflowId, runId ?? null],
    );
    const row = r.rows[0];
    const name = `fixConstraints run ${workflowId}${runId ? ` (${runId})` : ''}`;
    const refuse = (why: string): never => {
      throw failure(`${name} ${why}`, 'NothingToUndo');
    };
    if (!row) refuse('is not recorded in this database: check the workflow id (and the database of the worker).');
    if (row.kind && row.kind !== 'fixConstraints') refuse(`is a ${row.kind} run, not a fixConstraints run.`);
    if (row.state === 'active') refuse('still runs: send it the rollback signal instead.');
    if (row.state === 'undone') refuse(`was undone already (${row.at}).`);
    if (row.state !== 'done' && row.state !== 'undoing') refuse(`ended ${row.state} and undid itself then.`);
    if (!row.undo)
      refuse(
        'finished before partflow recorded the steps of a run; undo it by hand (docs/workflows/fixConstraints.md).',
      );
    const steps = row.undo as FixUndoStep[];
    for (const s of steps) {
      const now = await pool.query(
        `SELECT c.oid::int AS oid, c.relkind::text FROM pg_class c WHERE c.oid = to_regclass($1)`,
        [qualified(s.fix.table)],
      );
      if (now.rows[0]?.oid !== s.info.tableOid || now.rows[0]?.relkind !== s.info.relkind) {
        refuse(
          `changed ${qualified(s.fix.table)}, which has been replaced or converted since (partitioned?): the ` +
            'constraints on it now are not the ones the run added; drop them by hand if they must go.',
        );
      }
    }
    // one undo at a time: the first to claim it owns it; the same undo workflow id started again goes on.
    // Under the registry's lock: `undoing` holds the run's tables, so this is a claim like any other.
    const me = wfId() ?? 'outside a workflow';
    const claimed = await inTransaction(pool, async (c) => {
      await lockRegistry(c);
      await refuseHeldTables(c, { workflowId, runId: row.run_id }, steps, refuse);
      return c.query(
        `UPDATE ${FIX_RUNS} SET state = 'undoing', undo_by = $3, updated_at = now()
          WHERE workflow_id = $1 AND run_id = $2
            AND (state = 'done' OR (state = 'undoing' AND (undo_by IS NULL OR undo_by = $3)))
          RETURNING 1`,
        [workflowId, row.run_id, me],
      );
    });
    if (!claimed.rowCount) {
      const by = await pool.query(`SELECT undo_by FROM ${FIX_RUNS} WHERE workflow_id = $1 AND run_id = $2`, [
        workflowId,
        row.run_id,
      ]);
      refuse(
        `is being undone by workflow ${by.rows[0]?.undo_by}; wait for it (if it was terminated, start the undo ` +
          'again under that workflow id).',
      );
    }
    return { workflowId, runId: row.run_id, steps };
  } catch (err) {
    classify(err, 'open undo');
  }
}

/**
 * An undo refused while another partflow run holds a table the fix changed: a partitionTable copy of it would
 * take the restored rows (the copy has the constraint too), a createIndexes or fixConstraints run is fenced on it.
 */
async function refuseHeldTables(
  db: Pool | PoolClient,
  run: { workflowId: string; runId: string },
  steps: FixUndoStep[],
  refuse: (why: string) => never,
): Promise<void> {
  const tables = [...new Map(steps.flatMap((s) => tablesOf(s.fix)).map((t) => [qualified(t), t])).values()];
  const [h] = await runsHolding(db, tables, run);
  if (h) refuse(`changed ${h.table}, which run ${h.workflowId} holds now; wait for that run to end, then undo.`);
}

/** The end of an undo: the run is `undone`. */
export async function closeFixUndo({ pool }: Deps, workflowId: string, runId: string): Promise<void> {
  try {
    await markEnded(pool, fixRun(workflowId, runId), 'undone');
  } catch (err) {
    classify(err, 'close undo');
  }
}
