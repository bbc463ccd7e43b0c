/**
 * partitionTable's attach path (src/plan/attach.ts has its statements, activities/partition/attach.ts its
 * executors): the unique index, the empty partitioned table and the CHECK before the approval, then the cut-over
 * that attaches the table as its history partition, the rollback window and done. No copy, no sync.
 */
import { condition, log } from '@temporalio/workflow';
import { displayName } from '../src/ident';
import { failure } from '../src/failures';
import { refOf, type Plan } from '../src/plan';
import type { Run } from './partitionState';
import { act, checkRollback, enter, LONG, short, SHORT } from './partitionRun';

/**
 * The attach path's steps before the approval (src/plan/attach.ts): the unique index, the empty partitioned
 * table, the CHECK validated. No copy and no sync: the rows stay where they are.
 */
export async function attachSetUp(run: Run, plan: Plan): Promise<void> {
  const { state, lockTimeoutMs } = run;
  checkRollback(run);
  enter(run, 'attach-key');
  state.done.push('attachKey');
  await act(LONG, `build ${plan.sql.attach!.keyIndex} CONCURRENTLY`).buildAttachKey(refOf(plan));

  checkRollback(run);
  enter(run, 'shadow');
  state.done.push('shadow');
  await act(SHORT, `create ${displayName(plan.shadow)}, ${plan.partitions.length + 1} empty partitions`).createShadow(
    refOf(plan),
    lockTimeoutMs,
  );

  checkRollback(run);
  enter(run, 'attach-check');
  state.done.push('attachCheck');
  await act(LONG, `add and validate CHECK ${plan.sql.attach!.checkName} (< ${plan.sql.attach!.cutoff})`).addBoundCheck(
    refOf(plan),
    lockTimeoutMs,
  );
  enter(run, 'awaiting-approval');
}

/**
 * How long the attach path may wait for its approval: until two days before the cut-off (UTC; a margin for any
 * time zone), when the CHECK would begin to refuse the application's rows. Workflow time: deterministic.
 */
function attachDeadlineMs(plan: Plan): number {
  const [y, m] = plan.sql.attach!.cutoff.split('-').map(Number);
  return Date.UTC(y, m - 1, 1) - 2 * 86_400_000 - Date.now();
}

/** The attach path from the approval on: cut-over, rollback window, done (nothing to finalize). */
export async function attachForward(run: Run, plan: Plan): Promise<void> {
  const { state, opts, table, lockTimeoutMs } = run;
  if (state.phase === 'awaiting-approval') {
    const left = attachDeadlineMs(plan);
    if (left <= 0) throw failure(attachLate(plan, table), 'CutoffPassed');
    if (opts.approval === 'signal') {
      log.info('waiting for approveCutover', { table, cutoff: plan.sql.attach!.cutoff });
      const decided = await condition(() => state.approved || state.rollbackRequested, left);
      if (!decided) throw failure(attachLate(plan, table), 'CutoffPassed');
    }
    checkRollback(run);
    enter(run, 'cutover');
  }
  if (state.phase === 'cutover') {
    state.done.push('cutover');
    state.cutover = await act(
      LONG,
      `cut over: attach ${displayName(plan.sql.attach!.history)} to the new ${table}`,
    ).attachCutover(refOf(plan), lockTimeoutMs);
    state.lockWaitRetries += state.cutover.lockWaitRetries;
    enter(run, 'rollback-window');
  }
  if (state.phase === 'rollback-window') {
    const endsAt = Date.now() + opts.rollbackWindowMs; // workflow time: deterministic
    for (;;) {
      const left = endsAt - Date.now();
      if (left > 0) await condition(() => state.finalizeRequested || state.rollbackRequested, left);
      if (!state.rollbackRequested) break;
      // a rollback that cannot put the table back (two rows with one key now) is refused; the window goes on
      const blocker = await act(SHORT, 'rollback requested: can the table be put back?').attachRollbackBlocker(
        refOf(plan),
      );
      if (!blocker) break;
      state.lastError = blocker;
      state.rollbackRequested = false;
      log.warn('rollback refused', { table, reason: blocker });
    }
    checkRollback(run);
    state.done = [];
    await short.releaseRun(opts.table, 'done');
    enter(run, 'done');
  }
}

function attachLate(plan: Plan, table: string): string {
  return (
    `The cut-over of ${table} was not approved two days before the cut-off ${plan.sql.attach!.cutoff}, from which ` +
    "the CHECK would refuse the application's rows: the run undoes itself (the CHECK goes first); start it " +
    'again, with a later "cutoffMonth" if the approval takes longer.'
  );
}
