/**
 * partitionTable's state (carried across continue-as-new) and what the operator sees of it: the `progress`
 * query's answer, the Web UI's current details, and how a backfill chunk's result updates the state. Pure,
 * apart from setCurrentDetails.
 */
import { setCurrentDetails } from '@temporalio/workflow';
import type { BackfillChunkResult, CutoverResult, LastCheck, VerifyReport } from '../activities';
import type { Lag, Throttled } from '../activities/runtime/replicas';
import type { OlderSnapshots, PartitionOptions, PartitionTableInput } from '../src/input';
import type { Plan } from '../src/plan';
import type { ReplicaBounds } from '../src/replicas';
import type { Phase, Progress } from './definitions';
import { upsertFleet } from './fleet';

export type Step = 'claim' | 'attachKey' | 'shadow' | 'attachCheck' | 'sync' | 'cutover';

/** State carried across continue-as-new. */
export interface PartitionState {
  plan: Plan | null;
  done: Step[];
  phase: Phase;
  paused: boolean;
  approved: boolean;
  rollbackRequested: boolean;
  finalizeRequested: boolean;
  batchSize: number;
  sleepMs: number;
  rowsCopied: number;
  checkpointPage: number;
  totalPages: number;
  rowsPerSecond: number;
  percentPerSecond: number;
  lockWaitRetries: number;
  mergedBatches?: number;
  /** updates that moved a row to another month (40001 risk on the partitioned table) */
  rowMoves?: number;
  percent: number;
  checkpoint: string;
  lastError: string | null;
  verify: VerifyReport | null;
  cutover: CutoverResult | null;
  /** what the undo could not restore */
  undoProblems?: string[];
  /** the attach path's swap back: how long it held its lock, the rows it moved back */
  swapBack?: { lockHoldMs: number; movedRows: number };
  /** a backfill chunk (or a round of the streams' chunks) is running */
  chunkInFlight?: boolean;
  /** set when the undo found the run taken by a cleanup: the state partflow.runs records */
  takenBy?: string;
  /** set when the swap back was refused or failed: the undo stopped there */
  swapRefused?: boolean;
  /**
   * a rollback the swap back refused under its lock (what it would lose, found after the rollback signal's
   * check): nothing was undone, and the run goes back to its rollback window with this as lastError
   */
  backToWindow?: string | null;
  /** the replica bounds now (the input's, changed by `throttle`); absent in states from before them */
  replica?: ReplicaBounds;
  /** the replica bound holding the copy back, since when */
  throttledBy?: Throttled | null;
  /** the pause after each batch that the application-latency bound asks for, ms */
  appPauseMs?: number;
  /** the fleet's search attributes are registered (set at the start; absent in runs from before them) */
  fleet?: boolean;
  /** their values as last set */
  fleetValues?: string;
  replicaLag?: Lag | null;
  /** parallel copy: the streams not done yet (absent: all of them, or a single stream) */
  streamsLeft?: number[];
  /** the commit probe with the copy idle (absent in runs from before the application-latency bound) */
  appBaselineMs?: number;
  /** approveCutover's `olderSnapshots` (absent: the input's) */
  olderSnapshots?: OlderSnapshots;
  /** the cut-over held by sessions with older snapshots (olderSnapshots "wait"): since (ms), attempts, who */
  cutoverHeld?: {
    since: number;
    attempts: number;
    heldBy: string[];
    lastCheck?: LastCheck;
    applied?: string | null;
  } | null;
  /** the swap back (a rollback) held the same way: since (ms), attempts, who, the last attempt's mark */
  swapBackHeld?: { since: number; attempts: number; heldBy: string[]; applied?: string | null } | null;
}

export function initialState(opts: PartitionOptions): PartitionState {
  return {
    plan: null,
    done: [],
    phase: 'preflight',
    paused: false,
    approved: false,
    rollbackRequested: false,
    finalizeRequested: false,
    batchSize: opts.batchSize,
    sleepMs: opts.sleepMs,
    rowsCopied: 0,
    checkpointPage: 0,
    totalPages: 0,
    rowsPerSecond: 0,
    percentPerSecond: 0,
    lockWaitRetries: 0,
    percent: 0,
    checkpoint: 'start',
    lastError: null,
    verify: null,
    cutover: null,
  };
}

/** One run of the workflow: its options, its state (carried across continue-as-new) and the undo log. */
export interface Run {
  external: PartitionTableInput;
  opts: PartitionOptions;
  table: string;
  state: PartitionState;
  /** lockTimeoutMs of every DDL step */
  lockTimeoutMs: number;
}

