/**
 * `fixConstraints`: audit every fix first and change nothing when a fix with the `fail` policy has
 * violations; then per fix: supporting index → constraint NOT VALID → repair → VALIDATE. Each step records
 * its undo before it runs; a failure, a `rollback` signal or a cancellation undoes them in reverse.
 */
import {
  ActivityCancellationType,
  CancellationScope,
  defineQuery,
  isCancellation,
  proxyActivities,
  RetryPolicy,
  setCurrentDetails,
  setHandler,
} from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { FixAudit } from '../activities/constraints';
import { FixConstraintsInput, FixOptions, tablesOf, validateFixInput } from '../src/constraints';
import { rollbackSignal } from './definitions';
import { rootFailure, validInput } from './failure';
import { failure } from '../src/failures';

import { Step, undoFixStep } from './fixUndo';

export interface FixProgress {
  phase: 'audit' | 'applying' | 'rolling-back' | 'rolled-back' | 'done' | 'failed';
  fix: number;
  fixes: number;
  current: string | null;
  step: Step | null;
  rowsScanned: number;
  rowsRepaired: number;
  lockWaitRetries: number;
  lastError: string | null;
}

export interface FixResult {
  status: 'done' | 'dry-run' | 'rolled-back';
  audit: {
    fix: string;
    name: string;
    policy: string;
    violations: number;
    listQuery: string;
    alreadyDone: boolean;
    notes: string[];
    sql?: string[];
  }[];
  applied: { fix: string; name: string; skipped: boolean; rowsRepaired: number; indexCreated: boolean }[];
}

export const fixProgressQuery = defineQuery<FixProgress>('progress');

