/**
 * Every statement of one fix, by step, built once: the dry run lists them and the executors run them.
 * Foreign key: supporting index → NOT VALID (per partition on a partitioned table) → repair → VALIDATE
 * (then the parent constraint adopts the partitions' ones). NOT NULL: CHECK NOT VALID → fill → VALIDATE →
 * SET NOT NULL (proven by the check, no scan) → the check goes. Each forward step has its undo beside it.
 */
import { IndexBuild, indexBuild } from './indexes';
import type { Fix, ForeignKeyFix, NotNullFix } from './constraints';
import { fkClause, repairBatchSql, supportingIndexName } from './constraintSql';
import { displayName, qualified, quoteIdent as q, TableRef } from './ident';
import { hasNotNullNotValid } from './versions';

/** What the audit read about a fix's table; the statements depend on it. */
export interface FixInfo {
  tableOid: number;
  relkind: string;
  partitions: TableRef[];
  pk: string[];
  alreadyDone: boolean;
  hasIndex: boolean;
  /** SQL literal of the fill value, typed */
  fill?: string;
  /** server_version_num; absent in histories from before it was read (the CHECK detour then, as on 13 to 17) */
  serverVersionNum?: number;
}

/**
 * A statement on one table: executors look at that table's catalog first and skip what is in place. `locks`
 * runs first in the same transaction: the strongest lock the statement takes on every table it touches, the
 * referenced table first (the application's order: it locks the user, then writes what belongs to them), so
 * the statement itself never waits for a lock after it holds one (no upgrade, no deadlock with a writer).
 */
export interface OnTable {
  table: TableRef;
  sql: string;
  locks: string[];
}

export type LockMode = 'ROW SHARE' | 'SHARE UPDATE EXCLUSIVE' | 'SHARE ROW EXCLUSIVE' | 'ACCESS EXCLUSIVE';

/** LOCK TABLE of a table and (PostgreSQL's default) its partitions: the parent first, like the application. */
export function lockSql(table: TableRef, mode: LockMode): string {
  return `LOCK TABLE ${qualified(table)} IN ${mode} MODE`;
}

/** partitioned table: the index ON ONLY the parent, then one per partition, attached (src/indexes.ts) */
export type SupportingIndex = IndexBuild;

export interface FixSteps {
  index: SupportingIndex | null;
  addNotValid: OnTable[];
  repair: string | null;
  /** named statements, in order: VALIDATE (per table), then SET NOT NULL and the check's drop, or the parent's key */
  validate: (OnTable & { what: string; only?: 'if-unvalidated' | 'if-absent' })[];
  /** undo of addNotValid (and of a parent constraint) */
  dropConstraint: OnTable[];
  /** undo of SET NOT NULL */
  dropNotNull: string | null;
}

function supportingIndex(fix: ForeignKeyFix, info: FixInfo): SupportingIndex {
  const shape = {
    table: fix.table,
    name: supportingIndexName(fix),
    definition: `(${fix.columns.map(q).join(', ')})`,
    unique: false,
    childName: (p: TableRef) => supportingIndexName(fix, p.name),
  };
  return indexBuild(shape, info.relkind, info.partitions);
}

/** Undo of SET NOT NULL. */
export function dropNotNullSql(fix: NotNullFix): string {
  return `ALTER TABLE ${qualified(fix.table)} ALTER COLUMN ${q(fix.column)} DROP NOT NULL`;
}

/**
 * PostgreSQL 18: NOT NULL itself is added NOT VALID (new writes checked, no scan), the NULLs filled, then
 * VALIDATEd (SHARE UPDATE EXCLUSIVE: writes go on); it stays as the column's not-null constraint under the
 * fix's name. No CHECK, no SET NOT NULL, no drop: two brief ACCESS EXCLUSIVE locks fewer than the detour.
 */
