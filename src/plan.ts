/**
 * The partitioning plan: every SQL statement partflow runs for one table, built purely from the catalog
 * snapshot (`TableInfo`) and the validated options. Activities execute these statements; `dryRun` shows them.
 *
 * Names: the shadow is `<table>_pf_shadow`; partitions are `<table>_YYYY_MM` and `<table>_default` from
 * the start, so nothing is renamed below the parent at cut-over; the source becomes `<table>_old`.
 * The shadow's indexes get temporary names and take over the originals' names at cut-over, when the old
 * table's indexes are parked under `<table>_pfo_<n>`.
 */
import type { ForeignKeyInfo, TableInfo } from './catalog';
import {
  byteLength,
  displayName,
  InputError,
  MAX_IDENT_BYTES,
  qualified,
  quoteIdent,
  quoteLiteral,
  TableRef,
} from './ident';
import type { PartitionOptions } from './input';
import {
  boundLiteral,
  formatMonth,
  MAX_MONTHLY_PARTITIONS,
  parseMonth,
  PartitionColumnType,
  partitionLayout,
} from './partitions';

export const FORWARD_TRIGGER = 'partflow_sync_fwd';
export const REVERSE_TRIGGER = 'partflow_sync_rev';
/** statement-level AFTER TRUNCATE companions of the row triggers */
export const FORWARD_TRUNCATE_TRIGGER = 'partflow_sync_fwd_truncate';
export const REVERSE_TRUNCATE_TRIGGER = 'partflow_sync_rev_truncate';
export const STATE_SCHEMA = 'partflow';

export interface PlannedPartition {
  name: string;
  from: string; // YYYY-MM inclusive
  to: string; // YYYY-MM exclusive
}

export interface IndexRename {
  original: string;
  shadowTemp: string;
  oldParked: string;
}

export interface Plan {
  table: TableRef;
  tableOid: number;
  shadow: TableRef;
  old: TableRef;
  partitionColumn: string;
  columnType: PartitionColumnType;
  /** pages: TID ranges (PostgreSQL 14+); keys: primary-key ranges */
  copyMode: 'pages' | 'keys';
  timeZone: string;
  partitions: PlannedPartition[];
  defaultPartition: string;
  /** columns copied by the trigger and the backfill (generated columns are recomputed) */
  columns: string[];
  /** the source's primary key */
  sourceKey: string[];
  /** the shadow's primary key: the source's plus the partition column */
  shadowKey: string[];
  estimatedRows: number;
  pages: number;
  inboundForeignKeys: ForeignKeyInfo[];
  indexRenames: IndexRename[];
  functions: { forward: string; reverse: string };
  /** the source as preflight saw it (columns, indexes, constraints, triggers): the cut-over refuses on any change */
  sourceShape: string[];
  /** sequence counting updates that move a row to another month (nextval per move, no row locks) */
  movesCounter: TableRef;
  sql: {
    /** one row per fact of the source's shape, as `sourceShape`; $1 is the table's OID */
    shape: string;
    /** one row (`fence`) naming partflow's triggers on $1 with their catalog row version and enabled state */
    triggerFence: string;
    /** one row (`n`): the moves counter's value */
    moves: string;
    /** after finalize or undo: the moves counter goes */
    dropCounters: string[];
    /** one transaction: the partitioned copy, its partitions, keys, indexes, grants, comment */
    shadow: string[];
    /** one statement each, own transaction and lock timeout: they lock the referenced tables briefly */
    shadowForeignKeys: string[];
    dropShadow: string[];
    syncTrigger: string[];
    dropSyncTrigger: string[];
    /** $1, $2: tid bounds [from, to); skips rows the trigger wrote already */
    backfillBatch: string;
    /** the same without ON CONFLICT: faster, fails with 23505 when the trigger wrote a row of the range */
    backfillBatchFast?: string;
    /** key mode: the largest key when the trigger is installed (the end of the walk) */
    maxKey: string;
    /** key mode: the key `batch` rows after $lo (or from the start), capped by $max; params in the plan's key types */
    keyBound: string;
    keyBoundFirst: string;
    /** key mode: copy the rows with lo < key <= hi (or key <= hi) */
    keyCopy: string;
    keyCopyFirst: string;
    /** month bucket, row count, checksum per bucket, for the source and the shadow */
    verifySource: string;
    verifyShadow: string;
    /** one transaction */
    cutover: string[];
    /** one transaction: undo of cutover while the old table is kept in sync */
    swapBack: string[];
    /** after swapBack: re-validate re-added inbound foreign keys, one statement each */
    validateInbound: string[];
    finalize: string[];
  };
  /** what partitioning changes for the application (informational) */
  warnings: string[];
  /** what the operator gave up with an explicit input (acceptLostConstraints) or what is not carried */
  givenUp: string[];
  /** rows the layout puts in the default partition (outliers, infinities, far-future rows) */
  outsideRows: number;
}

const q = quoteIdent;

function refuse(msg: string): never {
  throw new InputError(msg);
}

function sibling(ref: TableRef, name: string): TableRef {
  return { schema: ref.schema, name };
}