const retry: RetryPolicy = { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s' };
// an undo waits until the step it undoes has stopped (see partitionTable)
const OPTIONS = {
  startToCloseTimeout: '12h',
  heartbeatTimeout: '30s',
  retry,
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
} as const;
const act = proxyActivities<Activities>(OPTIONS);
/** The activities with a one-line summary the Web UI shows on the step's events (metadata: replay ignores it). */
const acts = (summary: string) => proxyActivities<Activities>({ ...OPTIONS, summary });

class RollbackRequested extends Error {}

function summarize(audits: FixAudit[], withSql: boolean): FixResult['audit'] {
  return audits.map((a) => ({
    fix: a.description,
    name: a.fix.name,
    policy: a.policy,
    violations: a.violations,
    listQuery: a.listQuery,
    alreadyDone: a.info.alreadyDone,
    notes: a.notes,
    ...(withSql ? { sql: a.sql } : {}),
  }));
}

/** One run: its options, progress, the undo log and what was applied. */
interface FixRun {
  opts: FixOptions;
  p: FixProgress;
  rollbackRequested: boolean;
  claimed: boolean;
  done: { fixNo: number; step: Step }[];
  audits: FixAudit[];
  applied: FixResult['applied'];
}

/** The progress a run (or an undo of one) starts from. */
export function fixProgress(phase: FixProgress['phase'], fixes: number): FixProgress {
  return {
    phase,
    fix: 0,
    fixes,
    current: null,
    step: null,
    rowsScanned: 0,
    rowsRepaired: 0,
    lockWaitRetries: 0,
    lastError: null,
  };
}

function startRun(input: FixConstraintsInput): FixRun {
  const opts = validInput(() => validateFixInput(input));
  const p = fixProgress('audit', opts.fixes.length);
  const run: FixRun = { opts, p, rollbackRequested: false, claimed: false, done: [], audits: [], applied: [] };
  setHandler(fixProgressQuery, () => p);
  setHandler(rollbackSignal, () => void (run.rollbackRequested = true));
  return run;
}

async function compensate(run: FixRun, final: 'rolled-back' | 'failed'): Promise<void> {
  const lt = run.opts.lockTimeoutMs;
  run.p.phase = 'rolling-back';
  await CancellationScope.nonCancellable(async () => {
    if (run.claimed) await act.beginFixUndo(); // the fence: no forward step of this run commits from here on
    while (run.done.length) {
      const { fixNo, step } = run.done[run.done.length - 1];
      const a = run.audits[fixNo];
      await undoFixStep(
        acts(`undo ${step}: ${a.description}`),
        { fixNo, step, description: a.description, fix: a.fix, info: a.info },
        lt,
      );
      run.done.pop();
    }
    if (run.claimed) await act.releaseFix(final);
  });
  run.p.phase = final;
}

/** Fixes with the `fail` policy that have violations: nothing is changed then. */
function refuseBlocking(audits: FixAudit[]): void {
  const blocking = audits.filter(
    (a) =>
      !a.info.alreadyDone &&
      a.violations > 0 &&
      (a.fix.kind === 'foreignKey' ? a.fix.orphans === 'fail' : a.fix.nulls === 'fail'),
  );
  if (!blocking.length) return;
  const what = blocking
    .map((a) => {
      const kind = a.fix.kind === 'foreignKey' ? 'orphan' : 'NULL';
      return `${a.description}: ${a.violations} ${kind} row(s) (list them with: ${a.listQuery})`;
    })
    .join('; ');
  throw failure(
    `Nothing was changed: ${what}; choose "orphans": "set-null" or "delete" (or "nulls": {"fill": ...}), ` +
      'or clean them up first.',
    'ViolationsFound',
    summarize(audits, false),
  );
}

/** One fix: supporting index → constraint NOT VALID → repair → VALIDATE, each recorded before it runs. */
async function applyFix(run: FixRun, a: FixAudit): Promise<void> {
  const { p, opts } = run;
  const lt = opts.lockTimeoutMs;
  p.fix = a.fixNo + 1;
  p.current = a.description;
  const result = {
    fix: a.description,
    name: a.fix.name,
    skipped: a.info.alreadyDone,
    rowsRepaired: 0,
    indexCreated: false,
  };
  run.applied.push(result);
  if (a.info.alreadyDone) return;
  const step = async <T>(name: Step, fn: () => Promise<T>): Promise<T> => {
    if (run.rollbackRequested) throw new RollbackRequested();
    p.step = name;
    // the Web UI's "Current Details" of the workflow
    setCurrentDetails(
      `fix ${p.fix} of ${p.fixes}: **${p.current}**, step ${name}; ${p.rowsRepaired} rows repaired so far`,
    );
    run.done.push({ fixNo: a.fixNo, step: name });
    return fn();
  };
  if (a.fix.kind === 'foreignKey' && !a.info.hasIndex) {
    const fk = a.fix;
    await step('index', () =>
      acts(`build the supporting index of ${a.description}`).createSupportingIndex(fk, a.info, lt),
    );
    result.indexCreated = true;
  }
  const c = await step('constraint', () =>
    acts(`add ${a.description} NOT VALID`).addConstraintNotValid(a.fix, a.info, lt),
  );
  p.lockWaitRetries += c.lockWaitRetries;
  const repairs = a.fix.kind === 'foreignKey' ? a.fix.orphans !== 'fail' : a.fix.nulls !== 'fail';
  if (repairs) {
    const fixing = acts(`repair ${a.description} (${a.policy})`);
    const r = await step('repair', () => fixing.repair(a.fixNo, a.fix, a.info, opts.batchSize, lt, opts.replica));
    result.rowsRepaired = r.rows ?? 0;
    p.rowsRepaired += result.rowsRepaired;
  }
  const v = await step('validate', () => acts(`validate ${a.description}`).validateConstraint(a.fix, a.info, lt));
  p.lockWaitRetries += v.lockWaitRetries;
}

export async function fixConstraints(input: FixConstraintsInput): Promise<FixResult> {
  const run = startRun(input);
  const { p } = run;
  try {
    run.audits = await acts('audit every fix (reads only)').auditFixes(run.opts);
    p.rowsScanned = run.audits.reduce((s, a) => s + a.violations, 0);
    if (run.opts.dryRun) {
      p.phase = 'done';
      return { status: 'dry-run', audit: summarize(run.audits, true), applied: [] };
    }
    refuseBlocking(run.audits);
    p.phase = 'applying';
    run.claimed = true;
    await act.claimFix(run.opts.fixes.flatMap(tablesOf), 'fixConstraints');
    for (const a of run.audits) await applyFix(run, a);
    if (run.rollbackRequested) throw new RollbackRequested();
    // the steps taken, for an undo after the run (undoFixConstraints)
    const steps = run.done.map(({ fixNo, step }) => {
      const a = run.audits[fixNo];
      return { fixNo, step, description: a.description, fix: a.fix, info: a.info };
    });
    await act.releaseFix('done', steps);
    p.phase = 'done';
    p.step = null;
    return { status: 'done', audit: summarize(run.audits, false), applied: run.applied };
  } catch (err) {
    if (err instanceof RollbackRequested) {
      await compensate(run, 'rolled-back');
      return { status: 'rolled-back', audit: summarize(run.audits, false), applied: run.applied };
    }
    if (isCancellation(err)) {
      await compensate(run, 'rolled-back');
      throw err;
    }
    const root = rootFailure(err);
    p.lastError = root.message;
    await compensate(run, 'failed');
    throw failure(root.message, 'FixConstraintsFailed', ...root.details);
  }
}
