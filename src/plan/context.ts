/** What every step of the plan derives from the catalog snapshot and the options, computed once. */
import type { TableInfo } from '../catalog';
import { InputError, qualified, quoteIdent, TableRef } from '../ident';
import type { PartitionOptions } from '../input';
import type { PartitionColumnType, PartitionLayout } from '../partitions';

export const q = quoteIdent;

export function refuse(msg: string): never {
  throw new InputError(msg);
}

export function sibling(ref: TableRef, name: string): TableRef {
  return { schema: ref.schema, name };
}

export interface PlanContext {
  info: TableInfo;
  opts: PartitionOptions;
  table: TableRef;
  shadow: TableRef;
  old: TableRef;
  /** the partition column and its type */
  column: string;
  type: PartitionColumnType;
  layout: PartitionLayout;
  /** the source's columns in attnum order, generated ones too */
  sourceColumns: string[];
  /** the columns written into the copy: generated ones are recomputed */
  columns: string[];
  identityAlways: string[];
  /** whether inserts need OVERRIDING SYSTEM VALUE (an identity column) */
  overriding: boolean;
  sourceKey: string[];
  /** the source's primary key plus the partition column */
  shadowKey: string[];
  /** the copy's partitions: monthly ones, then the default */
  allPartitions: string[];
  defaultPartition: string;
  /** for warnings and `givenUp`: what each step adds */
  warnings: string[];
  givenUp: string[];
}

/**
 * `SELECT * FROM <rel> [where]` with its columns renamed by position to a1, a2, ...: partflow's own reads of
 * the source name no column, so a column renamed or added during the run cannot break them.
 */
export function positional(rel: TableRef, sourceColumns: string[], where = ''): string {
  return `(SELECT * FROM ${qualified(rel)}${where}) AS s(${sourceColumns.map((_, i) => `a${i + 1}`).join(', ')})`;
}
