/** Wires a Temporal worker: connection, pg pool, activities. */
import { NativeConnection, Worker, WorkerOptions } from '@temporalio/worker';
import type { Pool } from 'pg';
import { createActivities } from '../activities';
import { createPool } from '../activities/db';
import { loadConfig, PartflowConfig } from '../src/config';
import { createLogger, Logger } from '../src/logger';

export interface StartedWorker {
  worker: Worker;
  pool: Pool;
  connection: NativeConnection;
  run: Promise<void>;
}

export function workflowsPath(): string {
  return require.resolve('../workflows');
}

export async function createPartflowWorker(
  opts: {
    config?: Partial<PartflowConfig>;
    connection?: NativeConnection;
    log?: Logger;
    worker?: Partial<WorkerOptions>;
  } = {},
): Promise<{ worker: Worker; pool: Pool; connection: NativeConnection; ownsConnection: boolean }> {
  const config = { ...loadConfig(), ...opts.config };
  const log = opts.log ?? createLogger({ component: 'worker' });
  const pool = createPool(config.databaseUrl);
  const ownsConnection = !opts.connection;
  const connection =
    opts.connection ??
    (await NativeConnection.connect({ address: config.temporalAddress, ...(config.connectionExtras as object) }));
  const worker = await Worker.create({
    connection,
    namespace: config.namespace,
    taskQueue: config.taskQueue,
    // a bundle built ahead of time (Dockerfile) starts faster; without one, the SDK bundles at start
    ...(process.env.PARTFLOW_WORKFLOW_BUNDLE
      ? { workflowBundle: { codePath: process.env.PARTFLOW_WORKFLOW_BUNDLE } }
      : { workflowsPath: workflowsPath() }),
    activities: createActivities({ pool, log }),
    ...opts.worker,
  });
  return { worker, pool, connection, ownsConnection };
}
