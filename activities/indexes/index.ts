/**
 * Activities of `createIndexes`: the checks (nothing built before all indexes pass them), the parent index,
 * one partition's index per call (built CONCURRENTLY, progress from pg_stat_progress_create_index, then
 * attached), and the undo. The run's fence is fixConstraints' (partflow.fix_runs): forward steps commit only
 * while the run is active.
 */
import type { PoolClient } from 'pg';
import { failure } from '../src/failures';
import { displayName, InputError, qualified, TableRef } from '../src/ident';
import { describeIndex, IndexBuild, indexBuild, IndexOptions, indexShape, IndexSpec } from '../src/indexes';
import type { Logger } from '../src/logger';
import { classify, inTransaction, withLockRetry } from './runtime/db';
import { buildAndAttach } from './runtime/indexBuilder';
import { fixFence } from './runtime/fixRuns';
import type { Deps } from './runtime/deps';
import { relOid, workflowId } from './runtime/deps';

export interface IndexPlan {
  spec: IndexSpec;
  description: string;
  /** the index is there and valid: nothing to do (and nothing to undo) */
  exists: boolean;
  build: IndexBuild;
  notes: string[];
  /** the statements, in order, for the dry run */
  sql: string[];
}

const indexLog = (log: Logger, step: string, x: IndexSpec) =>
  log.child({ step, index: x.name, table: displayName(x.table), workflowId: workflowId() });

async function partitionsOf(c: PoolClient, oid: number): Promise<(TableRef & { relkind: string; oid: number })[]> {
  const r = await c.query(
    `SELECT n.nspname AS schema, c.relname AS name, c.relkind, c.oid::int AS oid FROM pg_inherits i
       JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE i.inhparent = $1 ORDER BY c.relname`,
    [oid],
  );
  return r.rows;
}

/** The index named `name` in `schema`: on which table, valid or not; or another relation of that name. */
async function existing(c: PoolClient, schema: string, name: string) {
  const r = await c.query(
    `SELECT c.relkind, i.indisvalid AS valid, i.indrelid::regclass::text AS on_table, i.indrelid::int AS table_oid,
            pg_get_indexdef(c.oid) AS def
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_index i ON i.indexrelid = c.oid
      WHERE n.nspname = $1 AND c.relname = $2`,
    [schema, name],
  );
  return r.rows[0] as
    { relkind: string; valid: boolean | null; on_table: string; table_oid: number; def: string } | undefined;
}

/**
 * PostgreSQL checks the definition on an empty temporary copy of the table, in a transaction rolled back:
 * columns, expressions, a predicate's functions (IMMUTABLE only), no subquery. The statement goes through the
 * extended protocol, so the operator's predicate text can never be more than one statement, and what comes back
 * is PostgreSQL's own deparsed predicate: the only form of it that the real build runs. Nothing of the real
 * table is touched.
 */
async function checkDefinition(c: PoolClient, x: IndexSpec, at: string): Promise<string | null> {
  const shape = indexShape(x);
  await c.query('SAVEPOINT pf_check');
  try {
    await c.query(`CREATE TEMP TABLE pf_index_check (LIKE ${qualified(x.table)})`);
    await c.query({
      text: `CREATE ${x.unique ? 'UNIQUE ' : ''}INDEX pf_index_check_idx ON pg_temp.pf_index_check ${shape.definition}`,
      queryMode: 'extended',
    } as never);
    if (!x.where) return null;
    const r = await c.query(
      `SELECT pg_get_expr(i.indpred, i.indrelid) AS pred FROM pg_index i
        WHERE i.indexrelid = 'pg_temp.pf_index_check_idx'::regclass`,
    );
    const pred = r.rows[0].pred as string;
    // a whole-row reference or the row type would name the temporary copy, not the table: refused
    if (/pf_index_check/.test(pred))
      throw new InputError(`${at}.where refers to the table's whole row or row type; name its columns instead.`);
    return pred;
  } catch (err) {
    if (err instanceof InputError) throw err;
    const e = err as { code?: string; message?: string };
    if (e.code === '42P17' && x.where) {
      throw new InputError(
        `${at}: the predicate "${x.where}" of ${x.name} calls a function that is not IMMUTABLE (now() and ` +
          'current_date are not: an index predicate must mean the same at every moment); use a plain index on ' +
          `the column instead (${x.columns.map((col) => col.name).join(', ')}), which serves "< now()" queries ` +
          "too, or a predicate on a fixed date (e.g. expires_at < '2027-01-01') rebuilt under a new name when " +
          'the date is near.',
      );
    }
    if (e.code === '42601' && x.where)
      throw new InputError(`${at}.where must be one SQL condition; PostgreSQL cannot parse it as one: ${e.message}.`);
    throw new InputError(`${at}: PostgreSQL refuses the definition of ${x.name}: ${e.message}.`);
  } finally {
    await c.query('ROLLBACK TO SAVEPOINT pf_check');
  }
}

