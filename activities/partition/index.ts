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
import { beginUndo, claimRun, planOf, releaseRun, RunState } from './run';
import { createShadow, dropShadow } from './shadow';
import { dropSyncTrigger, installSyncTrigger } from './sync';
import { verify } from './verify';

export type { BackfillChunkArgs, BackfillChunkInput, BackfillChunkResult } from './backfill';
export type { CutoverResult } from './cutover';
export type { PreflightResult } from './preflight';
export type { Deps } from '../runtime/deps';
export { compareChecksums } from './verify';
export type { VerifyRange, VerifyReport } from './verify';

export function createPartitionActivities(deps: Deps) {
  return {
    preflight: (input: PartitionOptions | unknown) => preflight(deps, input),
    claimRun: (table: TableRef, plan: Plan) => claimRun(deps, table, plan),
    beginUndo: (table: TableRef) => beginUndo(deps, table),
    releaseRun: (table: TableRef, state: RunState) => releaseRun(deps, table, state),
    createShadow: async (plan: Plan | PlanRef, lockTimeoutMs: number) =>
      createShadow(deps, await planOf(deps.pool, plan), lockTimeoutMs),
    dropShadow: async (plan: Plan | PlanRef, lockTimeoutMs: number) =>
      dropShadow(deps, await planOf(deps.pool, plan), lockTimeoutMs),
    installSyncTrigger: async (plan: Plan | PlanRef, lockTimeoutMs: number) =>
      installSyncTrigger(deps, await planOf(deps.pool, plan), lockTimeoutMs),
    dropSyncTrigger: async (plan: Plan | PlanRef, lockTimeoutMs: number) =>
      dropSyncTrigger(deps, await planOf(deps.pool, plan), lockTimeoutMs),
    // the copy's chunk: `backfillChunk` as runs before plan references call it (statements handed in, checked
    // against the stored plan), `copyChunk` as later runs do (statements read from the stored plan)
    backfillChunk: async (input: BackfillChunkArgs) => backfillChunk(deps, await withBackfillSql(deps.pool, input)),
    copyChunk: async (input: BackfillChunkArgs) => backfillChunk(deps, await withBackfillSql(deps.pool, input)),
    followKeyLog: async (plan: Plan | PlanRef, direction?: 'forward' | 'reverse') =>
      followKeyLog(deps, await planOf(deps.pool, plan), direction),
    verify: async (plan: Plan | PlanRef, opts?: { analyze?: boolean; chunkRows?: number }) =>
      verify(deps, await planOf(deps.pool, plan), opts),
    cutover: async (plan: Plan | PlanRef, lockTimeoutMs: number) =>
      cutover(deps, await planOf(deps.pool, plan), lockTimeoutMs),
    swapBack: async (plan: Plan | PlanRef, lockTimeoutMs: number) =>
      swapBack(deps, await planOf(deps.pool, plan), lockTimeoutMs),
    rollbackBlocker: async (plan: Plan | PlanRef) => rollbackBlocker(deps, await planOf(deps.pool, plan)),
    finalize: async (plan: Plan | PlanRef, lockTimeoutMs: number) =>
      finalize(deps, await planOf(deps.pool, plan), lockTimeoutMs),
    // the attach path (src/plan/attach.ts)
    buildAttachKey: async (plan: Plan | PlanRef) => buildAttachKey(deps, await planOf(deps.pool, plan)),
    dropAttachKey: async (plan: Plan | PlanRef) => dropAttachKey(deps, await planOf(deps.pool, plan)),
    addBoundCheck: async (plan: Plan | PlanRef, lockTimeoutMs: number) =>
      addBoundCheck(deps, await planOf(deps.pool, plan), lockTimeoutMs),
    dropBoundCheck: async (plan: Plan | PlanRef, lockTimeoutMs: number) =>
      dropBoundCheck(deps, await planOf(deps.pool, plan), lockTimeoutMs),
    attachCutover: async (plan: Plan | PlanRef, lockTimeoutMs: number) =>
      attachCutover(deps, await planOf(deps.pool, plan), lockTimeoutMs),
    attachSwapBack: async (plan: Plan | PlanRef, lockTimeoutMs: number) =>
      attachSwapBack(deps, await planOf(deps.pool, plan), lockTimeoutMs),
    attachRollbackBlocker: async (plan: Plan | PlanRef) => attachRollbackBlocker(deps, await planOf(deps.pool, plan)),
  };
}

export type PartitionActivities = ReturnType<typeof createPartitionActivities>;
