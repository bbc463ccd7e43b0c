/**
 * The DDL steps of a fix and their undo, each running the statements `fixSteps` built (the same the dry run
 * listed), each looking at the catalog first: supporting index, constraint NOT VALID, VALIDATE.
 */
import { DEFAULT_LOCK_TIMEOUT_MS, lockAcross, lockPhaseBudgetMs } from '../../src/locks';
import type { Pool, PoolClient } from 'pg';
import { describeFix, Fix, ForeignKeyFix } from '../../src/constraints';
import { failure } from '../../src/failures';
import { dropNotNullSql, FixInfo, fixSteps, lockSql, OnTable } from '../../src/fixSteps';
import { qualified, TableRef } from '../../src/ident';
import { classify, lockUpFront, withHeartbeat, withLockRetry } from '../runtime/db';
import type { Deps } from '../runtime/deps';
import { fixFence, fixLog, lockedByFix } from '../runtime/fixRuns';
import { buildAndAttach } from '../runtime/indexBuilder';

export interface StepResult {
  changed: boolean;
  rows?: number;
  lockWaitRetries: number;
  note?: string;
}

async function hasConstraint(c: PoolClient | Pool, t: TableRef, name: string): Promise<{ validated: boolean } | null> {
  const r = await c.query(`SELECT convalidated FROM pg_constraint WHERE conrelid = to_regclass($1) AND conname = $2`, [
    qualified(t),
    name,
  ]);
  return r.rowCount ? { validated: r.rows[0].convalidated } : null;
}

/**
 * The lock timeout and attempts of a statement on `table`: on a partitioned parent PostgreSQL visits every
 * partition while it holds the lock, so that hold comes out of the wait it may queue writers for.
 */
function lockFor(fix: Fix, info: FixInfo, table: TableRef, lockTimeoutMs: number) {
  const across = info.relkind === 'p' && qualified(table) === qualified(fix.table) ? info.partitions.length : 0;
  const { ms, maxAttempts } = lockAcross(lockTimeoutMs, across);
  // the table (and its partitions) and, for a foreign key, the referenced table
  const budget = lockPhaseBudgetMs(ms, 2, info.partitions.length);
  return { ms, budget, opts: { ...lockedByFix(fix), maxAttempts } };
}

/** CREATE INDEX CONCURRENTLY (per partition, then attached, on a partitioned table); invalid leftovers are rebuilt. */
export async function createSupportingIndex(
  { pool, log }: Deps,
  fix: ForeignKeyFix,
  info: FixInfo,
  // absent in the histories of runs started before the run's own budget reached this step
  lockTimeoutMs = DEFAULT_LOCK_TIMEOUT_MS,
): Promise<StepResult> {
  const logger = fixLog(log, 'index', fix);
  const index = fixSteps(fix, { ...info, hasIndex: false }).index!;
  const fenced = (sql: string) => async (c: PoolClient) => {
    await fixFence(c);
    await c.query(sql);
  };
  try {
    const parent = index.parent;
    if (parent)
      await withLockRetry(pool, logger, 'index parent', lockTimeoutMs, fenced(parent.sql), {
        relations: [qualified(fix.table)],
      });
    const parentIndex = parent ? { schema: fix.table.schema, name: parent.name } : null;
    for (const e of index.each) await buildAndAttach(pool, logger, e, parentIndex, lockTimeoutMs);
    const name = parent?.name ?? index.each[0].name;
    logger.info({ index: name }, 'supporting index ready');
    return { changed: true, lockWaitRetries: 0, note: `created index ${name}` };
  } catch (err) {
    classify(err, `index for ${fix.name}`);
  }
}

export async function dropSupportingIndex(
  { pool, log }: Deps,
  fix: ForeignKeyFix,
  info: FixInfo,
  lockTimeoutMs = DEFAULT_LOCK_TIMEOUT_MS,
): Promise<StepResult> {
  const index = fixSteps(fix, { ...info, hasIndex: false }).index!;
  try {
    const [first, ...rest] = index.drop;
    // dropping the parent index drops the attached partition indexes with it (brief lock on the parent)
    if (index.parent)
      await withLockRetry(pool, fixLog(log, 'drop index', fix), 'drop index', lockTimeoutMs, (c) => c.query(first), {
        relations: [qualified(fix.table)],
      });
    else await pool.query(first);
    for (const sql of rest) await pool.query(sql);
    return { changed: true, lockWaitRetries: 0 };
  } catch (err) {
    classify(err, `drop index for ${fix.name}`);
  }
}

