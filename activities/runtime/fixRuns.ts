/**
 * partflow.fix_runs: the fence of a fixConstraints run. Forward steps commit only while their run is
 * `active`; every undo begins by marking it `undoing`.
 */
import type { PoolClient } from 'pg';
import type { Fix } from '../../src/constraints';
import { describeFix } from '../../src/constraints';
import { failure } from '../../src/failures';
import { qualified, TableRef } from '../../src/ident';
import type { Logger } from '../../src/logger';
import { activityContext, classify } from './db';
import { migrate } from './migrate';
import type { Deps } from './deps';
import { FIX_RUNS, workflowId } from './deps';

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
  const r = await c.query(
    `SELECT 1 FROM ${FIX_RUNS} WHERE workflow_id = $1 AND run_id = $2 AND state = 'active' FOR SHARE`,
    [wfId(), run],
  );
  if (!r.rowCount) {
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
    await pool.query(
      `INSERT INTO ${FIX_RUNS} (workflow_id, run_id, state, tables, kind) VALUES ($1, $2, 'active', $3, $4)
       ON CONFLICT DO NOTHING`,
      [wfId(), runId(), tables.map((t) => qualified(t)), kind ?? null],
    );
  } catch (err) {
    classify(err, 'claim');
  }
}

/** The first step of every undo; waits for a forward step's transaction in flight. */
export async function beginFixUndo({ pool }: Deps): Promise<void> {
  try {
    await migrate(pool);
    await pool.query(
      `UPDATE ${FIX_RUNS} SET state = 'undoing', updated_at = now()
        WHERE workflow_id = $1 AND run_id = $2 AND state = 'active'`,
      [wfId(), runId()],
    );
  } catch (err) {
    classify(err, 'begin undo');
  }
}

export async function releaseFix({ pool }: Deps, state: 'done' | 'rolled-back' | 'failed'): Promise<void> {
  try {
    await migrate(pool);
    await pool.query(`UPDATE ${FIX_RUNS} SET state = $3, updated_at = now() WHERE workflow_id = $1 AND run_id = $2`, [
      wfId(),
      runId(),
      state,
    ]);
  } catch (err) {
    classify(err, 'release');
  }
}
