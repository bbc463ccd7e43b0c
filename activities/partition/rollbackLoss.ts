/**
 * Whether a rollback requested now would lose or bring back rows, or undo a change made in the rollback window
 * (views, triggers, row-level security, publications, partitions, columns): the reason, or null. Read-only;
 * the swap back (cutover.ts) asks it under its lock, the rollback signal before.
 */
import type { Pool, PoolClient } from 'pg';
import { displayName, qualified } from '../../src/ident';
import type { PublicationInfo } from '../../src/catalog';
import { readPublications } from '../runtime/inspectBindings';
import { Plan, shapeDifferences } from '../../src/plan';
import { viewDifferences } from '../../src/plan/views';
import { CARRIED_SQL } from '../../src/plan/carried';
import { readViews, viewsNow } from './views';
import { relOid } from '../runtime/deps';
import { counterValue, notReadCommitted } from './run';
import { cutoverRecord } from '../runtime/copyState';

/** The columns of what is now `plan.table` (after the cut-over: the partitioned table), in order. */
export async function newTableColumns(c: PoolClient | Pool, plan: Plan): Promise<string[]> {
  const r = await c.query(
    `SELECT quote_ident(attname) || ' ' || format_type(atttypid, atttypmod) AS x FROM pg_attribute
      WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum`,
    [qualified(plan.table)],
  );
  return r.rows.map((x) => x.x);
}

export interface PartitionFiles {
  /** partition name → relfilenode: TRUNCATE and rewrites give a partition a new file */
  files: Record<string, string>;
  /** partition name → the version (xmin) of its pg_inherits row: a DETACH and ATTACH again gives a new one */
  links?: Record<string, string>;
  /** partflow's triggers on the table and its partitions, with their catalog row version and enabled state */
  triggers?: string;
  /** whole-table TRUNCATEs the sync triggers mirrored so far */
  truncates: number;
}

export async function newTablePartitions(c: PoolClient | Pool, plan: Plan): Promise<PartitionFiles> {
  const r = await c.query(
    `SELECT c.relname AS name, c.relfilenode::text AS file, i.xmin::text AS link
       FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
      WHERE i.inhparent = to_regclass($1)`,
    [qualified(plan.table)],
  );
  const trg = await c.query(
    `SELECT coalesce(string_agg(c.relname || '.' || t.tgname || ':' || t.xmin::text || ':' || t.tgenabled::text, ','
                                ORDER BY c.relname, t.tgname), '') AS f
       FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
      WHERE t.tgname LIKE 'partflow\\_%'
        AND (t.tgrelid = to_regclass($1)
             OR t.tgrelid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass($1)))`,
    [qualified(plan.table)],
  );
  const t = await counterValue(c, plan.table, 'trunc');
  return {
    files: Object.fromEntries(r.rows.map((x) => [x.name as string, x.file as string])),
    links: Object.fromEntries(r.rows.map((x) => [x.name as string, x.link as string])),
    triggers: trg.rows[0].f,
    truncates: t,
  };
}

/**
 * The publications of the new table against what the cut-over made of the plan's (the same column list, row
 * filter and publish options; publish_via_partition_root on; no other partitioned table unless there was one):
 * the swap back would undo a change made since, or turn publish_via_partition_root off under another table.
 */
export async function publicationsChanged(c: Pool | PoolClient, plan: Plan, newOid: number): Promise<string | null> {
  if (!plan.publications?.length) return null;
  const v = Number((await c.query(`SELECT current_setting('server_version_num') AS v`)).rows[0].v);
  const now = await readPublications(c, newOid, v >= 150000);
  const fact = (p: PublicationInfo, others: number) =>
    `${p.name}: columns ${p.columns?.join(', ') ?? 'all'}, filter ${p.rowFilter ?? 'none'}, ` +
    `update/delete ${p.updatesOrDeletes}, other partitioned tables ${others}`;
  const expected = plan.publications.map((p) => fact(p, p.partitionedTables.length));
  const actual = now.map((p) => fact(p, p.partitionedTables.length - 1));
  const diff = shapeDifferences(expected, actual);
  if (!diff.length) return null;
  return (
    `Rolling back ${displayName(plan.table)} now would undo a change of its publications made since the cut-over ` +
    `(${diff.join('; ')}); undo it and signal rollback again, or finalize.`
  );
}

function cannotHold(plan: Plan, recorded: string): string {
  // the old table's indexes are parked under other names until a rollback gives theirs back
  const what = plan.indexRenames.reduce(
    (w, r) => w.split(`its ${r.oldParked} rejects`).join(`its ${r.original} (${r.oldParked} until a rollback) rejects`),
    recorded,
  );
  return (
    `Rolling back ${displayName(plan.table)} now would lose rows: since the cut-over the application wrote ${what}, ` +
    `which ${displayName(plan.old)} cannot hold; finalize to keep ${displayName(plan.table)} as it is.`
  );
}

