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
import { byteLength, displayName, InputError, MAX_IDENT_BYTES, qualified, quoteIdent, quoteLiteral, TableRef } from './ident';
import type { PartitionOptions } from './input';
import { boundLiteral, formatMonth, monthlyPartitions, parseMonth, PartitionColumnType } from './partitions';

export const FORWARD_TRIGGER = 'partflow_sync_fwd';
export const REVERSE_TRIGGER = 'partflow_sync_rev';
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
  sql: {
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
  warnings: string[];
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
    refuse(`PostgreSQL ${Math.floor(info.serverVersionNum / 10000)} is too old: partflow needs PostgreSQL 13 or newer.`);
  }
  if (info.serverVersionNum < 140000 && opts.copyMode === 'pages') {
    refuse(`PostgreSQL ${Math.floor(info.serverVersionNum / 10000)} has no TID range scans; use "copyMode": "keys" or "auto".`);
  }
  if (info.relkind === 'p') refuse(`Table ${t} is already partitioned; use maintainPartitions to manage its partitions.`);
  if (info.relkind !== 'r') refuse(`${t} is not an ordinary table (relkind ${info.relkind}); only tables can be partitioned.`);
  const pc = info.partitionColumn;
  if (!pc) refuse(`Table ${t} has no column ${JSON.stringify(opts.column)}; set "column" to its timestamp column.`);
  if (!['timestamptz', 'timestamp', 'date'].includes(pc.type)) {
    refuse(`Column ${JSON.stringify(pc.name)} of ${t} is ${pc.type}; the partition column must be timestamp, timestamptz or date.`);
  }
  if (!info.primaryKey) refuse(`Table ${t} has no primary key; add one first, partflow needs it to keep the copy in sync.`);
  if (info.nullKeyRows > 0) {
    refuse(`Column ${JSON.stringify(pc.name)} of ${t} has ${info.nullKeyRows} NULL rows; fill them and make it NOT NULL first (fixConstraints can do both online).`);
  }
  if (!pc.notNull) {
    refuse(`Column ${JSON.stringify(pc.name)} of ${t} allows NULL, which a partition key in a primary key cannot; make it NOT NULL first (fixConstraints does it online).`);
  }
  if (info.activeRun) refuse(`Table ${t} already has a partflow run in progress (workflow ${info.activeRun.workflowId}); wait for it, or roll it back, before starting another.`);
  const selfRefs = info.inboundForeignKeys.filter((f) => f.table.schema === info.table.schema && f.table.name === info.table.name);
  if (selfRefs.length) refuse(`Table ${t} references itself (${selfRefs.map((f) => f.name).join(', ')}); self-referencing tables are not supported yet.`);
  if (info.inboundForeignKeys.length && opts.inboundForeignKeys !== 'drop') {
    const list = info.inboundForeignKeys.map((f) => `${displayName(f.table)}.${f.name}`).join(', ');
    refuse(`Other tables reference ${t} by foreign key (${list}); a partitioned table cannot be referenced by its id alone, so rerun with "inboundForeignKeys": "drop" to drop them at cut-over.`);
  }
  if (info.dependentViews.length) refuse(`Views depend on ${t} (${info.dependentViews.join(', ')}); they would keep pointing at the old table after the swap: drop them first and recreate them afterwards.`);
  if (info.publications.length) refuse(`Table ${t} is in publication(s) ${info.publications.join(', ')}; remove it first and add the new table after cut-over.`);
  if (info.rules.length) refuse(`Table ${t} has rules (${info.rules.join(', ')}), which partflow cannot carry over; drop them first.`);
  if (info.userTriggers.length) refuse(`Table ${t} has triggers (${info.userTriggers.join(', ')}) that partflow does not copy yet; drop them first and recreate them on the new table afterwards.`);
  if (info.rowSecurity) refuse(`Table ${t} has row-level security enabled, which partflow does not copy yet; disable it first.`);
  const serial = info.sequences.filter((s) => s.kind === 'serial');
  if (serial.length > 1) refuse(`Table ${t} has more than one serial column; partflow handles at most one.`);
}

/** All names the plan creates; each must fit in 63 bytes and be free. */
export function plannedNames(table: TableRef, partitions: PlannedPartition[], indexCount: number): string[] {
  const n = table.name;
  const names = [`${n}_pf_shadow`, `${n}_old`, `${n}_default`, ...partitions.map((p) => p.name)];
  for (let i = 0; i < indexCount; i++) names.push(`${n}_pfi_${i}`, `${n}_pfo_${i}`);
  return names;
}

