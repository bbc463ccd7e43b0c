/**
 * `createIndexes`' checks, before anything is built: each index's definition parsed by PostgreSQL, a unique
 * index on a partitioned table carrying the partition key, an index of that name already there (valid and the
 * same: nothing to do; otherwise refused), and the statements the build will run (for the dry run).
 */
import type { PoolClient } from 'pg';
import { displayName, InputError, qualified, TableRef } from '../../src/ident';
import { describeIndex, IndexBuild, indexBuild, IndexOptions, indexShape, IndexSpec } from '../../src/indexes';
import { classify, inTransaction } from '../runtime/db';
import type { Deps } from '../runtime/deps';
import { relOid } from '../runtime/deps';

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
