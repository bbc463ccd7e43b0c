/**
 * Step "sync": the row triggers that mirror every write of the table into the copy (and, after the
 * cut-over, of the new table into the old one), their TRUNCATE companions, the guard view that blocks
 * dropping or retyping a column while the run needs it, and the counter of rows moved to another month.
 * Undo: drop them.
 */
import { displayName, qualified, quoteLiteral, TableRef } from '../ident';
import type { PartitionColumnType } from '../partitions';
import { PlanContext, q, sibling } from './context';
import { KeyLogApplySql, keyLogApplySql, keyLogFunctionSql, keyLogLockKey, KeyLogSpec, keyLogTableSql } from './keylog';
import {
  FORWARD_TRIGGER,
  FORWARD_TRUNCATE_TRIGGER,
  PlanSql,
  REVERSE_TRIGGER,
  REVERSE_TRUNCATE_TRIGGER,
  STATE_SCHEMA,
} from './types';

export interface MirrorSpec {
  fn: TableRef;
  target: TableRef;
  /** the source's columns in attnum order, generated ones too: the trigger reads OLD and NEW by position */
  sourceColumns: string[];
  /** the columns written into the target */
  columns: string[];
  key: string[];
  /** key columns whose change `=` may not see (ColumnInfo.equalIsIdentical false): compared as text */
  textKeys?: string[];
  overriding: boolean;
  identityAlways: string[];
  /** counts updates that move a row to another month, with nextval (no row lock, no contention) */
  moves: { column: string; type: PartitionColumnType; timeZone: string; counter: TableRef } | null;
  /** counts rows mirrored from a transaction that is not READ COMMITTED (nextval, as `moves`) */
  isolationCounter?: TableRef;
}

/**
 * The body of a row trigger that mirrors INSERT, UPDATE (also of key columns) and DELETE into `target`.
 *
 * It reads OLD and NEW by position (`(SELECT NEW.*) AS n(a1, a2, ...)`), never by column name, so a column
 * that a deploy renames or adds during the run cannot make an application write fail; dropping or retyping
 * a column is blocked meanwhile by partflow's guard view, and the cut-over refuses on any change of shape.
 * SECURITY DEFINER with a pinned search_path: it runs with its owner's rights whatever rights the writing
 * role has (an INSERT-only role, a role without DELETE whose UPDATE moves a row).
 */
export function mirrorFunctionSql(m: MirrorSpec): string {
  const alias = (c: string) => {
    const i = m.sourceColumns.indexOf(c);
    if (i < 0) throw new Error(`column ${c} is not a source column`);
    return `a${i + 1}`;
  };
  const aliases = m.sourceColumns.map((_, i) => `a${i + 1}`).join(', ');
  const oldRow = `(SELECT OLD.*) AS o(${aliases})`;
  const newRow = `(SELECT NEW.*) AS n(${aliases})`;
  const cols = m.columns.map(q).join(', ');
  const settable = m.columns.filter((c) => !m.key.includes(c) && !m.identityAlways.includes(c));
  const sets = settable.map((c) => `${q(c)} = EXCLUDED.${q(c)}`).join(', ');
  const onConflict = settable.length
    ? `ON CONFLICT (${m.key.map(q).join(', ')}) DO UPDATE SET ${sets}`
    : 'ON CONFLICT DO NOTHING';
  // a key change is detected by identity, not by `=` alone: 'alice' to 'ALICE' under a case-insensitive
  // collation, or 1.0 to 1.00, is a change the target must get (delete and insert), not an upsert that keeps
  // the old key. Such columns are compared by `=` and by their text under COLLATE "C" (a text cast keeps the
  // column's collation; `=` still sees what a session's text settings could hide, such as float digits)
  const plain = (r: string) => `(${m.key.map((c) => `${r}.${alias(c)}`).join(', ')})`;
  const textual = (r: string) =>
    `(${(m.textKeys ?? []).map((c) => `((${r}.${alias(c)})::text) COLLATE "C"`).join(', ')})`;
  const keyChanged = m.textKeys?.length
    ? `(${plain('o')} IS DISTINCT FROM ${plain('n')} OR ${textual('o')} IS DISTINCT FROM ${textual('n')})`
    : `${plain('o')} IS DISTINCT FROM ${plain('n')}`;
  const month = (r: string) => {
    if (!m.moves) return '';
    const v = `${r}.${alias(m.moves.column)}`;
    return m.moves.type === 'timestamptz'
      ? `date_trunc('month', ${v} AT TIME ZONE ${quoteLiteral(m.moves.timeZone)})`
      : `date_trunc('month', ${v}::timestamp)`;
  };
  const tgt = qualified(m.target);
  const moved = m.moves ? `, ${month('o')} IS DISTINCT FROM ${month('n')}` : '';
  const count = m.moves
    ? `\n    IF moved THEN PERFORM nextval(${quoteLiteral(qualified(m.moves.counter))}::regclass); END IF;`
    : '';
  const keyMatch = m.key.map((c) => `t.${q(c)} = o.${alias(c)}`).join(' AND ');
  // the trigger writes in the writer's snapshot, which is exact for READ COMMITTED writers only: any other is
  // counted, and verification, the cut-over and a rollback refuse while the count is not 0
  const isolation = m.isolationCounter
    ? `\n  IF current_setting('transaction_isolation') <> 'read committed' THEN
    PERFORM nextval(${quoteLiteral(qualified(m.isolationCounter))}::regclass);
  END IF;`
    : '';
  const values = m.columns.map((c) => `n.${alias(c)}`).join(', ');
  return (
    `CREATE OR REPLACE FUNCTION ${qualified(m.fn)}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $partflow$
DECLARE
  key_changed boolean := TG_OP = 'DELETE';
  moved boolean := false;
BEGIN${isolation}
  IF TG_OP = 'UPDATE' THEN
    SELECT ${keyChanged}${moved || ', false'} INTO key_changed, moved ` +
    `FROM ${oldRow}, ${newRow};${count}
  END IF;
  IF key_changed THEN
    DELETE FROM ${tgt} t USING ${oldRow} WHERE ${keyMatch};
  END IF;
  IF TG_OP <> 'DELETE' THEN
    INSERT INTO ${tgt} (${cols})${m.overriding ? ' OVERRIDING SYSTEM VALUE' : ''} SELECT ${values} FROM ${newRow}
      ${onConflict};
  END IF;
  RETURN NULL;
END
$partflow$`
  );
}

