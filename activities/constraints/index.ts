/**
 * Activities of `fixConstraints`, one module per concern: the run's fence (run.ts), the audit (audit.ts),
 * the DDL steps (steps.ts), the repairs and their undo (repair.ts). Each looks at the catalog first and does
 * only what is missing; every statement comes from src/fixSteps.ts, the same the dry run lists.
 */
import { DEFAULT_LOCK_TIMEOUT_MS } from '../../src/locks';
import type { Fix, FixOptions, ForeignKeyFix } from '../../src/constraints';
import type { FixInfo } from '../../src/fixSteps';
import type { ReplicaBounds } from '../../src/replicas';
import type { Deps } from '../runtime/deps';
import type { TableRef } from '../../src/ident';
import { auditFixes } from './audit';
import { repair, restoreRepairs } from './repair';
import { beginFixUndo, claimFix, closeFixUndo, FixUndoStep, openFixUndo, releaseFix } from '../runtime/fixRuns';
import {
  addConstraintNotValid,
  createSupportingIndex,
  dropConstraint,
  dropNotNull,
  dropSupportingIndex,
  validateConstraint,
} from './steps';

export type { FixAudit } from './audit';
export type { FixInfo } from '../../src/fixSteps';
export type { StepResult } from './steps';
export type { FinishedFixRun, FixUndoStep } from '../runtime/fixRuns';

export function createConstraintActivities(deps: Deps) {
  return {
    claimFix: (tables?: TableRef[], kind?: string) => claimFix(deps, tables, kind),
    beginFixUndo: () => beginFixUndo(deps),
    releaseFix: (state: 'done' | 'rolled-back' | 'failed', undo?: FixUndoStep[]) => releaseFix(deps, state, undo),
    openFixUndo: (workflowId: string, runId?: string) => openFixUndo(deps, workflowId, runId),
    closeFixUndo: (workflowId: string, runId: string) => closeFixUndo(deps, workflowId, runId),
    auditFixes: (opts: FixOptions) => auditFixes(deps, opts),
    createSupportingIndex: (fix: ForeignKeyFix, info: FixInfo, lockTimeoutMs?: number) =>
      createSupportingIndex(deps, fix, info, lockTimeoutMs),
    dropSupportingIndex: (fix: ForeignKeyFix, info: FixInfo, lockTimeoutMs?: number) =>
      dropSupportingIndex(deps, fix, info, lockTimeoutMs),
    addConstraintNotValid: (fix: Fix, info: FixInfo, lockTimeoutMs: number) =>
      addConstraintNotValid(deps, fix, info, lockTimeoutMs),
    dropConstraint: (fixNo: number, fix: Fix, info: FixInfo, lockTimeoutMs: number) =>
      dropConstraint(deps, fixNo, fix, info, lockTimeoutMs),
    repair: (
      fixNo: number,
      fix: Fix,
      info: FixInfo,
      batchSize: number,
      lockTimeoutMs = DEFAULT_LOCK_TIMEOUT_MS,
      replica?: ReplicaBounds,
    ) => repair(deps, fixNo, fix, info, batchSize, lockTimeoutMs, replica),
    restoreRepairs: (
      fixNo: number,
      fix: Fix,
      info: FixInfo,
      lockTimeoutMs: number,
      of?: { workflowId: string; runId: string },
    ) => restoreRepairs(deps, fixNo, fix, info, lockTimeoutMs, of),
    validateConstraint: (fix: Fix, info: FixInfo, lockTimeoutMs: number) =>
      validateConstraint(deps, fix, info, lockTimeoutMs),
    dropNotNull: (fix: Fix, lockTimeoutMs: number, info?: FixInfo) => dropNotNull(deps, fix, lockTimeoutMs, info),
  };
}

export type ConstraintActivities = ReturnType<typeof createConstraintActivities>;
