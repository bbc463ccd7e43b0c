/**
 * The attach path (issue 25): the table's rows stay where they are. The table becomes the partition
 * `<table>_history` (every row before the cut-off month) of a new partitioned table under its name, with
 * monthly partitions from the cut-off on and the default, as GitLab's ConvertTable and pg_partman's
 * attach-the-old-table recipes do. No copy, no sync: the writes go to the table until the cut-over and to the
 * partitioned table after it.
 *
 * Steps, each with its undo:
 * - "attachKey": `CREATE UNIQUE INDEX CONCURRENTLY` on (primary key, partition column): the partitioned
 *   table's primary key adopts it at the ATTACH. Undo: `DROP INDEX CONCURRENTLY`.
 * - "shadow" (the copy path's step, with the monthly partitions from the cut-off): the empty partitioned
 *   table. Undo: drop it.
 * - "attachCheck": `CHECK (<column> < <cut-off>) NOT VALID`, then `VALIDATE` (SHARE UPDATE EXCLUSIVE: writes
 *   go on; one scan). PostgreSQL enforces it for new rows from the moment it exists, so the cut-off is at least
 *   two months ahead and the run undoes itself two days before it when not cut over. The validated CHECK is
 *   what lets the ATTACH skip its scan. Undo: drop it.
 * - "cutover": one transaction under the lock budget: the primary key swapped to the new index, the renames,
 *   the ATTACH (no scan: the CHECK proves the bound; the indexes match), the serial sequence, views and
 *   policies. Undo ("swapBack"): detach, the rows written since the cut-over moved back into the table (under
 *   the lock: its length grows with them), the original primary key on an index built CONCURRENTLY before
 *   the lock, the renames back.
 * - finalize: nothing to drop: the history partition keeps the CHECK (the same as its bound).
 */
import type { TableInfo } from '../catalog';
import { displayName, qualified, quoteLiteral, TableRef } from '../ident';
import type { PartitionOptions } from '../input';
import { addMonths, boundLiteral, compareMonths, formatMonth, Month, parseMonth } from '../partitions';
import type { PartitionColumnType } from '../partitions';
import { PlanContext, q, refuse, sibling } from './context';
import { lockAll, serialOwnedBySql } from './cutover';
import { carriedPoliciesSql } from './policies';
import { movePublicationsSql } from './publications';
import type { IndexRename } from './types';
import { addForeignKeySql } from './foreignKeys';
import { carriedViewsSql } from './views';
import { dropSnapshotGuardSql, snapshotGuardSql, syncObjects } from './sync';

export interface AttachSql {
  /** `YYYY-MM`: the first monthly partition; the history partition holds every row before it */
  cutoff: string;
  /** the table's name after the cut-over, as the history partition */
  history: TableRef;
  /** the unique index on (primary key, partition column) and its CONCURRENTLY build and drop */
  keyIndex: string;
  buildKey: string;
  dropKey: string;
  /** one row (`n`, `newest`): rows dated on or after the cut-off, which the CHECK would refuse */
  beyond: string;
  checkName: string;
  addCheck: string;
  validateCheck: string;
  dropCheck: string;
  /** one transaction, beginning with its LOCK TABLE */
  cutover: string[];
  /** before a swap back, outside its lock: the original primary key's index on the history partition */
  backIndex: string;
  buildBack: string;
  dropBack: string;
  /** one transaction, beginning with its LOCK TABLE */
  swapBack: string[];
  /**
   * the snapshot guard, installed by the swap back's transaction unless no partition but the history one has a
   * page: rows moved back are new row versions, and a row deleted there may still be seen by an older snapshot;
   * with none ever written there the table is the application's rows, which every snapshot sees as before.
   * Absent in plans made before: their swapBack installs the guard whatever it moved.
   */
  swapBackGuard?: string[];
  /**
   * after the swap back, once no snapshot older than it is left: its snapshot guard off the table, one
   * transaction beginning with its LOCK TABLE (absent in plans made before the swap back had a guard)
   */
  dropGuard?: string[];
}

/** The cut-off month: the input's, else the month after next; at least two months ahead. */
export function attachCutoff(opts: PartitionOptions, currentMonth: string): Month {
  const current = parseMonth(currentMonth);
  const earliest = addMonths(current, 2);
  if (!opts.cutoffMonth) return earliest;
  const cutoff = parseMonth(opts.cutoffMonth);
  if (compareMonths(cutoff, earliest) < 0) {
    refuse(
      `Field "cutoffMonth" (${opts.cutoffMonth}) must be at least two months after the current month ` +
        `${currentMonth} (from ${formatMonth(earliest)}): until the cut-over the table refuses rows dated on or ` +
        'after it, so it must lie ahead of every row the application writes meanwhile.',
    );
  }
  return cutoff;
}