/** A unique index on a partitioned table is enforced per partition: it must include the partition key. */
async function checkUnique(c: PoolClient, x: IndexSpec, oid: number, at: string): Promise<void> {
  const r = await c.query(
    `SELECT coalesce(array_agg(a.attname::text ORDER BY k.n) FILTER (WHERE a.attname IS NOT NULL), '{}') AS cols,
            bool_or(k.attnum = 0) AS expression
       FROM pg_partitioned_table p, unnest(p.partattrs) WITH ORDINALITY k(attnum, n)
       LEFT JOIN pg_attribute a ON a.attrelid = $1 AND a.attnum = k.attnum
      WHERE p.partrelid = $1`,
    [oid],
  );
  const key: string[] = r.rows[0]?.cols ?? [];
  const missing = key.filter((k) => !x.columns.some((col) => col.name === k));
  if (r.rows[0]?.expression || missing.length) {
    throw new InputError(
      `${at}: a unique index on ${displayName(x.table)} must include its partition key ` +
        `(${key.join(', ') || 'an expression'}): PostgreSQL enforces uniqueness within each partition only; ` +
        'add the key to "columns", or enforce the uniqueness on a table that is not partitioned.',
    );
  }
}

async function planOne(c: PoolClient, x: IndexSpec, at: string): Promise<IndexPlan> {
  const t = await relOid(c, x.table);
  if (!t) throw new InputError(`${at}: table ${displayName(x.table)} does not exist.`);
  if (!['r', 'p'].includes(t.relkind)) throw new InputError(`${at}: ${displayName(x.table)} is not a table.`);
  const parts = t.relkind === 'p' ? await partitionsOf(c, t.oid) : [];
  const odd = parts.find((p) => p.relkind !== 'r');
  if (odd) {
    throw new InputError(
      `${at}: partition ${displayName(odd)} of ${displayName(x.table)} is ` +
        `${odd.relkind === 'p' ? 'itself partitioned' : 'not a plain table'}; ` +
        'partflow builds indexes on one level of plain partitions only: build this one by hand.',
    );
  }
  if (x.unique && t.relkind === 'p') await checkUnique(c, x, t.oid, at);
  // from here on the predicate is PostgreSQL's deparsed form, never the operator's text
  x = { ...x, where: await checkDefinition(c, x, at) };
  const ex = await existing(c, x.table.schema, x.name);
  const notes: string[] = [];
  if (ex && (ex.relkind === 'r' || ex.relkind === 'p' || !ex.on_table || ex.table_oid !== t.oid)) {
    throw new InputError(
      `${at}: the name ${x.table.schema}.${x.name} is taken by ` +
        `${ex.on_table ? `an index on ${ex.on_table}` : 'another relation'}; choose another "name".`,
    );
  }
  const build = indexBuild(
    indexShape(x),
    t.relkind,
    parts.map(({ schema, name }) => ({ schema, name })),
  );
  for (const [i, e] of build.each.entries()) {
    const other = e.name === x.name ? undefined : await existing(c, e.table.schema, e.name);
    if (other && other.on_table && other.table_oid !== (parts[i]?.oid ?? t.oid))
      throw new InputError(`${at}: the partition index name ${e.name} is taken by an index on ${other.on_table}.`);
  }
  const done = !!ex && ex.valid === true;
  if (done) notes.push(`already there and valid: ${ex.def}`);
  else if (ex) notes.push(`an unfinished build of ${x.name} is there (INVALID): partflow finishes it`);
  const sql = done
    ? []
    : [
        ...(build.parent ? [build.parent.sql] : []),
        ...build.each.flatMap((e) => [e.sql, ...(e.attach ? [e.attach] : [])]),
      ];
  return { spec: x, description: describeIndex(x), exists: done, build, notes, sql };
}

