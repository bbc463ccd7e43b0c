/**
 * The table's foreign keys on itself (`parent_id` REFERENCES the table) that the new table keeps: those whose
 * referenced columns carry the partition column (so they stay a unique key of the partitioned table), on
 * PostgreSQL 18+, which adds a foreign key to a partitioned table NOT VALID (before 18 the ADD checks every row
 * under SHARE ROW EXCLUSIVE, a write stall as long as the table; preflight refuses those, see
 * checkSelfReference).
 *
 * The copy never has them (rows arrive in key order, a reply before its parent). The cut-over drops the key
 * from the old table, as every inbound key, and adds it to the new table NOT VALID in its own transaction: no
 * scan (12 ms of catalog work for 49 partitions, measured on 18 here), SHARE ROW EXCLUSIVE on the new table and
 * its partitions, which the cut-over's LOCK TABLE holds already; from its commit every application write is
 * checked and the key's ON DELETE / ON UPDATE actions run, as before. After the commit `validate` checks the
 * rows already there (SHARE UPDATE EXCLUSIVE: writes go on). Undo: the swap back drops it from the new table
 * before anything else (the attach path's DETACH would otherwise leave the history partition holding a copy of
 * it), and re-adds the old table's own as for every inbound key.
 */
import { displayName, qualified } from '../ident';
import { referencedColumns, referencesItself, type ForeignKeyInfo, type TableInfo } from '../catalog';
import { hasForeignKeyNotValidOnPartitioned } from '../versions';
import { PlanContext, q } from './context';
import type { KeptKeysSql } from './types';
import { addForeignKeySql, uncheckedAtSource, validateForeignKeySql } from './foreignKeys';

/** Whether the new table keeps this foreign key of the table on itself (see the module comment). */
export function keepsSelfKey(
  info: Pick<TableInfo, 'table' | 'partitionColumn' | 'serverVersionNum'>,
  fk: ForeignKeyInfo,
): boolean {
  const column = info.partitionColumn?.name;
  return (
    referencesItself(info, fk) &&
    !!column &&
    referencedColumns(fk.def).includes(column) &&
    hasForeignKeyNotValidOnPartitioned(info.serverVersionNum)
  );
}

/** The kept keys' statements (none: undefined), with the plan's warnings about them. */
export function keptKeysSql(ctx: PlanContext): KeptKeysSql | undefined {
  const { info, table } = ctx;
  // PostgreSQL names the clones of a key on a partitioned table `<name>_1`, `<name>_2`, ... (the name cut to fit 63
  // bytes first), choosing names not taken yet: a key called like another's clone (x and x_1, x_1 and x_1_1) is
  // added before it, so names ending in _<digits> first, the longer first
  const cloneLike = (n: string) => (/_\d+$/.test(n) ? 1 : 0);
  const kept = info.inboundForeignKeys
    .filter((fk) => keepsSelfKey(info, fk))
    .sort(
      (a, b) =>
        cloneLike(b.name) - cloneLike(a.name) ||
        b.name.length - a.name.length ||
        (a.name < b.name ? 1 : a.name > b.name ? -1 : 0),
    );
  if (!kept.length) return undefined;
  for (const fk of kept) {
    const held = / NOT ENFORCED\b/.test(fk.def) ? 'NOT ENFORCED' : 'NOT VALID';
    ctx.warnings.push(
      `Foreign key ${fk.name} of ${displayName(table)} on itself is kept: the cut-over adds it to the new table ` +
        (uncheckedAtSource(fk)
          ? `${held} as the source holds it (no scan under the lock; it is not validated).`
          : 'NOT VALID (new writes checked from then, no scan under the lock; its catalog work took 12 ms of the ' +
            'lock for 49 partitions on PostgreSQL 18 here), then validates it with writes going on' +
            (ctx.opts.method === 'attach'
              ? ': on the attach path that reads every row of the history partition, whose autovacuum waits ' +
                'meanwhile, and the run goes on to the rollback window after it.'
              : '.')),
    );
  }
  ctx.warnings.push(
    `On the partitioned table PostgreSQL reports a violation of ${kept.map((fk) => fk.name).join(', ')} naming a ` +
      "partition as the table, and a DELETE or UPDATE of a referenced row names one of the key's per-partition " +
      'clones (<name>_<n>) as the constraint: application code that matches on those names sees others. A row ' +
      'that references itself cannot move to another month (23503), and REPEATABLE READ or SERIALIZABLE ' +
      'transactions may get 23503 where they got 40001 (and the reverse) for a parent changed after their snapshot.',
  );
  return {
    names: kept.map((fk) => fk.name),
    add: kept.map((fk) => addForeignKeySql(table, fk)),
    validate: kept.flatMap((fk) => validateForeignKeySql(table, fk) ?? []),
    drop: kept.map((fk) => `ALTER TABLE ${qualified(table)} DROP CONSTRAINT IF EXISTS ${q(fk.name)}`),
  };
}
