/**
 * The audit of fixConstraints: each fix checked against the catalog (one sentence for anything the operator
 * must change), its violations counted, with the query that lists them and the statements it will run.
 * Read-only, in one snapshot.
 */
import type { PoolClient } from 'pg';
import { describeFix, Fix, FixOptions, ForeignKeyFix, NotNullFix } from '../../src/constraints';
import { auditSql } from '../../src/constraintSql';
import { FixInfo, plannedFixSql } from '../../src/fixSteps';
import { displayName, InputError } from '../../src/ident';
import { provenNotNullSql } from '../../src/versions';
import { classify, inTransaction, withHeartbeat } from '../runtime/db';
import type { Deps } from '../runtime/deps';
import { relOid } from '../runtime/deps';

export interface FixAudit {
  fixNo: number;
  fix: Fix;
  description: string;
  info: FixInfo;
  violations: number;
  /** the query that lists the violating rows (their values stay out of the workflow's history) */
  listQuery: string;
  policy: string;
  /** what will be run, in order */
  sql: string[];
  notes: string[];
}

type Columns = Map<string, { type: string; notNull: boolean; attnum: number }>;

const INTEGER = ['smallint', 'integer', 'bigint'];
const TEXT = ['text', 'character varying', 'character'];
function compatible(a: string, b: string): boolean {
  const base = (t: string) => t.replace(/\(.*\)/, '').trim();
  const x = base(a);
  const y = base(b);
  return x === y || (INTEGER.includes(x) && INTEGER.includes(y)) || (TEXT.includes(x) && TEXT.includes(y));
}

async function columns(c: PoolClient, oid: number): Promise<Columns> {
  const r = await c.query(
    `SELECT attname, format_type(atttypid, atttypmod) AS type, ${provenNotNullSql('a')} AS attnotnull, attnum
       FROM pg_attribute a WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped`,
    [oid],
  );
  return new Map(r.rows.map((x) => [x.attname, { type: x.type, notNull: x.attnotnull, attnum: x.attnum }]));
}

/** The fix's table: it exists, has the columns; its primary key and partitions. */
async function inspectTable(c: PoolClient, fix: Fix, where: string): Promise<{ info: FixInfo; cols: Columns }> {
  const t = await relOid(c, fix.table);
  if (!t) throw new InputError(`${where}: table ${displayName(fix.table)} does not exist.`);
  if (!['r', 'p'].includes(t.relkind)) throw new InputError(`${where}: ${displayName(fix.table)} is not a table.`);
  const cols = await columns(c, t.oid);
  for (const col of fix.kind === 'foreignKey' ? fix.columns : [fix.column]) {
    if (!cols.has(col)) {
      throw new InputError(`${where}: table ${displayName(fix.table)} has no column ${JSON.stringify(col)}.`);
    }
  }
  const pkr = await c.query(
    `SELECT array_agg(a.attname::text ORDER BY array_position(con.conkey, a.attnum)) AS pk FROM pg_constraint con
       JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = ANY (con.conkey)
      WHERE con.conrelid = $1 AND con.contype = 'p'`,
    [t.oid],
  );
  const parts =
    t.relkind !== 'p'
      ? []
      : (
          await c.query(
            `SELECT n.nspname AS schema, c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace WHERE i.inhparent = $1 ORDER BY c.relname`,
            [t.oid],
          )
        ).rows;
  const pk: string[] = pkr.rows[0]?.pk ?? [];
  const v = await c.query(`SELECT current_setting('server_version_num')::int AS v`);
  const serverVersionNum: number = v.rows[0].v;
  return {
    info: {
      tableOid: t.oid,
      relkind: t.relkind,
      partitions: parts,
      pk,
      alreadyDone: false,
      hasIndex: true,
      serverVersionNum,
    },
    cols,
  };
}

async function inspectNotNull(c: PoolClient, fix: NotNullFix, info: FixInfo, cols: Columns, where: string) {
  info.alreadyDone = cols.get(fix.column)!.notNull;
  if (fix.nulls === 'fail') return;
  if (!info.pk.length) {
    throw new InputError(
      `${where}: ${displayName(fix.table)} has no primary key, ` +
        'which partflow needs to record the filled rows for undo.',
    );
  }
  const type = cols.get(fix.column)!.type;
  try {
    await c.query('SAVEPOINT fill_check');
    await c.query(`SELECT $1::${type}`, [String(fix.nulls.fill)]);
    await c.query('RELEASE SAVEPOINT fill_check');
  } catch {
    await c.query('ROLLBACK TO SAVEPOINT fill_check');
    throw new InputError(
      `${where}.nulls.fill: ${JSON.stringify(fix.nulls.fill)} is not a valid ${type} ` +
        `for ${displayName(fix.table)}.${fix.column}.`,
    );
  }
  info.fill = `${(await c.query('SELECT quote_literal($1::text) AS l', [String(fix.nulls.fill)])).rows[0].l}::${type}`;
}

