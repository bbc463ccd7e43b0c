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
import { beginFixUndo, claimFix, releaseFix } from '../runtime/fixRuns';
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

export function createConstraintActivities(deps: Deps) {
  return {
    claimFix: (tables?: TableRef[], kind?: string) => claimFix(deps, tables, kind),
    beginFixUndo: () => beginFixUndo(deps),
    releaseFix: (state: 'done' | 'rolled-back' | 'failed') => releaseFix(deps, state),
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
    restoreRepairs: (fixNo: number, fix: Fix, info: FixInfo, lockTimeoutMs: number) =>
      restoreRepairs(deps, fixNo, fix, info, lockTimeoutMs),
    validateConstraint: (fix: Fix, info: FixInfo, lockTimeoutMs: number) =>
      validateConstraint(deps, fix, info, lockTimeoutMs),
    dropNotNull: (fix: Fix, lockTimeoutMs: number, info?: FixInfo) => dropNotNull(deps, fix, lockTimeoutMs, info),
  };
}

export type ConstraintActivities = ReturnType<typeof createConstraintActivities>;
