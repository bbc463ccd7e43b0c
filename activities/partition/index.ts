/**
 * Activities of `partitionTable`, one module per step. Each is idempotent: it looks at the catalog or at
 * partflow.runs first and does only what is missing, so Temporal can run it again after a crash at any point.
 */
import type { Plan } from '../../src/plan';
import type { TableRef } from '../../src/ident';
import type { PartitionOptions } from '../../src/input';
import { addBoundCheck, buildAttachKey, dropAttachKey, dropBoundCheck } from './attach';
import { attachCutover, attachRollbackBlocker, attachSwapBack } from './attachCutover';
import { backfillChunk, BackfillChunkInput } from './backfill';
import { cutover, finalize, rollbackBlocker, swapBack } from './cutover';
import { followKeyLog } from './keylog';
import { preflight } from './preflight';
import { Deps } from '../runtime/deps';
import { beginUndo, claimRun, releaseRun, RunState } from './run';
import { createShadow, dropShadow } from './shadow';
import { dropSyncTrigger, installSyncTrigger } from './sync';
import { verify } from './verify';

export type { BackfillChunkInput, BackfillChunkResult } from './backfill';
export type { CutoverResult } from './cutover';
export type { PreflightResult } from './preflight';
export { RUNS } from './run';
export type { Deps } from '../runtime/deps';
export { compareChecksums } from './verify';
export type { VerifyRange, VerifyReport } from './verify';

export function createPartitionActivities(deps: Deps) {
  return {
    preflight: (input: PartitionOptions | unknown) => preflight(deps, input),
    claimRun: (table: TableRef, plan: Plan) => claimRun(deps, table, plan),
    beginUndo: (table: TableRef) => beginUndo(deps, table),
    releaseRun: (table: TableRef, state: RunState) => releaseRun(deps, table, state),
    createShadow: (plan: Plan, lockTimeoutMs: number) => createShadow(deps, plan, lockTimeoutMs),
    dropShadow: (plan: Plan, lockTimeoutMs: number) => dropShadow(deps, plan, lockTimeoutMs),
    installSyncTrigger: (plan: Plan, lockTimeoutMs: number) => installSyncTrigger(deps, plan, lockTimeoutMs),
    dropSyncTrigger: (plan: Plan, lockTimeoutMs: number) => dropSyncTrigger(deps, plan, lockTimeoutMs),
    backfillChunk: (input: BackfillChunkInput) => backfillChunk(deps, input),
    followKeyLog: (plan: Plan, direction?: 'forward' | 'reverse') => followKeyLog(deps, plan, direction),
    verify: (plan: Plan, opts?: { analyze?: boolean; chunkRows?: number }) => verify(deps, plan, opts),
    cutover: (plan: Plan, lockTimeoutMs: number) => cutover(deps, plan, lockTimeoutMs),
    swapBack: (plan: Plan, lockTimeoutMs: number) => swapBack(deps, plan, lockTimeoutMs),
    rollbackBlocker: (plan: Plan) => rollbackBlocker(deps, plan),
    finalize: (plan: Plan, lockTimeoutMs: number) => finalize(deps, plan, lockTimeoutMs),
    // the attach path (src/plan/attach.ts)
    buildAttachKey: (plan: Plan) => buildAttachKey(deps, plan),
    dropAttachKey: (plan: Plan) => dropAttachKey(deps, plan),
    addBoundCheck: (plan: Plan, lockTimeoutMs: number) => addBoundCheck(deps, plan, lockTimeoutMs),
    dropBoundCheck: (plan: Plan, lockTimeoutMs: number) => dropBoundCheck(deps, plan, lockTimeoutMs),
    attachCutover: (plan: Plan, lockTimeoutMs: number) => attachCutover(deps, plan, lockTimeoutMs),
    attachSwapBack: (plan: Plan, lockTimeoutMs: number) => attachSwapBack(deps, plan, lockTimeoutMs),
    attachRollbackBlocker: (plan: Plan) => attachRollbackBlocker(deps, plan),
  };
}

export type PartitionActivities = ReturnType<typeof createPartitionActivities>;
