/**
 * A month's partition: created as a table of its own, the month's rows moved out of the default partition
 * into it, then ATTACHed, in one short transaction (never CREATE ... PARTITION OF, which locks the parent
 * exclusively). Used by the rescue and the premake alike.
 */
import { ApplicationFailure } from '@temporalio/common';
import type { Pool, PoolClient } from 'pg';
import { failure } from '../../src/failures';
import {
  byteLength,
  displayName,
  InputError,
  MAX_IDENT_BYTES,
  qualified,
  quoteIdent as q,
  TableRef,
} from '../../src/ident';
import type { MaintainTableSpec } from '../../src/maintenance';
import { MaintenanceStep, monthPartitionSql, monthStep, PartedTable } from '../../src/maintenanceSql';
import { addMonths, boundLiteral, formatMonth, Month, partitionName } from '../../src/partitions';
import type { Logger } from '../../src/logger';
import { lockPhaseBudgetMs } from '../../src/locks';
import { lockUpFront, withLockRetry } from '../runtime/db';
import type { Parted } from './inspect';

export type MonthResult =
  { partition: string; rowsMovedFromDefault: number } | { skipped: string } | { planned: MaintenanceStep } | null;

/**
 * How long creating a partition holds its locks, ms: the ATTACH scans the default partition (measured here
 * at about 10,000 rows/ms; 2,000 assumed) and the month's rows are inserted and deleted with their indexes
 * (20 rows/ms assumed). Conservative on purpose: a wrong guess should skip a month, not stall the table.
 */
export function attachLockEstimateMs(defaultRows: number, monthRows: number): number {
  return 5 + defaultRows / 2000 + monthRows / 20;
}

/**
 * The transaction that creates the month blocks the table's writes while the ATTACH checks every row of the
 * default partition and the month's rows move: estimated first, so that no lock is taken that cannot be
 * released within the lock timeout. The reason to skip, or null.
 */
async function tooLongToLock(
  pool: Pool,
  spec: MaintainTableSpec,
  def: TableRef,
  range: string,
): Promise<string | null> {
  const d = (
    await pool.query(
      `SELECT CASE WHEN c.reltuples >= 0 THEN c.reltuples ELSE NULL END::bigint AS est,
              (SELECT count(*) FROM ${qualified(def)} WHERE ${range})::bigint AS month
         FROM pg_class c WHERE c.oid = to_regclass($1)`,
      [qualified(def)],
    )
  ).rows[0];
  const rows =
    d.est === null
      ? Number((await pool.query(`SELECT count(*)::bigint AS n FROM ${qualified(def)}`)).rows[0].n)
      : Number(d.est);
  const monthRows = Number(d.month);
  const ms = attachLockEstimateMs(rows, monthRows);
  if (ms <= spec.lockTimeoutMs) return null;
  return (
    `creating it would block writes to ${displayName(spec.table)} for about ${Math.round(ms)} ms ` +
    `(the ATTACH checks the ${rows} rows of ${def.name}${monthRows ? `, ${monthRows} of them to move` : ''}), ` +
    `over lockTimeoutMs ${spec.lockTimeoutMs}; move the default partition's rows out in a quiet hour ` +
    '(maintain with a larger "lockTimeoutMs" accepts that stall), then the next run creates it'
  );
}

/**
 * The tables at the other end of the foreign keys of `oid`, both ways (not itself), qualified, in name order:
 * ATTACH and DETACH take SHARE ROW EXCLUSIVE on each (the referenced tables for the partition's clone of a key,
 * the referencing ones for the triggers that check the new partition's rows).
 */
export async function referencedTables(c: PoolClient | Pool, oid: number): Promise<string[]> {
  const r = await c.query(
    `SELECT DISTINCT format('%I.%I', n.nspname, t.relname) AS name FROM pg_constraint k
       JOIN pg_class t ON t.oid = CASE WHEN k.conrelid = $1 THEN k.confrelid ELSE k.conrelid END
       JOIN pg_namespace n ON n.oid = t.relnamespace
      WHERE (k.conrelid = $1 OR k.confrelid = $1) AND k.contype = 'f' AND t.oid <> $1
        AND NOT t.relispartition ORDER BY 1`,
    [oid],
  );
  return r.rows.map((x) => x.name as string);
}

