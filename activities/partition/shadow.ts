/** The partitioned copy: created with its partitions, keys, indexes and grants, then its foreign keys. */
import type { PoolClient } from 'pg';
import { failure } from '../../src/failures';
import { displayName, qualified } from '../../src/ident';
import { foreignKeyName, Plan } from '../../src/plan';
import { inTransaction, runAll, withHeartbeat, withLockRetry } from '../runtime/db';
import { faultPoint } from '../runtime/faults';
import { Deps, relOid, stepLog } from '../runtime/deps';
import { copyExists, fence, lockedBy, ownPlan, undoFence } from './run';

/** The copy with everything but its foreign keys, in one transaction; then each foreign key in its own. */
export async function createShadow(
  { pool, log }: Deps,
  plan: Plan,
  lockTimeoutMs: number,
): Promise<{ created: boolean; foreignKeys: number }> {
  await ownPlan(pool, plan.table, plan);
  const logger = stepLog(log, 'shadow', plan.table);
  let created = false;
  await withHeartbeat(
    () => ({ step: 'shadow' }),
    async () => {
      const existing = await inTransaction(pool, (c) => relOid(c, plan.shadow));
      if (!existing) {
        await withLockRetry(pool, logger, 'shadow', lockTimeoutMs, async (c) => {
          await fence(c, plan.table);
          await runAll(c, plan.sql.shadow);
        });
        created = true;
      } else if (existing.relkind !== 'p') {
        throw failure(
          `${displayName(plan.shadow)} exists and is not partflow's partitioned copy; drop or rename it first.`,
          'NameTaken',
        );
      }
      for (const [i, fk] of plan.sql.shadowForeignKeys.entries()) {
        const has = await pool.query(`SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass($1) AND conname = $2`, [
          qualified(plan.shadow),
          foreignKeyName(fk),
        ]);
        if (has.rowCount) continue;
        await withLockRetry(pool, logger, `shadow foreign key ${i + 1}`, lockTimeoutMs, async (c) => {
          await fence(c, plan.table);
          await c.query(fk);
        });
      }
      await faultPoint('shadow', logger);
    },
  );
  logger.info({ created, partitions: plan.partitions.length + 1 }, 'shadow table ready');
  return { created, foreignKeys: plan.sql.shadowForeignKeys.length };
}

/** Compensation of createShadow. Never drops the source: checks the OID first. */
export async function dropShadow({ pool, log }: Deps, plan: Plan, lockTimeoutMs: number): Promise<void> {
  await ownPlan(pool, plan.table, plan);
  const logger = stepLog(log, 'drop-shadow', plan.table);
  const drop = async (c: PoolClient) => {
    await undoFence(c, plan.table);
    if (await copyExists(c, plan)) for (const sql of plan.sql.dropShadow) await c.query(sql);
  };
  await withLockRetry(pool, logger, 'drop shadow', lockTimeoutMs, drop, lockedBy(plan));
  logger.info('shadow table dropped');
}
