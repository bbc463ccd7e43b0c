/**
 * maintainPartitions' statements, built from what the catalog showed (activities/maintenance/inspect.ts) and the
 * table's spec: each step's forward statements with their undo beside them, as src/plan/ is for partitionTable.
 * The executors (activities/maintenance/month.ts, retire.ts) run them; a dry run returns them unrun. Names and
 * bounds come from the catalog or from partflow's own month arithmetic, never from input text.
 */
import { dollarQuote, qualified, quoteIdent as q, quoteLiteral, TableRef } from './ident';
import type { ArchiveMode } from './maintenance';
import { addMonths, boundLiteral, Month, PartitionColumnType, partitionName } from './partitions';

/** One step of a table's upkeep as a dry run shows it and an executor runs it. */
export interface MaintenanceStep {
  step: 'create partition' | 'detach' | 'archive';
  partition: string;
  /** LOCK TABLE statements taken first, in this order, each under the lock timeout */
  locks: string[];
  forward: string[];
  /** the inverse, run in this order; empty when there is none (see `note`) */
  undo: string[];
  note?: string;
}

/** What the month's statements need to know about the partitioned table. */
export interface PartedTable {
  table: TableRef;
  oid: number;
  column: string;
  type: PartitionColumnType;
  /** the default partition, if any */
  def: TableRef | null;
  /** the tables at the other end of its foreign keys, qualified (month.ts referencedTables) */
  referenced: string[];
  /** its stored (not generated) columns, quoted, in order */
  columns: string;
  /**
   * its replica identity (pg_class.relreplident; absent: default): FULL or NOTHING is given to each new partition,
   * which PostgreSQL checks for UPDATE and DELETE of a published table (a row filter's columns must be in it)
   */
  replicaIdentity?: string;
}

/** The month's partition: the parts its executor runs one by one inside one transaction. */
export interface MonthPartitionSql {
  partition: TableRef;
  /** the month's rows, as a condition on the partition column */
  range: string;
  locks: string[];
  /** the table, like the parent, owned by the parent's owner */
  create: string[];
  /** the month's rows moved out of the default partition; the executor checks both counts are equal */
  move: { insert: string; delete: string } | null;
  attach: string;
  undo: string[];
}

/**
 * Created as a table of its own, the month's rows moved out of the default partition into it, then ATTACHed, in
 * one short transaction (never CREATE ... PARTITION OF, which locks the parent exclusively). Locks, all taken
 * first: SHARE ROW EXCLUSIVE on the referenced tables (the ATTACH clones the foreign keys; the application locks
 * those first), on the parent alone (ONLY: writes in flight finish, new ones wait for this short transaction,
 * so no insert routes a row of the month to the default with an old partition list), ACCESS EXCLUSIVE on the
 * default partition (no row of the month lands there between the move and the ATTACH). Undo: detached, its
 * rows back through the parent (into the default partition), dropped.
 */
export function monthPartitionSql(p: PartedTable, month: Month, timeZone: string): MonthPartitionSql {
  const t = qualified(p.table);
  const partition = { schema: p.table.schema, name: partitionName(p.table.name, month) };
  const nt = qualified(partition);
  const lo = boundLiteral(month, p.type, timeZone);
  const hi = boundLiteral(addMonths(month, 1), p.type, timeZone);
  const range = `${q(p.column)} >= ${lo} AND ${q(p.column)} < ${hi}`;
  const owner = `(SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = ${p.oid})`;
  return {
    partition,
    range,
    locks: [
      ...p.referenced.map((r) => `LOCK TABLE ${r} IN SHARE ROW EXCLUSIVE MODE`),
      `LOCK TABLE ONLY ${t} IN SHARE ROW EXCLUSIVE MODE`,
      ...(p.def ? [`LOCK TABLE ${qualified(p.def)} IN ACCESS EXCLUSIVE MODE`] : []),
    ],
    create: [
      `CREATE TABLE ${nt} (LIKE ${t} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE ` +
        'INCLUDING COMMENTS INCLUDING GENERATED)',
      // a dollar tag the body does not contain: a table called a$$b would end a plain $$ body
      `DO ${dollarQuote(
        ` BEGIN
    IF (SELECT relowner FROM pg_class WHERE oid = ${p.oid})
       <> (SELECT relowner FROM pg_class WHERE oid = ${quoteLiteral(nt)}::regclass)
    THEN EXECUTE format('ALTER TABLE %s OWNER TO %I', ${quoteLiteral(nt)}, ${owner}); END IF; END `,
        'partflow_owner',
      )}`,
      ...(p.replicaIdentity === 'f' ? [`ALTER TABLE ${nt} REPLICA IDENTITY FULL`] : []),
      ...(p.replicaIdentity === 'n' ? [`ALTER TABLE ${nt} REPLICA IDENTITY NOTHING`] : []),
    ],
    move: p.def
      ? {
          insert: `INSERT INTO ${nt} (${p.columns}) SELECT ${p.columns} FROM ${qualified(p.def)} WHERE ${range}`,
          delete: `DELETE FROM ${qualified(p.def)} WHERE ${range}`,
        }
      : null,
    attach: `ALTER TABLE ${t} ATTACH PARTITION ${nt} FOR VALUES FROM (${lo}) TO (${hi})`,
    undo: [
      `ALTER TABLE ${t} DETACH PARTITION ${nt}`,
      `INSERT INTO ${t} (${p.columns}) SELECT ${p.columns} FROM ${nt}`,
      `DROP TABLE ${nt}`,
    ],
  };
}