/** What the attach path does not carry (yet), refused before anything changes; the copy path carries it. */
export function checkAttach(info: TableInfo, opts: PartitionOptions, t: string): void {
  const col = opts.column;
  const copy = 'use "method": "copy", which carries it';
  if (opts.startMonth)
    refuse('Field "startMonth" belongs to the copy path; the attach path keeps old rows in one partition.');
  const a = info.attach;
  if (!a) refuse(`The attach path's facts about ${t} were not read.`);
  if (a.leftovers?.length) {
    refuse(
      `${a.leftovers.join(', ')} of ${t} ${a.leftovers.length > 1 ? 'are' : 'is'} left from an earlier attach run: ` +
        `look with partflow cleanup ${t} and remove ${a.leftovers.length > 1 ? 'them' : 'it'} first.`,
    );
  }
  if (a.beyond > 0) {
    refuse(
      `${a.beyond} row(s) of ${t} are dated on or after the cut-off (the newest ${a.newest}), which the history ` +
        `partition cannot hold: set "cutoffMonth" after them, or use "method": "copy" (it puts them in their months).`,
    );
  }
  if (a.notValidChecks.length) {
    refuse(
      `CHECK constraint(s) ${a.notValidChecks.join(', ')} of ${t} are NOT VALID; the partitioned table's copies are ` +
        'valid, and PostgreSQL attaches no partition with a NOT VALID one: validate them first ' +
        `(ALTER TABLE ${qualified(info.table)} VALIDATE CONSTRAINT ..., no write lock).`,
    );
  }
  const notValidFks = info.outboundForeignKeys.filter((f) => / NOT VALID$/.test(f.def));
  if (notValidFks.length) {
    refuse(
      `Foreign key(s) ${notValidFks.map((f) => f.name).join(', ')} of ${t} are NOT VALID, and the partitioned ` +
        'table adopts only validated ones at the ATTACH: validate them first (ALTER TABLE ... VALIDATE ' +
        'CONSTRAINT, no write lock).',
    );
  }
  const invalid = info.indexes.filter((i) => !i.isValid);
  if (invalid.length) {
    refuse(
      `Index(es) ${invalid.map((i) => i.name).join(', ')} of ${t} are INVALID (a failed CREATE INDEX CONCURRENTLY): ` +
        'drop them (DROP INDEX CONCURRENTLY) or rebuild them (REINDEX INDEX CONCURRENTLY) first.',
    );
  }
  const uniqueWithout = info.indexes.filter((i) => !i.isPrimary && i.isUnique && !i.keyColumns.includes(col));
  const exclusion = info.indexes.filter((i) => i.constraintName && !i.isUnique);
  const givenUp = [...uniqueWithout, ...exclusion].map((i) => i.name);
  if (givenUp.length) {
    refuse(
      `${givenUp.join(', ')} of ${t} would lose ${givenUp.length > 1 ? 'their' : 'its'} uniqueness, and the attach ` +
        "path would then build a plain twin on the whole table under the cut-over's lock: add " +
        `${col} to ${givenUp.length > 1 ? 'them' : 'it'} first, or ${copy}.`,
    );
  }
  const identity = info.columns.filter((c) => c.identity !== '');
  if (identity.length) {
    refuse(
      `Identity column(s) ${identity.map((c) => c.name).join(', ')} of ${t}: the attach path does not hand an ` +
        `identity sequence over yet; ${copy}.`,
    );
  }
  if (info.userTriggers.length) {
    refuse(
      `Trigger(s) ${info.userTriggers.join(', ')} of ${t}: on the history partition they would fire beside the ` +
        `partitioned table's clones; the attach path does not carry triggers yet; ${copy}.`,
    );
  }
  if (info.storage.replicaIdentity === 'i') {
    refuse(`Replica identity USING INDEX of ${t}: the attach path replaces its primary key; ${copy}.`);
  }
  if (info.storage.unlogged) refuse(`${t} is UNLOGGED: ${copy}.`);
}