function checkNames(info: TableInfo, names: string[]): void {
  for (const name of names) {
    if (byteLength(name) > MAX_IDENT_BYTES) {
      refuse(`The generated name ${JSON.stringify(name)} would be ${byteLength(name)} bytes, over PostgreSQL's 63; rename the table to something shorter first.`);
    }
  }
  const taken = names.filter((nm) => info.takenNames.includes(nm));
  if (taken.length) refuse(`Names partflow needs are already taken in schema ${JSON.stringify(info.table.schema)}: ${taken.join(', ')}; drop or rename them first.`);
}

function keyMatch(cols: string[], left: string, right: string): string {
  return cols.map((c) => `${left}.${q(c)} = ${right}.${q(c)}`).join(' AND ');
}

/** The body of a row trigger that mirrors INSERT, UPDATE (also of key columns) and DELETE into `target`. */
export function mirrorFunctionSql(fn: TableRef, target: TableRef, columns: string[], key: string[], overriding: boolean, identityAlways: string[]): string {
  const cols = columns.map(q).join(', ');
  const vals = columns.map((c) => `NEW.${q(c)}`).join(', ');
  const settable = columns.filter((c) => !key.includes(c) && !identityAlways.includes(c));
  const onConflict = settable.length
    ? `ON CONFLICT (${key.map(q).join(', ')}) DO UPDATE SET ${settable.map((c) => `${q(c)} = EXCLUDED.${q(c)}`).join(', ')}`
    : 'ON CONFLICT DO NOTHING';
  const keyChanged = key.map((c) => `OLD.${q(c)} IS DISTINCT FROM NEW.${q(c)}`).join(' OR ');
  const tgt = qualified(target);
  return `CREATE OR REPLACE FUNCTION ${qualified(fn)}() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $partflow$
BEGIN
  IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND (${keyChanged})) THEN
    DELETE FROM ${tgt} t WHERE ${key.map((c) => `t.${q(c)} = OLD.${q(c)}`).join(' AND ')};
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    INSERT INTO ${tgt} (${cols})${overriding ? ' OVERRIDING SYSTEM VALUE' : ''} VALUES (${vals})
      ${onConflict};
  END IF;
  RETURN NULL;
END
$partflow$`;
}

function monthBucketExpr(column: string, type: PartitionColumnType, timeZone: string): string {
  return type === 'timestamptz'
    ? `to_char(${q(column)} AT TIME ZONE ${quoteLiteral(timeZone)}, 'YYYY-MM')`
    : `to_char(${q(column)}, 'YYYY-MM')`;
}

