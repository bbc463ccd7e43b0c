/** What preflight reads from the catalog: plain data, so the plan can be built (and unit-tested) purely. */
import type { TableRef } from './ident';
import type { PartitionColumnType } from './partitions';

export interface ColumnInfo {
  name: string;
  /** format_type() text, e.g. `timestamp with time zone` */
  type: string;
  notNull: boolean;
  /** GENERATED ALWAYS AS (...) STORED: never inserted, computed by the copy itself */
  generated: boolean;
  /** '' none, 'a' GENERATED ALWAYS AS IDENTITY, 'd' BY DEFAULT */
  identity: '' | 'a' | 'd';
  /**
   * Equal under `=` only when identical: integers, uuid, dates and timestamps, and strings under a
   * deterministic collation. Not numeric (1.0 = 1.00), floats, citext, a nondeterministic collation ('alice' =
   * 'ALICE'), and others: a key change the trigger must see by the values' text. Absent in old plans.
   */
  equalIsIdentical?: boolean;
}

export interface IndexInfo {
  name: string;
  /** pg_get_indexdef() */
  def: string;
  /** the definition after `ON <table> `: `USING btree (...) [INCLUDE (...)] [WHERE ...]`; null if unreadable */
  tail: string | null;
  isPrimary: boolean;
  isUnique: boolean;
  /** plain column names of the key and INCLUDE columns, null entries for expressions */
  columns: (string | null)[];
  /** the key columns alone (without INCLUDE), null entries for expressions */
  keyColumns: (string | null)[];
  /** false for the leftover of a failed CREATE INDEX CONCURRENTLY */
  isValid: boolean;
  /** COMMENT ON INDEX, or on the constraint it backs */
  comment: string | null;
  constraintComment: string | null;
  /** DEFERRABLE constraint (PRIMARY KEY, UNIQUE or EXCLUDE) */
  deferrable: boolean;
  /** set when the index backs a constraint (PRIMARY KEY, UNIQUE, EXCLUDE) */
  constraintName: string | null;
  /** pg_get_constraintdef() of that constraint */
  constraintDef: string | null;
  hasPredicate: boolean;
}

export interface ForeignKeyInfo {
  name: string;
  comment?: string | null;
  /** pg_get_constraintdef() */
  def: string;
  /** the table that holds the constraint */
  table: TableRef;
}

export interface SequenceInfo {
  column: string;
  sequence: TableRef;
  kind: 'serial' | 'identity';
}

export interface GrantInfo {
  grantee: string; // role name, or PUBLIC
  privilege: string;
  grantable: boolean;
}

/** A column privilege (GRANT SELECT (col) ...). */
export interface ColumnGrantInfo extends GrantInfo {
  column: string;
}

/** What preflight found about the partition column's values. */
export interface KeyRange {
  /** months (YYYY-MM) holding at least one finite value, ascending */
  months: string[];
  /** first month of the contiguous body of data (gaps of at most OUTLIER_GAP_MONTHS empty months) */
  bodyStart: string | null;
  /** rows the plan puts in the default partition: before the first partition, after the last, or infinite */
  outsideRows: number;
}

/** Settings of the source that `LIKE ... INCLUDING ALL` does not copy. */
export interface StorageInfo {
  /** pg_class.reloptions of the table, and of its TOAST table with a `toast.` prefix */
  reloptions: string[];
  tablespace: string | null;
  /** d default, n nothing, f full, i index */
  replicaIdentity: string;
  replicaIdentityIndex: string | null;
  unlogged: boolean;
  /** ALTER COLUMN ... SET STATISTICS */
  statisticsTargets: { column: string; target: number }[];
}

