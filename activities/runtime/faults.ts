/**
 * Fault points for the fault-injection suite (test/faults): when PARTFLOW_FAULT_POINT names this point,
 * the activity logs "fault point reached" and hangs there (inside its transaction where there is one),
 * so the suite can SIGKILL the worker at exactly that moment. Unset in production: a no-op.
 */
import type { Logger } from '../../src/logger';
import { sleep } from './db';

export type FaultPoint =
  | 'claim'
  | 'attach-key'
  | 'attach-check'
  | 'shadow'
  | 'sync'
  | 'backfill'
  | 'verify'
  | 'cutover'
  | 'finalize'
  | 'apply';

export async function faultPoint(name: FaultPoint, log: Logger): Promise<void> {
  if (process.env.PARTFLOW_FAULT_POINT !== name) return;
  log.warn({ faultPoint: name }, 'fault point reached');
  await sleep(Number(process.env.PARTFLOW_FAULT_SLEEP_MS ?? 600_000));
}