/**
 * A statement trigger's function that empties `target` when the source is truncated, counting it (a mirrored
 * TRUNCATE of the whole new table gives every partition a new file: the rollback check must know it was one).
 */
export function truncateFunctionSql(fn: TableRef, target: TableRef, counter?: TableRef): string {
  const count = counter ? `\n  PERFORM nextval(${quoteLiteral(qualified(counter))}::regclass);` : '';
  return `CREATE OR REPLACE FUNCTION ${qualified(fn)}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $partflow$
BEGIN${count}
  TRUNCATE ${qualified(target)};
  RETURN NULL;
END
$partflow$`;
}

/**
 * The shape of a table that the copy was built from, one text row per fact: columns in order with type,
 * NOT NULL and generation, indexes, constraints, and triggers other than partflow's. $1 is the table's OID.
 */
export const SHAPE_SQL = `SELECT x FROM (
  SELECT 'column ' || a.attnum || ' ' || quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod)
         || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
         || CASE WHEN a.attgenerated <> '' THEN ' GENERATED' ELSE '' END AS x
    FROM pg_attribute a WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL SELECT 'index ' || pg_get_indexdef(i.indexrelid) || CASE WHEN i.indisvalid THEN '' ELSE ' INVALID' END
    FROM pg_index i WHERE i.indrelid = $1
  UNION ALL SELECT 'constraint ' || quote_ident(c.conname) || ' ' || pg_get_constraintdef(c.oid)
    FROM pg_constraint c WHERE c.conrelid = $1
  UNION ALL SELECT 'trigger ' || quote_ident(t.tgname)
    FROM pg_trigger t WHERE t.tgrelid = $1 AND NOT t.tgisinternal AND t.tgname NOT LIKE 'partflow\\_%'
) s ORDER BY x`;

/** partflow's triggers on $1 (an OID) with the version of their catalog rows: any ENABLE / DISABLE changes it. */
export const TRIGGER_FENCE_SQL = `SELECT coalesce(
         string_agg(tgname::text || ':' || xmin::text || ':' || tgenabled::text, ',' ORDER BY tgname), '') AS fence
  FROM pg_trigger WHERE tgrelid = $1 AND tgname LIKE 'partflow\\_%'`;

/** Differences between two shapes, for the cut-over's refusal. */
export function shapeDifferences(planned: string[], now: string[]): string[] {
  const gone = planned.filter((x) => !now.includes(x)).map((x) => `${x} is gone`);
  const added = now.filter((x) => !planned.includes(x)).map((x) => `${x} is new`);
  return [...gone, ...added];
}

