/**
 * `partitionTable`: preflight → shadow → sync trigger → backfill → verify → approval → cut-over →
 * rollback window → finalize. Each forward step records its compensation before it runs (the
 * compensations are idempotent), so a failure, a `rollback` signal or a cancellation at any point undoes
 * exactly what was done, in reverse, in a non-cancellable scope.
 */
import {
  ActivityCancellationType,
  ApplicationFailure,
  CancellationScope,
  condition,
  ContinueAsNew,
  continueAsNew,
  isCancellation,
  RetryPolicy,
  log,
  proxyActivities,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import type { Activities, CutoverResult, VerifyReport } from '../activities';
import { displayName } from '../src/ident';
import { rootFailure } from './failure';
import { PartitionOptions, PartitionTableInput, validatePartitionInput, validateThrottle } from '../src/input';
import { backfillSql, planStatements, type Plan } from '../src/plan';
import {
  approveCutoverSignal,
  finalizeSignal,
  pauseSignal,
  Phase,
  Progress,
  progressQuery,
  resumeSignal,
  rollbackSignal,
  throttleUpdate,
} from './definitions';
import { failure } from '../src/failures';

type Step = 'claim' | 'shadow' | 'sync' | 'cutover';

/** State carried across continue-as-new. */
export interface PartitionState {
  plan: Plan | null;
  done: Step[];
  phase: Phase;
  paused: boolean;
  approved: boolean;
  rollbackRequested: boolean;
  finalizeRequested: boolean;
  batchSize: number;
  sleepMs: number;
  rowsCopied: number;
  checkpointPage: number;
  totalPages: number;
  rowsPerSecond: number;
  percentPerSecond: number;
  lockWaitRetries: number;
  mergedBatches?: number;
  /** updates that moved a row to another month (40001 risk on the partitioned table) */
  rowMoves?: number;
  percent: number;
  checkpoint: string;
  lastError: string | null;
  verify: VerifyReport | null;
  cutover: CutoverResult | null;
  /** what the undo could not restore */
  undoProblems?: string[];
}

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
}