function notNullNotValidSteps(fix: NotNullFix, info: FixInfo): FixSteps {
  const t = qualified(fix.table);
  const exclusive = [lockSql(fix.table, 'ACCESS EXCLUSIVE')];
  return {
    index: null,
    addNotValid: [
      {
        table: fix.table,
        sql: `ALTER TABLE ${t} ADD CONSTRAINT ${q(fix.name)} NOT NULL ${q(fix.column)} NOT VALID`,
        locks: exclusive,
      },
    ],
    repair: fix.nulls !== 'fail' ? repairBatchSql(fix, info.pk, info.fill) : null,
    validate: [
      {
        what: 'validate',
        table: fix.table,
        sql: `ALTER TABLE ${t} VALIDATE CONSTRAINT ${q(fix.name)}`,
        locks: [lockSql(fix.table, 'SHARE UPDATE EXCLUSIVE')],
      },
    ],
    dropConstraint: [
      { table: fix.table, sql: `ALTER TABLE ${t} DROP CONSTRAINT IF EXISTS ${q(fix.name)}`, locks: exclusive },
    ],
    dropNotNull: dropNotNullSql(fix),
  };
}

function notNullSteps(fix: NotNullFix, info: FixInfo): FixSteps {
  if (info.serverVersionNum !== undefined && hasNotNullNotValid(info.serverVersionNum)) {
    return notNullNotValidSteps(fix, info);
  }
  const t = qualified(fix.table);
  // CHECK added or dropped and SET NOT NULL: ACCESS EXCLUSIVE on the table and its partitions; VALIDATE: SHARE
  // UPDATE EXCLUSIVE (writes go on)
  const exclusive = [lockSql(fix.table, 'ACCESS EXCLUSIVE')];
  const on = (what: string, sql: string, locks = exclusive) => ({ what, table: fix.table, sql, locks });
  return {
    index: null,
    addNotValid: [
      {
        table: fix.table,
        sql: `ALTER TABLE ${t} ADD CONSTRAINT ${q(fix.name)} CHECK (${q(fix.column)} IS NOT NULL) NOT VALID`,
        locks: exclusive,
      },
    ],
    repair: fix.nulls !== 'fail' ? repairBatchSql(fix, info.pk, info.fill) : null,
    validate: [
      on('validate', `ALTER TABLE ${t} VALIDATE CONSTRAINT ${q(fix.name)}`, [
        lockSql(fix.table, 'SHARE UPDATE EXCLUSIVE'),
      ]),
      on('set not null', `ALTER TABLE ${t} ALTER COLUMN ${q(fix.column)} SET NOT NULL`),
      on('drop check', `ALTER TABLE ${t} DROP CONSTRAINT ${q(fix.name)}`),
    ],
    dropConstraint: [
      { table: fix.table, sql: `ALTER TABLE ${t} DROP CONSTRAINT IF EXISTS ${q(fix.name)}`, locks: exclusive },
    ],
    dropNotNull: dropNotNullSql(fix),
  };
}