export function recordChunk(state: PartitionState, r: BackfillChunkResult): void {
  const gained = r.percent - state.percent;
  state.rowsCopied = r.rowsCopied;
  state.mergedBatches = (state.mergedBatches ?? 0) + (r.mergedBatches ?? 0);
  state.rowMoves = r.rowMoves ?? state.rowMoves;
  state.percent = r.percent;
  state.checkpoint = r.checkpoint;
  state.checkpointPage = r.nextPage;
  state.totalPages = r.totalPages;
  // a hold that goes on keeps the time it began
  const held = r.throttledBy ?? null;
  state.throttledBy =
    held && state.throttledBy?.bound === held.bound ? { ...held, since: state.throttledBy.since } : held;
  if (r.appPauseMs !== undefined) state.appPauseMs = r.appPauseMs;
  if (r.replicaLag) state.replicaLag = r.replicaLag;
  if (r.elapsedMs > 0 && r.batches > 0) {
    const rps = (r.rowsThisChunk * 1000) / r.elapsedMs;
    const pps = (Math.max(0, gained) * 1000) / r.elapsedMs;
    state.rowsPerSecond = state.rowsPerSecond ? 0.7 * state.rowsPerSecond + 0.3 * rps : rps;
    state.percentPerSecond = state.percentPerSecond ? 0.7 * state.percentPerSecond + 0.3 * pps : pps;
  }
}

/** The streams' chunks of one round as one: the latest figures of the whole copy, the sums of what each did. */
export function together(rs: BackfillChunkResult[], done: boolean): BackfillChunkResult {
  const latest = rs.reduce((a, b) => (b.rowsCopied >= a.rowsCopied ? b : a));
  const sum = (f: 'rowsThisChunk' | 'pagesThisChunk' | 'batches' | 'mergedBatches') =>
    rs.reduce((n, r) => n + (r[f] ?? 0), 0);
  return {
    ...latest,
    rowsThisChunk: sum('rowsThisChunk'),
    pagesThisChunk: sum('pagesThisChunk'),
    batches: sum('batches'),
    mergedBatches: sum('mergedBatches'),
    elapsedMs: Math.max(...rs.map((r) => r.elapsedMs)),
    done,
    throttledBy: rs.find((r) => r.throttledBy)?.throttledBy ?? null,
    ...(rs.some((r) => r.appPauseMs !== undefined)
      ? { appPauseMs: Math.max(...rs.map((r) => r.appPauseMs ?? 0)) }
      : {}),
  };
}

/** A hold as `progress` shows it. */
function heldOf(h: { since: number; attempts: number; heldBy: string[] } | null | undefined) {
  return h ? { since: new Date(h.since).toISOString(), attempts: h.attempts, heldBy: h.heldBy } : null;
}

/** What the `progress` query answers. */
export function progressOf(run: Run): Progress {
  const { state, table } = run;
  const afterBackfill = ['verify', 'awaiting-approval', 'cutover', 'rollback-window', 'done'].includes(state.phase);
  const percent = afterBackfill ? 100 : state.percent;
  const eta =
    state.phase === 'backfill' && state.percentPerSecond > 0
      ? Math.round((100 - state.percent) / state.percentPerSecond)
      : afterBackfill
        ? 0
        : null;
  const v = state.verify;
  const c = state.cutover;
  // pause acts on the copy only: in other phases nothing is paused, whatever was signalled
  const copying = state.phase === 'backfill';
  const pausing = copying && state.paused && !!state.chunkInFlight;
  const stopped = copying && state.paused && !pausing;
  return {
    table,
    phase: state.phase,
    paused: stopped,
    pausing,
    awaitingApproval: state.phase === 'awaiting-approval',
    rowsCopied: state.rowsCopied,
    rowsEstimated: state.plan?.estimatedRows ?? 0,
    percent: Math.round(percent * 10) / 10,
    // while paused nothing copies: no rate, no time left
    rowsPerSecond: stopped ? 0 : Math.round(state.rowsPerSecond),
    etaSeconds: stopped ? null : eta,
    lastError: state.lastError,
    checkpointPage: state.checkpointPage,
    totalPages: state.totalPages,
    checkpoint: state.checkpoint,
    batchSize: state.batchSize,
    sleepMs: state.sleepMs,
    lockWaitRetries: state.lockWaitRetries,
    mergedBatches: state.mergedBatches ?? 0,
    rowMoves: state.rowMoves ?? 0,
    givenUp: state.plan?.givenUp ?? [],
    partitions: state.plan ? state.plan.partitions.length + 1 : 0,
    warnings: state.plan?.warnings ?? [],
    verify: v && {
      ok: v.ok,
      rows: v.rows,
      mismatches: v.mismatches,
      elapsedMs: v.elapsedMs,
      chunks: v.chunks ?? 1,
      longestSnapshotMs: v.longestSnapshotMs ?? v.elapsedMs,
      endedAt: v.endedAt ?? null,
      repaired: v.repaired ?? [],
    },
    cutover: c && {
      lockHoldMs: c.lockHoldMs,
      lockPhases: c.lockPhases ?? null,
      attempts: c.attempts,
      lockWaitRetries: c.lockWaitRetries,
      keysAppliedUnderLock: c.keysAppliedUnderLock ?? 0,
      lastCheck: c.lastCheck ?? null,
      handover: c.handover
        ? {
            quiet: c.handover.quiet,
            guarded: c.handover.guarded,
            rounds: c.handover.rounds,
            ms: c.handover.ms,
            heldBy: c.handover.heldBy ?? [],
          }
        : null,
    },
    cutoverHeld: heldOf(state.cutoverHeld),
    swapBackHeld: heldOf(state.swapBackHeld),
    olderSnapshots: state.olderSnapshots ?? run.opts.olderSnapshots ?? 'guard',
    throttledBy: state.phase === 'backfill' ? (state.throttledBy ?? null) : null,
    appPauseMs: state.phase === 'backfill' ? (state.appPauseMs ?? null) : null,
    replicaLag: state.replicaLag ?? null,
    replicaBounds: state.replica ?? run.opts.replica,
  };
}

