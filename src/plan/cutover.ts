/**
 * Step "cutover": one transaction that drops the forward sync, renames the table to `<table>_old` and the
 * copy to the table's name (indexes too), hands the serial sequence over, advances identity sequences, and
 * installs the reverse sync that keeps the old table complete for a rollback. Undo ("swapBack"): the inverse
 * renames, the inbound foreign keys re-added. "finalize" ends the rollback window: the reverse sync goes.
 */
import { displayName, qualified, quoteLiteral, TableRef } from '../ident';
import { PlanContext, q, sibling } from './context';
import { keyLogApplySql } from './keylog';
import {
  dropSnapshotGuardSql,
  dropTriggersSql,
  guardViewSql,
  keyLogOf,
  parkedOf,
  handoverSql,
  keyLogSpec,
  keyLogSyncSql,
  snapshotGuardSql,
  syncObjects,
} from './sync';
import { carriedTriggersSql } from './triggers';
import { keepsSelfKey } from './selfKeys';
import { addForeignKeySql, validateForeignKeySql } from './foreignKeys';
import { carriedViewsSql } from './views';
import { carriedPoliciesSql } from './policies';
import { movePublicationsSql, publicationWarnings } from './publications';
import type { IndexRename, PlanSql } from './types';

type CutoverSql = Pick<
  PlanSql,
  | 'cutover'
  | 'cutoverGuard'
  | 'swapBack'
  | 'swapBackGuard'
  | 'validateInbound'
  | 'finalize'
  | 'reverseKeyLog'
  | 'reverseHandover'
>;

/**
 * The cut-over and the swap back begin with their LOCK TABLE statement, the only one that waits: the
 * executor runs it first, notes when the locks were held, then checks the table before the rest.
 */
export function splitLock(statements: string[]): { lock: string; then: string[] } {
  const [lock, ...then] = statements;
  if (!lock?.startsWith('LOCK TABLE ')) throw new Error(`a lock-first step begins with ${JSON.stringify(lock)}`);
  return { lock, then };
}

/** Sets sequence `a` (of table A's column) to at least where sequence `b` (of table B's column) is. */
function syncIdentitySql(a: TableRef, b: TableRef, column: string): string {
  const seq = (t: TableRef) =>
    `pg_get_serial_sequence(${quoteLiteral(qualified(t))}, ${quoteLiteral(column)})::regclass`;
  return (
    'SELECT setval(s.a, greatest(pg_sequence_last_value(s.b), coalesce(pg_sequence_last_value(s.a), 0)), true) ' +
    `FROM (SELECT ${seq(a)} AS a, ${seq(b)} AS b) s WHERE pg_sequence_last_value(s.b) IS NOT NULL`
  );
}

/** The statements both directions share: renames of the table pair and their indexes, sequences handed over. */
function renameIndex(ctx: PlanContext, from: string, to: string): string {
  return `ALTER INDEX ${qualified(sibling(ctx.table, from))} RENAME TO ${q(to)}`;
}

function swapSql(ctx: PlanContext, from: TableRef, to: TableRef, renames: [string, string][]): string[] {
  const { table } = ctx;
  const sql = [`ALTER TABLE ${qualified(table)} RENAME TO ${q(to.name)}`];
  for (const [a, b] of renames) sql.push(renameIndex(ctx, a, b));
  sql.push(`ALTER TABLE ${qualified(from)} RENAME TO ${q(table.name)}`);
  return sql;
}

/** The serial sequence handed to whatever table has the name now (the attach path's too). */
export function serialOwnedBySql(ctx: PlanContext): string[] {
  const serial = ctx.info.sequences.find((s) => s.kind === 'serial');
  return serial
    ? [`ALTER SEQUENCE ${qualified(serial.sequence)} OWNED BY ${qualified(ctx.table)}.${q(serial.column)}`]
    : [];
}

function sequencesSql(ctx: PlanContext, other: TableRef): string[] {
  const { table, info } = ctx;
  const sql = serialOwnedBySql(ctx);
  for (const s of info.sequences.filter((x) => x.kind === 'identity'))
    sql.push(syncIdentitySql(table, other, s.column));
  return sql;
}

/**
 * One LOCK TABLE for every table the step's statements lock: the tables whose foreign keys reference the table
 * first (dropping or adding their constraint takes ACCESS EXCLUSIVE or SHARE ROW EXCLUSIVE on them, and the
 * application locks such a table before the one it references), so no statement of the step waits for a lock
 * after the step holds one.
 */
