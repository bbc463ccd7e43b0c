/** `npm run worker`: one partflow worker process until SIGINT/SIGTERM. */
import { Runtime } from '@temporalio/worker';
import { loadConfig } from '../src/config';
import { createLogger } from '../src/logger';
import { createPartflowWorker } from './worker';

async function main(): Promise<void> {
  const log = createLogger({ component: 'worker' });
  Runtime.install({ shutdownSignals: ['SIGINT', 'SIGTERM'] });
  const config = loadConfig();
  const { worker, pool, connection } = await createPartflowWorker({ config, log });
  log.info({ address: config.temporalAddress, namespace: config.namespace, taskQueue: config.taskQueue, pid: process.pid }, 'partflow worker started');
  try {
    await worker.run();
  } finally {
    await pool.end();
    await connection.close();
  }
}

main().catch((err) => {
  process.stderr.write(`partflow worker: ${err?.message ?? err}\n`);
  process.exit(1);
});
