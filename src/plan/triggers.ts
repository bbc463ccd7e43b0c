/**
 * The table's own triggers, carried to the new table (issue 29, item 1). Until the cut-over they stay where they
 * are: the application's writes fire them on the table, and the copy has none, so the backfill's and the key
 * log's writes into it fire nothing. In the cut-over's transaction each is created on the new table from its
 * catalog definition (pg_get_triggerdef, read under search_path = pg_catalog so that every function and
 * operator is schema-qualified) with its enabled state (O, A, R, D) and comment, and disabled on the old
 * table, where through the rollback window only partflow's reverse log writes. The swap back gives the old table
 * its states again; the new table, which becomes the copy, keeps its triggers until it is dropped.
 */
import type { TableInfo, TriggerInfo } from '../catalog';
import { displayName, qualified, quoteLiteral, TableRef } from '../ident';
import type { PartitionOptions } from '../input';
import { q, refuse } from './context';

/**
 * `def` (pg_get_triggerdef) with its `ON <from> ` clause aimed at `to`. The clause is the first ` ON ` outside
 * a quoted identifier (the trigger's and the columns' names are the only text before it); anything else is an
 * error, never a guess.
 */
export function retargetTriggerDef(def: string, from: string, to: string): string {
  const clause = ` ON ${from} `;
  let quoted = false;
  for (let i = 0; i < def.length; i++) {
    if (def[i] === '"')
      quoted = !quoted; // a doubled quote inside an identifier toggles twice
    else if (!quoted && def.startsWith(' ON ', i)) {
      if (!def.startsWith(clause, i)) break;
      return `${def.slice(0, i)} ON ${to} ${def.slice(i + clause.length)}`;
    }
  }
  throw new Error(`cannot find "${clause.trim()}" in the trigger definition ${JSON.stringify(def)}`);
}

const ENABLE: Record<TriggerInfo['enabled'], string> = {
  O: 'ENABLE TRIGGER',
  A: 'ENABLE ALWAYS TRIGGER',
  R: 'ENABLE REPLICA TRIGGER',
  D: 'DISABLE TRIGGER',
};

/** The trigger created on `table` as it is on the source, with its state and comment. */
function createOn(t: TriggerInfo, table: TableRef): string[] {
  const sql = [retargetTriggerDef(t.def, t.on, qualified(table))];
  if (t.enabled !== 'O') sql.push(`ALTER TABLE ${qualified(table)} ${ENABLE[t.enabled]} ${q(t.name)}`);
  if (t.comment !== null)
    sql.push(`COMMENT ON TRIGGER ${q(t.name)} ON ${qualified(table)} IS ${quoteLiteral(t.comment)}`);
  return sql;
}

/**
 * The cut-over's statements (after the renames: `table` is the new table, `old` the old one) and the swap back's
 * (after its renames: `table` is the old table again).
 */
export function carriedTriggersSql(
  triggers: TriggerInfo[],
  table: TableRef,
  old: TableRef,
): { cutover: string[]; swapBack: string[] } {
  return {
    cutover: triggers.flatMap((t) => [
      ...createOn(t, table),
      ...(t.enabled === 'D' ? [] : [`ALTER TABLE ${qualified(old)} DISABLE TRIGGER ${q(t.name)}`]),
    ]),
    swapBack: triggers
      .filter((t) => t.enabled !== 'D')
      .map((t) => `ALTER TABLE ${qualified(table)} ${ENABLE[t.enabled]} ${q(t.name)}`),
  };
}

/** Whether `text` names the column as a word (case-insensitive; quoted as is). */
function mentions(text: string, column: string): boolean {
  const esc = column.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`(^|[^A-Za-z0-9_$])${esc}($|[^A-Za-z0-9_$])`, 'i').test(text);
}

/**
 * Refusals, before anything changes, naming the trigger and the reason:
 * - PostgreSQL does not accept it on a partitioned table (preflight created each on a temporary partitioned
 *   table with the table's columns and rolled back: `partitionedError`, in PostgreSQL's words);
 * - a row trigger, unless named in `acceptTriggerChanges`: on a partitioned table an UPDATE that moves a row to
 *   another month runs as a DELETE and an INSERT, so the row's DELETE and INSERT triggers fire and its AFTER
 *   UPDATE triggers do not; and a BEFORE row trigger on INSERT or UPDATE whose function or arguments name the
 *   partition column must never change it (the row cannot move from there: the write would fail).
 * Triggers that were not read (a caller without the preflight activity) are refused.
 */
export function checkTriggers(info: TableInfo, opts: PartitionOptions): void {
  const t = displayName(opts.table);
  // names compared with the catalog's, never written into SQL; a name that matches no trigger is a mistake
  const unknown = opts.acceptTriggerChanges.filter((n) => !(info.triggers ?? []).some((x) => x.name === n));
  if (unknown.length) {
    refuse(
      `"acceptTriggerChanges" names ${unknown.map((n) => JSON.stringify(n)).join(', ')}, which ` +
        `${unknown.length > 1 ? 'are not triggers' : 'is not a trigger'} of ${t}; remove it from the list.`,
    );
  }
  if (!info.triggers) {
    if (info.userTriggers.length)
      refuse(`Table ${t} has triggers (${info.userTriggers.join(', ')}) that were not read.`);
    return;
  }
  for (const trg of info.triggers) {
    if (trg.partitionedError) {
      refuse(
        `Trigger ${trg.name} of ${t} cannot be created on a partitioned table: ${trg.partitionedError}; ` +
          'change it to a form PostgreSQL accepts there (for a row trigger with transition tables, a statement ' +
          'trigger reads the same rows), then start again.',
      );
    }
    if (!trg.row || opts.acceptTriggerChanges.includes(trg.name)) continue;
    const named = mentions(trg.args, opts.column) || (trg.source !== null && mentions(trg.source, opts.column));
    const why =
      trg.before && (trg.onInsert || trg.onUpdate) && named
        ? `runs BEFORE each row and its function or arguments name the partition column ${opts.column}, which ` +
          'on a partitioned table it must never change (the row cannot move from there and the write would fail)'
        : `fires for each row, and on a partitioned table an UPDATE that moves a row to another month (a new ` +
          `${opts.column}) runs as a DELETE and an INSERT: their row triggers fire, AFTER UPDATE ones do not`;
    refuse(
      `Trigger ${trg.name} of ${t} ${why}; if the application never does that, or the change is acceptable, ` +
        `name it in "acceptTriggerChanges": ["${trg.name}"] and it is carried to the new table.`,
    );
  }
}