export function lockAll(ctx: PlanContext, tables: TableRef[]): string {
  const names = [...ctx.info.inboundForeignKeys.map((fk) => qualified(fk.table)), ...tables.map(qualified)];
  return `LOCK TABLE ${[...new Set(names)].join(', ')} IN ACCESS EXCLUSIVE MODE`;
}

function cutoverSql(ctx: PlanContext, renames: IndexRename[], dropSyncTrigger: string[]): string[] {
  const { table, info, old } = ctx;
  const { guard } = syncObjects(info.oid);
  return [
    // the key log too: the cut-over drains it under the lock and drops it
    lockAll(ctx, [table, ctx.shadow, keyLogOf(table)]),
    ...dropSyncTrigger,
    ...info.inboundForeignKeys.map((fk) => `ALTER TABLE ${qualified(fk.table)} DROP CONSTRAINT ${q(fk.name)}`),
    ...swapSql(
      ctx,
      ctx.shadow,
      old,
      renames.map((r) => [r.original, r.oldParked]),
    ),
    ...renames.map((r) => renameIndex(ctx, r.shadowTemp, r.original)),
    ...sequencesSql(ctx, old),
    // the table's own triggers: on the new table from now on, off on the old one (only partflow writes it)
    ...carriedTriggersSql(info.triggers ?? [], table, old).cutover,
    // the views that read the table: the same definitions, now naming the new table
    ...carriedViewsSql(info.views ?? []),
    // row-level security: the policies, ENABLE and FORCE, before any query can see the new table
    ...carriedPoliciesSql(info, table),
    // publications that name the table: the old one out, the new one in (after the drain under the lock)
    ...movePublicationsSql(info, old, table, true),
    // the rollback window's sync: the new table's changed keys logged, applied into the old table by partflow
    ...keyLogSyncSql(ctx, 'reverse'),
    ...guardViewSql(ctx, guard),
  ];
}

/** What a snapshot older than the cut-over sees (docs/sync-design.md, "Known limit"). */
function snapshotWarning(ctx: PlanContext): void {
  if (ctx.opts.method === 'attach') return;
  ctx.warnings.push(
    "Before the cut-over a handover (up to PARTFLOW_HANDOVER_WAIT_MS, 30 s) has the application's transactions " +
      "write their changes into the copy themselves and waits until no snapshot older than partflow's last write " +
      'into it is left: then a REPEATABLE READ or SERIALIZABLE transaction that straddles the swap sees the new ' +
      'table as it sees the old one. ' +
      (ctx.opts.olderSnapshots === 'guard'
        ? 'A transaction still older at the deadline (progress cutover.handover.heldBy) makes the swap install ' +
          'partflow_snapshot_guard instead (olderSnapshots "guard"): such a transaction\'s UPDATE and DELETE ' +
          'fail with 40001 until it ends, and it can read rows changed in the last second stale. '
        : 'A transaction still older at the deadline holds the cut-over until it ends (olderSnapshots "wait"; ' +
          'progress cutoverHeld names it; approveCutover with {"olderSnapshots": "guard"} lets the swap go ahead ' +
          "with partflow_snapshot_guard, which fails such a transaction's UPDATE and DELETE with 40001). ") +
      'The swap back (a rollback) has the same handover and is held or guarded the same way (progress ' +
      'swapBackHeld), except in a run that gave uniqueness up (acceptLostConstraints), which always installs the ' +
      'guard there. READ COMMITTED ' +
      'statements take their snapshot after the lock and are exact. The attach path leaves the rows in place and ' +
      'has no such moment.',
  );
}

/**
 * The rollback window's sync and guard, dropped by finalize and the swap back. DROP TRIGGER on a partitioned
 * table drops each partition's clone first, locking the partitions before the parent: the reverse of the
 * application's order (parent, then partitions), a deadlock that only the lock_timeout would break, on every
 * attempt while writers run. Locking the table first (LOCK TABLE takes the parent, then the partitions) makes
 * the order the application's.
 */
function dropReverseSql(ctx: PlanContext): string[] {
  const { reverse, guard, snapshotGuard } = syncObjects(ctx.info.oid);
  const applied = keyLogSpec(ctx, 'reverse').applied;
  return [
    ...dropTriggersSql(qualified(ctx.table), reverse, guard),
    ...dropSnapshotGuardSql(qualified(ctx.table), snapshotGuard),
    `DROP TABLE IF EXISTS ${qualified(keyLogOf(ctx.table, 'reverse'))}`,
    `DROP TABLE IF EXISTS ${qualified(parkedOf(ctx.table))}`,
    ...(applied ? [`DROP SEQUENCE IF EXISTS ${qualified(applied)}`] : []),
  ];
}

