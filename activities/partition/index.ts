/**
 * Activities of `partitionTable`, one module per step. Each is idempotent: it looks at the catalog or at
 * partflow.runs first and does only what is missing, so Temporal can run it again after a crash at any point.
 */
import type { Plan, PlanRef } from '../../src/plan';
import type { TableRef } from '../../src/ident';
import type { PartitionOptions } from '../../src/input';
import { addBoundCheck, buildAttachKey, dropAttachKey, dropBoundCheck } from './attach';
import { attachCutover, attachRollbackBlocker, attachSwapBack } from './attachCutover';
import { backfillChunk, BackfillChunkArgs, withBackfillSql } from './backfill';
import { cutover, finalize, rollbackBlocker, swapBack } from './cutover';
import { followKeyLog } from './keylog';
import { preflight } from './preflight';
import { Deps } from '../runtime/deps';
import { beginUndo, claimRun, planOf, releaseRun, resumeRun, RunState } from './run';
import { createShadow, dropShadow } from './shadow';
import { dropSyncTrigger, installSyncTrigger } from './sync';
import { verify } from './verify';

export type { BackfillChunkArgs, BackfillChunkInput, BackfillChunkResult } from './backfill';
export type { CutoverResult } from './cutover';
export type { LastCheck } from './keylog';
export type { PreflightResult } from './preflight';
export type { Deps } from '../runtime/deps';
export { compareChecksums } from './verify';
export type { VerifyRange, VerifyReport } from './verify';

export function createPartitionActivities(deps: Deps) {
  /** A step that takes the plan, given a reference to it (or, from runs before references, the plan itself). */
  const byRef =
    <A extends unknown[], R>(step: (d: Deps, plan: Plan, ...args: A) => Promise<R>) =>
    async (plan: Plan | PlanRef, ...args: A): Promise<R> =>
      step(deps, await planOf(deps.pool, plan), ...args);
  const chunk = async (input: BackfillChunkArgs) => backfillChunk(deps, await withBackfillSql(deps.pool, input));
  return {
    preflight: (input: PartitionOptions | unknown) => preflight(deps, input),
    claimRun: (table: TableRef, plan: Plan) => claimRun(deps, table, plan),
    beginUndo: (table: TableRef) => beginUndo(deps, table),
    resumeRun: (table: TableRef) => resumeRun(deps, table),
    releaseRun: (table: TableRef, state: RunState) => releaseRun(deps, table, state),
    createShadow: byRef(createShadow),
    dropShadow: byRef(dropShadow),
    installSyncTrigger: byRef(installSyncTrigger),
    dropSyncTrigger: byRef(dropSyncTrigger),
    // the copy's chunk: `backfillChunk` as runs before plan references call it (statements handed in, checked
    // against the stored plan), `copyChunk` as later runs do (statements read from the stored plan)
    backfillChunk: chunk,
    copyChunk: chunk,
    followKeyLog: byRef(followKeyLog),
    verify: byRef(verify),
    cutover: byRef(cutover),
    swapBack: byRef(swapBack),
    rollbackBlocker: byRef(rollbackBlocker),
    finalize: byRef(finalize),
    // the attach path (src/plan/attach.ts)
    buildAttachKey: byRef(buildAttachKey),
    dropAttachKey: byRef(dropAttachKey),
    addBoundCheck: byRef(addBoundCheck),
    dropBoundCheck: byRef(dropBoundCheck),
    attachCutover: byRef(attachCutover),
    attachSwapBack: byRef(attachSwapBack),
    attachRollbackBlocker: byRef(attachRollbackBlocker),
  };
}

export type PartitionActivities = ReturnType<typeof createPartitionActivities>;
