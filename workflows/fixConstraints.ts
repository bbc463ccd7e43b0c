/**
 * `fixConstraints`: audit every fix first and change nothing when a fix with the `fail` policy has
 * violations; then per fix: supporting index → constraint NOT VALID → repair → VALIDATE. Each step records
 * its undo before it runs; a failure, a `rollback` signal or a cancellation undoes them in reverse.
 */
import {
  ActivityCancellationType,
  ApplicationFailure,
  CancellationScope,
  defineQuery,
  isCancellation,
  log,
  proxyActivities,
  RetryPolicy,
  setHandler,
} from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { FixAudit } from '../activities/constraints';
import { FixConstraintsInput, FixOptions, validateFixInput } from '../src/constraints';
import { rollbackSignal } from './definitions';
import { rootFailure } from './failure';
import { failure } from '../src/failures';

type Step = 'index' | 'constraint' | 'repair' | 'validate';

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
const act = proxyActivities<Activities>({
  startToCloseTimeout: '12h',
  heartbeatTimeout: '30s',
  retry,
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
});

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

export async function fixConstraints(input: FixConstraintsInput): Promise<FixResult> {
  let opts: FixOptions;
  try {
    opts = validateFixInput(input);
  } catch (err) {
    throw failure((err as Error).message, 'InvalidInput');
  }
  const p: FixProgress = {
    phase: 'audit',
    fix: 0,
    fixes: opts.fixes.length,
    current: null,
    step: null,
    rowsScanned: 0,
    rowsRepaired: 0,
    lockWaitRetries: 0,
    lastError: null,
  };
  let rollbackRequested = false;
  setHandler(fixProgressQuery, () => p);
  setHandler(rollbackSignal, () => void (rollbackRequested = true));
  const done: { fixNo: number; step: Step }[] = [];
  let audits: FixAudit[] = [];
  const applied: FixResult['applied'] = [];
  const lt = opts.lockTimeoutMs;
  let claimed = false;

  const compensate = async (final: 'rolled-back' | 'failed') => {
    p.phase = 'rolling-back';
    await CancellationScope.nonCancellable(async () => {
      if (claimed) await act.beginFixUndo(); // the fence: no forward step of this run commits from here on
      while (done.length) {
        const { fixNo, step } = done[done.length - 1];
        const a = audits[fixNo];
        log.info('undoing', { fix: a.description, step });
        if (step === 'validate') await act.dropNotNull(a.fix, lt);
        else if (step === 'repair') await act.restoreRepairs(fixNo, a.fix, a.info, lt);
        else if (step === 'constraint') await act.dropConstraint(fixNo, a.fix, a.info, lt);
        else if (step === 'index' && a.fix.kind === 'foreignKey') await act.dropSupportingIndex(a.fix, a.info);
        done.pop();
      }
      if (claimed) await act.releaseFix(final);
    });
    p.phase = final;
  };

  try {
    audits = await act.auditFixes(opts);
    p.rowsScanned = audits.reduce((s, a) => s + a.violations, 0);
    const blocking = audits.filter(
      (a) =>
        !a.info.alreadyDone &&
        a.violations > 0 &&
        (a.fix.kind === 'foreignKey' ? a.fix.orphans === 'fail' : a.fix.nulls === 'fail'),
    );
    if (opts.dryRun) {
      p.phase = 'done';
      return { status: 'dry-run', audit: summarize(audits, true), applied: [] };
    }
    if (blocking.length) {
      const what = blocking
        .map(
          (a) =>
            `${a.description}: ${a.violations} ${a.fix.kind === 'foreignKey' ? 'orphan' : 'NULL'} row(s) (list them with: ${a.listQuery})`,
        )
        .join('; ');
      throw failure(
        `Nothing was changed: ${what}; choose "orphans": "set-null" or "delete" (or "nulls": {"fill": ...}), or clean them up first.`,
        'ViolationsFound',
        summarize(audits, false),
      );
    }
    p.phase = 'applying';
    claimed = true;
    await act.claimFix();
    for (const a of audits) {
      p.fix = a.fixNo + 1;
      p.current = a.description;
      const check = () => {
        if (rollbackRequested) throw new RollbackRequested();
      };
      const result = {
        fix: a.description,
        name: a.fix.name,
        skipped: a.info.alreadyDone,
        rowsRepaired: 0,
        indexCreated: false,
      };
      applied.push(result);
      if (a.info.alreadyDone) continue;
      const run = async <T>(step: Step, fn: () => Promise<T>): Promise<T> => {
        check();
        p.step = step;
        done.push({ fixNo: a.fixNo, step });
        return fn();
      };
      if (a.fix.kind === 'foreignKey' && !a.info.hasIndex) {
        const fk = a.fix;
        await run('index', () => act.createSupportingIndex(fk, a.info));
        result.indexCreated = true;
      }
      const c = await run('constraint', () => act.addConstraintNotValid(a.fix, a.info, lt));
      p.lockWaitRetries += c.lockWaitRetries;
      const repairs = a.fix.kind === 'foreignKey' ? a.fix.orphans !== 'fail' : a.fix.nulls !== 'fail';
      if (repairs) {
        const r = await run('repair', () => act.repair(a.fixNo, a.fix, a.info, opts.batchSize, lt));
        result.rowsRepaired = r.rows ?? 0;
        p.rowsRepaired += result.rowsRepaired;
      }
      const v = await run('validate', () => act.validateConstraint(a.fix, a.info, lt));
      p.lockWaitRetries += v.lockWaitRetries;
    }
    if (rollbackRequested) throw new RollbackRequested();
    await act.releaseFix('done');
    p.phase = 'done';
    p.step = null;
    return { status: 'done', audit: summarize(audits, false), applied };
  } catch (err) {
    if (err instanceof RollbackRequested) {
      await compensate('rolled-back');
      return { status: 'rolled-back', audit: summarize(audits, false), applied };
    }
    if (isCancellation(err)) {
      await compensate('rolled-back');
      throw err;
    }
    const root = rootFailure(err);
    p.lastError = root.message;
    await compensate('failed');
    throw failure(root.message, 'FixConstraintsFailed', ...root.details);
  }
}