/** Checks every index before any is built: a refusal changes nothing. */
export async function planIndexes({ pool }: Deps, opts: IndexOptions): Promise<IndexPlan[]> {
  try {
    return await inTransaction(
      pool,
      async (c) => {
        const plans: IndexPlan[] = [];
        for (const [i, x] of opts.indexes.entries()) plans.push(await planOne(c, x, `indexes[${i}]`));
        return plans;
      },
      {},
    );
  } catch (err) {
    classify(err, 'index checks');
  }
}

/** The index ON ONLY the parent: instant, invalid until every partition's index is attached. */
export async function createParentIndex({ pool, log }: Deps, plan: IndexPlan, lockTimeoutMs: number): Promise<void> {
  const parent = plan.build.parent;
  if (!parent) return;
  const l = indexLog(log, 'parent index', plan.spec);
  try {
    await withLockRetry(
      pool,
      l,
      'parent index',
      lockTimeoutMs,
      async (c) => {
        await fixFence(c);
        await c.query(parent.sql);
      },
      { relations: [qualified(plan.spec.table)] },
    );
  } catch (err) {
    classify(err, `parent index ${plan.spec.name}`);
  }
}

type BuildEntry = IndexBuild['each'][number];

/** One table's index of the build (a partition's, or the plain table's), built and attached. */
export async function buildIndexPart(
  deps: Deps,
  plan: IndexPlan,
  k: number,
  lockTimeoutMs: number,
): Promise<{ built: boolean }> {
  return buildIndexEntry(deps, plan, plan.build.each[k], lockTimeoutMs);
}

async function buildIndexEntry(
  { pool, log }: Deps,
  plan: IndexPlan,
  e: BuildEntry,
  lockTimeoutMs: number,
): Promise<{ built: boolean }> {
  const l = indexLog(log, 'build index', plan.spec);
  try {
    const parent = plan.build.parent ? { schema: plan.spec.table.schema, name: plan.spec.name } : null;
    const built = await buildAndAttach(pool, l, e, parent, lockTimeoutMs);
    l.info({ partition: displayName(e.table), built }, 'index ready');
    return { built };
  } catch (err) {
    if ((err as { code?: string }).code === '23505')
      throw failure(
        `${plan.description}: ${displayName(e.table)} has duplicate values, so the unique index cannot be built: ` +
          `${(err as Error).message}.`,
        'DatabaseError',
      );
    classify(err, `index ${e.name}`);
  }
}

/** A partition that appeared after the plan: its index, built and attached like the planned ones. */
export async function buildIndexGap(
  deps: Deps,
  plan: IndexPlan,
  e: BuildEntry,
  lockTimeoutMs: number,
): Promise<{ built: boolean }> {
  // the entry comes back from indexGaps through the workflow: it must be what indexGaps makes of the catalog
  const shape = indexShape(plan.spec);
  const again = indexBuild(shape, 'p', [e.table]).each[0];
  if (!plan.build.parent || JSON.stringify(again) !== JSON.stringify(e))
    throw failure(`index ${plan.spec.name}: the partition entry is not partflow's own; nothing done.`, 'InvalidInput');
  return buildIndexEntry(deps, plan, e, lockTimeoutMs);
}

export interface IndexGaps {
  /** the index is valid: on a partitioned table, attached on every partition that exists now */
  valid: boolean;
  /** partitions without an index attached to the parent index: to build and attach */
  each: (BuildEntry & { drop: string })[];
  /** what stops the index from being valid that partflow cannot build (named) */
  problems: string[];
}

/**
 * After the planned builds: the index as the catalog has it now. Partitions may have appeared since the plan
 * (maintenance of another tool, the application): each one without an index attached to the parent index is
 * returned to be built. `valid` is PostgreSQL's own indisvalid, so `done` is never reported for an index the
 * planner would not use.
 */
