/**
 * `undoFixConstraints`: undoes a fixConstraints run that has ended `done`, from its workflow id (and run id),
 * while its repair records exist: the steps it recorded when it finished are undone in reverse, each the way
 * the run's own compensation would (workflows/fixUndo.ts). A repaired row the application changed since is left
 * as it is (the restore only touches rows still holding the repaired value). Refused, naming the run, when it
 * still runs (signal rollback instead), was undone already, undid itself when it ended, or changed a table that
 * has been replaced or converted since.
 */
import { CancellationScope, proxyActivities, setCurrentDetails, setHandler } from '@temporalio/workflow';
import type { Activities } from '../activities';
import { DEFAULT_LOCK_TIMEOUT_MS } from '../src/locks';
import { fixProgress, fixProgressQuery } from './fixConstraints';
import { rootFailure, validInput } from './failure';
import { failure } from '../src/failures';
import { InputError } from '../src/ident';
import { undoFixStep } from './fixUndo';

export interface UndoFixInput {
  /** the fixConstraints workflow id */
  workflowId: string;
  /** its run id; default the latest run of that workflow id recorded in the database */
  runId?: string;
  lockTimeoutMs?: number;
}

export interface UndoFixResult {
  status: 'undone';
  workflowId: string;
  runId: string;
  undone: { fix: string; step: string }[];
}

const OPTIONS = {
  startToCloseTimeout: '12h',
  heartbeatTimeout: '30s',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s' },
} as const;
const act = proxyActivities<Activities>(OPTIONS);
/** With the Web UI's one-line summary on the step's events. */
const acts = (summary: string) => proxyActivities<Activities>({ ...OPTIONS, summary });

function validate(input: UndoFixInput): Required<Omit<UndoFixInput, 'runId'>> & { runId?: string } {
  const id = (v: unknown, field: string) => {
    if (typeof v !== 'string' || !v.length || v.length > 1000)
      throw new InputError(`"${field}" must be a non-empty string.`);
    return v;
  };
  if (!input || typeof input !== 'object') throw new InputError('The input must be an object with "workflowId".');
  const lockTimeoutMs = input.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;
  if (!Number.isInteger(lockTimeoutMs) || lockTimeoutMs < 1 || lockTimeoutMs > 60_000)
    throw new InputError('"lockTimeoutMs" must be 1 to 60000.');
  return {
    workflowId: id(input.workflowId, 'workflowId'),
    ...(input.runId !== undefined ? { runId: id(input.runId, 'runId') } : {}),
    lockTimeoutMs,
  };
}

export async function undoFixConstraints(input: UndoFixInput): Promise<UndoFixResult> {
  const opts = validInput(() => validate(input));
  const p = fixProgress('rolling-back', 0);
  setHandler(fixProgressQuery, () => p);
  setCurrentDetails(`undoing fixConstraints run **${opts.workflowId}**`);
  // a refusal reaches the caller in its own words, not as "Activity task failed"
  const run = await acts(`open the undo of ${opts.workflowId}`)
    .openFixUndo(opts.workflowId, opts.runId)
    .catch((err: unknown) => {
      const root = rootFailure(err);
      const type = root.type === 'DatabaseError' ? 'DatabaseError' : 'NothingToUndo';
      throw failure(root.message, type, ...root.details);
    });
  p.fixes = new Set(run.steps.map((taken) => taken.fixNo)).size;
  const undone: UndoFixResult['undone'] = [];
  // an undo is not cancelled halfway: each step's undo runs to its end
  await CancellationScope.nonCancellable(async () => {
    for (const taken of [...run.steps].reverse()) {
      p.fix = taken.fixNo + 1;
      p.current = taken.description;
      p.step = taken.step;
      setCurrentDetails(`undoing **${opts.workflowId}**: ${taken.description}, step ${taken.step}`);
      await undoFixStep(acts(`undo ${taken.step}: ${taken.description}`), taken, opts.lockTimeoutMs, {
        workflowId: run.workflowId,
        runId: run.runId,
      });
      undone.push({ fix: taken.description, step: taken.step });
    }
    await act.closeFixUndo(run.workflowId, run.runId);
  });
  p.phase = 'rolled-back';
  p.step = null;
  setCurrentDetails(`fixConstraints run ${opts.workflowId} undone (${undone.length} steps)`);
  return { status: 'undone', workflowId: run.workflowId, runId: run.runId, undone };
}
