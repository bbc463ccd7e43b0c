/**
 * `cleanupTable`: shows, and with `remove` removes, what a dead partitionTable run left behind (a terminated
 * workflow runs no compensation). With `remove` it asks Temporal first and refuses while the run's workflow is
 * running or its state cannot be read; the removal then fences the run, so no undo step of it acts afterwards.
 */
import { proxyActivities } from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { CleanupReport } from '../activities/cleanup';
import { InputError, parseTableName } from '../src/ident';
import { failure } from '../src/failures';
import { lockTimeoutField } from '../src/locks';

export interface CleanupTableInput {
  table: string;
  /** false (default): report only */
  remove?: boolean;
  /** with `remove`: the workflow id partflow.runs must still record for the table (what the operator saw) */
  workflowId?: string;
  lockTimeoutMs?: number;
}

const act = proxyActivities<Activities>({
  startToCloseTimeout: '10m',
  heartbeatTimeout: '30s',
  retry: { initialInterval: '1s', maximumInterval: '30s', maximumAttempts: 10 },
});

export async function cleanupTable(input: CleanupTableInput): Promise<CleanupReport> {
  let table;
  try {
    table = parseTableName(input?.table, 'table');
    for (const k of Object.keys(input))
      if (!['table', 'remove', 'workflowId', 'lockTimeoutMs'].includes(k))
        throw new InputError(`Unknown field "${k}"; known fields are table, remove, workflowId, lockTimeoutMs.`);
    if (input.remove !== undefined && typeof input.remove !== 'boolean')
      throw new InputError('Field "remove" must be true or false.');
    lockTimeoutField(input.lockTimeoutMs);
    if (input.remove && typeof input.workflowId !== 'string')
      throw new InputError(
        'Field "workflowId" is required with "remove": the run that partflow cleanup showed as no longer running.',
      );
  } catch (err) {
    throw failure((err as Error).message, 'InvalidInput');
  }
  if (!input.remove) return act.inspectLeftovers(table);
  // fail closed: a run whose workflow still runs (or whose state Temporal cannot tell) keeps its own undo
  const status = await act.workflowStatus(input.workflowId!);
  if (status === 'RUNNING') {
    throw failure(
      `Workflow ${input.workflowId} still runs and owns ${input.table}; cleanup refuses: cancel it (its own undo ` +
        'then runs) or signal it to roll back or finalize, instead of cleaning up.',
      'RunInProgress',
    );
  }
  return act.removeLeftovers(table, input.workflowId!, lockTimeoutField(input.lockTimeoutMs));
}
