/**
 * The attach path's preparation (src/plan/attach.ts has the statements): the unique index built
 * CONCURRENTLY, the CHECK added NOT VALID and validated (the cut-over and the swap back are in
 * attachCutover.ts). Each is idempotent (it looks before it acts) and fenced by the run: a forward
 * step by `fence`, an undo by `undoFence`.
 */
import type { Pool } from 'pg';
import { TableInfo } from '../../src/catalog';
import { failure } from '../../src/failures';
import { displayName, qualified, quoteIdent } from '../../src/ident';
import type { PartitionOptions } from '../../src/input';
import type { PartitionColumnType } from '../../src/partitions';
import { Plan } from '../../src/plan';
import { attachCutoff, beyondSql, type AttachSql } from '../../src/plan/attach';
import { classify, inTransaction, withHeartbeat, withLockRetry } from '../runtime/db';
import { Deps, relOid, stepLog } from '../runtime/deps';
import { faultPoint } from '../runtime/faults';
import { buildConcurrently } from '../runtime/indexBuilder';
import { fence, ownPlan, undoFence } from './run';

/** Read-only, in preflight: the rows past the cut-off (one scan) and the NOT VALID CHECK constraints. */
export async function readAttachFacts(
  pool: Pool,
  info: TableInfo,
  opts: PartitionOptions,
): Promise<NonNullable<TableInfo['attach']>> {
  const pc = info.partitionColumn;
  let beyond = 0;
  let newest: string | null = null;
  if (pc && ['timestamptz', 'timestamp', 'date'].includes(pc.type) && pc.notNull) {
    const cutoff = attachCutoff(opts, info.currentMonth);
    const sql = beyondSql(info.table, pc.name, cutoff, pc.type as PartitionColumnType, opts.timeZone);
    const r = await pool.query(sql);
    beyond = Number(r.rows[0].n);
    newest = r.rows[0].newest;
  }
  const checks = await pool.query(
    `SELECT conname FROM pg_constraint WHERE conrelid = $1 AND contype = 'c' AND NOT convalidated ORDER BY 1`,
    [info.oid],
  );
  // an earlier run's CHECK or indexes (a dead run not cleaned up): this run's would collide with them
  const t = info.table.name;
  const left = await pool.query(
    `SELECT 'CHECK ' || conname AS x FROM pg_constraint WHERE conrelid = $1 AND conname = $2
     UNION ALL SELECT 'index ' || relname FROM pg_class
      WHERE relnamespace = to_regnamespace($3) AND relname IN ($4, $5)`,
    [info.oid, `${t}_pfa_bound`, quoteIdent(info.table.schema), `${t}_pfa_key`, `${t}_pfa_back`],
  );
  const pk = await pool.query(
    `SELECT pg_relation_size(conindid)::bigint AS b FROM pg_constraint WHERE conrelid = $1 AND contype = 'p'`,
    [info.oid],
  );
  return {
    primaryKeyBytes: Number(pk.rows[0]?.b ?? 0),
    beyond,
    newest,
    notValidChecks: checks.rows.map((r) => r.conname as string),
    leftovers: left.rows.map((r) => r.x as string),
  };
}

export function attachSqlOf(plan: Plan): AttachSql {
  const a = plan.sql.attach;
  if (!a) throw new Error(`the plan of ${displayName(plan.table)} has no attach path`);
  return a;
}

/** Step "attachKey": the unique index on (primary key, partition column), CONCURRENTLY; writes go on. */
export async function buildAttachKey({ pool, log }: Deps, plan: Plan): Promise<{ built: boolean }> {
  await ownPlan(pool, plan.table, plan);
  const a = attachSqlOf(plan);
  const logger = stepLog(log, 'attach-key', plan.table);
  const index = qualified({ schema: plan.table.schema, name: a.keyIndex });
  const valid = await pool.query(
    `SELECT indisvalid AND indisready AS ok FROM pg_index WHERE indexrelid = to_regclass($1)`,
    [index],
  );
  if (valid.rows[0]?.ok) return { built: false };
  try {
    await buildConcurrently(pool, plan.table, a.keyIndex, a.buildKey, (c) => fence(c, plan.table));
  } catch (err) {
    if ((err as { code?: string }).code === '23505') {
      throw failure(
        `${displayName(plan.table)} holds two rows with the same (${plan.shadowKey.join(', ')}), which the ` +
          `partitioned table's primary key cannot: ${(err as Error).message}`,
        'TableChanged',
      );
    }
    classify(err, 'attach key');
  }
  await faultPoint('attach-key', logger);
  logger.info({ index: a.keyIndex }, 'unique index built');
  return { built: true };
}