/**
 * Tables whose foreign keys point at rows of `part` (those matching `where`, if given): a partition they need is
 * not retired, and rows they need are not moved out of the default partition (below).
 */
export async function referencing(
  c: PoolClient | Pool,
  p: Pick<Parted, 'oid'>,
  part: TableRef,
  where = 'true',
): Promise<string[]> {
  const cols = (key: string, rel: string) =>
    `(SELECT array_agg(quote_ident(attname) ORDER BY array_position(con.${key}, attnum)) FROM pg_attribute
       WHERE attrelid = con.${rel} AND attnum = ANY (con.${key}))`;
  const fks = (
    await c.query(
      `SELECT con.conrelid::regclass::text AS child, ${cols('conkey', 'conrelid')} AS cols,
              ${cols('confkey', 'confrelid')} AS refcols
         FROM pg_constraint con WHERE con.contype = 'f' AND con.confrelid = $1 AND con.conparentid = 0`,
      [p.oid],
    )
  ).rows;
  const needed: string[] = [];
  for (const fk of fks) {
    const mine = fk.cols.map((x: string) => `c.${x}`).join(', ');
    const hit = await c.query(
      `SELECT 1 FROM ${fk.child} c
        WHERE (${mine}) IN (SELECT ${fk.refcols.join(', ')} FROM ${qualified(part)} WHERE ${where}) LIMIT 1`,
    );
    if (hit.rowCount) needed.push(fk.child);
  }
  return needed;
}

/**
 * The foreign keys referencing `oid` whose referencing table has no valid btree index led by the key's columns, as
 * `<table> (<columns>)`: finding the rows they reference would scan that table, under the month's locks.
 */
export async function unindexedReferences(c: PoolClient | Pool, oid: number): Promise<string[]> {
  const r = await c.query(
    `SELECT format('%s (%s)', con.conrelid::regclass,
                   (SELECT string_agg(quote_ident(attname), ', ' ORDER BY array_position(con.conkey, attnum))
                      FROM pg_attribute WHERE attrelid = con.conrelid AND attnum = ANY (con.conkey))) AS k
       FROM pg_constraint con
      WHERE con.contype = 'f' AND con.confrelid = $1 AND con.conparentid = 0
        AND NOT EXISTS (SELECT FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
                         WHERE i.indrelid = con.conrelid AND i.indisvalid AND i.indpred IS NULL
                           AND ic.relam = (SELECT oid FROM pg_am WHERE amname = 'btree')
                           AND (i.indkey::int2[])[0:cardinality(con.conkey) - 1] @> con.conkey
                           AND con.conkey @> (i.indkey::int2[])[0:cardinality(con.conkey) - 1])
      ORDER BY 1`,
    [oid],
  );
  return r.rows.map((x) => x.k as string);
}

/** What the month's statements need (src/maintenanceSql.ts), read from the catalog. */
export async function partedTable(c: PoolClient | Pool, spec: MaintainTableSpec, p: Parted): Promise<PartedTable> {
  const cols = await c.query(
    `SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) AS columns,
            (SELECT relreplident::text FROM pg_class WHERE oid = $1) AS ri FROM pg_attribute
      WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = ''`,
    [p.oid],
  );
  return {
    table: spec.table,
    oid: p.oid,
    column: p.column,
    type: p.type,
    def: p.def,
    referenced: await referencedTables(c, p.oid),
    columns: cols.rows[0].columns,
    replicaIdentity: cols.rows[0].ri,
  };
}

/**
 * Inside the transaction: the month's table, the rows moved out of the default, the ATTACH (monthPartitionSql;
 * every lock taken first, so the transaction never waits for a lock once it holds the parent's).
 */