export function cutoverStep(
  ctx: PlanContext,
  renames: IndexRename[],
  dropSyncTrigger: string[],
  dropKeptKeys: string[] = [],
): CutoverSql {
  const { table, info, old } = ctx;
  const { snapshotGuard } = syncObjects(info.oid);
  const reverseLog = keyLogOf(table, 'reverse');
  const reverseSpec = keyLogSpec(ctx, 'reverse');
  const dropReverse = dropReverseSql(ctx);
  const finalize = [`LOCK TABLE ${qualified(table)} IN ACCESS EXCLUSIVE MODE`, ...dropReverse];
  const swapBack = [
    // the reverse key log too: the swap back drains it under the lock and drops it
    lockAll(ctx, [table, old, reverseLog]),
    // the foreign keys on itself the new table kept (src/plan/selfKeys.ts), while it still has the name
    ...dropKeptKeys,
    ...dropReverse,
    ...swapSql(
      ctx,
      old,
      ctx.shadow,
      renames.map((r) => [r.original, r.shadowTemp]),
    ),
    ...renames.map((r) => renameIndex(ctx, r.oldParked, r.original)),
    ...sequencesSql(ctx, ctx.shadow),
    ...carriedTriggersSql(info.triggers ?? [], table, old).swapBack,
    ...carriedViewsSql(info.views ?? []),
    ...movePublicationsSql(info, ctx.shadow, table, false),
    ...info.inboundForeignKeys.map((fk) => addForeignKeySql(fk.table, fk)),
  ];
  ctx.warnings.push(...publicationWarnings(info));
  snapshotWarning(ctx);
  // a key the source held NOT VALID or NOT ENFORCED comes back so, and is not validated
  const validateInbound = info.inboundForeignKeys.flatMap((fk) => validateForeignKeySql(fk.table, fk) ?? []);
  const dropped = info.inboundForeignKeys.filter((f) => !keepsSelfKey(info, f));
  if (dropped.length) {
    const list = dropped.map((f) => `${displayName(f.table)}.${f.name}`).join(', ');
    ctx.warnings.push(
      `These foreign keys reference ${displayName(table)} and are dropped at cut-over (re-added on rollback): ${list}.`,
    );
  }
  const triggers = info.triggers ?? [];
  if (triggers.length) {
    ctx.warnings.push(
      `Trigger(s) ${triggers.map((t) => t.name).join(', ')} of ${displayName(table)} are created on the new table ` +
        'in the cut-over with their states and comments, and disabled on the old table, which only partflow ' +
        'writes through the rollback window (a rollback enables them again).',
    );
  }
  for (const t of triggers.filter((x) => x.row && ctx.opts.acceptTriggerChanges.includes(x.name))) {
    ctx.givenUp.push(
      `trigger ${t.name}: an UPDATE that moves a row to another month fires its DELETE and INSERT forms, not ` +
        'AFTER UPDATE (accepted in acceptTriggerChanges)',
    );
  }
  const views = info.views ?? [];
  if (views.length) {
    ctx.warnings.push(
      `View(s) ${views.map((v) => displayName(v)).join(', ')} read ${displayName(table)}: the cut-over redefines ` +
        'them (CREATE OR REPLACE VIEW, the same definition) to read the new table, the swap back to read the old.',
    );
  }
  const identities = info.sequences.filter((s) => s.kind === 'identity');
  if (identities.length) {
    ctx.warnings.push(
      `Identity column(s) ${identities.map((s) => s.column).join(', ')} get the new table's own sequence, ` +
        "advanced at cut-over past the old one's last value.",
    );
  }
  return {
    cutover: cutoverSql(ctx, renames, dropSyncTrigger),
    // transactions whose snapshot is older than the cut-over's: their UPDATE and DELETE fail with 40001, not
    // 0 rows (only when the handover did not end quiet: activities/partition/handover.ts)
    cutoverGuard: snapshotGuardSql(table, snapshotGuard),
    swapBack,
    // the same guard the other way: the original table, for snapshots older than the swap back (only when the
    // swap back's handover did not end quiet, or the run has none)
    swapBackGuard: snapshotGuardSql(table, snapshotGuard),
    validateInbound,
    finalize,
    reverseKeyLog: keyLogApplySql(reverseSpec),
    reverseHandover: handoverSql(reverseSpec),
  };
}