/** The referenced side: it exists, its columns match ours in type, and it is unique. */
async function inspectReferenced(c: PoolClient, fix: ForeignKeyFix, cols: Columns, where: string) {
  const ref = displayName(fix.references.table);
  const r = await relOid(c, fix.references.table);
  if (!r) throw new InputError(`${where}: referenced table ${ref} does not exist.`);
  const rcols = await columns(c, r.oid);
  fix.references.columns.forEach((rc, i) => {
    const mine = cols.get(fix.columns[i])!;
    const theirs = rcols.get(rc);
    const col = `${displayName(fix.table)}.${fix.columns[i]}`;
    if (!theirs) throw new InputError(`${where}: referenced table ${ref} has no column ${JSON.stringify(rc)}.`);
    if (!compatible(mine.type, theirs.type)) {
      throw new InputError(
        `${where}: ${col} is ${mine.type} but ${ref}.${rc} is ${theirs.type}; the types must match.`,
      );
    }
    if (fix.orphans === 'set-null' && mine.notNull) {
      throw new InputError(`${where}: orphans "set-null" cannot work, ${col} is NOT NULL; use "delete" or "fail".`);
    }
  });
  const refAttnums = fix.references.columns.map((rc) => rcols.get(rc)!.attnum);
  const uniq = await c.query(
    `SELECT 1 FROM pg_index WHERE indrelid = $1 AND indisunique AND indpred IS NULL AND indexprs IS NULL
        AND (SELECT array_agg(x ORDER BY x) FROM unnest(indkey::int2[]) x) = $2::int2[]`,
    [r.oid, [...refAttnums].sort((a, b) => a - b)],
  );
  if (!uniq.rowCount) {
    throw new InputError(
      `${where}: ${ref}(${fix.references.columns.join(', ')}) has no primary key or unique constraint, ` +
        'which a foreign key must reference; add one first.',
    );
  }
  return { oid: r.oid, attnums: refAttnums };
}

async function inspectForeignKey(c: PoolClient, fix: ForeignKeyFix, info: FixInfo, cols: Columns, where: string) {
  const ref = await inspectReferenced(c, fix, cols, where);
  if (fix.orphans !== 'fail' && !info.pk.length) {
    throw new InputError(
      `${where}: ${displayName(fix.table)} has no primary key, which partflow needs to record repaired rows for undo.`,
    );
  }
  const mine = fix.columns.map((col) => cols.get(col)!.attnum);
  const existing = await c.query(
    `SELECT conname, convalidated, conkey = $2::int2[] AND confrelid = $3 AND confkey = $4::int2[] AS same
       FROM pg_constraint
      WHERE conrelid = $1 AND contype = 'f' AND conparentid = 0
        AND (conname = $5 OR (conkey = $2::int2[] AND confrelid = $3))`,
    [info.tableOid, mine, ref.oid, ref.attnums, fix.name],
  );
  const named = existing.rows.find((x) => x.conname === fix.name);
  if (named && !named.same) {
    throw new InputError(
      `${where}: a different constraint named ${fix.name} exists on ${displayName(fix.table)}; pick another "name".`,
    );
  }
  info.alreadyDone = existing.rows.some((x) => x.same && x.convalidated);
  // an index whose leading columns are the FK columns serves the referenced side's deletes and updates
  const idx = await c.query(
    `SELECT 1 FROM pg_index WHERE indrelid = $1 AND indpred IS NULL
        AND (indkey::int2[])[0:${mine.length - 1}] = $2::int2[]`,
    [info.tableOid, mine],
  );
  info.hasIndex = idx.rowCount! > 0;
}

/** Reads and checks one fix against the catalog; InputError for anything the operator must change. */
async function inspect(c: PoolClient, fix: Fix, fixNo: number): Promise<FixInfo> {
  const where = `fixes[${fixNo}]`;
  const { info, cols } = await inspectTable(c, fix, where);
  if (fix.kind === 'notNull') await inspectNotNull(c, fix, info, cols, where);
  else await inspectForeignKey(c, fix, info, cols, where);
  return info;
}

async function auditOne(c: PoolClient, fix: Fix, i: number, batchSize: number): Promise<FixAudit> {
  const info = await inspect(c, fix, i);
  const a = auditSql(fix, info.pk);
  const violations = info.alreadyDone ? 0 : Number((await c.query(a.count)).rows[0].n);
  const policy =
    fix.kind === 'foreignKey'
      ? `orphans: ${fix.orphans}`
      : `nulls: ${fix.nulls === 'fail' ? 'fail' : `fill ${JSON.stringify(fix.nulls.fill)}`}`;
  const { sql, notes } = plannedFixSql(fix, info, batchSize);
  return { fixNo: i, fix, description: describeFix(fix), info, violations, listQuery: a.list, policy, sql, notes };
}

/** Read-only: checks every fix, counts violations (with the query that lists them), and the SQL each will run. */
export async function auditFixes({ pool }: Deps, opts: FixOptions): Promise<FixAudit[]> {
  const all = async (c: PoolClient) => {
    const out: FixAudit[] = [];
    for (const [i, fix] of opts.fixes.entries()) out.push(await auditOne(c, fix, i, opts.batchSize));
    return out;
  };
  try {
    return await withHeartbeat(
      () => ({ step: 'audit' }),
      () => inTransaction(pool, all, { readOnly: true, isolation: 'REPEATABLE READ' }),
    );
  } catch (err) {
    classify(err, 'audit');
  }
}