/** One row (`n`, `newest`): the rows dated on or after the cut-off, which the CHECK would refuse. */
export function beyondSql(
  table: TableRef,
  column: string,
  cutoff: Month,
  type: PartitionColumnType,
  timeZone: string,
): string {
  const c = q(column);
  const bound = boundLiteral(cutoff, type, timeZone);
  return `SELECT count(*)::bigint AS n, max(${c})::text AS newest FROM ${qualified(table)} WHERE ${c} >= ${bound}`;
}

/** The names and pieces the attach path's statements share. */
function attachNames(ctx: PlanContext, cutoff: Month) {
  const { table } = ctx;
  const history = sibling(table, `${table.name}_history`);
  return {
    t: qualified(table),
    history,
    h: qualified(history),
    keyIndex: `${table.name}_pfa_key`,
    backIndex: `${table.name}_pfa_back`,
    /** the swap back's snapshot guard function (src/plan/sync.ts), the same name the copy path's swaps use */
    snapshotGuard: syncObjects(ctx.info.oid).snapshotGuard,
    checkName: `${table.name}_pfa_bound`,
    bound: boundLiteral(cutoff, ctx.type, ctx.opts.timeZone),
    rename: (from: string, to: string) => `ALTER INDEX ${qualified(sibling(table, from))} RENAME TO ${q(to)}`,
    lock: (tables: TableRef[]) => lockAll(ctx, tables),
    ownedBy: serialOwnedBySql(ctx),
  };
}

type Names = ReturnType<typeof attachNames>;

function cutoverSql(ctx: PlanContext, n: Names, renames: IndexRename[]): string[] {
  const { table, info } = ctx;
  const [pk, ...secondary] = renames;
  return [
    n.lock([table, ctx.shadow]),
    ...info.inboundForeignKeys.map((fk) => `ALTER TABLE ${qualified(fk.table)} DROP CONSTRAINT ${q(fk.name)}`),
    // the table's primary key becomes (key, partition column) on the index built CONCURRENTLY: no scan, the
    // columns are NOT NULL already
    `ALTER TABLE ${n.t} DROP CONSTRAINT ${q(info.primaryKey!.name)}`,
    `ALTER TABLE ${n.t} ADD CONSTRAINT ${q(pk.oldParked)} PRIMARY KEY USING INDEX ${q(n.keyIndex)}`,
    `ALTER TABLE ${n.t} RENAME TO ${q(n.history.name)}`,
    ...secondary.map((r) => n.rename(r.original, r.oldParked)),
    `ALTER TABLE ${qualified(ctx.shadow)} RENAME TO ${q(table.name)}`,
    ...renames.map((r) => n.rename(r.shadowTemp, r.original)),
    // no scan: the validated CHECK proves the bound, every index of the parent has its twin in the partition
    `ALTER TABLE ${n.t} ATTACH PARTITION ${n.h} FOR VALUES FROM (MINVALUE) TO (${n.bound})`,
    ...n.ownedBy,
    ...carriedViewsSql(info.views ?? []),
    ...carriedPoliciesSql(info, table),
    ...movePublicationsSql(info, n.history, table, true),
  ];
}

function swapBackSql(ctx: PlanContext, n: Names, renames: IndexRename[], dropKeptKeys: string[]): string[] {
  const { table, info } = ctx;
  const [pk, ...secondary] = renames;
  const pkName = info.primaryKey!.name;
  const comment = info.indexes.find((i) => i.isPrimary)?.constraintComment;
  const columns = ctx.columns.map(q).join(', ');
  return [
    n.lock([table]),
    // the foreign keys on itself the new table kept (src/plan/selfKeys.ts): off the parent and so off the history
    // partition, which would keep its clone of them when detached
    ...dropKeptKeys,
    `ALTER TABLE ${n.t} DETACH PARTITION ${n.h}`,
    `ALTER TABLE ${n.h} DROP CONSTRAINT IF EXISTS ${q(n.checkName)}`,
    // what the application wrote into the monthly partitions and the default since the cut-over
    `INSERT INTO ${n.h} (${columns}) SELECT ${columns} FROM ${n.t}`,
    `ALTER TABLE ${n.t} RENAME TO ${q(ctx.shadow.name)}`,
    ...renames.map((r) => n.rename(r.original, r.shadowTemp)),
    `ALTER TABLE ${n.h} DROP CONSTRAINT ${q(pk.oldParked)}`,
    `ALTER TABLE ${n.h} ADD CONSTRAINT ${q(pkName)} PRIMARY KEY USING INDEX ${q(n.backIndex)}`,
    ...(comment ? [`COMMENT ON CONSTRAINT ${q(pkName)} ON ${n.h} IS ${quoteLiteral(comment)}`] : []),
    ...secondary.map((r) => n.rename(r.oldParked, r.original)),
    `ALTER TABLE ${n.h} RENAME TO ${q(table.name)}`,
    ...n.ownedBy,
    ...carriedViewsSql(info.views ?? []),
    ...movePublicationsSql(info, ctx.shadow, table, false),
    ...info.inboundForeignKeys.map((fk) => addForeignKeySql(fk.table, fk)),
  ];
}

