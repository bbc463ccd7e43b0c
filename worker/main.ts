/** `npm run worker`: one partflow worker process until SIGINT/SIGTERM. */
import { loadConfig } from '../src/config';
import { createLogger } from '../src/logger';
import { installRuntime, metricsAddress } from './telemetry';
import { createPartflowWorker } from './worker';

async function main(): Promise<void> {
  const log = createLogger({ component: 'worker' });
  installRuntime(log);
  const config = loadConfig();
  const { worker, pool, connection } = await createPartflowWorker({ config, log });
  log.info(
    {
      address: config.temporalAddress,
      namespace: config.namespace,
      taskQueue: config.taskQueue,
      metrics: `http://${metricsAddress()}/metrics`,
      pid: process.pid,
    },
    'partflow worker started',
  );
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
