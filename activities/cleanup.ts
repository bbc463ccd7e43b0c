/**
 * What a dead partitionTable run (terminated, or lost with its history) leaves behind, and its safe removal;
 * and the hold of a dead fixConstraints or createIndexes run on the table, and its release.
 * The SQL comes from the plan partflow stored in partflow.runs when the run claimed the table, never from
 * the caller: the input names a table, nothing else.
 */
import { keyLogOf, parkedOf, seenOf } from '../src/plan/sync';
import { Context } from '@temporalio/activity';
import { WorkflowNotFoundError } from '@temporalio/client';
import type { Pool, PoolClient } from 'pg';
import type { Logger } from '../src/logger';
import { displayName, qualified, TableRef } from '../src/ident';
import type { Plan } from '../src/plan';
import { STATE_SCHEMA } from '../src/plan';
import { classify, withLockRetry } from './runtime/db';
import { copyExists } from './partition/run';
import { fixRun, fixRunsOf, markEnded, runsHolding, tableRun, takeOver } from './runtime/runStore';
import { RunRow, runsExist, runState } from './runtime/copyState';
import type { Deps } from './runtime/deps';
import { failure } from '../src/failures';
import { waitForOlderSnapshots } from './partition/snapshotGuard';

export interface CleanupReport {
  table: string;
  /** the run partflow.runs records for the table, if any */
  run: { workflowId: string; state: string; cutoverDone: boolean } | null;
  /** `before-cutover`: the copy and the forward triggers go; `after-cutover`: the reverse triggers go, the
   *  partitioned table stays and `<table>_old` is kept; `none`: nothing to do */
  phase: 'before-cutover' | 'after-cutover' | 'none';
  /** what is there now, one line each */
  leftovers: string[];
  /**
   * fixConstraints or createIndexes runs that hold the table (active or being undone): one whose workflow is
   * gone (terminated) is released by a removal naming its workflow id; what it built stays, listed here
   */
  heldBy?: { kind: string; workflowId: string; state: string; left: string[] }[];
  /** the statements that remove them, in order */
  statements: string[];
  /** then, each on its own (no transaction can hold them): the attach path's DROP INDEX CONCURRENTLY */
  concurrently?: string[];
  removed: boolean;
}

async function storedRun(pool: Pool, table: TableRef): Promise<RunRow | null> {
  return (await runsExist(pool)) ? runState(pool, table) : null;
}

/** Objects of the plan that exist now. */
async function present(pool: Pool, plan: Plan): Promise<string[]> {
  const r = await pool.query(
    `SELECT 'trigger ' || t.tgname || ' on ' || t.tgrelid::regclass::text AS x FROM pg_trigger t
      WHERE t.tgname LIKE 'partflow\\_%' AND t.tgrelid IN (to_regclass($1), to_regclass($2), to_regclass($3))
     UNION ALL SELECT 'function ' || p.oid::regprocedure::text FROM pg_proc p
      WHERE p.pronamespace = to_regnamespace($4) AND p.proname LIKE '%\\_' || $5::text
     UNION ALL SELECT 'view ' || c.oid::regclass::text FROM pg_class c
      WHERE c.relnamespace = to_regnamespace($4) AND c.relname = 'guard_' || $5::text
     UNION ALL SELECT 'table ' || c.oid::regclass::text
                      || CASE WHEN c.relkind = 'p' THEN ' (partitioned copy)' ELSE '' END
       FROM pg_class c WHERE c.oid = to_regclass($2)
     UNION ALL SELECT 'sequence ' || c.oid::regclass::text FROM pg_class c WHERE c.oid = to_regclass($6)
     UNION ALL SELECT 'key log ' || c.oid::regclass::text FROM pg_class c
      WHERE c.oid IN (to_regclass($7), to_regclass($8))
     UNION ALL SELECT 'keys the old table could not take ' || c.oid::regclass::text FROM pg_class c
      WHERE c.oid = to_regclass($10)
     UNION ALL SELECT 'keys copied since the last verification ' || c.oid::regclass::text FROM pg_class c
      WHERE c.oid = to_regclass($9)
     ORDER BY 1`,
    [
      qualified(plan.table),
      qualified(plan.shadow),
      qualified(plan.old),
      STATE_SCHEMA,
      String(plan.tableOid),
      qualified(plan.movesCounter),
      qualified(keyLogOf(plan.table, 'forward')),
      qualified(keyLogOf(plan.table, 'reverse')),
      qualified(seenOf(plan.table)),
      qualified(parkedOf(plan.table)),
    ],
  );
  return [...r.rows.map((x) => x.x), ...(await attachPresent(pool, plan))];
}