/** Checks every refusal reason that the catalog can show; the first one found is thrown as one sentence. */
export function checkPreflight(info: TableInfo, opts: PartitionOptions): void {
  const t = displayName(info.table);
  if (info.serverVersionNum < 130000) {
    refuse(
      `PostgreSQL ${Math.floor(info.serverVersionNum / 10000)} is too old: partflow needs PostgreSQL 13 or newer.`,
    );
  }
  if (info.serverVersionNum < 140000 && opts.copyMode === 'pages') {
    refuse(
      `PostgreSQL ${Math.floor(info.serverVersionNum / 10000)} has no TID range scans; use "copyMode": "keys" or "auto".`,
    );
  }
  if (info.relkind === 'p')
    refuse(`Table ${t} is already partitioned; use maintainPartitions to manage its partitions.`);
  if (info.relkind !== 'r')
    refuse(`${t} is not an ordinary table (relkind ${info.relkind}); only tables can be partitioned.`);
  if (info.inheritance.partitionOf)
    refuse(
      `Table ${t} is itself a partition of ${info.inheritance.partitionOf}; partition ${info.inheritance.partitionOf} with maintainPartitions instead, or detach ${t} first.`,
    );
  if (info.inheritance.parents.length)
    refuse(
      `Table ${t} inherits from ${info.inheritance.parents.join(', ')} (table inheritance); a partitioned table cannot inherit: remove the inheritance (ALTER TABLE ... NO INHERIT) first.`,
    );
  if (info.inheritance.children.length)
    refuse(
      `Table ${t} has inheritance children (${info.inheritance.children.join(', ')}) whose rows a swap would leave behind; remove the inheritance (ALTER TABLE child NO INHERIT ${t}) first.`,
    );
  const pc = info.partitionColumn;
  if (!pc) refuse(`Table ${t} has no column ${JSON.stringify(opts.column)}; set "column" to its timestamp column.`);
  if (!['timestamptz', 'timestamp', 'date'].includes(pc.type)) {
    refuse(
      `Column ${JSON.stringify(pc.name)} of ${t} is ${pc.type}; the partition column must be timestamp, timestamptz or date.`,
    );
  }
  if (info.columns.find((c) => c.name === pc.name)?.generated) {
    refuse(
      `Column ${JSON.stringify(pc.name)} of ${t} is GENERATED; partition by a plain column (the one it is computed from, or a stored copy of it).`,
    );
  }
  if (!info.primaryKey)
    refuse(`Table ${t} has no primary key; add one first, partflow needs it to keep the copy in sync.`);
  if (info.nullKeyRows > 0) {
    refuse(
      `Column ${JSON.stringify(pc.name)} of ${t} has ${info.nullKeyRows} NULL rows; fill them and make it NOT NULL first (fixConstraints can do both online).`,
    );
  }
  if (!pc.notNull) {
    refuse(
      `Column ${JSON.stringify(pc.name)} of ${t} allows NULL, which a partition key in a primary key cannot; make it NOT NULL first (fixConstraints does it online).`,
    );
  }
  if (info.activeRun)
    refuse(
      `Table ${t} already has a partflow run in progress (workflow ${info.activeRun.workflowId}); wait for it, or roll it back, before starting another.`,
    );
  const selfRefs = info.inboundForeignKeys.filter(
    (f) => f.table.schema === info.table.schema && f.table.name === info.table.name,
  );
  if (selfRefs.length)
    refuse(
      `Table ${t} references itself (${selfRefs.map((f) => f.name).join(', ')}); self-referencing tables are not supported yet.`,
    );
  if (info.inboundForeignKeys.length && opts.inboundForeignKeys !== 'drop') {
    const list = info.inboundForeignKeys.map((f) => `${displayName(f.table)}.${f.name}`).join(', ');
    refuse(
      `Other tables reference ${t} by foreign key (${list}); a partitioned table cannot be referenced by its id alone, so rerun with "inboundForeignKeys": "drop" to drop them at cut-over.`,
    );
  }
  if (info.dependentViews.length)
    refuse(
      `Views depend on ${t} (${info.dependentViews.join(', ')}); they would keep pointing at the old table after the swap: drop them first and recreate them afterwards.`,
    );
  if (info.implicitPublications.length)
    refuse(
      `Publication(s) ${info.implicitPublications.join(', ')} publish every table of ${JSON.stringify(info.table.schema)} or of the database, so the copy and partflow's own tables would be published and break subscribers; publish an explicit table list while partflow runs.`,
    );
  if (info.subscriptions.length)
    refuse(
      `Table ${t} is the target of logical replication subscription(s) ${info.subscriptions.join(', ')}, which follow the table's OID and would keep writing into the old table; partition it on the publisher, or drop the table from the subscription first.`,
    );
  if (info.oidDependents.length)
    refuse(
      `${info.oidDependents.join(', ')} ${info.oidDependents.length > 1 ? 'are' : 'is'} bound to ${t} by OID and would keep using the old table after the swap; drop ${info.oidDependents.length > 1 ? 'them' : 'it'} first and recreate ${info.oidDependents.length > 1 ? 'them' : 'it'} afterwards.`,
    );
  if (info.publications.length)
    refuse(
      `Table ${t} is in publication(s) ${info.publications.join(', ')}; remove it first and add the new table after cut-over.`,
    );
  if (info.rules.length)
    refuse(`Table ${t} has rules (${info.rules.join(', ')}), which partflow cannot carry over; drop them first.`);
  if (info.userTriggers.length)
    refuse(
      `Table ${t} has triggers (${info.userTriggers.join(', ')}) that partflow does not copy yet; drop them first and recreate them on the new table afterwards.`,
    );
  if (info.rowSecurity)
    refuse(`Table ${t} has row-level security enabled, which partflow does not copy yet; disable it first.`);
  const serial = info.sequences.filter((s) => s.kind === 'serial');
  if (serial.length > 1) refuse(`Table ${t} has more than one serial column; partflow handles at most one.`);
  const deferrable = info.indexes.filter((i) => i.deferrable).map((i) => i.constraintName ?? i.name);
  if (deferrable.length) {
    refuse(
      `Constraint(s) ${deferrable.join(', ')} of ${t} are DEFERRABLE, which the copy's upserts cannot use as arbiters; make them NOT DEFERRABLE first (CREATE UNIQUE INDEX CONCURRENTLY on the same columns, then swap the constraint to it with ADD CONSTRAINT ... USING INDEX).`,
    );
  }
  const invalid = info.indexes.filter((i) => !i.isValid).map((i) => i.name);
  if (invalid.length)
    refuse(
      `Index(es) ${invalid.join(', ')} of ${t} are INVALID (left by a failed CREATE INDEX CONCURRENTLY); drop or REINDEX them first, a valid copy would reject writes the table accepts.`,
    );
  const lost = constraintsWithoutKey(info);
  const unaccepted = lost.filter((i) => !opts.acceptLostConstraints.includes(i.name));
  if (unaccepted.length) {
    const list = unaccepted.map(
      (i) =>
        `${i.name} (${i.constraintName && !i.isUnique ? 'exclusion constraint' : i.keyColumns.includes(pc.name) ? 'unique' : `unique without ${pc.name}${i.columns.includes(pc.name) ? ' in its key, only in INCLUDE' : ''}`})`,
    );
    refuse(
      `${t} has ${list.join(', ')}, which a table partitioned by ${pc.name} cannot enforce across partitions; add ${pc.name} to ${unaccepted.length > 1 ? 'them' : 'it'} first, or list ${unaccepted.length > 1 ? 'them' : 'it'} in "acceptLostConstraints" to give the guarantee up.`,
    );
  }
  const unknown = opts.acceptLostConstraints.filter((n) => !lost.some((i) => i.name === n));
  if (unknown.length)
    refuse(
      `"acceptLostConstraints" names ${unknown.join(', ')}, which ${unknown.length > 1 ? 'are not unique indexes or constraints' : 'is not a unique index or constraint'} of ${t} that partitioning would lose; remove ${unknown.length > 1 ? 'them' : 'it'} from the list.`,
    );
  for (const o of info.storage.reloptions) {
    if (!/^[a-z_.]+=[A-Za-z0-9_.-]+$/.test(o))
      refuse(`Storage parameter ${JSON.stringify(o)} of ${t} is not one partflow can carry over; reset it first.`);
  }
}

