/**
 * The undo of one fixConstraints step, shared by a run's own compensation and by undoFixConstraints (a finished
 * run undone later): VALIDATE → the NOT NULL dropped; repair → the constraint dropped, then every recorded
 * change restored; constraint → dropped; a supporting index partflow built → dropped.
 */
import { log } from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { FixUndoStep } from '../activities/constraints';

export type Step = FixUndoStep['step'];

type UndoActivities = Pick<Activities, 'dropNotNull' | 'restoreRepairs' | 'dropConstraint' | 'dropSupportingIndex'>;

/** `of`: the finished run whose repair records these are (absent: the calling workflow's own). */
export async function undoFixStep(
  act: UndoActivities,
  taken: FixUndoStep,
  lockTimeoutMs: number,
  of?: { workflowId: string; runId: string },
): Promise<void> {
  const { fixNo, step, fix, info } = taken;
  log.info('undoing', { fix: taken.description, step });
  if (step === 'validate') await act.dropNotNull(fix, lockTimeoutMs, info);
  else if (step === 'repair') await act.restoreRepairs(fixNo, fix, info, lockTimeoutMs, ...(of ? [of] : []));
  else if (step === 'constraint') await act.dropConstraint(fixNo, fix, info, lockTimeoutMs);
  else if (step === 'index' && fix.kind === 'foreignKey') await act.dropSupportingIndex(fix, info, lockTimeoutMs);
}
