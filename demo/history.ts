/** What a workflow was doing when: its activities' spans, read from its own history. */
import { WorkflowHandle } from '@temporalio/client';

export interface ActivitySpan {
  name: string;
  /** epoch ms: scheduled, and closed (completed, failed, timed out or cancelled); NaN while still open */
  start: number;
  end: number;
}

type Stamp = { seconds?: unknown; nanos?: number | null } | null | undefined;

export function epochMs(t: Stamp): number {
  const sec = t?.seconds as { toNumber?: () => number } | number | undefined;
  return (typeof sec === 'object' && sec?.toNumber ? sec.toNumber() : Number(sec ?? 0)) * 1000 + (t?.nanos ?? 0) / 1e6;
}

/** Every activity of the workflow, in the order scheduled, with when it was scheduled and when it closed. */
export async function activitySpans(h: WorkflowHandle): Promise<ActivitySpan[]> {
  const events = (await h.fetchHistory()).events ?? [];
  const spans = new Map<string, ActivitySpan>();
  for (const e of events) {
    const s = e.activityTaskScheduledEventAttributes;
    if (s?.activityType?.name)
      spans.set(String(e.eventId), { name: s.activityType.name, start: epochMs(e.eventTime), end: NaN });
    const closed =
      e.activityTaskCompletedEventAttributes ??
      e.activityTaskFailedEventAttributes ??
      e.activityTaskTimedOutEventAttributes ??
      e.activityTaskCanceledEventAttributes;
    const span = closed && spans.get(String(closed.scheduledEventId ?? ''));
    if (span) span.end = epochMs(e.eventTime);
  }
  return [...spans.values()];
}

/**
 * The activities running at some moment from `from` to `to` (epoch ms; `to` defaults to `from`) in any of the
 * given span lists, as `workflow:activity`, each once.
 */
export function runningAt(from: number, lists: Record<string, ActivitySpan[]>, to = from): string[] {
  const out = new Set<string>();
  for (const [wf, spans] of Object.entries(lists))
    for (const s of spans) if (s.start <= to && (Number.isNaN(s.end) || from <= s.end)) out.add(`${wf}:${s.name}`);
  return [...out];
}