/** The functions, triggers and guard view of one direction of the sync (forward now, reverse at cut-over). */
export interface SyncMachinery {
  row: string;
  fn: TableRef;
  truncate: string;
  truncateFn: TableRef;
}

/** Names of partflow's objects for the table with OID `oid`, in partflow's schema. */
export function syncObjects(oid: number): { forward: SyncMachinery; reverse: SyncMachinery; guard: TableRef } {
  const fn = (name: string) => ({ schema: STATE_SCHEMA, name: `${name}_${oid}` });
  return {
    forward: {
      row: FORWARD_TRIGGER,
      fn: fn('fwd'),
      truncate: FORWARD_TRUNCATE_TRIGGER,
      truncateFn: fn('fwd_truncate'),
    },
    reverse: {
      row: REVERSE_TRIGGER,
      fn: fn('rev'),
      truncate: REVERSE_TRUNCATE_TRIGGER,
      truncateFn: fn('rev_truncate'),
    },
    guard: fn('guard'),
  };
}

/**
 * Run as the table's owner where partflow may hand the function over (as a superuser); otherwise as
 * partflow's role, which owns the table or is a member of its owner role.
 */
function ownedSql(ctx: PlanContext, fn: TableRef): string[] {
  const { info } = ctx;
  return [
    `REVOKE ALL ON FUNCTION ${qualified(fn)}() FROM PUBLIC`,
    ...(info.owner !== info.currentUser && info.isSuperuser
      ? [`ALTER FUNCTION ${qualified(fn)}() OWNER TO ${q(info.owner)}`]
      : []),
  ];
}

/** Row and TRUNCATE triggers that fire in every session_replication_role (ENABLE ALWAYS). */
export function triggersSql(on: string, m: SyncMachinery): string[] {
  return [
    `CREATE TRIGGER ${q(m.row)} AFTER INSERT OR UPDATE OR DELETE ON ${on} FOR EACH ROW ` +
      `EXECUTE FUNCTION ${qualified(m.fn)}()`,
    `ALTER TABLE ${on} ENABLE ALWAYS TRIGGER ${q(m.row)}`,
    `CREATE TRIGGER ${q(m.truncate)} AFTER TRUNCATE ON ${on} FOR EACH STATEMENT ` +
      `EXECUTE FUNCTION ${qualified(m.truncateFn)}()`,
    `ALTER TABLE ${on} ENABLE ALWAYS TRIGGER ${q(m.truncate)}`,
  ];
}

/** A view over every column: PostgreSQL refuses to drop or retype a column a view uses. */
export function guardViewSql(ctx: PlanContext, guard: TableRef): string[] {
  const on = qualified(ctx.table);
  const why =
    `partflow is partitioning ${displayName(ctx.table)}: ` +
    'its columns cannot be dropped or retyped until the run ends or is rolled back';
  return [
    `CREATE VIEW ${qualified(guard)} AS SELECT ${ctx.sourceColumns.map(q).join(', ')} FROM ${on}`,
    `COMMENT ON VIEW ${qualified(guard)} IS ${quoteLiteral(why)}`,
  ];
}

/** The undo of `triggersSql` and `guardViewSql`. */
export function dropTriggersSql(on: string, m: SyncMachinery, guard: TableRef): string[] {
  return [
    `DROP TRIGGER IF EXISTS ${q(m.row)} ON ${on}`,
    `DROP TRIGGER IF EXISTS ${q(m.truncate)} ON ${on}`,
    `DROP FUNCTION IF EXISTS ${qualified(m.fn)}()`,
    `DROP FUNCTION IF EXISTS ${qualified(m.truncateFn)}()`,
    `DROP VIEW IF EXISTS ${qualified(guard)}`,
  ];
}

/** The mirror of the table into `target` keyed by `key`, with the moves counter. */
export function mirrorSql(ctx: PlanContext, m: SyncMachinery, target: TableRef, key: string[]): string[] {
  const { sourceColumns, columns, overriding, identityAlways } = ctx;
  const moves = { column: ctx.column, type: ctx.type, timeZone: ctx.opts.timeZone, counter: movesCounter(ctx) };
  const textKeys = key.filter((k) => ctx.info.columns.find((c) => c.name === k)?.equalIsIdentical === false);
  const isolationCounter = counterOf(ctx.table, 'iso');
  const spec = {
    ...{ fn: m.fn, target, sourceColumns, columns, key, textKeys, overriding, identityAlways, moves },
    isolationCounter,
  };
  return [
    mirrorFunctionSql(spec),
    ...ownedSql(ctx, m.fn),
    truncateFunctionSql(m.truncateFn, target, counterOf(ctx.table, 'trunc')),
    ...ownedSql(ctx, m.truncateFn),
  ];
}

