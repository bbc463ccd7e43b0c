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
}

export interface IndexInfo {
  name: string;
  /** pg_get_indexdef() */
  def: string;
  /** the definition after `ON <table> `: `USING btree (...) [INCLUDE (...)] [WHERE ...]`; null if unreadable */
  tail: string | null;
  isPrimary: boolean;
  isUnique: boolean;
  /** plain column names of the key, null entries for expressions */
  columns: (string | null)[];
  /** set when the index backs a constraint (PRIMARY KEY, UNIQUE, EXCLUDE) */
  constraintName: string | null;
  hasPredicate: boolean;
}

export interface ForeignKeyInfo {
  name: string;
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
  userTriggers: string[];
  rules: string[];
  rowSecurity: boolean;
  grants: GrantInfo[];
  comment: string | null;
  estimatedRows: number;
  pages: number;
  /** months (YYYY-MM) of the oldest row and of now(), in the requested time zone */
  oldestMonth: string | null;
  currentMonth: string;
  nullKeyRows: number;
  /** relations already present under names the plan wants to create */
  takenNames: string[];
  /** an active partflow run on this table, if any */
  activeRun: { workflowId: string; state: string } | null;
}