/** The attach path's own objects that exist now: its CHECK (before the cut-over) and its two indexes. */
async function attachPresent(pool: Pool, plan: Plan): Promise<string[]> {
  const a = plan.sql.attach;
  if (!a) return [];
  const index = (name: string) => qualified({ schema: plan.table.schema, name });
  const r = await pool.query(
    `SELECT 'check ' || quote_ident(conname) || ' on ' || conrelid::regclass::text AS x FROM pg_constraint
      WHERE conname = $1 AND conrelid = $2
     UNION ALL SELECT 'index ' || c.oid::regclass::text FROM pg_class c
      WHERE c.oid IN (to_regclass($3), to_regclass($4))
     ORDER BY 1`,
    [a.checkName, plan.tableOid, index(a.keyIndex), index(a.backIndex)],
  );
  return r.rows.map((x) => x.x);
}

/**
 * The attach path's removal: before the cut-over the CHECK (which would refuse the application's rows from the
 * cut-off month on) and the copy in one transaction, then the indexes CONCURRENTLY; after it the conversion
 * stands (the history partition keeps its CHECK, the same as its bound) and only the index an interrupted
 * swap back built goes.
 */
function attachStatements(plan: Plan, cutoverDone: boolean): Pick<CleanupReport, 'statements' | 'concurrently'> {
  const a = plan.sql.attach!;
  return cutoverDone
    ? { statements: [], concurrently: [a.dropBack] }
    : // a run ended after its swap back and before that swap's snapshot guard went (the wait: remove waits too)
      {
        statements: [a.dropCheck, ...(a.dropGuard ?? []), ...plan.sql.dropShadow],
        concurrently: [a.dropKey, a.dropBack],
      };
}

/** What a run of `table` left behind, with the statements that remove it, and the stored plan. */
async function report(pool: Pool, table: TableRef): Promise<{ report: CleanupReport; plan: Plan | null }> {
  const run = await storedRun(pool, table);
  const base: CleanupReport = {
    table: displayName(table),
    run: null,
    phase: 'none',
    leftovers: [],
    statements: [],
    removed: false,
  };
  const held = await fixHolders(pool, table);
  if (held.length) base.heldBy = held;
  if (!run) return { report: base, plan: null };
  base.run = { workflowId: run.workflow_id, state: run.run_state, cutoverDone: run.cutover_done };
  if (!run.plan) return { report: base, plan: null };
  const plan = JSON.parse(run.plan) as Plan;
  const leftovers = await present(pool, plan);
  if (!leftovers.length) return { report: { ...base, leftovers }, plan };
  if (plan.sql.attach) {
    const phase = run.cutover_done ? 'after-cutover' : 'before-cutover';
    // after the cut-over the history partition's CHECK is its bound's twin: it stays, not a leftover
    const left = run.cutover_done ? leftovers.filter((x) => !x.startsWith('check ')) : leftovers;
    if (!left.length) return { report: { ...base, leftovers: left }, plan };
    return { report: { ...base, leftovers: left, phase, ...attachStatements(plan, run.cutover_done) }, plan };
  }
  const counters = plan.sql.dropCounters ?? [];
  // after the cut-over the conversion stands: what is left is the rollback machinery on the new table
  const r: CleanupReport = run.cutover_done
    ? { ...base, leftovers, phase: 'after-cutover', statements: [...plan.sql.finalize, ...counters] }
    : {
        ...base,
        leftovers,
        phase: 'before-cutover',
        statements: [...plan.sql.dropSyncTrigger, ...counters, ...plan.sql.dropShadow],
      };
  return { report: r, plan };
}

