/**
 * partitionTable's undo: each step the run recorded as begun, undone in reverse in a non-cancellable scope
 * after the fence (beginUndo), every undo tried whatever the one before did, what could not be restored
 * reported. The statements of each undo are the plan's (src/plan/<step>.ts), run by its executor.
 */
import { CancellationScope, condition, isCancellation, log, patched } from '@temporalio/workflow';
import { displayName } from '../src/ident';
import { rootFailure } from './failure';
import { refOf } from '../src/plan';
import { act, enter, HELD_RETRY_MS, heldAgain, LONG, short, SHORT, stoppable } from './partitionRun';
import { Run, showDetails, Step } from './partitionState';

/** The undo of the step `step`, which the run recorded as begun. */
async function undoStep(run: Run, step: Step, finalState: 'rolled-back' | 'failed'): Promise<void> {
  const { state, lockTimeoutMs, opts } = run;
  const plan = state.plan!;
  if (step === 'cutover') {
    if (plan.method === 'attach') {
      const r = await act(
        LONG,
        `undo: detach ${displayName(plan.sql.attach!.history)}, move the rows written since back`,
      ).attachSwapBack(refOf(plan), lockTimeoutMs);
      state.swapBack = { lockHoldMs: r.lockHoldMs, movedRows: r.movedRows };
      for (const p of r.notRestored ?? []) state.undoProblems = [...(state.undoProblems ?? []), p];
      return;
    }
    const r = await swapBackHeldOrNot(run);
    for (const p of r?.notRestored ?? []) state.undoProblems = [...(state.undoProblems ?? []), p];
  } else if (step === 'attachCheck')
    await act(SHORT, `undo: drop the CHECK ${plan.sql.attach!.checkName}`).dropBoundCheck(refOf(plan), lockTimeoutMs);
  else if (step === 'attachKey')
    await act(LONG, `undo: drop the index ${plan.sql.attach!.keyIndex} CONCURRENTLY`).dropAttachKey(refOf(plan));
  else if (step === 'sync')
    await act(SHORT, 'undo: drop the sync triggers and the key log').dropSyncTrigger(refOf(plan), lockTimeoutMs);
  else if (step === 'shadow')
    await act(SHORT, `undo: drop the partitioned copy of ${run.table}`).dropShadow(refOf(plan), lockTimeoutMs);
  else if (step === 'claim') await short.releaseRun(opts.table, finalState);
}

/**
 * The swap back. With olderSnapshots "wait", one that sessions with snapshots older than partflow's last write into
 * the old table held (HandoverHeld: the application's writes went back to the reverse key log) is tried again
 * after HELD_RETRY_MS, as the cut-over is, until those sessions end or the operator says "guard" (approveCutover),
 * which also cancels an attempt waiting for them. Runs from before it: the guard at the handover's deadline.
 */
async function swapBackHeldOrNot(run: Run) {
  const { state, opts, lockTimeoutMs } = run;
  const plan = state.plan!;
  const step = (o = SHORT) => act(o, `undo: swap ${run.table} back to the original table`);
  if (!patched('older-snapshots-wait-back')) return step().swapBack(refOf(plan), lockTimeoutMs);
  for (;;) {
    const olderSnapshots = state.olderSnapshots ?? opts.olderSnapshots;
    const applied = state.swapBackHeld?.applied ?? null;
    // LONG, as the cut-over: an attempt may wait for the holders (2 minutes) after a handover of up to
    // PARTFLOW_HANDOVER_WAIT_MS, and must end with HandoverHeld rather than time out and be retried as it was
    const attempt = () => step(LONG).swapBack(refOf(plan), lockTimeoutMs, { olderSnapshots, applied });
    const changed = () => (state.olderSnapshots ?? opts.olderSnapshots) !== olderSnapshots;
    try {
      const r = state.swapBackHeld ? await stoppable(attempt, changed) : await attempt();
      if (state.swapBackHeld) state.lastError = null;
      state.swapBackHeld = null;
      return r;
    } catch (err) {
      if (isCancellation(err) && changed()) continue;
      const held = heldAgain(state.swapBackHeld, err);
      if (!held) {
        state.swapBackHeld = null;
        throw err;
      }
      state.swapBackHeld = held.hold;
      state.lastError = held.message;
      log.warn('swap back held by older snapshots', { table: run.table, heldBy: state.swapBackHeld.heldBy });
      showDetails(run);
      await condition(() => (state.olderSnapshots ?? opts.olderSnapshots) !== 'wait', HELD_RETRY_MS);
    }
  }
}

