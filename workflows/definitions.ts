/**
 * The operator interface of the workflows (docs/contract.md): signals, queries and updates by name.
 * Importable from the client side too.
 */
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { ThrottleInput } from '../src/input';
import type { ReplicaBounds } from '../src/replicas';

export type Phase =
  | 'preflight'
  | 'attach-key'
  | 'attach-check'
  | 'shadow'
  | 'sync'
  | 'backfill'
  | 'verify'
  | 'awaiting-approval'
  | 'cutover'
  | 'rollback-window'
  | 'rolling-back'
  | 'rolled-back'
  | 'done'
  | 'failed';

/** What the `progress` query returns. */
export interface Progress {
  table: string;
  phase: Phase;
  /** the copy has stopped: no chunk in flight, nothing copies until `resume` */
  paused: boolean;
  /** `pause` was signalled and the chunk in flight (up to a few seconds) has not ended yet */
  pausing: boolean;
  awaitingApproval: boolean;
  rowsCopied: number;
  rowsEstimated: number;
  percent: number;
  rowsPerSecond: number;
  etaSeconds: number | null;
  lastError: string | null;
  checkpointPage: number;
  totalPages: number;
  /** the backfill checkpoint, readable: `page 120 of 9000` or `key (…)` */
  checkpoint: string;
  batchSize: number;
  sleepMs: number;
  lockWaitRetries: number;
  /** backfill batches that met rows the sync trigger had written and were copied again with ON CONFLICT */
  mergedBatches: number;
  /** updates that moved a row to another month since the sync trigger was installed: on the partitioned table
   *  such updates can fail with 40001 when they race another update of the same row */
  rowMoves: number;
  /** what the operator gave up for this run (acceptLostConstraints, settings not carried) */
  givenUp: string[];
  partitions: number;
  warnings: string[];
  /** the last verification pass: chunks compared (each in its own snapshot), the longest snapshot, when it
   *  ended (while the run waits for approval, passes repeat every `reverifyEvery`) */
  verify: {
    ok: boolean;
    rows: number;
    mismatches: string[];
    elapsedMs: number;
    chunks: number;
    longestSnapshotMs: number;
    endedAt: string | null;
    /** chunks that differed and were copied again, equal since (key range and month) */
    repaired: string[];
  } | null;
  /** `keysAppliedUnderLock`: key log entries applied under the cut-over's lock (0 for runs before the key log) */
  /** `lastCheck`: the keys copied since the last verification pass, compared before the swap (null: older runs) */
  cutover: {
    lockHoldMs: number;
    /**
     * where the lock time went (null: older runs): ms from the grant to the end of `checked`, `drained`,
     * `lastCheck`, `swapped`, `recorded`, and `workerStallMs`, the worker's longest event-loop stall meanwhile
     */
    lockPhases: Record<string, number> | null;
    attempts: number;
    lockWaitRetries: number;
    keysAppliedUnderLock: number;
    lastCheck: { keys: number; repaired: string[] } | null;
    /**
     * the handover before the swap (null: older runs): `quiet`, no snapshot older than partflow's last write into
     * the copy was left and the swap needed no guard; otherwise `guarded` and `heldBy`, the transactions that were
     * still older at the deadline (PARTFLOW_HANDOVER_WAIT_MS)
     */
    handover: { quiet: boolean; guarded: boolean; rounds: number; ms: number; heldBy: string[] } | null;
  } | null;
  /**
   * olderSnapshots "wait": the cut-over held by sessions whose snapshot is older than partflow's last write into
   * the copy, since when (ISO), the attempts so far and the sessions at the last one; null otherwise
   */
  cutoverHeld: { since: string; attempts: number; heldBy: string[] } | null;
  /** the same for the swap back of a rollback (olderSnapshots "wait"): the rollback waits for those sessions */
  swapBackHeld: { since: string; attempts: number; heldBy: string[] } | null;
  /** what the cut-over does about such sessions now (the input's `olderSnapshots`, or approveCutover's) */
  olderSnapshots: 'wait' | 'guard';
  /** the replica bound holding the backfill back now (`maxReplicaLagBytes`, `maxReplicaLagSeconds`,
   *  `standbyGone`, `lagUnknown`), why, and since when; null while the copy may go on */
  throttledBy: { bound: string; reason: string; since: string } | null;
  /** during the backfill: the pause after each batch that maxAppLatencyRatio asks for, ms (null otherwise) */
  appPauseMs: number | null;
  /** the worst standby replay lag (or slot WAL) and replay_lag seen last, and how many standbys stream */
  replicaLag: { bytes: number | null; seconds: number | null; standbys: number } | null;
  /** the bounds in force (input, then `throttle`) */
  replicaBounds: ReplicaBounds;
}

export const pauseSignal = defineSignal('pause');
export const resumeSignal = defineSignal('resume');
/**
 * approveCutover's optional argument: `{"olderSnapshots": "guard"}` lets a cut-over that sessions with older
 * snapshots hold go ahead with the snapshot guard (`"wait"` back); anything else in it is ignored.
 */
export interface ApproveCutoverArgs {
  olderSnapshots?: 'wait' | 'guard';
}
export const approveCutoverSignal = defineSignal<[ApproveCutoverArgs?]>('approveCutover');
export const rollbackSignal = defineSignal('rollback');
export const finalizeSignal = defineSignal('finalize');
export const throttleUpdate = defineUpdate<{ batchSize: number; sleepMs: number }, [ThrottleInput]>('throttle');
export const progressQuery = defineQuery<Progress>('progress');