/**
 * The fix runs that hold `table`, with what such a run may have left on it: an INVALID index (a build it never
 * finished) or a NOT VALID constraint (one it never validated). Cleanup does not drop them: they may be wanted.
 */
async function fixHolders(pool: Pool, table: TableRef): Promise<NonNullable<CleanupReport['heldBy']>> {
  const holders = (await runsHolding(pool, [table])).filter((h) => h.kind !== 'partitionTable');
  if (!holders.length) return [];
  const r = await pool.query(
    `WITH t AS (SELECT to_regclass($1) AS oid),
          rels AS (SELECT oid FROM t UNION ALL SELECT i.inhrelid FROM pg_inherits i, t WHERE i.inhparent = t.oid)
     SELECT 'index ' || x.indexrelid::regclass::text || ' is INVALID' AS x
       FROM pg_index x WHERE NOT x.indisvalid AND x.indrelid IN (SELECT oid FROM rels)
     UNION ALL
     SELECT 'constraint ' || quote_ident(c.conname) || ' on ' || c.conrelid::regclass::text || ' is NOT VALID'
       FROM pg_constraint c, t WHERE NOT c.convalidated AND c.conrelid = t.oid
     ORDER BY 1`,
    [qualified(table)],
  );
  const left = r.rows.map((x) => x.x as string);
  return holders.map((h) => ({ kind: h.kind, workflowId: h.workflowId, state: h.state, left }));
}

/**
 * A removal naming a fix run that holds the table: the run is released (`failed`), so that maintenance and
 * partitionTable see the table free. Its forward steps, should its workflow be alive after all, no longer
 * commit (their fence reads `active`). Returns null when `expectedWorkflowId` has no fix run on the table.
 */
async function releaseFixRun(
  pool: Pool,
  logger: Logger,
  table: TableRef,
  expectedWorkflowId: string,
): Promise<CleanupReport | null> {
  const runs = await fixRunsOf(pool, expectedWorkflowId, table);
  if (!runs.length) return null;
  const holding = runs.filter((r) => r.state === 'active' || r.state === 'undoing');
  const before = (await report(pool, table)).report;
  // nothing to release: a retry after the release, unless the table's partitionTable run is this workflow's
  if (!holding.length && before.run?.workflowId === expectedWorkflowId) return null;
  // an undo started by undoFixConstraints is that workflow's, whose state cleanup has not asked Temporal for
  const undoneBy = holding.find((r) => r.undoBy);
  if (undoneBy) {
    throw failure(
      `Run ${expectedWorkflowId} of ${displayName(table)} is being undone by workflow ${undoneBy.undoBy}; cleanup ` +
        'leaves it to that undo: wait for it (if it was terminated, start the undo again under that workflow id).',
      'RunInProgress',
    );
  }
  for (const r of holding) await takeOver(pool, fixRun(expectedWorkflowId, r.runId), 'failed', ['active', 'undoing']);
  if (holding.length) logger.info({ workflowId: expectedWorkflowId }, 'the hold of a dead fix run released');
  const after = (await report(pool, table)).report;
  return { ...after, heldBy: before.heldBy, removed: holding.length > 0 };
}

/** Read-only: what a run of `table` left behind and how cleanup would remove it. */
async function inspectLeftovers({ pool }: Deps, table: TableRef): Promise<CleanupReport> {
  try {
    return (await report(pool, table)).report;
  } catch (err) {
    classify(err, 'cleanup inspection');
  }
}