/** Undoes every step the run recorded, in reverse, whatever each one's undo did; reports what it could not. */
export async function compensate(
  run: Run,
  finalState: 'rolled-back' | 'failed',
  /** the operator's rollback (not a cancellation, not a failure): a swap back refused under its lock returns */
  operatorRollback = false,
): Promise<void> {
  const { state, table, opts } = run;
  enter(run, 'rolling-back');
  await CancellationScope.nonCancellable(async () => {
    // the fence: from here on no forward step of this run can commit (each checks the run's state in the
    // same transaction as its DDL; this waits for one in flight)
    const takenAs = state.done.includes('claim') ? await short.beginUndo(opts.table) : null;
    if (takenAs) {
      // a cleanup took the run (its report says what it did): undoing now would act on its result, e.g. a
      // swap back after the application wrote to the new table; nothing is undone
      state.takenBy = takenAs;
      state.undoProblems = [
        `nothing undone: partflow.runs records the run as "${takenAs}" (partflow cleanup took it); ` +
          `look with partflow cleanup ${table}`,
      ];
      state.done = [];
    }
    // every step is tried, whatever the one before did: the undo goes to the end and reports what it could
    // not restore (in the result, progress.lastError and the failure)
    while (state.done.length) {
      const step = state.done[state.done.length - 1];
      log.info('compensating', { table, step });
      try {
        await undoStep(run, step, finalState);
      } catch (err) {
        // a rollback the swap back refused under its lock (nothing was undone): back to the rollback window
        if (step === 'cutover' && operatorRollback && refusedRollback(run, err)) {
          state.backToWindow = rootFailure(err).message;
          break;
        }
        const why = `${step}: ${rootFailure(err).message}`;
        state.undoProblems = [...(state.undoProblems ?? []), why];
        if (step === 'cutover' && patched('stop-after-refused-swap')) {
          // the new table stays the table: dropping the copy's machinery now would leave its reverse trigger
          // without its counters (application writes failing) or act on the live table; the run stays
          // `undoing`, which partflow cleanup finishes by keeping the new table
          state.swapRefused = true;
          state.undoProblems = [
            ...state.undoProblems,
            state.plan?.method === 'attach'
              ? `the swap back did not happen, so ${table} stays partitioned with its history partition attached ` +
                `and the run stays "undoing"; finish it with partflow cleanup ${table} --remove (it keeps the ` +
                'partitioned table)'
              : `the swap back did not happen, so ${table} stays the new table with partflow's reverse trigger and ` +
                `the run stays "undoing"; finish it with partflow cleanup ${table} --remove (it keeps the new table)`,
          ];
          state.done = [];
          break;
        }
        log.error('a compensation failed; going on with the rest', { table, step, error: why });
      }
      state.done.pop();
    }
  });
  if (state.backToWindow) return;
  if (state.undoProblems?.length) state.lastError = `undone except: ${state.undoProblems.join('; ')}`;
  enter(run, state.swapRefused ? 'failed' : finalState);
}

/**
 * The swap back's own refusal of a rollback that would lose rows (rollbackLoss asked under its lock, after the
 * rollback signal's check passed: a duplicate written during the swap back's handover), in a run whose swap back
 * is the key log's: its transaction rolled back and the application's writes went back to the reverse key log, so
 * the run can go on in its window as after a refusal at the signal.
 */
function refusedRollback(run: Run, err: unknown): boolean {
  const root = rootFailure(err);
  return (
    run.state.plan?.method !== 'attach' &&
    root.type === 'TableChanged' &&
    root.message.startsWith('Rolling back ') &&
    patched('refused-swap-back-to-window')
  );
}