/**
 * The run's state as the Web UI's "Current Details" of the workflow (Markdown, read through the built-in
 * __temporal_workflow_metadata query): progress without running a query of ours.
 */
export function showDetails(run: Run): void {
  const p = progressOf(run);
  const halted = p.paused || p.pausing;
  // the state and the operator's next action first; a rate only while rows are being copied
  const copying = p.phase === 'backfill' && !halted;
  const attach = !!run.state.plan?.sql.attach;
  const lines = [
    `**${p.table}**: ${p.phase}` +
      (p.paused ? ' (paused)' : p.pausing ? ' (pausing: the chunk in flight ends first)' : '') +
      (p.awaitingApproval ? ': **next: signal approveCutover** (or rollback)' : '') +
      (p.paused ? ': **next: signal resume**' : '') +
      (p.phase === 'rollback-window' ? ': next: signal finalize, or rollback' : ''),
  ];
  if (!attach && p.rowsCopied > 0) {
    lines.push(
      `copied ${p.rowsCopied} of about ${Math.max(p.rowsEstimated, p.rowsCopied)} rows ` +
        `(${Math.min(100, p.percent)} %)` +
        (copying ? `, ${p.rowsPerSecond} rows/s` : '') +
        (copying && p.etaSeconds !== null ? `, about ${p.etaSeconds} s left` : ''),
    );
  }
  if (p.throttledBy)
    lines.push(`held back by ${p.throttledBy.bound} since ${p.throttledBy.since}: ${p.throttledBy.reason}`);
  else if (p.appPauseMs)
    lines.push(
      `paced by maxAppLatencyRatio: ${p.appPauseMs} ms pause after each batch, so the application's commits stay fast`,
    );
  if (p.verify)
    lines.push(
      `verification ${p.verify.ok ? 'passed' : 'FAILED'}: ${p.verify.rows} rows in ${p.verify.chunks} chunk(s)` +
        (p.verify.endedAt ? `, ended ${p.verify.endedAt}` : '') +
        (p.verify.repaired.length ? `; copied again and equal since: ${p.verify.repaired.join('; ')}` : ''),
    );
  if (p.cutoverHeld)
    lines.push(
      `cut-over held since ${p.cutoverHeld.since} (${p.cutoverHeld.attempts} attempt(s)) by sessions with older ` +
        `snapshots: ${p.cutoverHeld.heldBy.join('; ') || 'writers logging after the handover'}; **next: end them, ` +
        'or signal approveCutover with {"olderSnapshots": "guard"}**',
    );
  if (p.swapBackHeld)
    lines.push(
      `swap back (the rollback) held since ${p.swapBackHeld.since} (${p.swapBackHeld.attempts} attempt(s)) by ` +
        `sessions with older snapshots: ${p.swapBackHeld.heldBy.join('; ') || 'writers logging after the handover'}` +
        '; **next: end them, or signal approveCutover with {"olderSnapshots": "guard"}**',
    );
  if (p.cutover) {
    const check = p.cutover.lastCheck;
    lines.push(
      `cut over holding the lock ${p.cutover.lockHoldMs} ms` +
        (check ? `; last check: ${check.keys} key(s) changed since the verification compared equal` : '') +
        (check?.repaired.length ? ` (copied again: ${check.repaired.join('; ')})` : ''),
    );
  }
  if (p.lastError) lines.push(`last error: ${p.lastError}`);
  setCurrentDetails(lines.join('\n\n'));
  if (run.state.fleet) run.state.fleetValues = upsertFleet(p, run.state.fleetValues);
}
