/**
 * The attach path's executors (src/plan/attach.ts has their statements): the unique index built
 * CONCURRENTLY, the CHECK added NOT VALID and validated, the cut-over that attaches the table as the history
 * partition, and the swap back. Each is idempotent (it looks before it acts) and fenced by the run: a forward
 * step by `fence`, an undo by `undoFence`.
 */
import type { Pool, PoolClient } from 'pg';
import { referencesItself, TableInfo } from '../../src/catalog';
import { failure } from '../../src/failures';
import { displayName, qualified, quoteIdent } from '../../src/ident';
import type { PartitionOptions } from '../../src/input';
import type { PartitionColumnType } from '../../src/partitions';
import { Plan, shapeDifferences, splitLock } from '../../src/plan';
import { attachCutoff, beyondSql, type AttachSql } from '../../src/plan/attach';
import { viewDifferences } from '../../src/plan/views';
import { classify, inTransaction, lockUpFront, runAll, withHeartbeat, withLockRetry } from '../runtime/db';
import { Deps, relOid, stepLog } from '../runtime/deps';
import { faultPoint } from '../runtime/faults';
import { buildConcurrently } from '../runtime/indexBuilder';
import { validateInbound, type CutoverResult } from './cutover';
import { publicationsChanged } from './rollbackLoss';
import { acrossPartitions, fence, ownPlan, RUNS, runState, undoFence } from './run';
import { viewsNow } from './views';

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

function attachSql(plan: Plan): AttachSql {
  const a = plan.sql.attach;
  if (!a) throw new Error(`the plan of ${displayName(plan.table)} has no attach path`);
  return a;
}

/** Step "attachKey": the unique index on (primary key, partition column), CONCURRENTLY; writes go on. */
export async function buildAttachKey({ pool, log }: Deps, plan: Plan): Promise<{ built: boolean }> {
  await ownPlan(pool, plan.table, plan);
  const a = attachSql(plan);
  const l = stepLog(log, 'attach-key', plan.table);
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
  await faultPoint('attach-key', l);
  l.info({ index: a.keyIndex }, 'unique index built');
  return { built: true };
}

