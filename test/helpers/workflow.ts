/** Polling helpers over the `progress` query. */
import type { WorkflowHandle } from '@temporalio/client';
import type { Progress } from '../../workflows/definitions';

export async function progress(h: WorkflowHandle): Promise<Progress> {
  return h.query<Progress>('progress');
}

export async function waitFor(
  h: WorkflowHandle,
  pred: (p: Progress) => boolean,
  what: string,
  timeoutMs = 120_000,
): Promise<Progress> {
  const until = Date.now() + timeoutMs;
  let last: Progress | undefined;
  while (Date.now() < until) {
    try {
      last = await progress(h);
      if (pred(last)) return last;
      if (last.phase === 'failed') throw new Error(`workflow failed while waiting for ${what}: ${last.lastError}`);
    } catch (err) {
      if (/workflow failed/.test((err as Error).message)) throw err;
    }
    await new Promise((r) => setTimeout(r, 150));
  }
  throw new Error(`timed out waiting for ${what}; last progress ${JSON.stringify(last)}`);
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * From a workflow's history: the event id at which the first attempt of activity `forward` closed
 * (completed, failed, cancelled or timed out), and the one at which the first of `undo` was scheduled
 * (Infinity when none). An undo that never overlaps its forward step has forwardClosed < undoScheduled.
 */
export async function forwardThenUndo(
  h: WorkflowHandle,
  forward: string,
  undo: string[],
): Promise<{ forwardClosed: number; undoScheduled: number }> {
  const events = (await h.fetchHistory()).events ?? [];
  const scheduled = new Map<string, string>();
  let forwardClosed = Infinity;
  let undoScheduled = Infinity;
  for (const e of events) {
    const id = Number(e.eventId);
    const s = e.activityTaskScheduledEventAttributes;
    if (s) {
      scheduled.set(String(id), s.activityType?.name ?? '');
      if (undo.includes(s.activityType?.name ?? '')) undoScheduled = Math.min(undoScheduled, id);
    }
    const closed =
      e.activityTaskCanceledEventAttributes ??
      e.activityTaskCompletedEventAttributes ??
      e.activityTaskFailedEventAttributes ??
      e.activityTaskTimedOutEventAttributes;
    if (closed && scheduled.get(String(closed.scheduledEventId)) === forward)
      forwardClosed = Math.min(forwardClosed, id);
  }
  return { forwardClosed, undoScheduled };
}