/**
 * Why swapping back now would lose something, or null. The old table has exactly what the reverse trigger
 * gave it, so anything that changed the new table's rows without passing through that trigger would be lost
 * or revived by a rollback: a partition detached, dropped, truncated or rewritten (the reverse trigger mirrors
 * rows and a TRUNCATE of the whole table, not those), detached and attached again, a partition attached or
 * created since the cut-over (its rows, or rows moved into it from the default, never reached the old table),
 * partflow's trigger disabled on the table or a partition, a writer that is not READ COMMITTED; a row the old
 * table cannot hold (recorded by the reverse log's rounds, the parked keys applied again first: recheckParked);
 * and a column added, renamed or retyped has no place in the old table.
 */
export async function rollbackLoss(c: PoolClient | Pool, plan: Plan): Promise<string | null> {
  const row = await cutoverRecord(c, plan.table);
  if (!row?.cutover_done) return null;
  const t = displayName(plan.table);
  if (row.rollback_lost) return cannotHold(plan, row.rollback_lost);
  // the views read the new table now: the swap back redefines them as planned, which would undo a change
  const newTable = await relOid(c, plan.table);
  if (plan.views && newTable) {
    const now = 'release' in c ? await viewsNow(c, newTable.oid) : await readViews(c, newTable.oid);
    const diff = viewDifferences(plan.views, now);
    if (diff.length) return `Rolling back ${t} now would undo a change of its views (${diff.join('; ')}); finalize.`;
  }
  if (plan.carried && newTable) {
    const now = (await c.query(CARRIED_SQL, [newTable.oid])).rows.map((r) => r.x as string);
    const diff = shapeDifferences(plan.carried, now);
    if (diff.length) {
      return (
        `Rolling back ${t} now would undo a change of its triggers or row-level security made since the ` +
        `cut-over (${diff.join('; ')}); undo it and signal rollback again, or finalize.`
      );
    }
  }
  const pubs = newTable ? await publicationsChanged(c, plan, newTable.oid) : null;
  if (pubs) return pubs;
  // the cut-over happened at a count of 0: what counted since came through the reverse trigger
  const iso = await notReadCommitted(c, plan);
  if (iso) return `Rolling back ${t} now could lose or revive rows: ${iso} (${displayName(plan.old)}); finalize.`;
  if (row.cutover_partitions) {
    const at = row.cutover_partitions as PartitionFiles;
    const nowAll = await newTablePartitions(c, plan);
    const [then, now] = [at.files, nowAll.files];
    const gone = Object.keys(then).filter((p) => !(p in now));
    const added = Object.keys(now).filter((p) => !(p in then));
    // a TRUNCATE of the whole table was mirrored into the old one (every partition has a new file): the files
    // say nothing more after it; a partition truncated after such a one goes unseen (README)
    const mirrored = nowAll.truncates > at.truncates;
    const refiled = mirrored ? [] : Object.keys(then).filter((p) => p in now && now[p] !== then[p]);
    const relinked = at.links ? Object.keys(at.links).filter((p) => p in now && nowAll.links![p] !== at.links![p]) : [];
    const triggers = at.triggers !== undefined && at.triggers !== nowAll.triggers;
    const what = [
      ...(gone.length ? [`partition ${gone.join(', ')} detached or dropped`] : []),
      ...(refiled.length
        ? [`partition ${refiled.join(', ')} truncated or rewritten (TRUNCATE, VACUUM FULL, CLUSTER)`]
        : []),
      ...(relinked.length ? [`partition ${relinked.join(', ')} detached and attached again`] : []),
      ...(added.length
        ? [`partition ${added.join(', ')} attached or created since, with rows the old table lacks`]
        : []),
      ...(triggers && !added.length
        ? ["partflow's reverse trigger disabled or changed, so writes may have bypassed it"]
        : []),
    ];
    if (what.length) {
      return (
        `Rolling back ${t} now could lose rows or bring back removed ones (${what.join('; ')}); ` +
        `${displayName(plan.old)} does not match ${t}. Finalize to keep ${t} as it is; to roll back anyway, make ` +
        `${displayName(plan.old)} match by hand first (partflow will not guess how).`
      );
    }
  }
  if (!row.cutover_columns) return null;
  const diff = shapeDifferences(row.cutover_columns, await newTableColumns(c, plan));
  if (!diff.length) return null;
  return (
    `Rolling back ${t} now would lose what changed on it since the cut-over ` +
    `(column ${diff.join('; column ')}), which ${displayName(plan.old)} does not have; ` +
    'undo that change and signal rollback again, or finalize.'
  );
}
