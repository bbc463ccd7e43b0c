/** Temporal client helpers shared by the CLI, the demo and the tests. */
import { Client, Connection, WorkflowHandle, WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
import { loadConfig, PartflowConfig } from './config';
import { parseTableName } from './ident';
import { PartitionTableInput, partitionWorkflowId } from './input';

export async function connectClient(config: PartflowConfig = loadConfig()): Promise<Client> {
  const connection = await Connection.connect({ address: config.temporalAddress, ...(config.connectionExtras as object) });
  return new Client({ connection, namespace: config.namespace });
}

/** Starts `partitionTable` with the CLI's workflow id, `partition-<schema>.<table>`. */
export async function startPartition(client: Client, input: PartitionTableInput, taskQueue = loadConfig().taskQueue): Promise<WorkflowHandleWithFirstExecutionRunId> {
  const ref = parseTableName(input.table);
  return client.workflow.start('partitionTable', { taskQueue, workflowId: partitionWorkflowId(ref), args: [input] });
}

export function partitionHandle(client: Client, table: string): WorkflowHandle {
  return client.workflow.getHandle(partitionWorkflowId(parseTableName(table)));
}

/** Whether any worker polls the task queue right now. */
export async function hasWorker(client: Client, taskQueue: string): Promise<boolean> {
  const r = await client.workflowService.describeTaskQueue({
    namespace: client.options.namespace,
    taskQueue: { name: taskQueue },
    taskQueueType: 1, // TASK_QUEUE_TYPE_WORKFLOW
  });
  return (r.pollers ?? []).length > 0;
}