function checksumQuery(rel: TableRef, columns: string[], bucket: string): string {
  const row = `ROW(${columns.map(q).join(', ')})::text`;
  return `SELECT ${bucket} AS bucket, count(*)::bigint AS n, coalesce(sum(hashtextextended(${row}, 0)), 0)::text AS checksum FROM ${qualified(rel)} GROUP BY 1`;
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
  const specs = monthlyPartitions(table.name, info.oldestMonth ? parseMonth(info.oldestMonth) : null, parseMonth(info.currentMonth), opts.premake);
  const partitions = specs.map((s) => ({ name: s.name, from: formatMonth(s.from), to: formatMonth(s.to) }));
  const defaultPartition = `${table.name}_default`;
  const secondary = info.indexes.filter((i) => !i.isPrimary);
  checkNames(info, plannedNames(table, partitions, secondary.length + 1));

  const warnings: string[] = [];
  const columns = info.columns.filter((c) => !c.generated).map((c) => c.name);
  const identityAlways = info.columns.filter((c) => c.identity === 'a').map((c) => c.name);
  const overriding = info.columns.some((c) => c.identity !== '');
  const sourceKey = info.primaryKey!.columns;
  const shadowKey = sourceKey.includes(pc.name) ? [...sourceKey] : [...sourceKey, pc.name];
  if (shadowKey.length !== sourceKey.length) {
    warnings.push(`The primary key becomes (${shadowKey.join(', ')}): PostgreSQL requires the partition key in every unique constraint of a partitioned table, so "${sourceKey.join(', ')}" alone is unique per partition only.`);
  }

  const st = qualified(shadow);
  const shadowSql: string[] = [
    `CREATE TABLE ${st} (LIKE ${qualified(table)} INCLUDING ALL EXCLUDING INDEXES) PARTITION BY RANGE (${q(pc.name)})`,
  ];
  for (const p of specs) {
    shadowSql.push(
      `CREATE TABLE ${qualified(sibling(table, p.name))} PARTITION OF ${st} FOR VALUES FROM (${boundLiteral(p.from, type, opts.timeZone)}) TO (${boundLiteral(p.to, type, opts.timeZone)})`,
    );
  }
  shadowSql.push(`CREATE TABLE ${qualified(sibling(table, defaultPartition))} PARTITION OF ${st} DEFAULT`);

  const indexRenames: IndexRename[] = [];
  const pkTemp = `${table.name}_pfi_0`;
  shadowSql.push(`ALTER TABLE ${st} ADD CONSTRAINT ${q(pkTemp)} PRIMARY KEY (${shadowKey.map(q).join(', ')})`);
  indexRenames.push({ original: info.primaryKey!.name, shadowTemp: pkTemp, oldParked: `${table.name}_pfo_0` });
  secondary.forEach((idx, i) => {
    const temp = `${table.name}_pfi_${i + 1}`;
    const parked = `${table.name}_pfo_${i + 1}`;
    let unique = idx.isUnique;
    if (idx.constraintName && !idx.isUnique) {
      warnings.push(`Constraint ${idx.constraintName} (${idx.def}) is an exclusion constraint, which partflow does not carry over; it is not on the new table.`);
      return;
    }
    if (unique && !idx.columns.includes(pc.name)) {
      unique = false;
      warnings.push(`Unique index ${idx.name} does not contain ${pc.name}; a partitioned table cannot enforce it across partitions, so it is created as a plain index and uniqueness is no longer enforced.`);
    }
    if (idx.tail === null) refuse(`Cannot read the definition of index ${idx.name} (${idx.def}); drop it or report this as a bug.`);
    shadowSql.push(`CREATE ${unique ? 'UNIQUE ' : ''}INDEX ${q(temp)} ON ${st} ${idx.tail}`);
    indexRenames.push({ original: idx.name, shadowTemp: temp, oldParked: parked });
  });
  for (const g of info.grants) {
    if (g.grantee === info.owner) continue;
    const grantee = g.grantee === 'PUBLIC' ? 'PUBLIC' : q(g.grantee);
    shadowSql.push(`GRANT ${g.privilege} ON ${st} TO ${grantee}${g.grantable ? ' WITH GRANT OPTION' : ''}`);
  }
  if (info.comment !== null) shadowSql.push(`COMMENT ON TABLE ${st} IS ${quoteLiteral(info.comment)}`);
  if (info.owner !== info.currentUser) {
    shadowSql.push(`ALTER TABLE ${st} OWNER TO ${q(info.owner)}`);
    for (const p of [...specs.map((s) => s.name), defaultPartition]) shadowSql.push(`ALTER TABLE ${qualified(sibling(table, p))} OWNER TO ${q(info.owner)}`);
  }
  const shadowForeignKeys = info.outboundForeignKeys.map((f) => `ALTER TABLE ${st} ADD CONSTRAINT ${q(f.name)} ${f.def}`);

  const fnForward = { schema: STATE_SCHEMA, name: `fwd_${info.oid}` };
  const fnReverse = { schema: STATE_SCHEMA, name: `rev_${info.oid}` };
  const syncTrigger = [
    mirrorFunctionSql(fnForward, shadow, columns, shadowKey, overriding, identityAlways),
    `CREATE TRIGGER ${q(FORWARD_TRIGGER)} AFTER INSERT OR UPDATE OR DELETE ON ${qualified(table)} FOR EACH ROW EXECUTE FUNCTION ${qualified(fnForward)}()`,
  ];
  const dropSyncTrigger = [
    `DROP TRIGGER IF EXISTS ${q(FORWARD_TRIGGER)} ON ${qualified(table)}`,
    `DROP FUNCTION IF EXISTS ${qualified(fnForward)}()`,
  ];

  const colList = columns.map(q).join(', ');
  // The copy of one page range. FOR SHARE: a row deleted or moved by a concurrent transaction drops out of the
  // batch instead of coming back. `backfillBatchFast` has no ON CONFLICT (speculative insertion costs about a
  // sixth of the copy's speed): when the trigger already wrote a row of the range it fails with 23505 and the
  // batch is copied again with `backfillBatch`, which skips such rows.
  const select = `SELECT ${colList} FROM ${qualified(table)} WHERE ctid >= $1::tid AND ctid < $2::tid FOR SHARE`;
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
  const keyCopyTpl = (where: string) => `WITH src AS (SELECT ${colList} FROM ${qualified(table)} WHERE ${where} FOR SHARE),
ins AS (INSERT INTO ${st} (${colList})${overriding ? ' OVERRIDING SYSTEM VALUE' : ''} SELECT ${colList} FROM src ON CONFLICT DO NOTHING RETURNING 1)
SELECT (SELECT count(*) FROM src)::bigint AS read, (SELECT count(*) FROM ins)::bigint AS inserted`;
  const keyCopy = keyCopyTpl(`${tuple} > ${params(1)} AND ${tuple} <= ${params(n + 1)}`);
  const keyCopyFirst = keyCopyTpl(`${tuple} <= ${params(1)}`);
  const copyMode = opts.copyMode === 'auto' ? (info.serverVersionNum >= 140000 ? 'pages' : 'keys') : opts.copyMode;

  const bucket = monthBucketExpr(pc.name, type, opts.timeZone);
  const verifySource = checksumQuery(table, columns, bucket);
  const verifyShadow = checksumQuery(shadow, columns, bucket);

  // Cut-over: the renames, then the reverse trigger that keeps the old table complete for rollback.
  const lockBoth = `LOCK TABLE ${qualified(table)}, ${st} IN ACCESS EXCLUSIVE MODE`;
  const renameIdx = (from: string, to: string) => `ALTER INDEX ${qualified(sibling(table, from))} RENAME TO ${q(to)}`;
  const serial = info.sequences.find((s) => s.kind === 'serial');
  const identities = info.sequences.filter((s) => s.kind === 'identity');
  const cutover: string[] = [lockBoth, ...dropSyncTrigger];
  for (const fk of info.inboundForeignKeys) cutover.push(`ALTER TABLE ${qualified(fk.table)} DROP CONSTRAINT ${q(fk.name)}`);
  cutover.push(`ALTER TABLE ${qualified(table)} RENAME TO ${q(old.name)}`);
  for (const r of indexRenames) cutover.push(renameIdx(r.original, r.oldParked));
  cutover.push(`ALTER TABLE ${st} RENAME TO ${q(table.name)}`);
  for (const r of indexRenames) cutover.push(renameIdx(r.shadowTemp, r.original));
  if (serial) cutover.push(`ALTER SEQUENCE ${qualified(serial.sequence)} OWNED BY ${qualified(table)}.${q(serial.column)}`);
  for (const s of identities) cutover.push(syncIdentitySql(table, old, s.column));
  cutover.push(mirrorFunctionSql(fnReverse, old, columns, sourceKey, overriding, identityAlways));
  cutover.push(`CREATE TRIGGER ${q(REVERSE_TRIGGER)} AFTER INSERT OR UPDATE OR DELETE ON ${qualified(table)} FOR EACH ROW EXECUTE FUNCTION ${qualified(fnReverse)}()`);

  const finalize = [`DROP TRIGGER IF EXISTS ${q(REVERSE_TRIGGER)} ON ${qualified(table)}`, `DROP FUNCTION IF EXISTS ${qualified(fnReverse)}()`];

  const swapBack: string[] = [`LOCK TABLE ${qualified(table)}, ${qualified(old)} IN ACCESS EXCLUSIVE MODE`, ...finalize];
  swapBack.push(`ALTER TABLE ${qualified(table)} RENAME TO ${q(shadow.name)}`);
  for (const r of indexRenames) swapBack.push(renameIdx(r.original, r.shadowTemp));
  swapBack.push(`ALTER TABLE ${qualified(old)} RENAME TO ${q(table.name)}`);
  for (const r of indexRenames) swapBack.push(renameIdx(r.oldParked, r.original));
  if (serial) swapBack.push(`ALTER SEQUENCE ${qualified(serial.sequence)} OWNED BY ${qualified(table)}.${q(serial.column)}`);
  for (const s of identities) swapBack.push(syncIdentitySql(table, shadow, s.column));
  const validateInbound: string[] = [];
  for (const fk of info.inboundForeignKeys) {
    swapBack.push(`ALTER TABLE ${qualified(fk.table)} ADD CONSTRAINT ${q(fk.name)} ${fk.def} NOT VALID`);
    validateInbound.push(`ALTER TABLE ${qualified(fk.table)} VALIDATE CONSTRAINT ${q(fk.name)}`);
  }
  if (info.inboundForeignKeys.length) {
    warnings.push(`These foreign keys reference ${displayName(table)} and are dropped at cut-over (re-added on rollback): ${info.inboundForeignKeys.map((f) => `${displayName(f.table)}.${f.name}`).join(', ')}.`);
  }
  if (identities.length) warnings.push(`Identity column(s) ${identities.map((s) => s.column).join(', ')} get the new table's own sequence, advanced at cut-over past the old one's last value.`);
  if (info.estimatedRows < 0) warnings.push('The table has never been analyzed: the row estimate is unknown until the backfill reports.');

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
    sql: {
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
    `estimated rows ${plan.estimatedRows}, ${plan.pages} pages; primary key (${plan.shadowKey.join(', ')})`,
  ];
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
    ...(plan.copyMode === 'pages' ? [{ step: 'backfill', sql: s.backfillBatch }] : [{ step: 'backfill', sql: s.keyBound }, { step: 'backfill', sql: s.keyCopy }]),
    { step: 'verify', sql: s.verifySource },
    { step: 'verify', sql: s.verifyShadow },
    ...s.cutover.map((sql) => ({ step: 'cutover', sql })),
    ...s.finalize.map((sql) => ({ step: 'finalize', sql })),
  ];
}

export function partitionNames(plan: Plan): string[] {
  return [...plan.partitions.map((p) => p.name), plan.defaultPartition];
}
