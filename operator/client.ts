/** Temporal client helpers shared by the CLI, the demo and the tests. */
import {
  Client,
  Connection,
  WorkflowHandle,
  WorkflowHandleWithFirstExecutionRunId,
  WorkflowNotFoundError,
} from '@temporalio/client';
import { loadConfig, PartflowConfig } from '../src/config';
import { parseTableName } from '../src/ident';
import { PartitionTableInput, partitionWorkflowId } from '../src/input';

export async function connectClient(config: PartflowConfig = loadConfig()): Promise<Client> {
  const connection = await Connection.connect({
    address: config.temporalAddress,
    ...(config.connectionExtras as object),
  });
  return new Client({ connection, namespace: config.namespace });
}

/** Starts `partitionTable` with the CLI's workflow id, `partition-<schema>.<table>`. */
export async function startPartition(
  client: Client,
  input: PartitionTableInput,
  taskQueue = loadConfig().taskQueue,
): Promise<WorkflowHandleWithFirstExecutionRunId> {
  const ref = parseTableName(input.table);
  return client.workflow.start('partitionTable', {
    taskQueue,
    workflowId: partitionWorkflowId(ref),
    args: [input],
    ...partitionSummary(input),
  });
}

/**
 * The Web UI's summary and details of a partitionTable run (issue 28, item 1): what table, what change, the key
 * input. Set by the starter (a workflow cannot set its own static summary); the run's current details follow it.
 */
export function partitionSummary(input: PartitionTableInput): { staticSummary: string; staticDetails: string } {
  const t = parseTableName(input.table);
  const method = input.method === 'attach' ? 'attach (the rows stay)' : 'copy';
  const key = {
    column: input.column ?? 'created_at',
    method: input.method ?? 'copy',
    ...(input.cutoffMonth ? { cutoffMonth: input.cutoffMonth } : {}),
    approval: input.approval ?? 'signal',
    rollbackWindow: input.rollbackWindow ?? '24h',
    ...(input.parallelism ? { parallelism: input.parallelism } : {}),
    ...(input.dryRun ? { dryRun: true } : {}),
  };
  return {
    staticSummary: `partitionTable ${t.schema}.${t.name}: monthly partitions by ${key.column}, ${method}`,
    staticDetails: Object.entries(key)
      .map(([k, v]) => `**${k}**: ${v}`)
      .join('\n'),
  };
}

export function partitionHandle(client: Client, table: string): WorkflowHandle {
  return client.workflow.getHandle(partitionWorkflowId(parseTableName(table)));
}

export interface CleanupOutcome {
  /** set when cleanup refused: one sentence */
  refused?: string;
  report: import('../activities/cleanup').CleanupReport;
}

/**
 * `partflow cleanup <table>`: what a dead run left behind; with `remove`, removes it. Refuses while the
 * workflow that partflow.runs records for the table is still running in Temporal (cancel it instead: its
 * own undo runs then). A table held by a fixConstraints or createIndexes run whose workflow is gone
 * (terminated) and no live partitionTable run: `remove` releases that run's hold, dropping nothing.
 */
export async function cleanupLeftovers(
  client: Client,
  table: string,
  taskQueue: string,
  remove: boolean,
): Promise<CleanupOutcome> {
  const ref = parseTableName(table);
  const id = (suffix: string) => `cleanup-${ref.schema}.${ref.name}-${suffix}-${Date.now()}`;
  const report = await client.workflow.execute('cleanupTable', {
    taskQueue,
    workflowId: id('look'),
    args: [{ table }],
  });
  const run = report.run;
  const live = run && ['active', 'undoing', 'cleanup'].includes(run.state) ? run.workflowId : null;
  // a table held by a fix run (and no live partitionTable run): that run's hold is what cleanup releases
  const fix = live ? null : (report.heldBy?.[0]?.workflowId ?? null);
  const owner = live ?? fix;
  if (owner) {
    const status = await workflowStatus(client, owner);
    if (status === 'UNKNOWN') {
      return {
        refused: `Cannot read the state of workflow ${owner} from Temporal; cleanup refuses until it can.`,
        report,
      };
    }
    if (status === 'RUNNING') {
      return {
        refused:
          `Workflow ${owner} still runs and owns ${table}; ` +
          'cancel it (its own undo then runs) or wait for it, instead of cleaning up.',
        report,
      };
    }
  }
  if (!remove) return { report };
  if (fix) return { report: await removeFor(fix) };
  if (report.phase === 'none' || !run) return { report };
  return { report: await removeFor(run.workflowId) };

  function removeFor(workflowId: string) {
    return client.workflow.execute('cleanupTable', {
      taskQueue,
      workflowId: id('remove'),
      args: [{ table, remove: true, workflowId }],
    });
  }
}

/** What Temporal says of a workflow: its status name, NOT_FOUND, or UNKNOWN when it cannot tell. */
function workflowStatus(client: Client, workflowId: string): Promise<string> {
  return client.workflow
    .getHandle(workflowId)
    .describe()
    .then((d) => d.status.name)
    .catch((err: unknown) => (err instanceof WorkflowNotFoundError ? 'NOT_FOUND' : 'UNKNOWN'));
}
