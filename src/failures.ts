/**
 * Every failure type partflow reports, with what it means to the operator. Activities and workflows raise
 * them through `failure()`, so a type is never a free string; `classify` (activities/runtime/db.ts) turns anything
 * else into `DatabaseError` or lets Temporal retry it.
 */
import { ApplicationFailure } from '@temporalio/common';

export const FAILURE_TYPES = {
  InvalidInput: 'a field of the input is wrong, or the table cannot be handled as asked (refused in preflight)',
  DatabaseError: 'a statement failed with an error that another attempt would not fix',
  PlanMismatch: 'the plan handed to a step is not the one partflow stored for this workflow',
  RunInProgress: 'another partflow run holds the table',
  RunUndone: 'the run is being undone or is over; the step did nothing',
  RunChanged: 'partflow.runs no longer records the run the operator looked at',
  StateMissing: 'a step found no checkpoint of the step before it',
  TableChanged: 'the table was dropped, replaced or changed shape during the run',
  CopyDiverged: "partflow's sync triggers were disabled or altered: writes may have bypassed the copy",
  VerificationMismatch: 'source and copy differ',
  WritersNotReadCommitted:
    'REPEATABLE READ or SERIALIZABLE writers changed the table; the sync is exact for READ COMMITTED only',
  NameTaken: 'a name partflow needs is taken by an object that is not partflow’s',
  Safety: 'partflow refused to drop an object that is not its own',
  ArchiveMismatch: 'the archived copy of a partition does not match the partition',
  ViolationsFound: 'rows violate the constraint and the run was told not to repair them',
  ViolationsAppeared: 'rows that violate the constraint were written during the run',
  PartitionTableFailed: 'partitionTable failed; the message says what its undo did',
  FixConstraintsFailed: 'fixConstraints failed; the message says what its undo did',
  CreateIndexesFailed: 'createIndexes failed; what this run built was dropped',
  NothingToUndo: 'undoFixConstraints found no finished fixConstraints run it can undo (the message says why)',
  ReferencedRows:
    'rows a month would move out of the default partition are referenced by a foreign key; the month is skipped',
  HandoverHeld:
    "sessions holding snapshots older than partflow's last write into the copy held the cut-over; it is tried " +
    'again when they have ended (olderSnapshots "wait")',
  CutoffPassed: 'the attach path was not cut over two days before its cut-off month; it undid itself',
} as const;

export type FailureType = keyof typeof FAILURE_TYPES;

/** A non-retryable failure of a known type: one sentence that names the object and the way forward. */
export function failure(message: string, type: FailureType, ...details: unknown[]): ApplicationFailure {
  return ApplicationFailure.nonRetryable(message, type, ...details);
}
