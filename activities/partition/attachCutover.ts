/**
 * The attach path's cut-over (the table attached as the history partition of a new partitioned table under its
 * name, in one short transaction), its swap back and the rollback window's check of what a swap back would
 * lose. Statements in src/plan/attach.ts; the preparation (unique index, CHECK) in attach.ts.
 */
import type { PoolClient } from 'pg';
import { referencesItself } from '../../src/catalog';
import { failure } from '../../src/failures';
import { displayName, qualified, quoteIdent } from '../../src/ident';
import { Plan, shapeDifferences, splitLock } from '../../src/plan';
import { type AttachSql } from '../../src/plan/attach';
import { classify, lockUpFront, runAll, withLockRetry } from '../runtime/db';
import { Deps, relOid, stepLog } from '../runtime/deps';
import { faultPoint } from '../runtime/faults';
import { buildConcurrently } from '../runtime/indexBuilder';
import { validateInbound, validateKeptKeys, type CutoverResult } from './cutover';
import { publicationsChanged } from './rollbackLoss';
import { acrossPartitions, fence, ownPlan, runState, undoFence } from './run';
import { recordCutover } from '../runtime/copyState';
import { refuseChangedViews } from './views';
import { retireSnapshotGuard } from './snapshotGuard';

import { attachSqlOf } from './attach';

