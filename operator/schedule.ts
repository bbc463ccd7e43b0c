/** The maintenance Schedule: create, show, pause, unpause, trigger, delete. */
import { Client, ScheduleDescription, ScheduleOverlapPolicy } from '@temporalio/client';
import { MaintainPartitionsInput, validateMaintainInput } from '../src/maintenance';

export const DEFAULT_SCHEDULE_ID = 'partflow-maintenance';

export interface ScheduleOptions {
  scheduleId?: string;
  taskQueue: string;
  /** a cron expression; default: monthly, on the 1st at 03:00 UTC */
  cron?: string;
}

export async function createMaintenanceSchedule(
  client: Client,
  input: MaintainPartitionsInput,
  opts: ScheduleOptions,
): Promise<string> {
  validateMaintainInput(input); // refuse bad input here, not at 3 a.m. on the 1st
  const scheduleId = opts.scheduleId ?? DEFAULT_SCHEDULE_ID;
  await client.schedule.create({
    scheduleId,
    spec: opts.cron
      ? { cronExpressions: [opts.cron] }
      : { calendars: [{ dayOfMonth: 1, hour: 3, minute: 0, comment: 'monthly, 03:00 UTC on the 1st' }] },
    action: {
      type: 'startWorkflow',
      workflowType: 'maintainPartitions',
      args: [input],
      taskQueue: opts.taskQueue,
      workflowId: `${scheduleId}-run`,
    },
    // a run still going when the next is due is left alone; a server down over the due time catches up within a day
    policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '1 day', pauseOnFailure: false },
  });
  return scheduleId;
}

export function describeSchedule(d: ScheduleDescription): Record<string, unknown> {
  return {
    id: d.scheduleId,
    paused: d.state.paused,
    note: d.state.note ?? null,
    spec: d.spec,
    nextActionTimes: d.info.nextActionTimes.slice(0, 3).map((t) => t.toISOString()),
    recentActions: d.info.recentActions.map((a) => ({
      at: a.takenAt.toISOString(),
      workflowId: a.action.workflow.workflowId,
      runId: a.action.workflow.firstExecutionRunId,
    })),
    runningActions: d.info.runningActions.map((a) => a.workflow.workflowId),
  };
}