/** The run's counters: sequences next to the table that the sync triggers bump with nextval (no row lock). */
export type Counter = 'moves' | 'iso' | 'trunc';

/** `<table>_pf_<kind>`: updates moving a row to another month, rows from writers not READ COMMITTED, TRUNCATEs. */
export function counterOf(table: TableRef, kind: Counter): TableRef {
  return sibling(table, `${table.name}_pf_${kind}`);
}

export function movesCounter(ctx: PlanContext): TableRef {
  return counterOf(ctx.table, 'moves');
}

/** `<table>_pf_log`: the forward direction's key log, beside the table as the counters are. */
export function keyLogOf(table: TableRef): TableRef {
  return sibling(table, `${table.name}_pf_log`);
}

/** The forward direction's key log: the table's changed keys, applied to the copy by partflow (keylog.ts). */
export function keyLogSpec(ctx: PlanContext): KeyLogSpec {
  const { forward } = syncObjects(ctx.info.oid);
  const typeOf = (k: string) => ctx.info.columns.find((c) => c.name === k)!.type;
  return {
    source: ctx.table,
    target: ctx.shadow,
    log: keyLogOf(ctx.table),
    fn: forward.fn,
    key: ctx.shadowKey.map((name) => ({ name, type: typeOf(name) })),
    columns: ctx.columns,
    sourceColumns: ctx.sourceColumns,
    overriding: ctx.overriding,
    identityAlways: ctx.identityAlways,
    moves: { column: ctx.column, type: ctx.type, timeZone: ctx.opts.timeZone, counter: movesCounter(ctx) },
    lockKey: keyLogLockKey(ctx.info.oid),
    looseKeys: ctx.shadowKey.some((k) => ctx.info.columns.find((c) => c.name === k)?.equalIsIdentical === false),
  };
}

type SyncSql = Pick<
  PlanSql,
  'shape' | 'triggerFence' | 'moves' | 'dropCounters' | 'syncTrigger' | 'dropSyncTrigger' | 'keyLog'
>;

/**
 * The forward sync: the key log (its table, the trigger that appends keys, the applier's statements), the
 * TRUNCATE companion that empties the copy, the counters and the guard view. Undo: drop them, the log too.
 */
export function syncStep(ctx: PlanContext): SyncSql {
  const { info } = ctx;
  const { forward, guard } = syncObjects(info.oid);
  const counter = qualified(movesCounter(ctx));
  const iso = qualified(counterOf(ctx.table, 'iso'));
  const trunc = qualified(counterOf(ctx.table, 'trunc'));
  const spec = keyLogSpec(ctx);
  const log = qualified(spec.log);
  const on = qualified(ctx.table);
  // the trigger's function may run as the table's owner (ownedSql): the owner then owns what it writes
  const owned =
    info.owner !== info.currentUser
      ? [counter, iso, trunc].map((x) => `ALTER SEQUENCE ${x} OWNER TO ${q(info.owner)}`)
      : [];
  const syncTrigger = [
    ...[counter, iso, trunc].map((x) => `CREATE SEQUENCE IF NOT EXISTS ${x}`),
    keyLogTableSql(spec),
    ...owned,
    ...(info.owner !== info.currentUser ? [`ALTER TABLE ${log} OWNER TO ${q(info.owner)}`] : []),
    keyLogFunctionSql(spec),
    ...ownedSql(ctx, forward.fn),
    truncateFunctionSql(forward.truncateFn, ctx.shadow, counterOf(ctx.table, 'trunc')),
    ...ownedSql(ctx, forward.truncateFn),
    ...triggersSql(on, forward),
    ...guardViewSql(ctx, guard),
  ];
  return {
    shape: SHAPE_SQL,
    triggerFence: TRIGGER_FENCE_SQL,
    moves: `SELECT CASE WHEN is_called THEN last_value ELSE 0 END::bigint AS n FROM ${counter}`,
    dropCounters: [counter, iso, trunc].map((x) => `DROP SEQUENCE IF EXISTS ${x}`),
    syncTrigger,
    dropSyncTrigger: [...dropTriggersSql(on, forward, guard), `DROP TABLE IF EXISTS ${log}`],
    keyLog: keyLogApplySql(spec),
  };
}

export type { KeyLogApplySql };