/** The step's statements; `renames` are the copy path's (the primary key first). */
export function attachStep(
  ctx: PlanContext,
  renames: IndexRename[],
  cutoff: Month,
  dropKeptKeys: string[] = [],
): AttachSql {
  const { table, info, type, opts, column } = ctx;
  const n = attachNames(ctx, cutoff);
  const month = formatMonth(cutoff);
  const rows = info.estimatedRows < 0 ? '' : `~${info.estimatedRows} `;
  ctx.warnings.push(
    `Attach path: the ${rows}rows stay in ${displayName(table)}, which becomes the partition ` +
      `${displayName(n.history)} for every row before ${month}; monthly partitions from ${month} on. Until the ` +
      `cut-over a CHECK (${column} < ${n.bound}) refuses rows dated on or after ${month}; the run undoes itself ` +
      'if not cut over two days before.',
  );
  ctx.warnings.push(
    'A rollback moves the rows written into the monthly partitions since the cut-over back into the table under ' +
      'its lock: the longer the rollback window, the longer that lock. A REPEATABLE READ or SERIALIZABLE ' +
      'transaction whose snapshot is older than that swap back does not see those rows: its UPDATE and DELETE ' +
      'fail with 40001 (partflow_snapshot_guard) and its reads miss them, until it ends. Where no row dated on or ' +
      "after the cut-off was ever written, the table is the application's rows only, and there is no guard.",
  );
  const pkMb = Math.round((info.attach?.primaryKeyBytes ?? 0) / 2 ** 20);
  ctx.warnings.push(
    `The cut-over drops the primary key's index ${info.primaryKey!.name} (${pkMb} MB) to make ` +
      `(${ctx.shadowKey.join(', ')}) the primary key. PostgreSQL unlinks its files at commit after releasing the ` +
      'locks, so writers do not wait for it, but the COMMIT returns only after it (about 0.4 ms per MB on ext4 ' +
      `here: about ${Math.round(pkMb * 0.43)} ms for this table); a rollback does the same with the new index.`,
  );
  return {
    cutoff: month,
    history: n.history,
    keyIndex: n.keyIndex,
    buildKey: `CREATE UNIQUE INDEX CONCURRENTLY ${q(n.keyIndex)} ON ${n.t} (${ctx.shadowKey.map(q).join(', ')})`,
    dropKey: `DROP INDEX CONCURRENTLY IF EXISTS ${qualified(sibling(table, n.keyIndex))}`,
    beyond: beyondSql(table, column, cutoff, type, opts.timeZone),
    checkName: n.checkName,
    addCheck: `ALTER TABLE ${n.t} ADD CONSTRAINT ${q(n.checkName)} CHECK (${q(column)} < ${n.bound}) NOT VALID`,
    validateCheck: `ALTER TABLE ${n.t} VALIDATE CONSTRAINT ${q(n.checkName)}`,
    dropCheck: `ALTER TABLE ${n.t} DROP CONSTRAINT IF EXISTS ${q(n.checkName)}`,
    cutover: cutoverSql(ctx, n, renames),
    backIndex: n.backIndex,
    buildBack: `CREATE UNIQUE INDEX CONCURRENTLY ${q(n.backIndex)} ON ${n.h} (${ctx.sourceKey.map(q).join(', ')})`,
    dropBack: `DROP INDEX CONCURRENTLY IF EXISTS ${qualified(sibling(table, n.backIndex))}`,
    swapBack: swapBackSql(ctx, n, renames, dropKeptKeys),
    // the rows moved back are new row versions: a snapshot older than the swap back does not see them (sync.ts)
    swapBackGuard: snapshotGuardSql(table, n.snapshotGuard),
    dropGuard: [
      `LOCK TABLE ${qualified(table)} IN ACCESS EXCLUSIVE MODE`,
      ...dropSnapshotGuardSql(qualified(table), n.snapshotGuard),
    ],
  };
}
