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

/**
 * The handover's deadline (activities/partition/handover.ts) for the in-process worker: tests whose sessions hold
 * a snapshot through a swap would wait 30 s for it; 5 s unless the environment says otherwise. `handoverWait(ms)`
 * sets it for a test and returns what puts the value before it back.
 */
export const TEST_HANDOVER_WAIT_MS = '5000';
export function handoverWait(ms: number): () => void {
  const before = process.env.PARTFLOW_HANDOVER_WAIT_MS;
  process.env.PARTFLOW_HANDOVER_WAIT_MS = String(ms);
  return () => {
    if (before === undefined) delete process.env.PARTFLOW_HANDOVER_WAIT_MS;
    else process.env.PARTFLOW_HANDOVER_WAIT_MS = before;
  };
}

export async function startStack(
  name: string,
  taskQueue: string,
  opts: { extraArgs?: string[]; uiPort?: number } = {},
): Promise<Stack> {
  process.env.PARTFLOW_HANDOVER_WAIT_MS ??= TEST_HANDOVER_WAIT_MS;
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