async function createAndAttach(c: PoolClient, spec: MaintainTableSpec, p: Parted, m: Month) {
  const t = spec.table;
  const sql = monthPartitionSql(await partedTable(c, spec, p), m, spec.timeZone);
  const name = sql.partition.name;
  const exists = await c.query(
    `SELECT i.inhparent = $3 AS attached FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       LEFT JOIN pg_inherits i ON i.inhrelid = c.oid WHERE n.nspname = $1 AND c.relname = $2`,
    [t.schema, name, p.oid],
  );
  if (exists.rowCount && exists.rows[0].attached) return null;
  if (exists.rowCount) {
    throw failure(
      `${displayName({ schema: t.schema, name })} exists but is not a partition of ${displayName(t)}; ` +
        'rename or drop it so the month can be created.',
      'NameTaken',
    );
  }
  await lockUpFront(c, sql.locks, lockPhaseBudgetMs(spec.lockTimeoutMs, 3));
  for (const x of sql.create) await c.query(x);
  let moved = 0;
  if (sql.move) {
    // moving a row out of the default partition is a DELETE there: a foreign key that references it would run
    // its ON DELETE action (CASCADE deletes the referencing rows, SET NULL changes them) or fail. Checked under
    // the locks, which hold the referencing tables' writers off.
    const needed = await referencing(c, p, p.def!, sql.range);
    if (needed.length) {
      // thrown, so that the transaction rolls back; ensureMonth reports it as the month's reason to skip
      throw failure(
        `rows of ${formatMonth(m)} in ${displayName(p.def!)} are referenced by foreign keys of ` +
          `${needed.join(', ')}; moving them into the month's partition deletes them from the default, which ` +
          "would run those keys' ON DELETE action, so the month is not created (its rows stay where they are, " +
          'nothing changes); move or re-date them, then the next run creates it',
        'ReferencedRows',
      );
    }
    const ins = await c.query(sql.move.insert);
    const del = await c.query(sql.move.delete);
    if (ins.rowCount !== del.rowCount) {
      throw new Error(`moved ${ins.rowCount} rows but deleted ${del.rowCount} from the default partition`);
    }
    moved = ins.rowCount ?? 0;
  }
  await c.query(sql.attach);
  return { partition: name, rowsMovedFromDefault: moved };
}

/** Creates the month's partition; rows of that month waiting in the default move into it in the same transaction. */
export async function ensureMonth(
  pool: Pool,
  log: Logger,
  spec: MaintainTableSpec,
  p: Parted,
  m: Month,
): Promise<MonthResult> {
  const t = spec.table;
  const name = partitionName(t.name, m);
  if (byteLength(name) > MAX_IDENT_BYTES) {
    // PostgreSQL would cut it to 63 bytes without a word, and the next month's name would collide with it
    throw new InputError(
      `The partition name ${JSON.stringify(name)} would be ${byteLength(name)} bytes, over PostgreSQL's 63; ` +
        `partflow cannot name monthly partitions of ${displayName(t)} (rename the table to something shorter).`,
    );
  }
  if (p.def) {
    const col = q(p.column);
    const [lo, hi] = [m, addMonths(m, 1)].map((x) => boundLiteral(x, p.type, spec.timeZone));
    const range = `${col} >= ${lo} AND ${col} < ${hi}`;
    const skip = await tooLongToLock(pool, spec, p.def, range);
    if (skip) return { skipped: skip };
    // the month's rows that a foreign key references stay (createAndAttach); finding them under the lock must
    // not scan a referencing table
    const unindexed = await unindexedReferences(pool, p.oid);
    const waiting = unindexed.length
      ? (await pool.query(`SELECT EXISTS (SELECT FROM ${qualified(p.def)} WHERE ${range}) AS x`)).rows[0].x
      : false;
    if (waiting) {
      return {
        skipped:
          `rows of ${formatMonth(m)} wait in ${displayName(p.def)}, and no index leads with the columns of the ` +
          `foreign key(s) ${unindexed.join(', ')} that reference ${displayName(t)}: finding which rows they ` +
          'reference would scan those tables under the lock that blocks writes; create such an index ' +
          '(createIndexes), then the next run creates the month',
      };
    }
  }
  if (spec.dryRun) return { planned: monthStep(await partedTable(pool, spec, p), m, spec.timeZone) };
  const logger = log.child({ table: displayName(t), month: formatMonth(m) });
  const create = (c: PoolClient) => createAndAttach(c, spec, p, m);
  try {
    const { result } = await withLockRetry(pool, logger, 'create partition', spec.lockTimeoutMs, create, {
      relations: [qualified(t)],
    });
    return result;
  } catch (err) {
    if (err instanceof ApplicationFailure && err.type === 'ReferencedRows') return { skipped: err.message };
    throw err;
  }
}
