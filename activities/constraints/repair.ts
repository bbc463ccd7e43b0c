/**
 * Repairs of fixConstraints: violating rows changed in batches, each change recorded in partflow.repairs in
 * the same statement; the undo restores exactly the records of this run and table.
 */
import { CancelledFailure } from '@temporalio/common';
import type { Pool, PoolClient } from 'pg';
import { describeFix, Fix } from '../../src/constraints';
import { restoreSql } from '../../src/constraintSql';
import { DEFAULT_REPLICA_BOUNDS, ReplicaBounds } from '../../src/replicas';
import { memoryStandbys, Throttled, waitForReplicas } from '../runtime/replicas';
import { dropNotNullSql, FixInfo, fixSteps } from '../../src/fixSteps';
import { qualified } from '../../src/ident';
import { activityContext, classify, inTransaction, withLockRetry } from '../runtime/db';
import { migrate } from '../runtime/migrate';
import type { Deps } from '../runtime/deps';
import { fixFence, fixLog, lockedByFix, runId, wfId } from '../runtime/fixRuns';
import { dropConstraint, StepResult } from './steps';

/** Repairs violations in batches; each changed row's key and old value go to partflow.repairs. */
export async function repair(
  { pool, log }: Deps,
  fixNo: number,
  fix: Fix,
  info: FixInfo,
  batchSize: number,
  lockTimeoutMs = 500,
  bounds: ReplicaBounds = DEFAULT_REPLICA_BOUNDS,
): Promise<StepResult> {
  const logger = fixLog(log, 'repair', fix);
  let rows = 0;
  const replicas = { label: describeFix(fix), known: memoryStandbys() };
  let held: Throttled | null = null;
  try {
    await migrate(pool);
    const sql = fixSteps(fix, info).repair!;
    const wf = wfId();
    const batch = async (c: PoolClient) => {
      await fixFence(c);
      return c.query(sql, [wf, fixNo, batchSize, runId()]);
    };
    for (;;) {
      // the standbys first: a held repair waits here (heartbeating) until no bound holds it back
      for (;;) {
        ({ held } = await waitForReplicas(pool, replicas, bounds, Date.now() + 10_000, held));
        if (!held) break;
        logger.warn(
          { throttledBy: held.bound, reason: held.reason, since: held.since },
          'repair held back by a standby',
        );
        if (activityContext()?.cancellationSignal.aborted)
          throw new CancelledFailure(`repair of ${fix.name} cancelled`);
      }
      // a batch waits at most the run's lock timeout for a row the application holds, then rolls back and
      // is retried: an application transaction never waits on a batch that waits on another
      const { result: r } = await withLockRetry(pool, logger, `repair for ${fix.name}`, lockTimeoutMs, batch, {
        maxAttempts: 30,
      });
      rows += r.rowCount ?? 0;
      const ctx = activityContext();
      ctx?.heartbeat({ fix: fix.name, rowsRepaired: rows });
      if (ctx?.cancellationSignal.aborted)
        throw new CancelledFailure(`repair of ${fix.name} cancelled after ${rows} rows`);
      if (!r.rowCount) break;
    }
    logger.info({ rows }, 'repaired');
    return { changed: rows > 0, rows, lockWaitRetries: 0 };
  } catch (err) {
    classify(err, `repair for ${fix.name}`);
  }
}

/** The table's insertable columns now (generated ones are recomputed) and whether identity needs OVERRIDING. */
async function insertableColumns(pool: Pool, fix: Fix): Promise<{ insertable: string[]; overriding: boolean }> {
  const cols = (
    await pool.query(
      `SELECT attname, attgenerated <> '' AS generated, attidentity <> '' AS identity FROM pg_attribute
        WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum`,
      [qualified(fix.table)],
    )
  ).rows;
  return {
    insertable: cols.filter((x) => !x.generated).map((x) => x.attname as string),
    overriding: cols.some((x) => x.identity),
  };
}

/** Undo of repair: the constraint goes first (the old values violate it), then every recorded change is reverted. */
export async function restoreRepairs(
  deps: Deps,
  fixNo: number,
  fix: Fix,
  info: FixInfo,
  lockTimeoutMs: number,
  // the run whose repairs these are: this workflow's own unless an undoFixConstraints names a finished one
  of?: { workflowId: string; runId: string },
): Promise<StepResult> {
  const { pool, log } = deps;
  try {
    await dropConstraint(deps, fixNo, fix, info, lockTimeoutMs);
    if (fix.kind === 'notNull') {
      const nn = await pool.query(
        `SELECT attnotnull FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2`,
        [qualified(fix.table), fix.column],
      );
      const sql = dropNotNullSql(fix);
      const logger = fixLog(log, 'restore', fix);
      if (nn.rows[0]?.attnotnull)
        await withLockRetry(pool, logger, 'drop not null', lockTimeoutMs, (c) => c.query(sql), lockedByFix(fix));
    }
    if (!(await pool.query(`SELECT to_regclass('partflow.repairs') IS NOT NULL AS ok`)).rows[0].ok) {
      return { changed: false, lockWaitRetries: 0 };
    }
    const { insertable, overriding } = await insertableColumns(pool, fix);
    const params = of ? [of.workflowId, fixNo, of.runId] : [wfId(), fixNo, runId()];
    const rows = await inTransaction(pool, async (c) => {
      let n = 0;
      const [lock, ...rest] = restoreSql(fix, info.pk, insertable, overriding, info.fill);
      await c.query(lock, params);
      for (const sql of rest.slice(0, -1)) n += (await c.query(sql, params)).rowCount ?? 0;
      await c.query(rest[rest.length - 1], params);
      return n;
    });
    return { changed: true, rows, lockWaitRetries: 0 };
  } catch (err) {
    classify(err, `restore for ${fix.name}`);
  }
}