export async function indexGaps({ pool }: Deps, plan: IndexPlan): Promise<IndexGaps> {
  try {
    const at = qualified({ schema: plan.spec.table.schema, name: plan.spec.name });
    const ix = await pool.query(
      `SELECT i.indisvalid AND i.indisready AS valid, c.relkind FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
        WHERE i.indexrelid = to_regclass($1)`,
      [at],
    );
    if (!ix.rowCount) return { valid: false, each: [], problems: [`${at} is gone`] };
    const valid: boolean = ix.rows[0].valid;
    if (ix.rows[0].relkind !== 'p' || !plan.build.parent)
      return { valid, each: [], problems: valid ? [] : [`${at} is INVALID`] };
    // every partition, and the index on it attached to the parent index (if any)
    const r = await pool.query(
      `SELECT n.nspname AS schema, c.relname AS name, c.relkind,
              (SELECT i.indisvalid FROM pg_inherits ii JOIN pg_index i ON i.indexrelid = ii.inhrelid
                WHERE ii.inhparent = to_regclass($2) AND i.indrelid = c.oid) AS attached_valid
         FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE h.inhparent = to_regclass($1) ORDER BY c.relname`,
      [qualified(plan.spec.table), at],
    );
    const shape = indexShape(plan.spec);
    const each: IndexGaps['each'] = [];
    const problems: string[] = [];
    for (const row of r.rows) {
      const p = { schema: row.schema as string, name: row.name as string };
      if (row.attached_valid === true) continue;
      if (row.attached_valid === false) problems.push(`the index attached on ${displayName(p)} is INVALID`);
      else if (row.relkind !== 'r') problems.push(`${displayName(p)} is partitioned itself; partflow builds on leaves`);
      else {
        const e = indexBuild(shape, 'p', [p]).each[0];
        const other = await pool.query(
          `SELECT i.indrelid::regclass::text AS on_table, i.indrelid = to_regclass($2) AS same
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_index i ON i.indexrelid = c.oid
            WHERE n.nspname = $1 AND c.relname = $3`,
          [p.schema, qualified(p), e.name],
        );
        if (other.rowCount && !other.rows[0].same)
          problems.push(
            `the partition index name ${e.name} is taken by ${other.rows[0].on_table ?? 'another relation'}`,
          );
        else
          each.push({
            ...e,
            drop: `DROP INDEX CONCURRENTLY IF EXISTS ${qualified({ schema: p.schema, name: e.name })}`,
          });
      }
    }
    return { valid, each, problems };
  } catch (err) {
    classify(err, `index ${plan.spec.name}`);
  }
}

/** Undo: the parent index (the attached partition indexes go with it), then each left, CONCURRENTLY. */
export async function dropIndexBuild({ pool, log }: Deps, plan: IndexPlan, lockTimeoutMs: number): Promise<void> {
  const l = indexLog(log, 'drop index', plan.spec);
  try {
    const [first, ...rest] = plan.build.drop;
    if (plan.build.parent)
      await withLockRetry(pool, l, 'drop index', lockTimeoutMs, (c) => c.query(first), {
        relations: [qualified(plan.spec.table)],
      });
    else await pool.query(first);
    for (const sql of rest) await pool.query(sql);
    l.info({}, 'index dropped (undo)');
  } catch (err) {
    classify(err, `drop index ${plan.spec.name}`);
  }
}

export function createIndexActivities(deps: Deps) {
  return {
    planIndexes: (opts: IndexOptions) => planIndexes(deps, opts),
    createParentIndex: (plan: IndexPlan, lockTimeoutMs: number) => createParentIndex(deps, plan, lockTimeoutMs),
    buildIndexPart: (plan: IndexPlan, k: number, lockTimeoutMs: number) => buildIndexPart(deps, plan, k, lockTimeoutMs),
    indexGaps: (plan: IndexPlan) => indexGaps(deps, plan),
    buildIndexGap: (plan: IndexPlan, e: IndexGaps['each'][number], lockTimeoutMs: number) =>
      buildIndexGap(deps, plan, { table: e.table, name: e.name, sql: e.sql, attach: e.attach }, lockTimeoutMs),
    dropIndexBuild: (plan: IndexPlan, lockTimeoutMs: number) => dropIndexBuild(deps, plan, lockTimeoutMs),
  };
}