/** ADD ... NOT VALID: from here on new writes are checked; existing rows are not scanned. */
export async function addConstraintNotValid(
  { pool, log }: Deps,
  fix: Fix,
  info: FixInfo,
  lockTimeoutMs: number,
): Promise<StepResult> {
  const logger = fixLog(log, 'constraint', fix);
  let retries = 0;
  try {
    for (const { table, sql, locks } of fixSteps(fix, info).addNotValid) {
      if (await hasConstraint(pool, table, fix.name)) continue;
      const lock = lockFor(fix, info, table, lockTimeoutMs);
      const add = async (c: PoolClient) => {
        await fixFence(c);
        await lockUpFront(c, locks, lock.budget);
        return c.query(sql);
      };
      const { stats } = await withLockRetry(pool, logger, `add ${fix.name}`, lock.ms, add, lock.opts);
      retries += stats.lockWaitRetries;
    }
    logger.info({ lockWaitRetries: retries }, 'constraint added NOT VALID');
    return { changed: true, lockWaitRetries: retries };
  } catch (err) {
    classify(err, `add ${fix.name}`);
  }
}

/** Undo of addConstraintNotValid (and of the parent constraint of a partitioned table). */
export async function dropConstraint(
  { pool, log }: Deps,
  fixNo: number,
  fix: Fix,
  info: FixInfo,
  lockTimeoutMs: number,
): Promise<StepResult> {
  let retries = 0;
  void fixNo;
  for (const { table, sql, locks } of fixSteps(fix, info).dropConstraint) {
    const lock = lockFor(fix, info, table, lockTimeoutMs);
    const drop = async (c: PoolClient) => {
      await lockUpFront(c, locks, lock.budget);
      return c.query(sql);
    };
    const logger = fixLog(log, 'drop constraint', fix);
    const { stats } = await withLockRetry(pool, logger, `drop ${fix.name}`, lock.ms, drop, lock.opts);
    retries += stats.lockWaitRetries;
  }
  return { changed: true, lockWaitRetries: retries };
}

/** VALIDATE (writes go on); for NOT NULL then SET NOT NULL, proven by the check, and the check dropped. */
export async function validateConstraint(
  { pool, log }: Deps,
  fix: Fix,
  info: FixInfo,
  lockTimeoutMs: number,
): Promise<StepResult> {
  const logger = fixLog(log, 'validate', fix);
  let retries = 0;
  const run = async ({ what, table, sql, locks }: OnTable & { what: string }) => {
    const lock = lockFor(fix, info, table, lockTimeoutMs);
    const validate = async (c: PoolClient) => {
      await fixFence(c);
      await lockUpFront(c, locks, lock.budget);
      await c.query('SET LOCAL statement_timeout = 0');
      return c.query(sql);
    };
    const { stats } = await withHeartbeat(
      () => ({ step: what }),
      () => withLockRetry(pool, logger, what, lock.ms, validate, lock.opts),
    );
    retries += stats.lockWaitRetries;
  };
  try {
    const steps = fixSteps(fix, info).validate;
    // NOT NULL: all three statements while the check exists (a retry after the last one finds nothing to do)
    if (fix.kind === 'notNull' && (await hasConstraint(pool, fix.table, fix.name))) {
      for (const s of steps) await run(s);
    }
    for (const s of fix.kind === 'foreignKey' ? steps : []) {
      const h = await hasConstraint(pool, s.table, fix.name);
      if (s.only === 'if-unvalidated' ? h && !h.validated : !h) await run(s);
    }
    logger.info({ lockWaitRetries: retries }, 'validated');
    return { changed: true, lockWaitRetries: retries };
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === '23503' || code === '23514') {
      throw failure(
        `${describeFix(fix)}: rows violating it appeared during the run (${(err as Error).message}); nothing is kept.`,
        'ViolationsAppeared',
      );
    }
    classify(err, `validate ${fix.name}`);
  }
}

/** Undo of validate for NOT NULL: the column allows NULL again. */
export async function dropNotNull(
  { pool, log }: Deps,
  fix: Fix,
  lockTimeoutMs: number,
  // absent in histories from before: the table's partitions are then not counted in the lock budget
  info?: FixInfo,
): Promise<StepResult> {
  if (fix.kind !== 'notNull') return { changed: false, lockWaitRetries: 0 };
  const sql = dropNotNullSql(fix);
  try {
    const lock = info
      ? lockFor(fix, info, fix.table, lockTimeoutMs)
      : { ms: lockTimeoutMs, budget: lockPhaseBudgetMs(lockTimeoutMs, 2), opts: lockedByFix(fix) };
    const drop = async (c: PoolClient) => {
      await lockUpFront(c, [lockSql(fix.table, 'ACCESS EXCLUSIVE')], lock.budget);
      return c.query(sql);
    };
    const logger = fixLog(log, 'undo', fix);
    const { stats } = await withLockRetry(pool, logger, 'drop not null', lock.ms, drop, lock.opts);
    return { changed: true, lockWaitRetries: stats.lockWaitRetries };
  } catch (err) {
    classify(err, `undo NOT NULL on ${fix.column}`);
  }
}
