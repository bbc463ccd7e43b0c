/**
 * What partflow relies on that differs between the PostgreSQL majors it supports (13 to 18), decided from
 * server_version_num in one place: each difference has a name here and a test in test/unit/versions.test.ts,
 * and `npm run test:versions` runs the integration set on a real server of each major.
 */

export const MIN_SERVER_VERSION_NUM = 130000;

export const majorOf = (versionNum: number): number => Math.floor(versionNum / 10000);

/** TID range scans (`ctid >= '(p,0)' AND ctid < '(q,0)'` reads only those pages): 14+; 13 copies by key ranges. */
export const hasTidRangeScan = (versionNum: number): boolean => versionNum >= 140000;

/**
 * `DETACH PARTITION ... CONCURRENTLY` and `FINALIZE`, and pg_inherits.inhdetachpending with them: 14+. On 13 a
 * detach is the plain one (ACCESS EXCLUSIVE on the parent, brief) and no partition can be "detach pending".
 */
export const hasDetachConcurrently = (versionNum: number): boolean => versionNum >= 140000;

/** The pg_inherits condition for partitions that count as attached (`alias` is pg_inherits' alias). */
export function attachedPartitionSql(versionNum: number, alias = 'i'): string {
  return hasDetachConcurrently(versionNum) ? `NOT ${alias}.inhdetachpending` : 'true';
}

/**
 * How maintenance detaches a partition: CONCURRENTLY (writes go on) where it can; plain (a brief ACCESS
 * EXCLUSIVE on the parent) while a default partition exists, which CONCURRENTLY refuses, and on 13.
 */
export function detachMode(versionNum: number, hasDefault: boolean): { concurrently: boolean; note: string } {
  if (hasDefault || !hasDetachConcurrently(versionNum)) {
    const why = hasDefault
      ? 'DETACH CONCURRENTLY is refused while a default partition exists'
      : `PostgreSQL ${majorOf(versionNum)} has no DETACH CONCURRENTLY (14+)`;
    return { concurrently: false, note: `plain DETACH (a brief exclusive lock on the parent): ${why}` };
  }
  return { concurrently: true, note: 'DETACH CONCURRENTLY' };
}

/**
 * A column's statistics target set by ALTER COLUMN ... SET STATISTICS, from pg_attribute.attstattarget, or
 * null for the default: 16 and older store the default as -1, 17+ as NULL (and node-postgres reads NULL as
 * null, which `>= 0` lets through).
 */
export function explicitStatisticsTarget(attstattarget: number | string | null): number | null {
  if (attstattarget === null) return null;
  const n = Number(attstattarget);
  return n >= 0 ? n : null;
}

/**
 * NOT NULL as a constraint of its own (pg_constraint contype 'n'), addable NOT VALID and validated later
 * with writes going on: 18+. Before, partflow proves NOT NULL with a CHECK (col IS NOT NULL) NOT VALID first.
 */
export const hasNotNullNotValid = (versionNum: number): boolean => versionNum >= 180000;

/**
 * SQL: column `a` (a pg_attribute alias) is NOT NULL and proven so. On 18 pg_attribute.attnotnull is true as
 * soon as a NOT VALID not-null constraint exists, while old rows may still hold NULL; before 18 there are no
 * contype 'n' rows, so the same text runs on every version.
 */
export function provenNotNullSql(a = 'a'): string {
  return (
    `(${a}.attnotnull AND NOT EXISTS (SELECT FROM pg_constraint nn WHERE nn.conrelid = ${a}.attrelid ` +
    `AND nn.contype = 'n' AND NOT nn.convalidated AND nn.conkey = ARRAY[${a}.attnum]))`
  );
}

/**
 * A foreign key added NOT VALID to a partitioned table (and validated later with writes going on, SHARE UPDATE
 * EXCLUSIVE): 18+. Before, ADD FOREIGN KEY on a partitioned table checks every row under SHARE ROW EXCLUSIVE.
 */
export const hasForeignKeyNotValidOnPartitioned = (versionNum: number): boolean => versionNum >= 180000;