/** Unique indexes and UNIQUE / EXCLUDE constraints that a table partitioned by the column cannot keep. */
export function constraintsWithoutKey(info: TableInfo): TableInfo['indexes'] {
  const pc = info.partitionColumn!.name;
  return info.indexes.filter(
    (i) => !i.isPrimary && ((i.constraintName && !i.isUnique) || (i.isUnique && !i.keyColumns.includes(pc))),
  );
}

/** All names the plan creates; each must fit in 63 bytes and be free. */
export function plannedNames(table: TableRef, partitions: PlannedPartition[], indexCount: number): string[] {
  const n = table.name;
  const names = [`${n}_pf_shadow`, `${n}_old`, `${n}_default`, `${n}_pf_moves`, ...partitions.map((p) => p.name)];
  for (let i = 0; i < indexCount; i++) names.push(`${n}_pfi_${i}`, `${n}_pfo_${i}`);
  return names;
}

function checkNames(info: TableInfo, names: string[]): void {
  for (const name of names) {
    if (byteLength(name) > MAX_IDENT_BYTES) {
      refuse(
        `The generated name ${JSON.stringify(name)} would be ${byteLength(name)} bytes, over PostgreSQL's 63; rename the table to something shorter first.`,
      );
    }
  }
  const taken = names.filter((nm) => info.takenNames.includes(nm));
  if (taken.length)
    refuse(
      `Names partflow needs are already taken in schema ${JSON.stringify(info.table.schema)}: ${taken.join(', ')}; drop or rename them first.`,
    );
}

function keyMatch(cols: string[], left: string, right: string): string {
  return cols.map((c) => `${left}.${q(c)} = ${right}.${q(c)}`).join(' AND ');
}

export interface MirrorSpec {
  fn: TableRef;
  target: TableRef;
  /** the source's columns in attnum order, generated ones too: the trigger reads OLD and NEW by position */
  sourceColumns: string[];
  /** the columns written into the target */
  columns: string[];
  key: string[];
  overriding: boolean;
  identityAlways: string[];
  /** counts updates that move a row to another month, with nextval (no row lock, no contention) */
  moves: { column: string; type: PartitionColumnType; timeZone: string; counter: TableRef } | null;
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
  const onConflict = settable.length
    ? `ON CONFLICT (${m.key.map(q).join(', ')}) DO UPDATE SET ${settable.map((c) => `${q(c)} = EXCLUDED.${q(c)}`).join(', ')}`
    : 'ON CONFLICT DO NOTHING';
  const tuple = (r: string) => `(${m.key.map((c) => `${r}.${alias(c)}`).join(', ')})`;
  const month = (r: string) => {
    if (!m.moves) return '';
    const v = `${r}.${alias(m.moves.column)}`;
    return m.moves.type === 'timestamptz'
      ? `date_trunc('month', ${v} AT TIME ZONE ${quoteLiteral(m.moves.timeZone)})`
      : `date_trunc('month', ${v}::timestamp)`;
  };
  const tgt = qualified(m.target);
  const moved = m.moves ? `, ${month('o')} IS DISTINCT FROM ${month('n')}` : '';
  return `CREATE OR REPLACE FUNCTION ${qualified(m.fn)}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $partflow$
DECLARE
  key_changed boolean := TG_OP = 'DELETE';
  moved boolean := false;
BEGIN
  IF TG_OP = 'UPDATE' THEN
    SELECT ${tuple('o')} IS DISTINCT FROM ${tuple('n')}${moved || ', false'} INTO key_changed, moved FROM ${oldRow}, ${newRow};${
      m.moves
        ? `\n    IF moved THEN PERFORM nextval(${quoteLiteral(qualified(m.moves.counter))}::regclass); END IF;`
        : ''
    }
  END IF;
  IF key_changed THEN
    DELETE FROM ${tgt} t USING ${oldRow} WHERE ${m.key.map((c) => `t.${q(c)} = o.${alias(c)}`).join(' AND ')};
  END IF;
  IF TG_OP <> 'DELETE' THEN
    INSERT INTO ${tgt} (${cols})${m.overriding ? ' OVERRIDING SYSTEM VALUE' : ''} SELECT ${m.columns.map((c) => `n.${alias(c)}`).join(', ')} FROM ${newRow}
      ${onConflict};
  END IF;
  RETURN NULL;
END
$partflow$`;
}

