/**
 * A partitionTable run in the run store (activities/runtime/runStore.ts; its row in partflow.runs says which
 * workflow owns the table, how far it got and which plan it runs). Every forward step checks it in the same
 * transaction as its DDL (`fence`), every undo begins by marking it `undoing` (`beginUndo`), and no step runs
 * SQL from a plan other than the stored one (`planOf`, `ownPlan`).
 */
import type { Pool, PoolClient } from 'pg';
import { failure } from '../../src/failures';
import { displayName, qualified, TableRef } from '../../src/ident';
import { Counter, counterOf, Plan, PlanRef } from '../../src/plan';
import { activityContext, classify, inTransaction } from '../runtime/db';
import { faultPoint } from '../runtime/faults';
import { migrate } from '../runtime/migrate';
import { Deps, relOid, workflowId } from '../runtime/deps';
import {
  isActive,
  lockRegistry,
  markActiveAgain,
  markEnded,
  markUndoing,
  runsHolding,
  stateOf,
  tableRun,
} from '../runtime/runStore';
import { claimTableRow, clearStreams, runsExist, storedPlanRow } from '../runtime/copyState';
import { lockAcross, lockPhaseBudgetMs } from '../../src/locks';

export { runState } from '../runtime/copyState';
export type { RunRow } from '../runtime/copyState';

export type RunState = 'done' | 'rolled-back' | 'failed';

/** What the partitioning path's DDL locks: the table, the copy, the old table (and their partitions). */
export function lockedBy(plan: Plan): { relations: string[] } {
  const inbound = (plan.inboundForeignKeys ?? []).map((fk) => qualified(fk.table));
  return { relations: [...inbound, qualified(plan.table), qualified(plan.shadow), qualified(plan.old)] };
}

/**
 * The lock timeout and attempts of a step that holds its lock while PostgreSQL visits every partition of the
 * copy (the cut-over's trigger, finalize's DROP TRIGGER, the swap back): the hold comes out of the wait.
 */
export function acrossPartitions(plan: Plan, lockTimeoutMs: number) {
  const { ms, maxAttempts } = lockAcross(lockTimeoutMs, plan.partitions.length + 1);
  // the whole LOCK phase of a step (lockUpFront): a few tables' waits, and the partitions' locks
  const budget = lockPhaseBudgetMs(ms, 3, plan.partitions.length);
  return { ms, budget, opts: { ...lockedBy(plan), maxAttempts } };
}

/**
 * Whether the copy exists, refusing when `plan.shadow` names anything but partflow's partitioned copy (the
 * source itself, or a table of someone else's): every drop of the copy checks this first.
 */
export async function copyExists(c: PoolClient, plan: Plan): Promise<boolean> {
  const s = await relOid(c, plan.shadow);
  if (!s) return false;
  if (s.oid === plan.tableOid || s.relkind !== 'p') {
    throw failure(`Refusing to drop ${displayName(plan.shadow)}: it is not partflow's copy.`, 'Safety');
  }
  return true;
}

/**
 * Inside a forward step's DDL transaction: this workflow's run is still active. beginUndo's UPDATE waits for
 * the row lock taken here, so once the undo has begun no forward DDL of the run can commit.
 */
export async function fence(c: PoolClient, table: TableRef): Promise<void> {
  const wf = workflowId();
  if (!(await isActive(c, tableRun(table, wf)))) {
    throw failure(
      `The partflow run of ${displayName(table)} (workflow ${wf}) is being undone or is over; this step does nothing.`,
      'RunUndone',
    );
  }
}

/**
 * Inside an undo step's transaction: this workflow's own undo has begun (beginUndo set `undoing`) and nothing
 * else took the run since. `partflow cleanup` marks a run `cleanup` and then `done` or `rolled-back`: from its
 * first transaction on, no undo step of the run (swapBack included) acts, so a cleanup in the rollback window
 * can never be followed by a swap back that would lose what the application wrote to the new table.
 */