/** The removal itself, under the look-ahead; never drops the source table. */
async function remove(pool: Pool, logger: Logger, r: CleanupReport, plan: Plan, lockTimeoutMs: number): Promise<void> {
  const run = async (c: PoolClient) => {
    // never drop the table itself: the copy must be partflow's partitioned table, not the source
    if (r.phase === 'before-cutover') await copyExists(c, plan);
    for (const sql of r.statements) await c.query(sql);
  };
  const relations = [qualified(plan.table), qualified(plan.shadow), qualified(plan.old)];
  // a swap's snapshot guard goes only once no transaction older than the swap is left (as finalize waits)
  if (r.statements.length) await waitForOlderSnapshots(pool, plan.table, logger);
  if (r.statements.length) await withLockRetry(pool, logger, 'cleanup', lockTimeoutMs, run, { relations });
  for (const sql of r.concurrently ?? []) await pool.query(sql);
}

/**
 * Removes what the run recorded for `table` left behind, if that run is still `expectedWorkflowId` (the
 * one the operator saw was no longer running). The run's state goes to `undoing` first, in its own
 * transaction: a forward step of a run still alive somewhere can no longer commit (it checks that state
 * in the same transaction as its DDL).
 */
async function removeLeftovers(
  { pool, log }: Deps,
  table: TableRef,
  expectedWorkflowId: string,
  lockTimeoutMs: number,
): Promise<CleanupReport> {
  const logger = log.child({ step: 'cleanup', table: displayName(table) });
  const run = tableRun(table, expectedWorkflowId);
  try {
    // a fixConstraints or createIndexes run of that workflow id holding the table: released, nothing dropped
    const released = await releaseFixRun(pool, logger, table, expectedWorkflowId);
    if (released) return released;
    // `cleanup`, not `undoing`: the run's own undo steps act only on their own `undoing` (undoFence)
    const fenced = await takeOver(pool, run, 'cleanup', ['active', 'undoing', 'cleanup']);
    if (!fenced) {
      // a retry after a finished removal (or a run that had already ended): report, change nothing
      const done = await report(pool, table);
      if (done.report.run?.workflowId === expectedWorkflowId) return done.report;
      throw failure(
        `partflow.runs no longer records workflow ${expectedWorkflowId} for ${displayName(table)}; ` +
          `look again with partflow cleanup ${displayName(table)}.`,
        'RunChanged',
      );
    }
    const { report: r, plan } = await report(pool, table);
    if (plan && (r.statements.length || r.concurrently?.length)) await remove(pool, logger, r, plan, lockTimeoutMs);
    const final = r.phase === 'after-cutover' ? 'done' : 'rolled-back';
    await markEnded(pool, run, final);
    logger.info({ removed: r.leftovers, phase: r.phase }, 'leftovers of a dead run removed');
    return { ...r, removed: true, run: r.run && { ...r.run, state: final } };
  } catch (err) {
    classify(err, 'cleanup');
  }
}

/**
 * What Temporal says of the workflow `workflowId`: its status name, or `NOT_FOUND` when Temporal has no such
 * workflow (terminated long ago, or its history gone). Any other error is thrown: cleanup fails closed.
 */
async function workflowStatus(workflowId: string): Promise<string> {
  try {
    const d = await Context.current().client.workflow.getHandle(workflowId).describe();
    return d.status.name;
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return 'NOT_FOUND';
    throw failure(
      `Cannot read the state of workflow ${workflowId} from Temporal (${(err as Error).message}); cleanup refuses ` +
        'while it cannot tell that the run is over: try again when Temporal answers.',
      'RunInProgress',
    );
  }
}

export function createCleanupActivities(deps: Deps) {
  return {
    workflowStatus,
    inspectLeftovers: (table: TableRef) => inspectLeftovers(deps, table),
    removeLeftovers: (table: TableRef, expectedWorkflowId: string, lockTimeoutMs: number) =>
      removeLeftovers(deps, table, expectedWorkflowId, lockTimeoutMs),
  };
}