function foreignKeySteps(fix: ForeignKeyFix, info: FixInfo): FixSteps {
  const partitioned = info.relkind === 'p';
  const targets = partitioned ? info.partitions : [fix.table];
  const ref = fix.references.table;
  // measured on PostgreSQL 15 (pg_locks after each statement): a foreign key added NOT VALID takes SHARE ROW
  // EXCLUSIVE on both tables; VALIDATE SHARE UPDATE EXCLUSIVE on the table and ROW SHARE on the referenced one;
  // the parent's constraint adopting the partitions' ones SHARE ROW EXCLUSIVE on the parent and partitions and
  // then ACCESS EXCLUSIVE on the referenced table (it drops the partitions' action triggers there): the upgrade
  // that deadlocked an application's SELECT ... FOR UPDATE then UPDATE of a user; a drop ACCESS EXCLUSIVE on both
  const validate: FixSteps['validate'] = targets.map((t) => ({
    what: 'validate',
    table: t,
    sql: `ALTER TABLE ${qualified(t)} VALIDATE CONSTRAINT ${q(fix.name)}`,
    locks: [lockSql(ref, 'ROW SHARE'), lockSql(t, 'SHARE UPDATE EXCLUSIVE')],
    only: 'if-unvalidated',
  }));
  if (partitioned) {
    const sql = `ALTER TABLE ${qualified(fix.table)} ADD CONSTRAINT ${q(fix.name)} ${fkClause(fix)}`;
    const locks = [lockSql(ref, 'ACCESS EXCLUSIVE'), lockSql(fix.table, 'SHARE ROW EXCLUSIVE')];
    validate.push({ what: 'parent constraint', table: fix.table, sql, locks, only: 'if-absent' });
  }
  const dropFrom = partitioned ? [fix.table, ...info.partitions] : [fix.table];
  return {
    index: info.hasIndex ? null : supportingIndex(fix, info),
    addNotValid: targets.map((t) => ({
      table: t,
      sql: `ALTER TABLE ${qualified(t)} ADD CONSTRAINT ${q(fix.name)} ${fkClause(fix)} NOT VALID`,
      locks: [lockSql(ref, 'SHARE ROW EXCLUSIVE'), lockSql(t, 'SHARE ROW EXCLUSIVE')],
    })),
    repair: fix.orphans !== 'fail' ? repairBatchSql(fix, info.pk) : null,
    validate,
    dropConstraint: dropFrom.map((t) => ({
      table: t,
      sql: `ALTER TABLE ${qualified(t)} DROP CONSTRAINT IF EXISTS ${q(fix.name)}`,
      locks: [lockSql(ref, 'ACCESS EXCLUSIVE'), lockSql(t, 'ACCESS EXCLUSIVE')],
    })),
    dropNotNull: null,
  };
}

export function fixSteps(fix: Fix, info: FixInfo): FixSteps {
  return fix.kind === 'notNull' ? notNullSteps(fix, info) : foreignKeySteps(fix, info);
}

/** The dry run's list: every forward statement in order, and what the operator should know. */
export function plannedFixSql(fix: Fix, info: FixInfo, batchSize: number): { sql: string[]; notes: string[] } {
  if (info.alreadyDone) return { sql: [], notes: ['already in place: skipped'] };
  const steps = fixSteps(fix, info);
  const notes: string[] = [];
  const sql: string[] = [];
  if (steps.index) {
    if (steps.index.parent) sql.push(steps.index.parent.sql);
    for (const e of steps.index.each) sql.push(e.sql, ...(e.attach ? [e.attach] : []));
    const f = fix as ForeignKeyFix;
    notes.push(`creates index ${supportingIndexName(f)} on (${f.columns.join(', ')}): none supports the foreign key`);
  }
  if (fix.kind === 'foreignKey') {
    const actions = [
      ['ON DELETE', fix.onDelete],
      ['ON UPDATE', fix.onUpdate],
    ].filter(([, a]) => a && !['NO ACTION', 'RESTRICT'].includes(String(a).toUpperCase()));
    if (actions.length) {
      notes.push(
        `${actions.map(([k, a]) => `${k} ${a}`).join(' and ')} acts from the NOT VALID step on: what it changes in ` +
          `${displayName(fix.table)} when rows of ${displayName(fix.references.table)} are deleted or re-keyed ` +
          'during the run is not recorded and stays if the run is undone',
      );
    }
  }
  sql.push(...steps.addNotValid.map((s) => s.sql));
  if (steps.repair) sql.push(`-- in batches of ${batchSize}, recorded in partflow.repairs\n${steps.repair}`);
  sql.push(...steps.validate.map((s) => s.sql));
  if (fix.kind === 'notNull' && info.serverVersionNum !== undefined && hasNotNullNotValid(info.serverVersionNum)) {
    notes.push(`PostgreSQL 18: NOT NULL added NOT VALID and validated, no CHECK detour; it keeps the name ${fix.name}`);
  }
  if (fix.kind === 'foreignKey' && info.relkind === 'p') {
    notes.push(
      'partitioned: NOT VALID + VALIDATE per partition, then the parent constraint adopts them without a rescan',
    );
  }
  return { sql, notes };
}