const retry: RetryPolicy = { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s' };
// WAIT_CANCELLATION_COMPLETED: on a cancellation the workflow waits until the running step has stopped
// (it notices at its next heartbeat) before any undo starts, so an undo never overlaps its own forward step.
// Heartbeats every few seconds (withHeartbeat, withLockRetry) make that quick.
const cancellationType = ActivityCancellationType.WAIT_CANCELLATION_COMPLETED;
const short = proxyActivities<Activities>({
  startToCloseTimeout: '5m',
  heartbeatTimeout: '15s',
  retry,
  cancellationType,
});
const long = proxyActivities<Activities>({
  startToCloseTimeout: '12h',
  heartbeatTimeout: '15s',
  retry,
  cancellationType,
});
const chunk = proxyActivities<Activities>({
  startToCloseTimeout: '5m',
  heartbeatTimeout: '15s',
  retry: { ...retry, maximumInterval: '10s' },
  cancellationType,
});

/** How long one backfill activity runs before the workflow looks at pause/throttle/rollback again. */
const CHUNK_MS = 3000;

class RollbackRequested extends Error {}

function initialState(opts: PartitionOptions): PartitionState {
  return {
    plan: null,
    done: [],
    phase: 'preflight',
    paused: false,
    approved: false,
    rollbackRequested: false,
    finalizeRequested: false,
    batchSize: opts.batchSize,
    sleepMs: opts.sleepMs,
    rowsCopied: 0,
    checkpointPage: 0,
    totalPages: 0,
    rowsPerSecond: 0,
    percentPerSecond: 0,
    lockWaitRetries: 0,
    percent: 0,
    checkpoint: 'start',
    lastError: null,
    verify: null,
    cutover: null,
  };
}

export async function partitionTable(
  input: PartitionTableInput & { resume?: PartitionState },
): Promise<PartitionTableResult> {
  // `resume` is this workflow's own state, handed from one run to the next by continue-as-new; from anyone
  // else (a Start Workflow form, a crafted input) it would steer the steps, so it is refused.
  const { resume, ...external } = input;
  if (resume !== undefined && !workflowInfo().continuedFromExecutionRunId) {
    throw failure(
      'Field "resume" is partflow\'s internal state across continue-as-new and is never accepted in an input; start the run without it.',
      'InvalidInput',
    );
  }
  let opts: PartitionOptions;
  try {
    opts = validatePartitionInput(external);
  } catch (err) {
    throw failure((err as Error).message, 'InvalidInput');
  }
  const table = displayName(opts.table);
  const s: PartitionState = resume ?? initialState(opts);

  setHandler(pauseSignal, () => void (s.paused = true));
  setHandler(resumeSignal, () => void (s.paused = false));
  setHandler(approveCutoverSignal, () => void (s.approved = true));
  setHandler(rollbackSignal, () => void (s.rollbackRequested = true));
  setHandler(finalizeSignal, () => void (s.finalizeRequested = true));
  setHandler(
    throttleUpdate,
    (t) => {
      const v = validateThrottle(t);
      if (v.batchSize !== undefined) s.batchSize = v.batchSize;
      if (v.sleepMs !== undefined) s.sleepMs = v.sleepMs;
      return { batchSize: s.batchSize, sleepMs: s.sleepMs };
    },
    {
      validator: (t) => {
        try {
          validateThrottle(t);
        } catch (err) {
          throw failure((err as Error).message, 'InvalidInput');
        }
      },
    },
  );
  setHandler(progressQuery, (): Progress => {
    const afterBackfill = ['verify', 'awaiting-approval', 'cutover', 'rollback-window', 'done'].includes(s.phase);
    const percent = afterBackfill ? 100 : s.percent;
    return {
      table,
      phase: s.phase,
      paused: s.paused,
      awaitingApproval: s.phase === 'awaiting-approval',
      rowsCopied: s.rowsCopied,
      rowsEstimated: s.plan?.estimatedRows ?? 0,
      percent: Math.round(percent * 10) / 10,
      rowsPerSecond: Math.round(s.rowsPerSecond),
      etaSeconds:
        s.phase === 'backfill' && s.percentPerSecond > 0
          ? Math.round((100 - s.percent) / s.percentPerSecond)
          : afterBackfill
            ? 0
            : null,
      lastError: s.lastError,
      checkpointPage: s.checkpointPage,
      totalPages: s.totalPages,
      checkpoint: s.checkpoint,
      batchSize: s.batchSize,
      sleepMs: s.sleepMs,
      lockWaitRetries: s.lockWaitRetries,
      mergedBatches: s.mergedBatches ?? 0,
      rowMoves: s.rowMoves ?? 0,
      givenUp: s.plan?.givenUp ?? [],
      partitions: s.plan ? s.plan.partitions.length + 1 : 0,
      warnings: s.plan?.warnings ?? [],
      verify: s.verify && {
        ok: s.verify.ok,
        rows: s.verify.rows,
        mismatches: s.verify.mismatches,
        elapsedMs: s.verify.elapsedMs,
      },
      cutover: s.cutover && {
        lockHoldMs: s.cutover.lockHoldMs,
        attempts: s.cutover.attempts,
        lockWaitRetries: s.cutover.lockWaitRetries,
      },
    };
  });

  const checkRollback = () => {
    if (s.rollbackRequested) throw new RollbackRequested('rollback requested');
  };
  const lt = opts.lockTimeoutMs;
  /** Every phase change is a log line with the workflow id (added by the SDK), the table and the phase. */
  const enter = (phase: Phase) => {
    s.phase = phase;
    log.info(`phase ${phase}`, { table, phase });
  };

  async function compensate(finalState: 'rolled-back' | 'failed'): Promise<void> {
    enter('rolling-back');
    const plan = s.plan;
    await CancellationScope.nonCancellable(async () => {
      // the fence: from here on no forward step of this run can commit (each checks the run's state in the
      // same transaction as its DDL; this waits for one in flight)
      if (s.done.includes('claim')) await short.beginUndo(opts.table);
      // every step is tried, whatever the one before did: the undo goes to the end and reports what it could
      // not restore (in the result, progress.lastError and the failure)
      while (s.done.length) {
        const step = s.done[s.done.length - 1];
        log.info('compensating', { table, step });
        try {
          if (step === 'cutover') {
            const r = await short.swapBack(plan!, lt);
            for (const p of r?.notRestored ?? []) s.undoProblems = [...(s.undoProblems ?? []), p];
          } else if (step === 'sync') await short.dropSyncTrigger(plan!, lt);
          else if (step === 'shadow') await short.dropShadow(plan!, lt);
          else if (step === 'claim') await short.releaseRun(opts.table, finalState);
        } catch (err) {
          const why = `${step}: ${rootFailure(err).message}`;
          s.undoProblems = [...(s.undoProblems ?? []), why];
          log.error('a compensation failed; going on with the rest', { table, step, error: why });
        }
        s.done.pop();
      }
    });
    if (s.undoProblems?.length) s.lastError = `undone except: ${s.undoProblems.join('; ')}`;
    enter(finalState);
  }

  try {
    if (!resume) {
      enter('preflight');
      const pre = await short.preflight(external);
      s.plan = pre.plan;
      if (opts.dryRun) {
        enter('done');
        return { status: 'dry-run', table, plan: pre.plan, statements: planStatements(pre.plan) };
      }
      checkRollback();
      s.done.push('claim');
      await short.claimRun(opts.table, s.plan);

      checkRollback();
      enter('shadow');
      s.done.push('shadow');
      await short.createShadow(s.plan, lt);

      checkRollback();
      enter('sync');
      s.done.push('sync');
      const sync = await short.installSyncTrigger(s.plan, lt);
      s.totalPages = sync.totalPages;
      s.lockWaitRetries += sync.lockWaitRetries;
      enter('backfill');
    }
    const plan = s.plan!;

    if (s.phase === 'backfill') {
      for (;;) {
        checkRollback();
        if (s.paused) {
          await condition(() => !s.paused || s.rollbackRequested);
          continue;
        }
        const r = await chunk.backfillChunk({
          table: plan.table,
          copyMode: plan.copyMode,
          sql: backfillSql(plan),
          batchSize: s.batchSize,
          sleepMs: s.sleepMs,
          maxMs: CHUNK_MS,
          maxBatchMs: opts.maxBatchMs,
        });
        const gained = r.percent - s.percent;
        s.rowsCopied = r.rowsCopied;
        s.mergedBatches = (s.mergedBatches ?? 0) + (r.mergedBatches ?? 0);
        s.rowMoves = r.rowMoves ?? s.rowMoves;
        s.percent = r.percent;
        s.checkpoint = r.checkpoint;
        s.checkpointPage = r.nextPage;
        s.totalPages = r.totalPages;
        if (r.elapsedMs > 0 && r.batches > 0) {
          const rps = (r.rowsThisChunk * 1000) / r.elapsedMs;
          const pps = (Math.max(0, gained) * 1000) / r.elapsedMs;
          s.rowsPerSecond = s.rowsPerSecond ? 0.7 * s.rowsPerSecond + 0.3 * rps : rps;
          s.percentPerSecond = s.percentPerSecond ? 0.7 * s.percentPerSecond + 0.3 * pps : pps;
        }
        if (r.done) break;
        if (workflowInfo().continueAsNewSuggested) {
          log.info('continuing as new to keep history bounded', { table, checkpointPage: s.checkpointPage });
          await continueAsNew<typeof partitionTable>({ ...external, resume: s });
        }
      }
      enter('verify');
    }

    if (s.phase === 'verify') {
      checkRollback();
      s.verify = await long.verify(plan);
      enter('awaiting-approval');
    }

    if (s.phase === 'awaiting-approval') {
      if (opts.approval === 'signal') {
        log.info('waiting for approveCutover', { table });
        await condition(() => s.approved || s.rollbackRequested);
      }
      checkRollback();
      enter('cutover');
    }

    if (s.phase === 'cutover') {
      s.done.push('cutover');
      s.cutover = await long.cutover(plan, lt);
      s.lockWaitRetries += s.cutover.lockWaitRetries;
      s.rowMoves = s.cutover.rowMoves ?? s.rowMoves;
      enter('rollback-window');
    }

    if (s.phase === 'rollback-window') {
      const endsAt = Date.now() + opts.rollbackWindowMs; // workflow time: deterministic
      for (;;) {
        const left = endsAt - Date.now();
        if (left > 0) await condition(() => s.finalizeRequested || s.rollbackRequested, left);
        if (!s.rollbackRequested) break;
        // a rollback that would lose what a deploy added to the new table is refused; the window goes on
        const blocker = await short.rollbackBlocker(plan);
        if (!blocker) break;
        s.lastError = blocker;
        s.rollbackRequested = false;
        log.warn('rollback refused', { table, reason: blocker });
      }
      checkRollback();
      const fin = await short.finalize(plan, lt);
      s.rowMoves = fin?.rowMoves ?? s.rowMoves;
      s.done = [];
      await short.releaseRun(opts.table, 'done');
      enter('done');
    }
    return {
      status: 'done',
      table,
      verify: s.verify,
      cutover: s.cutover,
      rowsCopied: s.rowsCopied,
      rowMoves: s.rowMoves ?? 0,
      oldTable: displayName(plan.old),
    };
  } catch (err) {
    if (err instanceof ContinueAsNew) throw err;
    if (err instanceof RollbackRequested) {
      await compensate('rolled-back');
      return {
        status: 'rolled-back',
        table,
        verify: s.verify,
        cutover: s.cutover,
        rowsCopied: s.rowsCopied,
        rowMoves: s.rowMoves ?? 0,
        undoProblems: s.undoProblems ?? [],
      };
    }
    if (isCancellation(err)) {
      await compensate('rolled-back');
      throw err;
    }
    s.lastError = rootFailure(err).message;
    log.error('partitionTable failed; undoing', { table, error: s.lastError });
    const cause = s.lastError;
    await compensate('failed');
    const undo = s.undoProblems?.length ? ` Undone except: ${s.undoProblems.join('; ')}` : '';
    throw failure(`${cause}${undo}`, 'PartitionTableFailed');
  }
}
