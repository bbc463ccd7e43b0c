/**
 * `cleanupTable`: shows, and with `remove` removes, what a dead partitionTable run left behind (a terminated
 * workflow runs no compensation). `partflow cleanup <table>` checks with Temporal that the run's workflow is
 * no longer running before it asks for `remove`.
 */
import { proxyActivities } from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { CleanupReport } from '../activities/cleanup';
import { InputError, parseTableName } from '../src/ident';
import { failure } from '../src/failures';
import { DEFAULT_LOCK_TIMEOUT_MS } from '../src/locks';

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
    if (input.remove && typeof input.workflowId !== 'string')
      throw new InputError(
        'Field "workflowId" is required with "remove": the run that partflow cleanup showed as no longer running.',
      );
  } catch (err) {
    throw failure((err as Error).message, 'InvalidInput');
  }
  if (!input.remove) return act.inspectLeftovers(table);
  return act.removeLeftovers(table, input.workflowId!, input.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS);
}
