/**
 * The stack most integration tests need: a fresh database, the real Temporal dev server, and an in-process
 * worker with partflow's workflows and real activities on the given task queue.
 */
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import { createActivities } from '../../activities';
import { createPool } from '../../activities/runtime/db';
import { createLogger } from '../../src/logger';
import { HEARTBEAT_OPTIONS } from '../../worker/worker';
import { createTestDb, TestDb } from './pg';
import { startDevServer } from './temporal';

export interface Stack {
  env: TestWorkflowEnvironment;
  db: TestDb;
  taskQueue: string;
  /** stops the worker and the server, drops the database */
  teardown(): Promise<void>;
}

export async function startStack(
  name: string,
  taskQueue: string,
  opts: { extraArgs?: string[]; uiPort?: number } = {},
): Promise<Stack> {
  const db = await createTestDb(name);
  const env = await startDevServer(opts.extraArgs ?? [], { uiPort: opts.uiPort });
  const pool = createPool(db.url);
  const worker = await Worker.create({
    connection: env.nativeConnection,
    taskQueue,
    workflowsPath: require.resolve('../../workflows'),
    activities: createActivities({ pool, log: createLogger({ test: name }).child({}, { level: 'warn' }) }),
    ...HEARTBEAT_OPTIONS,
  });
  const running = worker.run().finally(() => pool.end());
  return {
    env,
    db,
    taskQueue,
    async teardown() {
      worker.shutdown();
      await running;
      await env.teardown();
      await db.drop();
    },
  };
}