/** Undo of "attachKey" (and of the swap back's index): DROP INDEX CONCURRENTLY, after the undo fence. */
export async function dropAttachKey({ pool, log }: Deps, plan: Plan): Promise<void> {
  await ownPlan(pool, plan.table, plan);
  const a = attachSqlOf(plan);
  await inTransaction(pool, (c) => undoFence(c, plan.table));
  for (const sql of [a.dropKey, a.dropBack]) await pool.query(sql);
  stepLog(log, 'drop-attach-key', plan.table).info({ index: a.keyIndex }, 'unique index dropped');
}

/**
 * Step "attachCheck": the rows past the cut-off counted (the CHECK would refuse them: the run fails with
 * their number before adding it), the CHECK added NOT VALID (a moment of ACCESS EXCLUSIVE, under the lock
 * budget), then validated: one scan under SHARE UPDATE EXCLUSIVE, writes go on.
 */
export async function addBoundCheck(
  { pool, log }: Deps,
  plan: Plan,
  lockTimeoutMs: number,
): Promise<{ validateMs: number }> {
  await ownPlan(pool, plan.table, plan);
  const a = attachSqlOf(plan);
  const logger = stepLog(log, 'attach-check', plan.table);
  const t = displayName(plan.table);
  const state = async () =>
    (
      await pool.query(`SELECT convalidated FROM pg_constraint WHERE conrelid = to_regclass($1) AND conname = $2`, [
        qualified(plan.table),
        a.checkName,
      ])
    ).rows[0]?.convalidated as boolean | undefined;
  let validated = await state();
  if (validated === undefined) {
    const beyond = (await pool.query(a.beyond)).rows[0];
    if (Number(beyond.n) > 0) {
      throw failure(
        `${beyond.n} row(s) of ${t} are now dated on or after the cut-off ${a.cutoff} (the newest ${beyond.newest}), ` +
          'written since preflight; the history partition cannot hold them: the run rolls back; start it again ' +
          'with a later "cutoffMonth", or use "method": "copy".',
        'TableChanged',
      );
    }
    await withLockRetry(pool, logger, 'attach check', lockTimeoutMs, async (c) => {
      await fence(c, plan.table);
      await c.query(a.addCheck);
    });
    validated = false;
  }
  const started = Date.now();
  if (!validated) {
    try {
      await withHeartbeat(
        () => ({ step: 'attach check', validating: a.checkName }),
        () =>
          withLockRetry(pool, logger, 'validate attach check', lockTimeoutMs, async (c) => {
            await fence(c, plan.table);
            await c.query(a.validateCheck);
          }),
      );
    } catch (err) {
      if ((err as { code?: string }).code === '23514') {
        throw failure(
          `A row of ${t} is dated on or after the cut-off ${a.cutoff} (${(err as Error).message}); the run rolls ` +
            'back; start it again with a later "cutoffMonth", or use "method": "copy".',
          'TableChanged',
        );
      }
      throw err;
    }
  }
  await faultPoint('attach-check', logger);
  const validateMs = Date.now() - started;
  logger.info({ check: a.checkName, validateMs }, 'CHECK validated');
  return { validateMs };
}

/** Undo of "attachCheck": drop the CHECK (a moment of ACCESS EXCLUSIVE, under the lock budget). */
export async function dropBoundCheck({ pool, log }: Deps, plan: Plan, lockTimeoutMs: number): Promise<void> {
  await ownPlan(pool, plan.table, plan);
  const a = attachSqlOf(plan);
  const logger = stepLog(log, 'drop-attach-check', plan.table);
  // after a swap back the table has its name again and no CHECK; before the cut-over it has the CHECK
  const src = await inTransaction(pool, (c) => relOid(c, plan.table));
  if (!src || src.oid !== plan.tableOid) return;
  await withLockRetry(pool, logger, 'drop attach check', lockTimeoutMs, async (c) => {
    await undoFence(c, plan.table);
    await c.query(a.dropCheck);
  });
}