/** Undo of "attachKey" (and of the swap back's index): DROP INDEX CONCURRENTLY, after the undo fence. */
export async function dropAttachKey({ pool, log }: Deps, plan: Plan): Promise<void> {
  await ownPlan(pool, plan.table, plan);
  const a = attachSql(plan);
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
  const a = attachSql(plan);
  const l = stepLog(log, 'attach-check', plan.table);
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
    await withLockRetry(pool, l, 'attach check', lockTimeoutMs, async (c) => {
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
          withLockRetry(pool, l, 'validate attach check', lockTimeoutMs, async (c) => {
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
  await faultPoint('attach-check', l);
  const validateMs = Date.now() - started;
  l.info({ check: a.checkName, validateMs }, 'CHECK validated');
  return { validateMs };
}

/** Undo of "attachCheck": drop the CHECK (a moment of ACCESS EXCLUSIVE, under the lock budget). */
export async function dropBoundCheck({ pool, log }: Deps, plan: Plan, lockTimeoutMs: number): Promise<void> {
  await ownPlan(pool, plan.table, plan);
  const a = attachSql(plan);
  const l = stepLog(log, 'drop-attach-check', plan.table);
  // after a swap back the table has its name again and no CHECK; before the cut-over it has the CHECK
  const src = await inTransaction(pool, (c) => relOid(c, plan.table));
  if (!src || src.oid !== plan.tableOid) return;
  await withLockRetry(pool, l, 'drop attach check', lockTimeoutMs, async (c) => {
    await undoFence(c, plan.table);
    await c.query(a.dropCheck);
  });
}

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
  if (plan.views) {
    const vdiff = viewDifferences(plan.views, await viewsNow(c, plan.tableOid));
    if (vdiff.length) {
      throw failure(
        `The views that read ${t} changed after the plan was made (${vdiff.join('; ')}); not cutting over.`,
        'TableChanged',
      );
    }
  }
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
export async function attachCutover({ pool, log }: Deps, plan: Plan, lockTimeoutMs: number): Promise<CutoverResult> {
  await ownPlan(pool, plan.table, plan);
  const a = attachSql(plan);
  const l = stepLog(log, 'cutover', plan.table);
  const st = await runState(pool, plan.table);
  if (st?.cutover_done) return { alreadyDone: true, attempts: 0, lockWaitRetries: 0, lockHoldMs: 0 };
  const { lock, then } = splitLock(a.cutover);
  const across = acrossPartitions(plan, lockTimeoutMs);
  let lockedAt = 0;
  let scanSkipped = false;
  const swap = async (c: PoolClient) => {
    await lockUpFront(c, [lock], across.budget);
    lockedAt = Date.now();
    await fence(c, plan.table);
    await checkAttachable(c, plan, a);
    scanSkipped = await attachWithoutWork(c, plan, () => runAll(c, then));
    await faultPoint('cutover', l); // attached, not committed
    await c.query(
      `UPDATE ${RUNS} SET cutover_done = true, updated_at = now() WHERE table_schema = $1 AND table_name = $2`,
      [plan.table.schema, plan.table.name],
    );
  };
  const { stats } = await withLockRetry(pool, l, 'cutover', across.ms, swap, across.opts);
  const lockHoldMs = Date.now() - lockedAt;
  l.info({ lockHoldMs, attempts: stats.attempts, scanSkipped }, 'attached as the history partition');
  const { attempts, lockWaitRetries } = stats;
  return { alreadyDone: false, attempts, lockWaitRetries, lockHoldMs, scanSkipped };
}

/**
 * Undo of the attach cut-over: the original primary key's index built CONCURRENTLY on the history partition
 * first (writes go on), then one transaction: detach, the rows written since the cut-over moved back, the
 * keys and names back. The inbound foreign keys are validated after it.
 */
export async function attachSwapBack(
  { pool, log }: Deps,
  plan: Plan,
  lockTimeoutMs: number,
): Promise<{ swapped: boolean; lockHoldMs: number; movedRows: number; notRestored?: string[] }> {
  await ownPlan(pool, plan.table, plan);
  const a = attachSql(plan);
  const l = stepLog(log, 'swap-back', plan.table);
  const st = await runState(pool, plan.table);
  if (!st?.cutover_done) return { swapped: false, lockHoldMs: 0, movedRows: 0 };
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
  let lockedAt = 0;
  let movedRows = 0;
  const swap = async (c: PoolClient) => {
    await lockUpFront(c, [lock], across.budget);
    lockedAt = Date.now();
    await undoFence(c, plan.table);
    movedRows = Number(
      (
        await c.query(`SELECT count(*)::bigint AS n FROM ${qualified(plan.table)} WHERE tableoid <> to_regclass($1)`, [
          qualified(a.history),
        ])
      ).rows[0].n,
    );
    await runAll(c, then);
    await c.query(
      `UPDATE ${RUNS} SET cutover_done = false, updated_at = now() WHERE table_schema = $1 AND table_name = $2`,
      [plan.table.schema, plan.table.name],
    );
  };
  await withLockRetry(pool, l, 'swap back', across.ms, swap, across.opts);
  const lockHoldMs = Date.now() - lockedAt;
  const notRestored = await validateInbound({ pool, log }, plan, lockTimeoutMs);
  l.info({ lockHoldMs, movedRows, notRestored }, 'detached: the table is a plain table again');
  return { swapped: true, lockHoldMs, movedRows, notRestored };
}

/**
 * Read-only, when a rollback is requested in the window: why the table cannot be put back now, or null. Since
 * the cut-over the primary key is (key, partition column), so the application may have written a key twice
 * (with two dates); the original primary key could not hold both. Named, so the operator can resolve it.
 */
export async function attachRollbackBlocker({ pool }: Deps, plan: Plan): Promise<string | null> {
  await ownPlan(pool, plan.table, plan);
  const a = attachSql(plan);
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
