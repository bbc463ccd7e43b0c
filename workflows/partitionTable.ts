/**
 * `partitionTable`: preflight → shadow → sync trigger → backfill → verify → approval → cut-over →
 * rollback window → finalize. Each forward step records its compensation before it runs (the
 * compensations are idempotent), so a failure, a `rollback` signal or a cancellation at any point undoes
 * exactly what was done, in reverse, in a non-cancellable scope.
 */
import {
  condition,
  ContinueAsNew,
  continueAsNew,
  isCancellation,
  log,
  patched,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import type { BackfillChunkArgs, BackfillChunkResult, CutoverResult, VerifyReport } from '../activities';
import { displayName } from '../src/ident';
import { rootFailure, validInput } from './failure';
import { PartitionTableInput, validatePartitionInput, validateThrottle } from '../src/input';
import { backfillSql, planStatements, refOf, undoStatements, type Plan } from '../src/plan';
import {
  approveCutoverSignal,
  finalizeSignal,
  pauseSignal,
  progressQuery,
  resumeSignal,
  rollbackSignal,
  throttleUpdate,
} from './definitions';
import { failure } from '../src/failures';
import { attachForward, attachSetUp } from './partitionAttach';
import { compensate } from './partitionUndo';
import { followingKeyLog, reverifyUntilDecided } from './partitionWaits';
import {
  act,
  CHUNK,
  checkRollback,
  enter,
  HELD_RETRY_MS,
  heldAgain,
  LONG,
  RollbackRequested,
  short,
  SHORT,
  stoppable,
} from './partitionRun';
import { initialState, PartitionState, progressOf, recordChunk, Run, showDetails, together } from './partitionState';

export type { PartitionState } from './partitionState';

export interface PartitionTableResult {
  status: 'done' | 'rolled-back' | 'dry-run';
  table: string;
  plan?: Plan;
  statements?: { step: string; sql: string }[];
  verify?: VerifyReport | null;
  cutover?: CutoverResult | null;
  rowsCopied?: number;
  /** updates that moved a row to another month during the run */
  rowMoves?: number;
  oldTable?: string;
  /** after a rollback: what could not be restored exactly */
  undoProblems?: string[];
  /** the attach path's swap back: how long it held its lock, the rows it moved back */
  swapBack?: { lockHoldMs: number; movedRows: number };
}

/** How long one backfill activity runs before the workflow looks at pause/throttle/rollback again. */
const CHUNK_MS = 3000;

/** `resume` is partflow's own state across continue-as-new; anything else in the input is validated. */
function validateStart(input: PartitionTableInput & { resume?: PartitionState }): Run {
  // `resume` is this workflow's own state, handed from one run to the next by continue-as-new; from anyone
  // else (a Start Workflow form, a crafted input) it would steer the steps, so it is refused.
  const { resume, ...external } = input;
  if (resume !== undefined && !workflowInfo().continuedFromExecutionRunId) {
    throw failure(
      'Field "resume" is partflow\'s internal state across continue-as-new and is never accepted in an input; ' +
        'start the run without it.',
      'InvalidInput',
    );
  }
  const opts = validInput(() => validatePartitionInput(external));
  const state: PartitionState = resume ?? initialState(opts);
  return { external, opts, table: displayName(opts.table), state, lockTimeoutMs: opts.lockTimeoutMs };
}

function setHandlers(run: Run): void {
  const { state } = run;
  // the Web UI's current details follow at once (not only when the chunk in flight ends)
  setHandler(pauseSignal, () => {
    state.paused = true;
    showDetails(run);
  });
  setHandler(resumeSignal, () => {
    state.paused = false;
    showDetails(run);
  });
  setHandler(approveCutoverSignal, (args?: unknown) => {
    state.approved = true;
    // a signal cannot be refused: only the two values are taken, anything else is ignored
    const o = typeof args === 'object' && args !== null ? (args as Record<string, unknown>).olderSnapshots : undefined;
    if (o === 'wait' || o === 'guard') state.olderSnapshots = o;
  });
  setHandler(rollbackSignal, () => void (state.rollbackRequested = true));
  setHandler(finalizeSignal, () => void (state.finalizeRequested = true));
  const throttle = (t: Parameters<typeof validateThrottle>[0]) => {
    const { batchSize, sleepMs, ...replica } = validateThrottle(t);
    if (batchSize !== undefined) state.batchSize = batchSize;
    if (sleepMs !== undefined) state.sleepMs = sleepMs;
    state.replica = { ...(state.replica ?? run.opts.replica), ...replica };
    return { batchSize: state.batchSize, sleepMs: state.sleepMs };
  };
  const validator = (t: Parameters<typeof validateThrottle>[0]) => {
    try {
      validateThrottle(t);
    } catch (err) {
      throw failure((err as Error).message, 'InvalidInput');
    }
  };
  setHandler(throttleUpdate, throttle, { validator });
  setHandler(progressQuery, () => progressOf(run));
}

/** Preflight, then claim, copy and sync trigger, each recorded before it runs; a dry run ends after preflight. */
async function setUp(run: Run): Promise<PartitionTableResult | null> {
  const { state, opts, table, lockTimeoutMs } = run;
  // the fleet's search attributes, where the namespace has them (runs from before them: never)
  // (one attempt: a worker that does not know the activity, or any failure, means no attributes, not a stuck run)
  if (patched('fleet-search-attributes')) {
    state.fleet = await act(
      { ...SHORT, startToCloseTimeout: '30s', retry: { maximumAttempts: 1 } },
      'are the fleet search attributes registered?',
    )
      .fleetRegistered()
      .catch(() => false);
  }
  enter(run, 'preflight');
  // the options validated where the input entered (validateStart), not the input again
  const pre = await act(SHORT, `preflight ${table}: read the catalog, make the plan`).preflight(opts);
  state.plan = pre.plan;
  if (opts.dryRun) {
    enter(run, 'done');
    const statements = [...planStatements(pre.plan), ...undoStatements(pre.plan)];
    return { status: 'dry-run', table, plan: pre.plan, statements };
  }
  checkRollback(run);
  state.done.push('claim');
  await act(SHORT, `claim ${table} in partflow.runs`).claimRun(opts.table, state.plan);

  if (state.plan.method === 'attach') {
    await attachSetUp(run, state.plan);
    return null;
  }

  checkRollback(run);
  enter(run, 'shadow');
  state.done.push('shadow');
  await act(SHORT, `create the partitioned copy of ${table}`).createShadow(refOf(state.plan), lockTimeoutMs);

  checkRollback(run);
  enter(run, 'sync');
  state.done.push('sync');
  const sync = await act(SHORT, `install the sync on ${table}`).installSyncTrigger(refOf(state.plan), lockTimeoutMs);
  state.totalPages = sync.totalPages;
  state.lockWaitRetries += sync.lockWaitRetries;
  state.appBaselineMs = sync.appBaselineMs;
  enter(run, 'backfill');
  return null;
}

/**
 * One chunk of the copy. A run that began before plan references (no `chunk-by-reference` marker in its history)
 * hands the chunk its statements through `backfillChunk`, as it did; every later run calls `copyChunk`, which
 * reads them from the stored plan. A worker of an earlier release has no `copyChunk`: during a rolling deploy it
 * fails such a task retryably (not registered) until a worker of this release takes it, instead of failing the run.
 */
function copyChunk(state: PartitionState, summary: string, input: BackfillChunkArgs): Promise<BackfillChunkResult> {
  if (patched('chunk-by-reference')) return act(CHUNK, summary).copyChunk(input);
  return act(CHUNK, summary).backfillChunk({ ...input, sql: backfillSql(state.plan!) });
}

/**
 * One round of a parallel copy: a chunk of every stream not done yet, at once. All of them end before the
 * round does (a failed one too), so that nothing of the copy runs when an undo starts.
 */
async function streamsRound(state: PartitionState, input: BackfillChunkArgs, streams: number) {
  const left = state.streamsLeft ?? [...Array(streams).keys()];
  const settled = await Promise.allSettled(
    left.map((stream) =>
      copyChunk(state, `backfill stream ${stream + 1} of ${streams}`, { ...input, stream, streams }),
    ),
  );
  const failed = settled.find((x) => x.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
  const rs = settled.map((x) => (x as PromiseFulfilledResult<BackfillChunkResult>).value);
  // what each saw at its end, together: a stream that finished is started again after a rewrite re-split it
  state.streamsLeft = [...new Set(rs.flatMap((r) => r.streamsLeft ?? []))].sort((a, b) => a - b);
  return together(rs, state.streamsLeft.length === 0);
}

/**
 * Chunks of CHUNK_MS until the copy is complete; pause, throttle and rollback act between chunks. With
 * `parallelism` N (page mode), N streams copy their own page ranges, a chunk of each per round.
 */
async function backfill(run: Run, plan: Plan): Promise<void> {
  const { state, opts, table } = run;
  const streams = plan.copyMode === 'pages' ? (plan.parallelism ?? 1) : 1;
  for (;;) {
    checkRollback(run);
    if (state.paused) {
      await followingKeyLog(plan, () => !state.paused || state.rollbackRequested);
      continue;
    }
    // the statements come from the stored plan (partflow.runs), not from here
    const input: BackfillChunkArgs = {
      table: plan.table,
      copyMode: plan.copyMode,
      batchSize: state.batchSize,
      sleepMs: state.sleepMs,
      maxMs: CHUNK_MS,
      maxBatchMs: opts.maxBatchMs,
      replica: state.replica ?? opts.replica,
      ...(state.appBaselineMs !== undefined ? { appBaselineMs: state.appBaselineMs } : {}),
    };
    state.chunkInFlight = true;
    let r: BackfillChunkResult;
    try {
      r =
        streams > 1
          ? await streamsRound(state, input, streams)
          : await copyChunk(state, `backfill ${table} from page ${state.checkpointPage}`, input);
    } finally {
      state.chunkInFlight = false;
    }
    recordChunk(state, r);
    showDetails(run);
    if (r.done) break;
    if (workflowInfo().continueAsNewSuggested) {
      log.info('continuing as new to keep history bounded', { table, checkpointPage: state.checkpointPage });
      await continueAsNew<typeof partitionTable>({ ...run.external, resume: state });
    }
  }
  enter(run, 'verify');
}

/** The window in which a rollback is still possible, then finalize. */
async function rollbackWindow(run: Run, plan: Plan): Promise<void> {
  const { state, opts, table, lockTimeoutMs } = run;
  const endsAt = Date.now() + opts.rollbackWindowMs; // workflow time: deterministic
  for (;;) {
    const left = endsAt - Date.now();
    // the reverse key log applied meanwhile (plans with one), so the swap back finds it short
    if (left > 0)
      await followingKeyLog(plan, () => state.finalizeRequested || state.rollbackRequested, 'reverse', left);
    if (!state.rollbackRequested) break;
    // a rollback that would lose what a deploy added to the new table is refused; the window goes on
    const blocker = await act(SHORT, 'rollback requested: would it lose anything?').rollbackBlocker(refOf(plan));
    if (!blocker) break;
    state.lastError = blocker;
    state.rollbackRequested = false;
    log.warn('rollback refused', { table, reason: blocker });
  }
  checkRollback(run);
  const fin = await act(SHORT, `finalize ${table}: drop the reverse sync, keep the old table`).finalize(
    refOf(plan),
    lockTimeoutMs,
  );
  state.rowMoves = fin?.rowMoves ?? state.rowMoves;
  state.done = [];
  await short.releaseRun(opts.table, 'done');
  enter(run, 'done');
}

/** From wherever the run stands (a resumed run starts in its phase) to the end. */
async function forward(run: Run, plan: Plan): Promise<void> {
  const { state, opts, table } = run;
  if (plan.method === 'attach') return attachForward(run, plan);
  if (state.phase === 'backfill') await backfill(run, plan);
  if (state.phase === 'verify') {
    checkRollback(run);
    state.verify = await act(LONG, `verify ${table} against the copy, chunk by chunk`).verify(refOf(plan), {
      chunkRows: opts.verifyChunkRows,
    });
    enter(run, 'awaiting-approval');
  }
  if (state.phase === 'awaiting-approval') {
    if (opts.approval === 'signal') {
      log.info('waiting for approveCutover', { table });
      if (patched('reverify-while-waiting')) await reverifyUntilDecided(run, plan);
      else await condition(() => state.approved || state.rollbackRequested);
    }
    checkRollback(run);
    enter(run, 'cutover');
  }
  if (state.phase === 'cutover') {
    state.done.push('cutover');
    state.cutover = await cutOver(run, plan);
    state.lockWaitRetries += state.cutover.lockWaitRetries;
    state.rowMoves = state.cutover.rowMoves ?? state.rowMoves;
    enter(run, 'rollback-window');
  }
  if (state.phase === 'rollback-window') await rollbackWindow(run, plan);
}

/**
 * The cut-over. With olderSnapshots "wait", one that sessions with snapshots older than partflow's last write
 * held (HandoverHeld: the application's writes went back to the key log) is tried again after HELD_RETRY_MS,
 * its last check going on from where it got, until it goes quiet, the operator says "guard" (approveCutover),
 * or a rollback or cancellation comes.
 */
async function cutOver(run: Run, plan: Plan): Promise<CutoverResult> {
  const { state, opts, table, lockTimeoutMs } = run;
  const step = () => act(LONG, `cut over: swap ${table} and the copy`);
  // runs from before olderSnapshots: the guard at the handover's deadline, as then
  if (!patched('older-snapshots-wait')) return step().cutover(refOf(plan), lockTimeoutMs);
  for (;;) {
    const olderSnapshots = state.olderSnapshots ?? opts.olderSnapshots;
    const { lastCheck, applied } = state.cutoverHeld ?? {};
    const attempt = () => step().cutover(refOf(plan), lockTimeoutMs, { olderSnapshots, lastCheck, applied });
    // an attempt after a held one waits for the holders first (up to 2 minutes): a rollback, or the operator's
    // "guard", cancels it (it hands back and stops; one that has swapped meanwhile is swapped back by the undo)
    const changed = () => state.rollbackRequested || (state.olderSnapshots ?? opts.olderSnapshots) !== olderSnapshots;
    try {
      const r = state.cutoverHeld ? await stoppable(attempt, changed) : await attempt();
      if (state.cutoverHeld) state.lastError = null;
      state.cutoverHeld = null;
      return r;
    } catch (err) {
      if (isCancellation(err) && changed()) {
        checkRollback(run);
        continue;
      }
      const held = heldAgain(state.cutoverHeld, err);
      if (!held) throw err;
      state.cutoverHeld = { ...held.hold, lastCheck: held.lastCheck };
      state.lastError = held.message;
      log.warn('cut-over held by older snapshots', { table, heldBy: state.cutoverHeld.heldBy });
      showDetails(run);
      await condition(
        () => state.rollbackRequested || (state.olderSnapshots ?? opts.olderSnapshots) !== 'wait',
        HELD_RETRY_MS,
      );
      checkRollback(run);
    }
  }
}

/** A rollback signal or a cancellation undoes and ends as rolled back; any other failure undoes and fails. */
async function undoAfter(run: Run, err: unknown): Promise<PartitionTableResult> {
  const { state, table } = run;
  if (err instanceof ContinueAsNew) throw err;
  if (err instanceof RollbackRequested) {
    await compensate(run, 'rolled-back', true);
    if (state.backToWindow) return backToWindow(run);
    if (state.takenBy) throw failure(state.undoProblems!.join('; '), 'RunUndone');
    if (state.swapRefused) throw failure(state.undoProblems!.join('; '), 'TableChanged');
    const { verify, cutover, rowsCopied } = state;
    return {
      status: 'rolled-back',
      table,
      verify,
      cutover,
      rowsCopied,
      rowMoves: state.rowMoves ?? 0,
      undoProblems: state.undoProblems ?? [],
      ...(state.swapBack ? { swapBack: state.swapBack } : {}),
    };
  }
  if (isCancellation(err)) {
    await compensate(run, 'rolled-back');
    throw err;
  }
  state.lastError = rootFailure(err).message;
  log.error('partitionTable failed; undoing', { table, error: state.lastError });
  const cause = state.lastError;
  await compensate(run, 'failed');
  const undo = state.undoProblems?.length ? ` Undone except: ${state.undoProblems.join('; ')}` : '';
  throw failure(`${cause}${undo}`, 'PartitionTableFailed');
}

/**
 * After the swap back refused a rollback under its lock (compensate's `backToWindow`; nothing was undone): the
 * run is active again and its rollback window goes on (for its whole length again), as after a refusal at the
 * signal, with the refusal in lastError; a later rollback or finalize ends it as usual.
 */
async function backToWindow(run: Run): Promise<PartitionTableResult> {
  const { state, opts, table } = run;
  const plan = state.plan!;
  const refusal = state.backToWindow!;
  state.backToWindow = null;
  // the window anew: what was held is over, and signals sent while the rollback ran (a finalize, a second
  // rollback) are not taken as decisions about it (the operator decides again with the refusal in front of them)
  state.swapBackHeld = null;
  state.rollbackRequested = false;
  state.finalizeRequested = false;
  const takenAs = await short.resumeRun(opts.table);
  if (takenAs) {
    // a cleanup took the run meanwhile: it is the cleanup's now
    state.takenBy = takenAs;
    state.lastError = `${refusal}; then partflow.runs recorded the run as "${takenAs}" (partflow cleanup took it)`;
    enter(run, 'failed');
    throw failure(state.lastError, 'RunUndone');
  }
  state.lastError = refusal;
  log.warn('rollback refused under the swap back lock; the rollback window goes on', { table, reason: refusal });
  enter(run, 'rollback-window');
  try {
    await rollbackWindow(run, plan);
    return doneResult(run, plan);
  } catch (err) {
    return undoAfter(run, err);
  }
}

function doneResult(run: Run, plan: Plan): PartitionTableResult {
  const { verify, cutover, rowsCopied } = run.state;
  return {
    status: 'done',
    table: run.table,
    verify,
    cutover,
    rowsCopied,
    rowMoves: run.state.rowMoves ?? 0,
    oldTable: displayName(plan.sql.attach?.history ?? plan.old),
  };
}

export async function partitionTable(
  input: PartitionTableInput & { resume?: PartitionState },
): Promise<PartitionTableResult> {
  const run = validateStart(input);
  setHandlers(run);
  const { state } = run;
  try {
    if (!input.resume) {
      const dryRun = await setUp(run);
      if (dryRun) return dryRun;
    }
    const plan = state.plan!;
    await forward(run, plan);
    return doneResult(run, plan);
  } catch (err) {
    return undoAfter(run, err);
  }
}
