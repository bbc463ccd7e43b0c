/**
 * Publications carried to the new table (issue 29, item 5). A publication with an explicit table list names
 * the table by OID: after a rename swap it would go on publishing the old table (under its new name, which no
 * subscriber has) and never the new one. So the cut-over's own transaction takes the old table out of each
 * such publication and puts the new one in, with the same column list and row filter; the swap back does the
 * reverse. A subscriber maps what it receives by schema and name, so it goes on applying into its own table
 * without a `REFRESH PUBLICATION`; what the application wrote before the cut-over was published from the old
 * table, what it writes after from the new one, and partflow's own writes into the copy (the backfill, the key
 * log's drains, the rollback window's reverse sync) are never published: the copy joins a publication only
 * after the drain under the lock, and the old table leaves it before the reverse sync starts.
 *
 * A partitioned table's changes are published under each partition's name unless the publication has
 * `publish_via_partition_root`: a subscriber has no table of that name. So the cut-over sets it on a
 * publication that has no other partitioned table (where it changes nothing else) and the swap back clears it
 * again; a publication that publishes other partitioned tables by partition is refused with the steps. After
 * the cut-over the replica identity is the new primary key `(id, <column>)`: a column list without the
 * partition column would make every UPDATE and DELETE fail on the publisher, so that is refused too.
 */
import type { PublicationInfo, TableInfo } from '../catalog';
import { displayName, qualified, TableRef } from '../ident';
import { q, refuse } from './context';

export function checkPublications(info: TableInfo, t: string, me: string): void {
  const column = info.partitionColumn?.name ?? '';
  for (const p of info.publicationDetails ?? []) {
    if (!p.alterable) {
      refuse(
        `Publication ${p.name} names ${t} and is owned by ${p.owner}, which partflow's role ${me} is not a member ` +
          `of, so the cut-over could not move it to the new table: GRANT ${q(p.owner)} TO ${q(me)} (or make ` +
          `${q(me)} its owner) and run again.`,
      );
    }
    if (!p.viaRoot && p.partitionedTables.length) {
      refuse(
        `Publication ${p.name} publishes partitioned table(s) ${p.partitionedTables.join(', ')} by their ` +
          `partitions (publish_via_partition_root is off), so the new ${t} would be published under its partitions' ` +
          'names, which the subscribers do not have; publish those tables from a publication of their own, or set ' +
          `ALTER PUBLICATION ${q(p.name)} SET (publish_via_partition_root = true) after preparing their subscribers, ` +
          'and run again.',
      );
    }
    checkReplicaIdentity(info, p, t, column);
  }
}

/**
 * After the cut-over the replica identity is the new primary key `(id, <column>)` (FULL and NOTHING are carried;
 * USING INDEX is not): a publication that publishes UPDATE or DELETE needs its column list to cover it and its
 * row filter to name only its columns, or every UPDATE and DELETE of the application fails on the publisher.
 */
function checkReplicaIdentity(info: TableInfo, p: PublicationInfo, t: string, column: string): void {
  const identity = info.storage.replicaIdentity;
  if (!p.updatesOrDeletes || identity === 'f' || identity === 'n') return;
  const key = [...(info.primaryKey?.columns ?? []), column];
  const missing = key.filter((c) => p.columns && !p.columns.includes(c));
  if (missing.length) {
    refuse(
      `Publication ${p.name} publishes only columns ${p.columns!.join(', ')} of ${t}; after the cut-over the ` +
        `replica identity is the primary key (${key.join(', ')}), which a column list must cover, so every UPDATE ` +
        `and DELETE would fail: add ${missing.join(', ')} to the list (ALTER PUBLICATION ${q(p.name)} SET TABLE ` +
        "...) and to the subscribers' tables, and run again.",
    );
  }
  if (p.rowFilter !== null && identity === 'i') {
    refuse(
      `Publication ${p.name} filters ${t}'s rows (WHERE ${p.rowFilter}) by its replica identity index; after the ` +
        `cut-over the replica identity is the primary key (${key.join(', ')}), and a filter on other columns would ` +
        'make every UPDATE and DELETE fail: filter on those columns, or publish only inserts, and run again.',
    );
  }
}

function addTable(p: PublicationInfo, table: TableRef): string {
  const columns = p.columns ? ` (${p.columns.map(q).join(', ')})` : '';
  const where = p.rowFilter !== null ? ` WHERE (${p.rowFilter})` : '';
  return `ALTER PUBLICATION ${q(p.name)} ADD TABLE ${qualified(table)}${columns}${where}`;
}

/**
 * The statements that move each publication from `from` to `to` (both named as they are at that point of the
 * transaction); `toPartitioned` says which of the two is the partitioned one.
 */
export function movePublicationsSql(info: TableInfo, from: TableRef, to: TableRef, toPartitioned: boolean): string[] {
  // PostgreSQL takes a column list or row filter on a partitioned table only while publish_via_partition_root
  // is on, and turns it off only while no partitioned table with one is left: on before the ADD, off after it
  return (info.publicationDetails ?? []).flatMap((p) => {
    const root = p.viaRoot
      ? []
      : [`ALTER PUBLICATION ${q(p.name)} SET (publish_via_partition_root = ${toPartitioned})`];
    const drop = `ALTER PUBLICATION ${q(p.name)} DROP TABLE ${qualified(from)}`;
    return toPartitioned ? [drop, ...root, addTable(p, to)] : [drop, addTable(p, to), ...root];
  });
}

export function publicationWarnings(info: TableInfo): string[] {
  const t = displayName(info.table);
  return (info.publicationDetails ?? []).map(
    (p) =>
      `Publication ${p.name}: ${t} leaves it and the new table joins it in the cut-over's transaction` +
      `${p.columns ? ' with the same column list' : ''}${p.rowFilter !== null ? ' and row filter' : ''}` +
      (p.viaRoot
        ? '; publish_via_partition_root is on, so subscribers go on receiving its changes under its name'
        : '; publish_via_partition_root is set on (it publishes no other partitioned table) so that subscribers ' +
          'go on receiving its changes under its name, and off again by a rollback') +
      '. Partitions detached or dropped later (retention) are not published as deletes: subscribers keep those rows.',
  );
}