/** The month's partition as one step: its statements in the order the executor runs them. */
export function monthStep(p: PartedTable, month: Month, timeZone: string): MaintenanceStep {
  const s = monthPartitionSql(p, month, timeZone);
  return {
    step: 'create partition',
    partition: s.partition.name,
    locks: s.locks,
    forward: [...s.create, ...(s.move ? [s.move.insert, s.move.delete] : []), s.attach],
    undo: s.undo,
    note:
      "the undo moves the month's rows back through the parent: it needs a default partition once rows arrived, " +
      'and OVERRIDING SYSTEM VALUE added by hand for a GENERATED ALWAYS identity column',
  };
}

/**
 * An expired partition detached: CONCURRENTLY where the server has it and no default partition exists
 * (src/versions.ts detachMode), otherwise plainly, after ACCESS EXCLUSIVE on the parent alone and the partition
 * (and the default partition), and SHARE ROW EXCLUSIVE on the referenced tables first, in the application's
 * order. `bound` is the partition's `FOR VALUES` clause as PostgreSQL prints it (pg_get_expr): the undo attaches
 * it again.
 */
export function detachStep(
  p: Pick<PartedTable, 'table' | 'def' | 'referenced'>,
  part: TableRef,
  bound: string,
  concurrently: boolean,
): MaintenanceStep {
  const detach = `ALTER TABLE ${qualified(p.table)} DETACH PARTITION ${qualified(part)}`;
  return {
    step: 'detach',
    partition: part.name,
    locks: concurrently
      ? []
      : [
          ...p.referenced.map((r) => `LOCK TABLE ${r} IN SHARE ROW EXCLUSIVE MODE`),
          `LOCK TABLE ONLY ${qualified(p.table)} IN ACCESS EXCLUSIVE MODE`,
          `LOCK TABLE ${qualified(part)} IN ACCESS EXCLUSIVE MODE`,
          ...(p.def ? [`LOCK TABLE ${qualified(p.def)} IN ACCESS EXCLUSIVE MODE`] : []),
        ],
    forward: [concurrently ? `${detach} CONCURRENTLY` : detach],
    undo: [`ALTER TABLE ${qualified(p.table)} ATTACH PARTITION ${qualified(part)} ${bound}`],
    note: "the undo's ATTACH fails while rows of that range wait in the default partition: move them out first",
  };
}

/** `DETACH ... FINALIZE` of a partition an interrupted DETACH CONCURRENTLY left "detach pending". */
export function finishDetachSql(table: TableRef, part: TableRef): string {
  return `ALTER TABLE ${qualified(table)} DETACH PARTITION ${qualified(part)} FINALIZE`;
}

/**
 * A detached partition archived as the table's mode says: `detach` moves it into `archive` (one archive schema
 * per source schema); `drop` drops it; `dump` drops it once the executor has written and verified its dump;
 * `none` leaves it where it is.
 */
export function archiveStep(
  part: TableRef,
  mode: ArchiveMode,
  archive: string,
  foreignKeys: string[] = [],
): MaintenanceStep {
  const base = { step: 'archive' as const, partition: part.name, locks: [] };
  const drop = `DROP TABLE ${qualified(part)}`;
  // a partition keeps the table's foreign keys when detached: kept, a DELETE of a row they reference in a live
  // table would cascade into the archive (or fail on it); an archive is a record, not live rows (no undo: an
  // ATTACH gives the partition the parent's keys again)
  const unlink = foreignKeys.map((k) => `ALTER TABLE ${qualified(part)} DROP CONSTRAINT IF EXISTS ${q(k)}`);
  const unlinked = foreignKeys.length ? `; its foreign keys ${foreignKeys.join(', ')} dropped first` : '';
  if (mode === 'detach') {
    return {
      ...base,
      forward: [
        ...unlink,
        `CREATE SCHEMA IF NOT EXISTS ${q(archive)}`,
        `ALTER TABLE ${qualified(part)} SET SCHEMA ${q(archive)}`,
      ],
      undo: [`ALTER TABLE ${qualified({ schema: archive, name: part.name })} SET SCHEMA ${q(part.schema)}`],
      ...(unlinked ? { note: `moved to ${archive}${unlinked}` } : {}),
    };
  }
  if (mode === 'drop') return { ...base, forward: [drop], undo: [], note: 'a dropped partition cannot be undone' };
  if (mode === 'dump') {
    return {
      ...base,
      forward: [drop],
      undo: [],
      note:
        'dropped after its dump (pg_dump of the partition, its rows counted and checksummed) is verified; ' +
        'restore it from the file',
    };
  }
  return { ...base, forward: unlink, undo: [], note: `left in place as a table of its own${unlinked}` };
}
