/**
 * The sync trigger: from its commit on, every write to the table is also written to the copy. The same
 * transaction records how many pages the backfill must cover: every row on a later page was written after
 * the trigger existed, so the trigger copied it.
 */
import type { PoolClient } from 'pg';
import { failure } from '../../src/failures';
import { displayName, qualified } from '../../src/ident';
import { FORWARD_TRIGGER, Plan } from '../../src/plan';
import { runAll, withLockRetry } from '../runtime/db';
import { waitForOlderSnapshots } from './snapshotGuard';
import { faultPoint } from '../runtime/faults';
import { probeBaseline } from '../runtime/replicas';
import { Deps, relOid, stepLog } from '../runtime/deps';
import { fence, lockedBy, ownPlan, undoFence } from './run';
import { recordMaxKey, recordWalkStart, splitStreams } from '../runtime/copyState';

/**
 * The backfill's end, recorded with the trigger: pages (and the file), or the largest key in key mode; a
 * parallel copy's split of those pages.
 */
async function recordWalkEnd(c: PoolClient, plan: Plan, triggerFence: string): Promise<number> {
  const total = await recordWalkStart(c, plan.table, plan.tableOid, triggerFence);
  if (plan.copyMode === 'keys') await recordMaxKey(c, plan.table, (await c.query(plan.sql.maxKey)).rows[0]?.k ?? null);
  if (plan.copyMode === 'pages' && (plan.parallelism ?? 1) > 1) await splitStreams(c, plan.table, plan.parallelism!);
  return total;
}

export async function installSyncTrigger(
  { pool, log }: Deps,
  plan: Plan,
  lockTimeoutMs: number,
): Promise<{ totalPages: number; lockWaitRetries: number; appBaselineMs: number }> {
  await ownPlan(pool, plan.table, plan);
  const logger = stepLog(log, 'sync', plan.table);
  const install = async (c: PoolClient) => {
    await fence(c, plan.table);
    const src = await relOid(c, plan.table);
    if (!src || src.oid !== plan.tableOid) {
      throw failure(
        `Table ${displayName(plan.table)} changed since preflight (dropped or replaced); start again.`,
        'TableChanged',
      );
    }
    const has = await c.query(`SELECT 1 FROM pg_trigger WHERE tgrelid = $1 AND tgname = $2`, [
      plan.tableOid,
      FORWARD_TRIGGER,
    ]);
    if (!has.rowCount) await runAll(c, plan.sql.syncTrigger);
    await faultPoint('sync', logger);
    // partflow's triggers as committed now; the cut-over refuses if they were disabled since
    const triggerFence = (await c.query(plan.sql.triggerFence, [plan.tableOid])).rows[0].fence;
    return recordWalkEnd(c, plan, triggerFence);
  };
  const { result, stats } = await withLockRetry(pool, logger, 'sync trigger', lockTimeoutMs, install, lockedBy(plan));
  // the application-latency bound's reference: a commit with the sync in place and the copy not started
  const appBaselineMs = await probeBaseline(pool, plan.sql.appProbe);
  logger.info({ totalPages: result, lockWaitRetries: stats.lockWaitRetries, appBaselineMs }, 'sync trigger installed');
  return { totalPages: result, lockWaitRetries: stats.lockWaitRetries, appBaselineMs };
}

/** Compensation of installSyncTrigger; after a cut-over the trigger went with the swap, the counter goes here. */
export async function dropSyncTrigger({ pool, log }: Deps, plan: Plan, lockTimeoutMs: number): Promise<void> {
  await ownPlan(pool, plan.table, plan);
  const logger = stepLog(log, 'drop-sync', plan.table);
  await waitForOlderSnapshots(pool, plan.table, logger); // the swap back's guard, after a rollback
  const drop = async (c: PoolClient) => {
    await undoFence(c, plan.table);
    const src = await relOid(c, plan.table);
    if (src && src.oid === plan.tableOid) await runAll(c, plan.sql.dropSyncTrigger);
    // the counters go only when no trigger of partflow's is left to call them: after a swap back that was
    // refused, the new table keeps its reverse trigger, and an application write must not fail on them
    const live = await c.query(
      `SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname LIKE 'partflow\\_%' LIMIT 1`,
      [qualified(plan.table)],
    );
    if (!live.rowCount) await runAll(c, plan.sql.dropCounters ?? []);
  };
  await withLockRetry(pool, logger, 'drop sync trigger', lockTimeoutMs, drop, lockedBy(plan));
  logger.info('sync trigger dropped');
}