export async function undoFence(c: PoolClient, table: TableRef): Promise<void> {
  const wf = workflowId();
  const state = await stateOf(c, tableRun(table, wf), true);
  if (state !== 'undoing') {
    throw failure(
      `The undo of the partflow run of ${displayName(table)} (workflow ${wf}) does nothing: partflow.runs records ` +
        `it as ${state ? `"${state}"` : 'gone'} (a cleanup or another run took it); look with partflow cleanup ` +
        `${displayName(table)}.`,
      'RunUndone',
    );
  }
}

/**
 * The plan a step is handed must be the one partflow's preflight made and claimRun stored for this very
 * workflow: SQL is never taken from a workflow input. `sql` checks single statements (the backfill's).
 */
export async function ownPlan(
  pool: Pool,
  table: TableRef,
  plan: Plan | null,
  sql: Record<string, unknown> = {},
): Promise<void> {
  const wf = workflowId();
  const row = await storedPlanRow(pool, table);
  const stored = row && row.workflow_id === wf && typeof row.plan === 'string' ? row.plan : null;
  let ok = stored !== null;
  if (stored !== null && plan) ok = stored === JSON.stringify(plan);
  if (stored !== null && ok && Object.keys(sql).length) {
    const storedSql = (JSON.parse(stored) as Plan).sql as unknown as Record<string, unknown>;
    ok = Object.entries(sql).every(([k, v]) => v === undefined || JSON.stringify(storedSql[k]) === JSON.stringify(v));
  }
  if (!ok) {
    throw failure(
      `The plan handed to this step for ${displayName(table)} is not the one partflow made for workflow ${wf}; ` +
        'refusing to run its SQL.',
      'PlanMismatch',
    );
  }
}

/**
 * The plan a step runs. For a reference (what workflows hand their steps): the plan partflow stored for this
 * workflow's run of the table, refused when there is none. A plan handed whole (an activity scheduled by a run
 * before references existed, a script, a benchmark) is returned as it is: the step checks it against the
 * stored one (`ownPlan`) before running any of its SQL.
 */
export async function planOf(pool: Pool, p: Plan | PlanRef): Promise<Plan> {
  if (!('planOf' in p)) return p;
  const table = p.planOf;
  try {
    const wf = workflowId();
    const row = await storedPlanRow(pool, table);
    if (!row || row.workflow_id !== wf || typeof row.plan !== 'string') {
      throw failure(
        `partflow has no plan stored for workflow ${wf} on ${displayName(table)}; refusing to run this step.`,
        'PlanMismatch',
      );
    }
    return JSON.parse(row.plan) as Plan;
  } catch (err) {
    classify(err, 'plan');
  }
}

/** Updates that moved a row to another month so far (the trigger's counter); 0 when there is none. */
export async function rowMoves(pool: Pool, table: TableRef): Promise<number> {
  return counterValue(pool, table, 'moves').catch(() => 0);
}

/**
 * Rows the in-snapshot sync triggers of plans made before the key log mirrored from transactions that were not
 * READ COMMITTED (0 for every other plan: the key log is exact for them), and the refusal that goes with a
 * count above 0.
 */
export async function notReadCommitted(c: Pool | PoolClient, plan: Plan): Promise<string | null> {
  const n = await counterValue(c, plan.table, 'iso');
  if (!n) return null;
  return (
    `${n} row change(s) of ${displayName(plan.table)} came from REPEATABLE READ or SERIALIZABLE transactions ` +
    "during the run; partflow's sync trigger mirrors a write in the writer's snapshot, exact for READ COMMITTED " +
    'writers only (a deleted row could come back), so the copy is not trusted'
  );
}

/**
 * One of the run's counters (src/plan/sync.ts counterOf), 0 when it is not there (a cleanup dropped it, a plan
 * from before it): read without an error, so that a transaction holding locks goes on.
 */
