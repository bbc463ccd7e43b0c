/**
 * A foreign key re-created from its `pg_get_constraintdef()` text, in the state the source held it: one the
 * source holds NOT VALID (rows it never checked) or NOT ENFORCED (PostgreSQL 18: never checked) comes back so,
 * and is not validated afterwards; any other comes back NOT VALID (no scan under the step's lock) and is
 * validated after it with writes going on.
 */
import { qualified, type TableRef } from '../ident';
import type { ForeignKeyInfo } from '../catalog';
import { q } from './context';

/** The source holds it NOT VALID or NOT ENFORCED: re-created as it is, never validated by partflow. */
export const uncheckedAtSource = (fk: Pick<ForeignKeyInfo, 'def'>): boolean =>
  / NOT VALID$/.test(fk.def) || / NOT ENFORCED\b/.test(fk.def);

/** ADD CONSTRAINT on `table`: NOT VALID unless the source's definition says how it is held already. */
export function addForeignKeySql(table: TableRef, fk: Pick<ForeignKeyInfo, 'name' | 'def'>): string {
  const held = uncheckedAtSource(fk) ? '' : ' NOT VALID';
  return `ALTER TABLE ${qualified(table)} ADD CONSTRAINT ${q(fk.name)} ${fk.def}${held}`;
}

/** The VALIDATE that follows addForeignKeySql, or null for a key the source does not hold valid. */
export function validateForeignKeySql(table: TableRef, fk: Pick<ForeignKeyInfo, 'name' | 'def'>): string | null {
  return uncheckedAtSource(fk) ? null : `ALTER TABLE ${qualified(table)} VALIDATE CONSTRAINT ${q(fk.name)}`;
}