/** A statement trigger's function that empties `target` when the source is truncated. */
export function truncateFunctionSql(fn: TableRef, target: TableRef): string {
  return `CREATE OR REPLACE FUNCTION ${qualified(fn)}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $partflow$
BEGIN
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
         || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END || CASE WHEN a.attgenerated <> '' THEN ' GENERATED' ELSE '' END AS x
    FROM pg_attribute a WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL SELECT 'index ' || pg_get_indexdef(i.indexrelid) || CASE WHEN i.indisvalid THEN '' ELSE ' INVALID' END FROM pg_index i WHERE i.indrelid = $1
  UNION ALL SELECT 'constraint ' || quote_ident(c.conname) || ' ' || pg_get_constraintdef(c.oid) FROM pg_constraint c WHERE c.conrelid = $1
  UNION ALL SELECT 'trigger ' || quote_ident(t.tgname) FROM pg_trigger t WHERE t.tgrelid = $1 AND NOT t.tgisinternal AND t.tgname NOT LIKE 'partflow\\_%'
) s ORDER BY x`;

/** partflow's triggers on $1 (an OID) with the version of their catalog rows: any ENABLE / DISABLE changes it. */
export const TRIGGER_FENCE_SQL = `SELECT coalesce(string_agg(tgname::text || ':' || xmin::text || ':' || tgenabled::text, ',' ORDER BY tgname), '') AS fence
  FROM pg_trigger WHERE tgrelid = $1 AND tgname LIKE 'partflow\\_%'`;

/** Differences between two shapes, for the cut-over's refusal. */
export function shapeDifferences(planned: string[], now: string[]): string[] {
  const gone = planned.filter((x) => !now.includes(x)).map((x) => `${x} is gone`);
  const added = now.filter((x) => !planned.includes(x)).map((x) => `${x} is new`);
  return [...gone, ...added];
}

function monthBucketExpr(value: string, type: PartitionColumnType, timeZone: string): string {
  return type === 'timestamptz'
    ? `to_char(${value} AT TIME ZONE ${quoteLiteral(timeZone)}, 'YYYY-MM')`
    : `to_char(${value}, 'YYYY-MM')`;
}

/**
 * `SELECT * FROM <rel> [where]` with its columns renamed by position to a1, a2, ...: partflow's own reads of
 * the source name no column, so a column renamed or added during the run cannot break them.
 */
function positional(rel: TableRef, sourceColumns: string[], where = ''): string {
  return `(SELECT * FROM ${qualified(rel)}${where}) AS s(${sourceColumns.map((_, i) => `a${i + 1}`).join(', ')})`;
}

function checksumQuery(
  rel: TableRef,
  sourceColumns: string[],
  columns: string[],
  bucket: (value: string) => string,
  partitionColumn: string,
): string {
  const a = (c: string) => `s.a${sourceColumns.indexOf(c) + 1}`;
  const row = `ROW(${columns.map(a).join(', ')})::text`;
  return `SELECT ${bucket(a(partitionColumn))} AS bucket, count(*)::bigint AS n, coalesce(sum(hashtextextended(${row}, 0)), 0)::text AS checksum FROM ${positional(rel, sourceColumns)} GROUP BY 1`;
}

/** Sets sequence `a` (of table A's column) to at least where sequence `b` (of table B's column) is. */
function syncIdentitySql(a: TableRef, b: TableRef, column: string): string {
  const sa = `pg_get_serial_sequence(${quoteLiteral(qualified(a))}, ${quoteLiteral(column)})::regclass`;
  const sb = `pg_get_serial_sequence(${quoteLiteral(qualified(b))}, ${quoteLiteral(column)})::regclass`;
  return `SELECT setval(s.a, greatest(pg_sequence_last_value(s.b), coalesce(pg_sequence_last_value(s.a), 0)), true) FROM (SELECT ${sa} AS a, ${sb} AS b) s WHERE pg_sequence_last_value(s.b) IS NOT NULL`;
}

export function buildPlan(info: TableInfo, opts: PartitionOptions): Plan {
  checkPreflight(info, opts);
  const table = info.table;
  const pc = info.partitionColumn!;
  const type = pc.type as PartitionColumnType;
  const shadow = sibling(table, `${table.name}_pf_shadow`);
  const old = sibling(table, `${table.name}_old`);
  const startMonth = opts.startMonth ? parseMonth(opts.startMonth) : null;
  const layout = partitionLayout(
    table.name,
    (info.keyRange?.months ?? []).map(parseMonth),
    parseMonth(info.currentMonth),
    opts.premake,
    startMonth,
  );
  if (!startMonth && layout.monthly > MAX_MONTHLY_PARTITIONS) {
    refuse(
      `The rows of ${displayName(table)} span ${layout.monthly} months from ${formatMonth(layout.partitions[0].from)}, more than ${MAX_MONTHLY_PARTITIONS} monthly partitions; set "startMonth" (e.g. "${formatMonth(layout.partitions[layout.monthly - MAX_MONTHLY_PARTITIONS].from)}") to keep everything older in one partition ${table.name}_older.`,
    );
  }
  const specs = layout.partitions;
  const partitions = specs.map((s) => ({ name: s.name, from: formatMonth(s.from), to: formatMonth(s.to) }));
  const defaultPartition = `${table.name}_default`;
  const secondary = info.indexes.filter((i) => !i.isPrimary);
  checkNames(info, plannedNames(table, partitions, secondary.length + 1));

  const warnings: string[] = [];
  const givenUp: string[] = [];
  const sourceColumns = info.columns.map((c) => c.name);
  const columns = info.columns.filter((c) => !c.generated).map((c) => c.name);
  const identityAlways = info.columns.filter((c) => c.identity === 'a').map((c) => c.name);
  const overriding = info.columns.some((c) => c.identity !== '');
  const sourceKey = info.primaryKey!.columns;
  const shadowKey = sourceKey.includes(pc.name) ? [...sourceKey] : [...sourceKey, pc.name];
  if (shadowKey.length !== sourceKey.length) {
    warnings.push(
      `The primary key ${info.primaryKey!.name} becomes (${shadowKey.join(', ')}): PostgreSQL requires the partition key in every unique constraint of a partitioned table, so "${sourceKey.join(', ')}" alone is unique per partition only (new keys from a sequence or gen_random_uuid() stay unique). ` +
        `Application statements with ON CONFLICT (${sourceKey.join(', ')}) fail after the cut-over ("no unique or exclusion constraint matching the ON CONFLICT specification"): change them to ON CONFLICT (${shadowKey.join(', ')}) or ON CONFLICT ON CONSTRAINT ${info.primaryKey!.name}.`,
    );
  }
  warnings.push(
    `On a partitioned table, two concurrent UPDATEs of the same row where one moves it to another month fail with SQLSTATE 40001 ("tuple to be locked was already moved to another partition"); the plain table did not: make sure the application retries 40001. The run counts such moves (progress "rowMoves").`,
  );
  const outsideRows = info.keyRange?.outsideRows ?? 0;
  if (outsideRows > 0) {
    warnings.push(
      `${outsideRows} row(s) of ${displayName(table)} fall outside the monthly partitions ${partitions[0].from} … ${partitions[partitions.length - 1].from} and go to ${defaultPartition}: outliers, infinities or far-future rows (list them with: SELECT * FROM ${qualified(table)} WHERE ${q(pc.name)} < ${boundLiteral(specs[0].from, type, opts.timeZone)} OR ${q(pc.name)} >= ${boundLiteral(specs[specs.length - 1].to, type, opts.timeZone)}).`,
    );
  }
  if (layout.bodyStart && info.oldestMonth && !startMonth && info.oldestMonth < formatMonth(layout.bodyStart)) {
    warnings.push(
      `Rows before ${formatMonth(layout.bodyStart)} (from ${info.oldestMonth}) are separated from the rest by more than a year without rows and count as outliers; set "startMonth" to give them a partition instead.`,
    );
  }

  const st = qualified(shadow);
  const storage = info.storage;
  const tablespace = storage.tablespace ? ` TABLESPACE ${q(storage.tablespace)}` : '';
  const withOptions = storage.reloptions.length
    ? ` WITH (${storage.reloptions
        .map((o) => {
          const i = o.indexOf('=');
          return `${o.slice(0, i)} = ${quoteLiteral(o.slice(i + 1))}`;
        })
        .join(', ')})`
    : '';
  const unlogged = storage.unlogged ? 'UNLOGGED ' : '';
  const shadowSql: string[] = [
    `CREATE TABLE ${st} (LIKE ${qualified(table)} INCLUDING ALL EXCLUDING INDEXES) PARTITION BY RANGE (${q(pc.name)})${tablespace}`,
  ];
  for (const p of specs) {
    shadowSql.push(
      `CREATE ${unlogged}TABLE ${qualified(sibling(table, p.name))} PARTITION OF ${st} FOR VALUES FROM (${boundLiteral(p.from, type, opts.timeZone)}) TO (${boundLiteral(p.to, type, opts.timeZone)})${withOptions}${tablespace}`,
    );
  }
  shadowSql.push(
    `CREATE ${unlogged}TABLE ${qualified(sibling(table, defaultPartition))} PARTITION OF ${st} DEFAULT${withOptions}${tablespace}`,
  );
  const allPartitions = [...specs.map((s) => s.name), defaultPartition];
  if (storage.replicaIdentity === 'f' || storage.replicaIdentity === 'n') {
    const ri = storage.replicaIdentity === 'f' ? 'FULL' : 'NOTHING';
    shadowSql.push(`ALTER TABLE ${st} REPLICA IDENTITY ${ri}`);
    for (const p of allPartitions) shadowSql.push(`ALTER TABLE ${qualified(sibling(table, p))} REPLICA IDENTITY ${ri}`);
  } else if (storage.replicaIdentity === 'i') {
    givenUp.push(
      `Replica identity USING INDEX ${storage.replicaIdentityIndex} is not carried over: the new table uses its primary key (${shadowKey.join(', ')}) as replica identity.`,
    );
  }
  for (const s of storage.statisticsTargets)
    shadowSql.push(`ALTER TABLE ${st} ALTER COLUMN ${q(s.column)} SET STATISTICS ${s.target}`);

  const indexRenames: IndexRename[] = [];
  const pkTemp = `${table.name}_pfi_0`;
  shadowSql.push(`ALTER TABLE ${st} ADD CONSTRAINT ${q(pkTemp)} PRIMARY KEY (${shadowKey.map(q).join(', ')})`);
  indexRenames.push({ original: info.primaryKey!.name, shadowTemp: pkTemp, oldParked: `${table.name}_pfo_0` });
  const pkIndex = info.indexes.find((i) => i.isPrimary);
  if (pkIndex?.constraintComment)
    shadowSql.push(`COMMENT ON CONSTRAINT ${q(pkTemp)} ON ${st} IS ${quoteLiteral(pkIndex.constraintComment)}`);
  if (pkIndex?.comment)
    shadowSql.push(`COMMENT ON INDEX ${qualified(sibling(table, pkTemp))} IS ${quoteLiteral(pkIndex.comment)}`);
  const lost = new Set(constraintsWithoutKey(info).map((i) => i.name));
  secondary.forEach((idx, i) => {
    const temp = `${table.name}_pfi_${i + 1}`;
    const parked = `${table.name}_pfo_${i + 1}`;
    if (idx.constraintName && !idx.isUnique) {
      givenUp.push(
        `Exclusion constraint ${idx.constraintName} (${idx.def}) is dropped: a partitioned table cannot have one (accepted in "acceptLostConstraints").`,
      );
      return;
    }
    let unique = idx.isUnique;
    if (lost.has(idx.name)) {
      unique = false;
      givenUp.push(
        `Unique ${idx.constraintName ? 'constraint' : 'index'} ${idx.name} becomes a plain index: uniqueness of (${idx.keyColumns.join(', ')}) is no longer enforced (accepted in "acceptLostConstraints").`,
      );
    }
    if (idx.tail === null)
      refuse(`Cannot read the definition of index ${idx.name} (${idx.def}); drop it or report this as a bug.`);
    if (unique && idx.constraintName && idx.constraintDef) {
      // a UNIQUE constraint stays a constraint (ON CONFLICT ON CONSTRAINT, foreign keys to it)
      shadowSql.push(`ALTER TABLE ${st} ADD CONSTRAINT ${q(temp)} ${idx.constraintDef}`);
      if (idx.constraintComment)
        shadowSql.push(`COMMENT ON CONSTRAINT ${q(temp)} ON ${st} IS ${quoteLiteral(idx.constraintComment)}`);
    } else {
      shadowSql.push(`CREATE ${unique ? 'UNIQUE ' : ''}INDEX ${q(temp)} ON ${st} ${idx.tail}`);
    }
    if (idx.comment)
      shadowSql.push(`COMMENT ON INDEX ${qualified(sibling(table, temp))} IS ${quoteLiteral(idx.comment)}`);
    indexRenames.push({ original: idx.name, shadowTemp: temp, oldParked: parked });
  });
  for (const g of info.grants) {
    if (g.grantee === info.owner) continue;
    const grantee = g.grantee === 'PUBLIC' ? 'PUBLIC' : q(g.grantee);
    shadowSql.push(`GRANT ${g.privilege} ON ${st} TO ${grantee}${g.grantable ? ' WITH GRANT OPTION' : ''}`);
  }
  for (const g of info.columnGrants) {
    if (g.grantee === info.owner) continue;
    const grantee = g.grantee === 'PUBLIC' ? 'PUBLIC' : q(g.grantee);
    shadowSql.push(
      `GRANT ${g.privilege} (${q(g.column)}) ON ${st} TO ${grantee}${g.grantable ? ' WITH GRANT OPTION' : ''}`,
    );
  }
  if (info.comment !== null) shadowSql.push(`COMMENT ON TABLE ${st} IS ${quoteLiteral(info.comment)}`);
  if (info.owner !== info.currentUser) {
    shadowSql.push(`ALTER TABLE ${st} OWNER TO ${q(info.owner)}`);
    for (const p of allPartitions)
      shadowSql.push(`ALTER TABLE ${qualified(sibling(table, p))} OWNER TO ${q(info.owner)}`);
  }
  const shadowForeignKeys = info.outboundForeignKeys.map(
    (f) => `ALTER TABLE ${st} ADD CONSTRAINT ${q(f.name)} ${f.def}`,
  );
  for (const f of info.outboundForeignKeys) {
    if (f.comment) givenUp.push(`The comment on foreign key ${f.name} is not carried over.`);
  }
  if (info.indexes.some((i) => /\sTABLESPACE\s/.test(i.def)))
    givenUp.push("Index tablespaces are not carried over: the new indexes are in the table's tablespace.");

  // The sync machinery: row triggers that fire in every session_replication_role (ENABLE ALWAYS), a TRUNCATE
  // trigger, a guard view that blocks dropping or retyping a column while the run needs it, a moves counter.
  const fnForward = { schema: STATE_SCHEMA, name: `fwd_${info.oid}` };
  const fnReverse = { schema: STATE_SCHEMA, name: `rev_${info.oid}` };
  const fnForwardTruncate = { schema: STATE_SCHEMA, name: `fwd_truncate_${info.oid}` };
  const fnReverseTruncate = { schema: STATE_SCHEMA, name: `rev_truncate_${info.oid}` };
  const guard = { schema: STATE_SCHEMA, name: `guard_${info.oid}` };
  const movesCounter = sibling(table, `${table.name}_pf_moves`);
  const moves = { column: pc.name, type, timeZone: opts.timeZone, counter: movesCounter };
  const owned = (fn: TableRef) => [
    `REVOKE ALL ON FUNCTION ${qualified(fn)}() FROM PUBLIC`,
    // run as the table's owner where partflow may hand the function over (as a superuser); otherwise as
    // partflow's role, which owns the table or is a member of its owner role
    ...(info.owner !== info.currentUser && info.isSuperuser
      ? [`ALTER FUNCTION ${qualified(fn)}() OWNER TO ${q(info.owner)}`]
      : []),
  ];
  const triggers = (on: string, row: string, fn: TableRef, truncate: string, tfn: TableRef) => [
    `CREATE TRIGGER ${q(row)} AFTER INSERT OR UPDATE OR DELETE ON ${on} FOR EACH ROW EXECUTE FUNCTION ${qualified(fn)}()`,
    `ALTER TABLE ${on} ENABLE ALWAYS TRIGGER ${q(row)}`,
    `CREATE TRIGGER ${q(truncate)} AFTER TRUNCATE ON ${on} FOR EACH STATEMENT EXECUTE FUNCTION ${qualified(tfn)}()`,
    `ALTER TABLE ${on} ENABLE ALWAYS TRIGGER ${q(truncate)}`,
  ];
  const guardView = (on: string) => [
    `CREATE VIEW ${qualified(guard)} AS SELECT ${sourceColumns.map(q).join(', ')} FROM ${on}`,
    `COMMENT ON VIEW ${qualified(guard)} IS ${quoteLiteral(`partflow is partitioning ${displayName(table)}: its columns cannot be dropped or retyped until the run ends or is rolled back`)}`,
  ];
  const syncTrigger = [
    `CREATE SEQUENCE IF NOT EXISTS ${qualified(movesCounter)}`,
    ...(info.owner !== info.currentUser ? [`ALTER SEQUENCE ${qualified(movesCounter)} OWNER TO ${q(info.owner)}`] : []),
    mirrorFunctionSql({
      fn: fnForward,
      target: shadow,
      sourceColumns,
      columns,
      key: shadowKey,
      overriding,
      identityAlways,
      moves,
    }),
    ...owned(fnForward),
    truncateFunctionSql(fnForwardTruncate, shadow),
    ...owned(fnForwardTruncate),
    ...triggers(qualified(table), FORWARD_TRIGGER, fnForward, FORWARD_TRUNCATE_TRIGGER, fnForwardTruncate),
    ...guardView(qualified(table)),
  ];
  /** the undo of `triggers` and `guardView` */
  const dropTriggers = (on: string, row: string, fn: TableRef, truncate: string, tfn: TableRef) => [
    `DROP TRIGGER IF EXISTS ${q(row)} ON ${on}`,
    `DROP TRIGGER IF EXISTS ${q(truncate)} ON ${on}`,
    `DROP FUNCTION IF EXISTS ${qualified(fn)}()`,
    `DROP FUNCTION IF EXISTS ${qualified(tfn)}()`,
    `DROP VIEW IF EXISTS ${qualified(guard)}`,
  ];
  const dropSyncTrigger = dropTriggers(
    qualified(table),
    FORWARD_TRIGGER,
    fnForward,
    FORWARD_TRUNCATE_TRIGGER,
    fnForwardTruncate,
  );

  const colList = columns.map(q).join(', ');
  // The copy of one page range. FOR SHARE: a row deleted or moved by a concurrent transaction drops out of the
  // batch instead of coming back. `backfillBatchFast` has no ON CONFLICT (speculative insertion costs about a
  // sixth of the copy's speed): when the trigger already wrote a row of the range it fails with 23505 and the
  // batch is copied again with `backfillBatch`, which skips such rows.
  const select = `SELECT ${columns.map((c) => `s.a${sourceColumns.indexOf(c) + 1}`).join(', ')} FROM ${positional(table, sourceColumns, ' WHERE ctid >= $1::tid AND ctid < $2::tid FOR SHARE')}`;
  const insertInto = `INSERT INTO ${st} (${colList})${overriding ? ' OVERRIDING SYSTEM VALUE' : ''}`;
  const backfillBatch = `${insertInto} ${select} ON CONFLICT DO NOTHING`;
  const backfillBatchFast = `${insertInto} ${select}`;

  // Key ranges: bounds first (no locks, index order), then the copy of exactly that range under FOR SHARE.
  // The checkpoint is the bound, never a key read under the lock: a row re-keyed while we waited cannot move it.
  const keyTypes = sourceKey.map((k) => info.columns.find((c) => c.name === k)!.type);
  const tuple = `(${sourceKey.map(q).join(', ')})`;
  const params = (from: number) => `(${keyTypes.map((t, i) => `$${from + i}::${t}`).join(', ')})`;
  const n = keyTypes.length;
  const keyText = `ARRAY[${sourceKey.map((k) => `${q(k)}::text`).join(', ')}]`;
  const order = sourceKey.map(q).join(', ');
  const limitParam = `$${2 * n + 1}`;
  const maxKey = `SELECT ${keyText} AS k FROM ${qualified(table)} ORDER BY ${sourceKey.map((k) => `${q(k)} DESC`).join(', ')} LIMIT 1`;
  const keyBound = `SELECT ${keyText} AS k FROM ${qualified(table)} WHERE ${tuple} > ${params(1)} AND ${tuple} <= ${params(n + 1)} ORDER BY ${order} OFFSET ${limitParam}::int - 1 LIMIT 1`;
  const keyBoundFirst = `SELECT ${keyText} AS k FROM ${qualified(table)} WHERE ${tuple} <= ${params(1)} ORDER BY ${order} OFFSET $${n + 1}::int - 1 LIMIT 1`;
  const keyCopyTpl = (
    where: string,
  ) => `WITH src AS (SELECT ${colList} FROM ${qualified(table)} WHERE ${where} FOR SHARE),
ins AS (INSERT INTO ${st} (${colList})${overriding ? ' OVERRIDING SYSTEM VALUE' : ''} SELECT ${colList} FROM src ON CONFLICT DO NOTHING RETURNING 1)
SELECT (SELECT count(*) FROM src)::bigint AS read, (SELECT count(*) FROM ins)::bigint AS inserted`;
  const keyCopy = keyCopyTpl(`${tuple} > ${params(1)} AND ${tuple} <= ${params(n + 1)}`);
  const keyCopyFirst = keyCopyTpl(`${tuple} <= ${params(1)}`);
  const copyMode = opts.copyMode === 'auto' ? (info.serverVersionNum >= 140000 ? 'pages' : 'keys') : opts.copyMode;

  const bucket = (value: string) => monthBucketExpr(value, type, opts.timeZone);
  const verifySource = checksumQuery(table, sourceColumns, columns, bucket, pc.name);
  const verifyShadow = checksumQuery(shadow, sourceColumns, columns, bucket, pc.name);

  // Cut-over: the renames, then the reverse trigger that keeps the old table complete for rollback.
  const lockBoth = `LOCK TABLE ${qualified(table)}, ${st} IN ACCESS EXCLUSIVE MODE`;
  const renameIdx = (from: string, to: string) => `ALTER INDEX ${qualified(sibling(table, from))} RENAME TO ${q(to)}`;
  const serial = info.sequences.find((s) => s.kind === 'serial');
  const identities = info.sequences.filter((s) => s.kind === 'identity');
  const cutover: string[] = [lockBoth, ...dropSyncTrigger];
  for (const fk of info.inboundForeignKeys)
    cutover.push(`ALTER TABLE ${qualified(fk.table)} DROP CONSTRAINT ${q(fk.name)}`);
  cutover.push(`ALTER TABLE ${qualified(table)} RENAME TO ${q(old.name)}`);
  for (const r of indexRenames) cutover.push(renameIdx(r.original, r.oldParked));
  cutover.push(`ALTER TABLE ${st} RENAME TO ${q(table.name)}`);
  for (const r of indexRenames) cutover.push(renameIdx(r.shadowTemp, r.original));
  if (serial)
    cutover.push(`ALTER SEQUENCE ${qualified(serial.sequence)} OWNED BY ${qualified(table)}.${q(serial.column)}`);
  for (const s of identities) cutover.push(syncIdentitySql(table, old, s.column));
  cutover.push(
    mirrorFunctionSql({
      fn: fnReverse,
      target: old,
      sourceColumns,
      columns,
      key: sourceKey,
      overriding,
      identityAlways,
      moves,
    }),
  );
  cutover.push(...owned(fnReverse), truncateFunctionSql(fnReverseTruncate, old), ...owned(fnReverseTruncate));
  cutover.push(...triggers(qualified(table), REVERSE_TRIGGER, fnReverse, REVERSE_TRUNCATE_TRIGGER, fnReverseTruncate));
  cutover.push(...guardView(qualified(table)));

  const finalize = dropTriggers(
    qualified(table),
    REVERSE_TRIGGER,
    fnReverse,
    REVERSE_TRUNCATE_TRIGGER,
    fnReverseTruncate,
  );

  const swapBack: string[] = [
    `LOCK TABLE ${qualified(table)}, ${qualified(old)} IN ACCESS EXCLUSIVE MODE`,
    ...finalize,
  ];
  swapBack.push(`ALTER TABLE ${qualified(table)} RENAME TO ${q(shadow.name)}`);
  for (const r of indexRenames) swapBack.push(renameIdx(r.original, r.shadowTemp));
  swapBack.push(`ALTER TABLE ${qualified(old)} RENAME TO ${q(table.name)}`);
  for (const r of indexRenames) swapBack.push(renameIdx(r.oldParked, r.original));
  if (serial)
    swapBack.push(`ALTER SEQUENCE ${qualified(serial.sequence)} OWNED BY ${qualified(table)}.${q(serial.column)}`);
  for (const s of identities) swapBack.push(syncIdentitySql(table, shadow, s.column));
  const validateInbound: string[] = [];
  for (const fk of info.inboundForeignKeys) {
    swapBack.push(`ALTER TABLE ${qualified(fk.table)} ADD CONSTRAINT ${q(fk.name)} ${fk.def} NOT VALID`);
    validateInbound.push(`ALTER TABLE ${qualified(fk.table)} VALIDATE CONSTRAINT ${q(fk.name)}`);
  }
  if (info.inboundForeignKeys.length) {
    warnings.push(
      `These foreign keys reference ${displayName(table)} and are dropped at cut-over (re-added on rollback): ${info.inboundForeignKeys.map((f) => `${displayName(f.table)}.${f.name}`).join(', ')}.`,
    );
  }
  if (identities.length)
    warnings.push(
      `Identity column(s) ${identities.map((s) => s.column).join(', ')} get the new table's own sequence, advanced at cut-over past the old one's last value.`,
    );
  if (info.estimatedRows < 0)
    warnings.push('The table has never been analyzed: the row estimate is unknown until the backfill reports.');

  return {
    table,
    tableOid: info.oid,
    shadow,
    old,
    partitionColumn: pc.name,
    columnType: type,
    copyMode,
    timeZone: opts.timeZone,
    partitions,
    defaultPartition,
    columns,
    sourceKey,
    shadowKey,
    estimatedRows: Math.max(0, info.estimatedRows),
    pages: info.pages,
    inboundForeignKeys: info.inboundForeignKeys,
    indexRenames,
    functions: { forward: qualified(fnForward), reverse: qualified(fnReverse) },
    sourceShape: info.shape,
    movesCounter,
    sql: {
      shape: SHAPE_SQL,
      triggerFence: TRIGGER_FENCE_SQL,
      moves: `SELECT CASE WHEN is_called THEN last_value ELSE 0 END::bigint AS n FROM ${qualified(movesCounter)}`,
      dropCounters: [`DROP SEQUENCE IF EXISTS ${qualified(movesCounter)}`],
      shadow: shadowSql,
      shadowForeignKeys,
      dropShadow: [`DROP TABLE IF EXISTS ${st}`],
      syncTrigger,
      dropSyncTrigger,
      backfillBatch,
      backfillBatchFast,
      maxKey,
      keyBound,
      keyBoundFirst,
      keyCopy,
      keyCopyFirst,
      verifySource,
      verifyShadow,
      cutover,
      swapBack,
      validateInbound,
      finalize,
    },
    warnings,
    givenUp,
    outsideRows,
  };
}

/** Rows per backfill batch → pages per batch, from the table's density. */
export function pagesPerBatch(batchRows: number, estimatedRows: number, pages: number): number {
  const density = pages > 0 && estimatedRows > 0 ? estimatedRows / pages : 50;
  return Math.max(1, Math.min(100_000, Math.ceil(batchRows / Math.max(1, density))));
}

/**
 * The next batch size (pages or keys) under a time budget: a batch that took longer than `budgetMs` shrinks
 * the next one in proportion (with a 20 % margin); one that took under 60 % of it grows by a fifth, never
 * past `cap` (the operator's batchSize).
 */
export function nextBatchSize(current: number, cap: number, tookMs: number, budgetMs: number): number {
  if (tookMs > budgetMs) return Math.max(1, Math.min(cap, Math.floor((current * budgetMs * 0.8) / tookMs)));
  if (tookMs < budgetMs * 0.6) return Math.min(cap, Math.max(current + 1, Math.ceil(current * 1.2)));
  return Math.min(cap, current);
}

/** Human summary of a plan, for dry runs and the CLI. */
export function planSummary(plan: Plan): string {
  const lines = [
    `table ${displayName(plan.table)} → partitioned by ${plan.partitionColumn} (${plan.columnType}), ${plan.partitions.length} monthly partitions ${plan.partitions[0]?.from} … ${plan.partitions.at(-1)?.from} + ${plan.defaultPartition}`,
    `estimated rows ${plan.estimatedRows}, ${plan.pages} pages; primary key (${plan.shadowKey.join(', ')}); ${plan.partitions.length + 1} partitions in all, ${plan.outsideRows} row(s) in the default partition`,
  ];
  for (const g of plan.givenUp) lines.push(`given up: ${g}`);
  for (const w of plan.warnings) lines.push(`warning: ${w}`);
  return lines.join('\n');
}

/** Every statement of the plan in the order the workflow runs them. */
export function planStatements(plan: Plan): { step: string; sql: string }[] {
  const s = plan.sql;
  return [
    ...s.shadow.map((sql) => ({ step: 'shadow', sql })),
    ...s.shadowForeignKeys.map((sql) => ({ step: 'shadow', sql })),
    ...s.syncTrigger.map((sql) => ({ step: 'sync', sql })),
    ...(plan.copyMode === 'pages'
      ? [{ step: 'backfill', sql: s.backfillBatch }]
      : [
          { step: 'backfill', sql: s.keyBound },
          { step: 'backfill', sql: s.keyCopy },
        ]),
    { step: 'verify', sql: s.verifySource },
    { step: 'verify', sql: s.verifyShadow },
    ...s.cutover.map((sql) => ({ step: 'cutover', sql })),
    ...s.finalize.map((sql) => ({ step: 'finalize', sql })),
  ];
}

export function partitionNames(plan: Plan): string[] {
  return [...plan.partitions.map((p) => p.name), plan.defaultPartition];
}

/**
 * The cut-over and the swap back begin with their LOCK TABLE statement, the only one that waits: the
 * executor runs it first, notes when the locks were held, then checks the table before the rest.
 */
export function splitLock(statements: string[]): { lock: string; then: string[] } {
  const [lock, ...then] = statements;
  if (!lock?.startsWith('LOCK TABLE ')) throw new Error(`a lock-first step begins with ${JSON.stringify(lock)}`);
  return { lock, then };
}

/** The constraint a `shadowForeignKeys` statement adds (the executor skips one that exists). */
export function foreignKeyName(statement: string): string {
  const m = /ADD CONSTRAINT ("(?:[^"]|"")+")/.exec(statement);
  if (!m) throw new Error(`not an ADD CONSTRAINT statement: ${statement.slice(0, 80)}`);
  return m[1].slice(1, -1).replace(/""/g, '"');
}

/** The statements of the plan the backfill runs: the workflow hands these to backfillChunk, not the plan. */
export type BackfillSql = Pick<
  Plan['sql'],
  'backfillBatch' | 'backfillBatchFast' | 'keyBound' | 'keyBoundFirst' | 'keyCopy' | 'keyCopyFirst'
>;

export function backfillSql(plan: Plan): BackfillSql {
  const { backfillBatch, backfillBatchFast, keyBound, keyBoundFirst, keyCopy, keyCopyFirst } = plan.sql;
  return { backfillBatch, backfillBatchFast, keyBound, keyBoundFirst, keyCopy, keyCopyFirst };
}
