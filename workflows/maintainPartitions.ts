/**
 * `maintainPartitions`: what the Temporal Schedule runs. Each table is maintained by its own activity; a
 * table that fails is reported with its reason and the others go on.
 */
import { defineQuery, proxyActivities, setHandler } from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { TableReport } from '../activities/maintenance';
import { displayName } from '../src/ident';
import { MaintainPartitionsInput, validateMaintainInput } from '../src/maintenance';
import { rootFailure, validInput } from './failure';

export interface MaintainResult {
  ok: boolean;
  tables: TableReport[];
  failures: { table: string; error: string }[];
}

export const maintenanceProgressQuery = defineQuery<{
  done: number;
  of: number;
  current: string | null;
  failures: number;
}>('progress');

const OPTIONS = {
  startToCloseTimeout: '6h',
  heartbeatTimeout: '60s',
  // a broken table is retried a few times, then reported; it never holds up the other tables for long
  retry: { initialInterval: '2s', backoffCoefficient: 2, maximumInterval: '1m', maximumAttempts: 5 },
} as const;
/** With the Web UI's one-line summary on the step's events (metadata: replay ignores it). */
const acts = (summary: string) => proxyActivities<Activities>({ ...OPTIONS, summary });

export async function maintainPartitions(input: MaintainPartitionsInput): Promise<MaintainResult> {
  const specs = validInput(() => validateMaintainInput(input));
  const result: MaintainResult = { ok: true, tables: [], failures: [] };
  let current: string | null = null;
  setHandler(maintenanceProgressQuery, () => ({
    done: result.tables.length + result.failures.length,
    of: specs.length,
    current,
    failures: result.failures.length,
  }));
  for (const spec of specs) {
    current = displayName(spec.table);
    try {
      const what = spec.reportOnly ? 'report on' : spec.dryRun ? 'plan (dry run)' : 'maintain';
      result.tables.push(await acts(`${what} ${current}`).maintainTable(spec));
    } catch (err) {
      result.failures.push({ table: current, error: rootFailure(err).message });
      result.ok = false;
    }
  }
  current = null;
  return result;
}
