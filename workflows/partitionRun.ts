/**
 * What partitionTable's two paths (workflows/partitionTable.ts, the copy; workflows/partitionAttach.ts, the
 * attach) share: the activity proxies and their options, the rollback request, the phase change.
 */
import {
  ActivityCancellationType,
  ActivityOptions,
  CancellationScope,
  condition,
  log,
  proxyActivities,
  RetryPolicy,
} from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { LastCheck } from '../activities';
import { rootFailure } from './failure';
import type { Phase } from './definitions';
import { Run, showDetails } from './partitionState';

export const retry: RetryPolicy = { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s' };
// WAIT_CANCELLATION_COMPLETED: on a cancellation the workflow waits until the running step has stopped
// (it notices at its next heartbeat) before any undo starts, so an undo never overlaps its own forward step.
// Heartbeats every few seconds (withHeartbeat, withLockRetry) make that quick.
export const cancellationType = ActivityCancellationType.WAIT_CANCELLATION_COMPLETED;
export const SHORT: ActivityOptions = { startToCloseTimeout: '5m', heartbeatTimeout: '15s', retry, cancellationType };
export const LONG: ActivityOptions = { ...SHORT, startToCloseTimeout: '12h' };
export const CHUNK: ActivityOptions = { ...SHORT, retry: { ...retry, maximumInterval: '10s' } };
export const short = proxyActivities<Activities>(SHORT);

/**
 * The activities with a one-line summary, which the Web UI shows on the step's events in the history (issue 28):
 * the history reads as the steps of the plan. The summary is metadata: replay does not compare it.
 */
export function act(opts: ActivityOptions, summary: string) {
  return proxyActivities<Activities>({ ...opts, summary });
}

/**
 * The key log's applier while the run waits. TRY_CANCEL: the workflow goes on at once when the wait ends (a
 * cancellation reaches an activity only with a heartbeat's answer, seconds later); an applier still running
 * then is harmless: rounds are serialised by the log's advisory lock, the cut-over's and the swap back's
 * LOCK TABLE wait for a round in flight, and a round after the log was dropped ends the activity.
 */
export const follow = proxyActivities<Activities>({
  startToCloseTimeout: '12h',
  heartbeatTimeout: '10s',
  retry,
  cancellationType: ActivityCancellationType.TRY_CANCEL,
});

/**
 * How long the workflow waits before trying a cut-over that older snapshots held again (the next attempt itself
 * waits up to 2 minutes for those sessions, with no handover, before it hands over again).
 */
export const HELD_RETRY_MS = 2_000;

/** `run` in a scope of its own, cancelled once `stop()` holds (the workflow's own cancellation reaches it too). */
export async function stoppable<T>(run: () => Promise<T>, stop: () => boolean): Promise<T> {
  const scope = new CancellationScope();
  const watcher = new CancellationScope();
  const watching = watcher
    .run(() => condition(stop))
    .then(
      () => scope.cancel(),
      () => undefined,
    );
  try {
    return await scope.run(run);
  } finally {
    watcher.cancel();
    await watching;
  }
}

/**
 * A swap's attempt that failed HandoverHeld (sessions with older snapshots held it): the hold as it is now, after
 * `prev`, with the failure's message and the last check to go on from; null for any other failure.
 */
export function heldAgain(prev: { since: number; attempts: number } | null | undefined, err: unknown) {
  const root = rootFailure(err);
  if (root.type !== 'HandoverHeld') return null;
  const d = (root.details[0] ?? {}) as { heldBy?: string[]; lastCheck?: LastCheck; applied?: string | null };
  const hold = {
    since: prev?.since ?? Date.now(),
    attempts: (prev?.attempts ?? 0) + 1,
    heldBy: d.heldBy ?? [],
    applied: d.applied ?? null,
  };
  return { hold, message: root.message, lastCheck: d.lastCheck };
}

export class RollbackRequested extends Error {}

export function checkRollback({ state }: Run): void {
  if (state.rollbackRequested) throw new RollbackRequested('rollback requested');
}

/** Every phase change is a log line with the workflow id (added by the SDK), the table and the phase. */
export function enter(run: Run, phase: Phase): void {
  run.state.phase = phase;
  log.info(`phase ${phase}`, { table: run.table, phase });
  showDetails(run);
}