export async function counterValue(c: Pool | PoolClient, table: TableRef, kind: Counter): Promise<number> {
  // one round trip (it runs under the cut-over's lock): NULL where the sequence is not there or never called
  const r = await c.query(`SELECT coalesce(pg_sequence_last_value(to_regclass($1)), 0)::bigint AS n`, [
    qualified(counterOf(table, kind)),
  ]);
  return Number(r.rows[0]?.n ?? 0);
}

/** The workflow run of the running activity; null outside one (scripts, tests). */
const currentRunId = (): string | null => activityContext()?.info.workflowExecution?.runId ?? null;

/**
 * Records this run in partflow.runs and clears what an earlier run of the table left (its checkpoints and a
 * parallel copy's stream ranges), in one transaction: a claim interrupted anywhere (a lost connection, a
 * killed backend, a worker gone) leaves either nothing or all of it, and its retry finds either a free table
 * or its own complete claim. "Its own" is this workflow run (run id), not the workflow id: a terminated run
 * of the same workflow id left `active` is another run, refused until `partflow cleanup` removes it.
 * Refuses when another run holds the table.
 */
export async function claimRun({ pool, log }: Deps, table: TableRef, plan: Plan): Promise<void> {
  const wf = workflowId();
  const run = currentRunId();
  try {
    await migrate(pool);
    await inTransaction(pool, async (c) => {
      await lockRegistry(c);
      const fix = (await runsHolding(c, [table], { workflowId: wf })).find((h) => h.kind !== 'partitionTable');
      if (fix) {
        throw failure(
          `Table ${displayName(table)} is held by ${fix.kind} run ${fix.workflowId}; the copy would miss what it ` +
            `adds: wait for it to end, then run again (if its workflow was terminated, release it with partflow ` +
            `cleanup ${displayName(table)}).`,
          'RunInProgress',
        );
      }
      const cur = await claimTableRow(c, table, { workflowId: wf, runId: run }, JSON.stringify(plan));
      if (cur) {
        if (cur.workflow_id === wf && cur.run_id === run) return; // our own claim, seen again by a retry
        throw failure(
          `Table ${displayName(table)} already has a partflow run in progress (workflow ${cur.workflow_id}` +
            `${cur.workflow_id === wf ? `, an earlier run ${cur.run_id ?? ''}`.trimEnd() : ''}); wait for it, ` +
            `roll it back, or if its workflow is over remove what it left with partflow cleanup ${displayName(table)}.`,
          'RunInProgress',
        );
      }
      await faultPoint('claim', log);
      // a parallel copy's ranges from an earlier run of this table: gone with the same commit
      await clearStreams(c, table);
    });
  } catch (err) {
    classify(err, 'claim');
  }
}

/**
 * The undo's fence: the run becomes `undoing` (no forward step of it commits after this; a forward DDL
 * transaction in flight is waited for). Returns null when the undo is this workflow's to do, or the state
 * partflow.runs records when something else took the run (a cleanup marks it `cleanup`, then `done` or
 * `rolled-back`): then no undo step may act.
 */
export async function beginUndo({ pool }: Deps, table: TableRef): Promise<string | null> {
  try {
    if (!(await runsExist(pool))) return null;
    const state = await markUndoing(pool, tableRun(table, workflowId()));
    // no row of this workflow: its claim never committed, so it has nothing of its own to undo either
    return state === null || state === 'undoing' ? null : state;
  } catch (err) {
    classify(err, 'begin undo');
  }
}

/**
 * After a rollback refused under the swap back's lock (nothing was undone): the run is `active` again and its
 * rollback window goes on. Returns null, or the state partflow.runs records when a cleanup took the run meanwhile.
 */
export async function resumeRun({ pool }: Deps, table: TableRef): Promise<string | null> {
  try {
    return await markActiveAgain(pool, tableRun(table, workflowId()));
  } catch (err) {
    classify(err, 'resume run');
  }
}

export async function releaseRun({ pool }: Deps, table: TableRef, state: RunState): Promise<void> {
  try {
    if (!(await runsExist(pool))) return;
    await markEnded(pool, tableRun(table, workflowId()), state);
  } catch (err) {
    classify(err, 'release');
  }
}
