/** Wires a Temporal worker: connection, pg pool, activities. */
import { NativeConnection, Worker, WorkerOptions } from '@temporalio/worker';
import type { Pool } from 'pg';
import { createActivities } from '../activities';
import { createPool } from '../activities/runtime/db';
import { HEARTBEAT_THROTTLE_MS, loadConfig, PartflowConfig } from '../src/config';
import { createLogger, Logger } from '../src/logger';

export interface StartedWorker {
  worker: Worker;
  pool: Pool;
  connection: NativeConnection;
  run: Promise<void>;
}

/**
 * A heartbeat reaches the server at most every 80 % of the heartbeat timeout by default (24 s for partflow's
 * 30 s): that is also how late an activity learns it was cancelled. Five seconds: a cancel or rollback stops a
 * CREATE INDEX CONCURRENTLY or a copy batch within seconds, for one small RPC per running activity every 5 s.
 */
export const HEARTBEAT_OPTIONS: Partial<WorkerOptions> = { maxHeartbeatThrottleInterval: HEARTBEAT_THROTTLE_MS };

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
    ...HEARTBEAT_OPTIONS,
    ...opts.worker,
  });
  return { worker, pool, connection, ownsConnection };
}