/** Under the cut-over's lock: the table is the one planned, its CHECK validated, its shape unchanged. */
async function checkAttachable(c: PoolClient, plan: Plan, a: AttachSql): Promise<void> {
  const t = displayName(plan.table);
  const src = await relOid(c, plan.table);
  if (!src || src.oid !== plan.tableOid)
    throw failure(`Table ${t} changed since preflight; not cutting over.`, 'TableChanged');
  const ok = await c.query(
    `SELECT (SELECT convalidated FROM pg_constraint WHERE conrelid = $1 AND conname = $2) AS checked,
            (SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($3)) AS indexed`,
    [plan.tableOid, a.checkName, qualified({ schema: plan.table.schema, name: a.keyIndex })],
  );
  if (!ok.rows[0].checked || !ok.rows[0].indexed) {
    throw failure(
      `The CHECK ${a.checkName} or the index ${a.keyIndex} of ${t} is gone or not valid, so the ATTACH would scan ` +
        'the table under its lock; not cutting over: the run rolls back.',
      'TableChanged',
    );
  }
  // partflow's own index and CHECK are the expected differences (the catalog prints a quote in a name doubled)
  const ours = [a.keyIndex, a.checkName].flatMap((n) => [n, n.replace(/"/g, '""')]);
  const now = (await c.query(plan.sql.shape, [plan.tableOid])).rows
    .map((r) => r.x as string)
    .filter((x) => !ours.some((name) => x.includes(name)));
  const diff = shapeDifferences(plan.sourceShape, now);
  if (diff.length) {
    throw failure(
      `Table ${t} changed after the plan was made (${diff.join('; ')}); not cutting over: the run rolls back, ` +
        'start it again after the change.',
      'TableChanged',
    );
  }
  await refuseChangedViews(c, plan, '.');
}

/**
 * Runs the cut-over's statements and proves the ATTACH did no work on the table under the lock: PostgreSQL
 * says at DEBUG1 when the partition constraint is implied by the table's constraints (no scan; its
 * "is implied by existing constraints"), and an index or foreign key that the partition lacked would show up as
 * a new one (an index built, a foreign key validated: a scan each). Anything of the kind rolls the attempt
 * back: the run fails rather than hold the lock for a scan.
 */
async function attachWithoutWork(c: PoolClient, plan: Plan, statements: () => Promise<void>): Promise<boolean> {
  const count = async () =>
    (
      await c.query(
        `SELECT (SELECT count(*) FROM pg_index WHERE indrelid = $1)::int AS i,
                (SELECT count(*) FROM pg_constraint WHERE conrelid = $1)::int AS k`,
        [plan.tableOid],
      )
    ).rows[0] as { i: number; k: number };
  const before = await count();
  let implied = false;
  const hear = (m: { message?: string }) => {
    if (/is implied by existing constraints/.test(m.message ?? '')) implied = true;
  };
  c.on('notice', hear);
  try {
    await c.query(`SET LOCAL client_min_messages = debug1`);
    await statements();
    await c.query(`SET LOCAL client_min_messages = notice`);
  } finally {
    c.removeListener('notice', hear);
  }
  const after = await count();
  // the primary key's old index is dropped, its new one was there already; constraints: one out, one in, and the
  // table's foreign keys on itself dropped (inboundForeignKeys "drop")
  const selfKeys = (plan.inboundForeignKeys ?? []).filter((fk) => referencesItself(plan, fk)).length;
  const built = after.i !== before.i - 1;
  const added = after.k !== before.k - selfKeys;
  if (!implied || built || added) {
    throw failure(
      `The ATTACH of ${displayName(plan.table)} would have ${implied ? '' : 'scanned the table, '}` +
        `${built ? 'built an index, ' : ''}${added ? 'added a constraint, ' : ''}` +
        'under the lock; not cutting over: the run rolls back.',
      'TableChanged',
    );
  }
  return true;
}

/** The attach path's cut-over: one short transaction under the lock budget, retried with backoff. */
export async function attachCutover(deps: Deps, plan: Plan, lockTimeoutMs: number): Promise<CutoverResult> {
  const { pool, log } = deps;
  await ownPlan(pool, plan.table, plan);
  const a = attachSqlOf(plan);
  const logger = stepLog(log, 'cutover', plan.table);
  const st = await runState(pool, plan.table);
  if (st?.cutover_done) {
    const keptKeys = await validateKeptKeys(deps, plan, lockTimeoutMs);
    return { alreadyDone: true, attempts: 0, lockWaitRetries: 0, lockHoldMs: 0, ...(keptKeys ? { keptKeys } : {}) };
  }
  const { lock, then } = splitLock(a.cutover);
  const across = acrossPartitions(plan, lockTimeoutMs);
  let scanSkipped = false;
  const swap = async (c: PoolClient) => {
    await lockUpFront(c, [lock], across.budget);
    await fence(c, plan.table);
    await checkAttachable(c, plan, a);
    scanSkipped = await attachWithoutWork(c, plan, () => runAll(c, then));
    // after the count: the kept keys add a NOT VALID constraint to every partition, the history one too
    await runAll(c, plan.sql.keptKeys?.add ?? []);
    await faultPoint('cutover', logger); // attached, not committed
    await recordCutover(c, plan.table, true);
  };
  const watch = qualified(plan.table);
  const { stats } = await withLockRetry(pool, logger, 'cutover', across.ms, swap, { ...across.opts, watch });
  // the COMMIT also unlinks the original primary key's index, after releasing the locks: commitMs grows with it
  const { holdMs: lockHoldMs, commitMs } = stats;
  logger.info({ lockHoldMs, commitMs, attempts: stats.attempts, scanSkipped }, 'attached as the history partition');
  const { attempts, lockWaitRetries } = stats;
  const keptKeys = await validateKeptKeys(deps, plan, lockTimeoutMs);
  return { alreadyDone: false, attempts, lockWaitRetries, lockHoldMs, scanSkipped, ...(keptKeys ? { keptKeys } : {}) };
}

/**
 * Undo of the attach cut-over: the original primary key's index built CONCURRENTLY on the history partition
 * first (writes go on), then one transaction: detach, the rows written since the cut-over moved back, the
 * keys and names back, and the snapshot guard unless no row was ever written outside the history partition (rows
 * moved back are partflow's row versions, and a row deleted there may still be seen by an older snapshot; the
 * history partition's rows are the application's, which a snapshot older than the swap sees as before). The
 * inbound foreign keys are validated after it.
 */
export async function attachSwapBack(
  { pool, log }: Deps,
  plan: Plan,
  lockTimeoutMs: number,
): Promise<{ swapped: boolean; lockHoldMs: number; movedRows: number; notRestored?: string[] }> {
  await ownPlan(pool, plan.table, plan);
  const a = attachSqlOf(plan);
  const logger = stepLog(log, 'swap-back', plan.table);
  const st = await runState(pool, plan.table);
  if (!st?.cutover_done) {
    // an attempt that swapped back and ended before its guard went
    await retireSnapshotGuard(pool, plan.table, a.dropGuard, logger, lockTimeoutMs);
    return { swapped: false, lockHoldMs: 0, movedRows: 0 };
  }
  const back = await pool.query(`SELECT indisvalid AS ok FROM pg_index WHERE indexrelid = to_regclass($1)`, [
    qualified({ schema: plan.table.schema, name: a.backIndex }),
  ]);
  if (!back.rows[0]?.ok) {
    try {
      await buildConcurrently(pool, a.history, a.backIndex, a.buildBack, (c) => undoFence(c, plan.table));
    } catch (err) {
      if ((err as { code?: string }).code === '23505') {
        throw failure(
          `The rows of ${displayName(plan.table)} no longer have a unique (${plan.sourceKey.join(', ')}), which its ` +
            `original primary key needs: ${(err as Error).message}; the table stays partitioned.`,
          'TableChanged',
        );
      }
      throw err;
    }
  }
  const { lock, then } = splitLock(a.swapBack);
  const across = acrossPartitions(plan, lockTimeoutMs);
  let movedRows = 0;
  let written = false;
  const swap = async (c: PoolClient) => {
    await lockUpFront(c, [lock], across.budget);
    await undoFence(c, plan.table);
    // the rows the swap moves back, and whether the guard is needed, in one round trip under the lock: not the rows
    // left to move, since a row deleted (or moved back under the cut-off) after an older snapshot is still seen by
    // it (helper-30); VACUUM frees no tuple a live snapshot sees, so a partition with no page holds none, unless
    // old_snapshot_threshold (13 to 16) lets it (helper-31): then always
    const r = await c.query(
      `SELECT (SELECT count(*) FROM ${qualified(plan.table)} WHERE tableoid <> to_regclass($2))::bigint AS n,
              (SELECT coalesce(sum(pg_relation_size(r.relid)), 0) > 0
                 FROM pg_partition_tree(to_regclass($1)) r
                WHERE r.isleaf AND r.relid <> to_regclass($2))
              OR coalesce(current_setting('old_snapshot_threshold', true), '-1') <> '-1' AS w`,
      [qualified(plan.table), qualified(a.history)],
    );
    movedRows = Number(r.rows[0].n);
    written = r.rows[0].w;
    // the swap back and the guard in one round trip
    await runAll(c, [...then, ...(written ? (a.swapBackGuard ?? []) : [])]);
    await recordCutover(c, plan.table, false);
  };
  const watch = qualified(plan.table);
  const { stats } = await withLockRetry(pool, logger, 'swap back', across.ms, swap, { ...across.opts, watch });
  const lockHoldMs = stats.holdMs;
  const notRestored = await validateInbound({ pool, log }, plan, lockTimeoutMs);
  logger.info({ lockHoldMs, movedRows, guarded: written, notRestored }, 'detached: the table is a plain table again');
  await retireSnapshotGuard(pool, plan.table, a.dropGuard, logger, lockTimeoutMs);
  return { swapped: true, lockHoldMs, movedRows, notRestored };
}

/**
 * Read-only, when a rollback is requested in the window: why the table cannot be put back now, or null. Since
 * the cut-over the primary key is (key, partition column), so the application may have written a key twice
 * (with two dates); the original primary key could not hold both. Named, so the operator can resolve it.
 */
export async function attachRollbackBlocker({ pool }: Deps, plan: Plan): Promise<string | null> {
  await ownPlan(pool, plan.table, plan);
  const a = attachSqlOf(plan);
  try {
    const st = await runState(pool, plan.table);
    if (st?.run_state !== 'active' || !st.cutover_done) return null;
    const now = await relOid(pool, plan.table);
    const pubs = now ? await publicationsChanged(pool, plan, now.oid) : null;
    if (pubs) return pubs;
    const key = plan.sourceKey.map((k) => quoteIdent(k));
    const cols = plan.sourceKey.join(', ');
    const same = (x: string, y: string) => key.map((k) => `${x}.${k} = ${y}.${k}`).join(' AND ');
    const t = qualified(plan.table);
    const r = await pool.query(
      `SELECT concat_ws(', ', ${key.map((k) => `p.${k}::text`).join(', ')}) AS k FROM ${t} p
        WHERE p.tableoid <> to_regclass($1)
          AND (EXISTS (SELECT FROM ${qualified(a.history)} h WHERE ${same('h', 'p')})
               OR EXISTS (SELECT FROM ${t} o WHERE o.tableoid <> to_regclass($1) AND ${same('o', 'p')}
                           AND o.ctid <> p.ctid))
        LIMIT 5`,
      [qualified(a.history)],
    );
    if (!r.rowCount) return null;
    return (
      `A rollback cannot put ${displayName(plan.table)} back: its original primary key (${cols}) would hold ` +
      `(${r.rows.map((x) => x.k).join('), (')}) twice, written since the cut-over with another ` +
      `${plan.partitionColumn}; delete or change one of each, then signal rollback again, or finalize.`
    );
  } catch (err) {
    classify(err, 'rollback check');
  }
}