export interface TableInfo {
  table: TableRef;
  oid: number;
  relkind: string;
  serverVersionNum: number;
  owner: string;
  currentUser: string;
  columns: ColumnInfo[];
  partitionColumn: { name: string; type: PartitionColumnType | string; notNull: boolean } | null;
  primaryKey: { name: string; columns: string[] } | null;
  indexes: IndexInfo[];
  outboundForeignKeys: ForeignKeyInfo[];
  inboundForeignKeys: ForeignKeyInfo[];
  sequences: SequenceInfo[];
  dependentViews: string[];
  publications: string[];
  /** the publications that name the table, each with what carrying it over needs (issue 29, item 5) */
  publicationDetails?: PublicationInfo[];
  userTriggers: string[];
  /** CHECK constraints marked NO INHERIT, which a partitioned table cannot have (read by partitionTable's preflight) */
  noInheritChecks?: string[];
  /** the attach path's facts (read by partitionTable's preflight with "method": "attach") */
  attach?: {
    beyond: number;
    newest: string | null;
    notValidChecks: string[];
    leftovers?: string[];
    /** the primary key's index, bytes: the cut-over drops it, and the server frees its files under the lock */
    primaryKeyBytes?: number;
  };
  /** the views that read the table, with their definitions (read by partitionTable's preflight; absent otherwise) */
  views?: ViewInfo[];
  /** the table's own triggers with their definitions (read by partitionTable's preflight; absent otherwise) */
  triggers?: TriggerInfo[];
  rules: string[];
  rowSecurity: boolean;
  /** FORCE ROW LEVEL SECURITY: the owner is subject to the policies too (absent in older plans) */
  forceRowSecurity?: boolean;
  /** partflow's role has BYPASSRLS */
  bypassRls?: boolean;
  /** the INSERT ... ON CONFLICT statements pg_stat_statements has seen in this database (null: not installed) */
  appStatements?: { query: string; calls: number }[] | null;
  /** the application's functions that name the table and say ON CONFLICT, their bodies as statements */
  appFunctions?: { query: string; calls: number; source?: string }[];
  /** statements of other roles pg_stat_statements hid from partflow's role (no pg_read_all_stats) */
  appStatementsHidden?: number;
  /** CARRIED_SQL's lines for the table (read by partitionTable's preflight; absent otherwise) */
  carried?: string[];
  /** the table's policies (read by partitionTable's preflight; absent otherwise) */
  policies?: PolicyInfo[];
  grants: GrantInfo[];
  columnGrants: ColumnGrantInfo[];
  comment: string | null;
  isSuperuser: boolean;
  storage: StorageInfo;
  /** inheritance (not partitioning) parents and children, and the parent if the table is a partition */
  inheritance: { parents: string[]; children: string[]; partitionOf: string | null };
  /** publications that include the table implicitly: FOR ALL TABLES, FOR TABLES IN SCHEMA */
  implicitPublications: string[];
  /** subscriptions that replicate into this table */
  subscriptions: string[];
  /** objects bound to the table's OID or row type that a rename swap would leave on the old table */
  oidDependents: string[];
  keyRange: KeyRange | null;
  /** SHAPE_SQL's rows for the table: what the cut-over compares */
  shape: string[];
  estimatedRows: number;
  pages: number;
  /** pg_total_relation_size (heap, TOAST, indexes) and pg_indexes_size, bytes; 0 in tests' fixtures */
  totalBytes?: number;
  indexBytes?: number;
  /** months (YYYY-MM) of the oldest row and of now(), in the requested time zone */
  oldestMonth: string | null;
  currentMonth: string;
  nullKeyRows: number;
  /** relations already present under names the plan wants to create */
  takenNames: string[];
  /** an active partflow run on this table, if any */
  /** another run that holds the table; `kind` its workflow type (partitionTable when not given) */
  activeRun: { workflowId: string; state: string; kind?: string } | null;
}

/** One of the table's own triggers, as partitionTable carries it (src/plan/triggers.ts). */
export interface TriggerInfo {
  name: string;
  /** pg_get_triggerdef, read under search_path = pg_catalog: every function and operator schema-qualified */
  def: string;
  /** the table as the definition's ON clause names it */
  on: string;
  enabled: 'O' | 'A' | 'R' | 'D';
  before: boolean;
  row: boolean;
  onInsert: boolean;
  onUpdate: boolean;
  /** the arguments as the definition shows them */
  args: string;
  /** the function's source, null for C and internal functions */
  source: string | null;
  comment: string | null;
  /** PostgreSQL's error creating it on a partitioned table with the same columns, null when it can */
  partitionedError: string | null;
}

/** A view that reads the table, as partitionTable carries it (src/plan/views.ts). */
export interface ViewInfo {
  schema: string;
  name: string;
  /** `v` a view, `m` a materialized view */
  kind: string;
  /** pg_get_viewdef under search_path = pg_catalog, without its final semicolon */
  def: string;
  /** reloptions, `key=value` */
  options: string[];
  /** reads the table with ONLY (nothing, once it is partitioned) */
  readsOnly?: boolean;
  /** partflow's role may CREATE OR REPLACE it (member of its owner, CREATE on its schema) */
  replaceable?: boolean;
}

/** A row-level security policy of the table, as partitionTable carries it (src/plan/policies.ts). */
export interface PolicyInfo {
  name: string;
  /** `r` SELECT, `a` INSERT, `w` UPDATE, `d` DELETE, `*` ALL */
  cmd: string;
  permissive: boolean;
  /** role names quoted as identifiers, or PUBLIC */
  roles: string[];
  /** USING and WITH CHECK as pg_get_expr prints them under search_path = pg_catalog */
  using: string | null;
  withCheck: string | null;
  comment?: string | null;
}

/** Whether a foreign key that references the table is the table's own (a `parent_id`). */
export function referencesItself(info: Pick<TableInfo, 'table'>, fk: ForeignKeyInfo): boolean {
  return fk.table.schema === info.table.schema && fk.table.name === info.table.name;
}

/** The referenced columns of a `pg_get_constraintdef()` foreign key, unquoted. */
export function referencedColumns(def: string): string[] {
  const name = '(?:"(?:[^"]|"")*"|[^\\s(".]+)';
  const m = new RegExp(`\\bREFERENCES\\s+${name}(?:\\.${name})?\\(((?:"(?:[^"]|"")*"|[^)"])*)\\)`).exec(def);
  if (!m) return [];
  return (m[1].match(/"(?:[^"]|"")*"|[^,\s]+/g) ?? []).map((c) =>
    c.startsWith('"') ? c.slice(1, -1).replace(/""/g, '"') : c,
  );
}

/** A publication that names the table in its table list. */
export interface PublicationInfo {
  name: string;
  /** publish_via_partition_root */
  viaRoot: boolean;
  /** whether partflow's role may ALTER it (a member of its owner's role, or superuser) */
  alterable: boolean;
  owner: string;
  /** the partitioned tables it also names (their changes are published by partition unless viaRoot) */
  partitionedTables: string[];
  /** its column list for the table (PostgreSQL 15+), null for every column */
  columns: string[] | null;
  /** its row filter for the table (PostgreSQL 15+), as pg_get_expr shows it */
  rowFilter: string | null;
  /** whether it publishes UPDATE or DELETE (which need the replica identity inside the column list) */
  updatesOrDeletes: boolean;
}
