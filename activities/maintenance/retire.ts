/**
 * Retention: interrupted detaches finished, expired partitions detached (unless rows elsewhere still
 * reference them), then archived as the table's `archive` mode says. Every state goes to partflow.archive_log
 * first, so an interrupted run picks up where it stopped.
 */
import type { Pool } from 'pg';
import { displayName, qualified, quoteIdent as q, TableRef } from '../../src/ident';
import type { Logger } from '../../src/logger';
import { expiredPartitions, MaintainTableSpec } from '../../src/maintenance';
import { lockPhaseBudgetMs } from '../../src/locks';
import { lockUpFront, withLockRetry } from '../runtime/db';
import { referencedTables } from './month';
import { migrate } from '../runtime/migrate';
import { archiveLog, archiveSchema, dumpPartition } from './archive';
import type { Parted } from './inspect';
import type { TableReport } from './report';
import { detachMode, hasDetachConcurrently } from '../../src/versions';

/**
 * A DETACH ... CONCURRENTLY interrupted after its first transaction left a partition "detach pending":
 * every later detach of the table fails until it is finished (FINALIZE waits for older snapshots; it takes
 * SHARE UPDATE EXCLUSIVE on the parent, writes go on).
 */
export async function finishDetaches(pool: Pool, l: Logger, spec: MaintainTableSpec, p: Parted, report: TableReport) {
  if (!hasDetachConcurrently(p.serverVersionNum)) return; // 13: no detach can be left pending
  const stuck = (
    await pool.query(
      `SELECT n.nspname AS schema, c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE i.inhparent = $1 AND i.inhdetachpending`,
      [p.oid],
    )
  ).rows as TableRef[];
  for (const part of stuck) {
    const sql = `ALTER TABLE ${qualified(spec.table)} DETACH PARTITION ${qualified(part)} FINALIZE`;
    await withLockRetry(pool, l, 'finish detach', spec.lockTimeoutMs * 20, (c) => c.query(sql));
    report.warnings.push(
      `${part.name} was left "detach pending" by an interrupted DETACH CONCURRENTLY; the detach was finished ` +
        `(it is now a table of its own, ${qualified(part)}).`,
    );
    report.finishedDetaches = [...(report.finishedDetaches ?? []), part.name];
    // one of ours (retention was detaching it): its archiving goes on below
    await migrate(pool);
    await pool.query(
      `UPDATE partflow.archive_log SET state = 'detached', updated_at = now()
        WHERE table_schema = $1 AND partition = $2 AND state = 'detaching'`,
      [spec.table.schema, part.name],
    );
  }
}

/** Tables whose foreign keys still point at rows of `part`. */
async function referencing(pool: Pool, p: Parted, part: TableRef): Promise<string[]> {
  const cols = (key: string, rel: string) =>
    `(SELECT array_agg(quote_ident(attname) ORDER BY array_position(con.${key}, attnum)) FROM pg_attribute
       WHERE attrelid = con.${rel} AND attnum = ANY (con.${key}))`;
  const fks = (
    await pool.query(
      `SELECT con.conrelid::regclass::text AS child, ${cols('conkey', 'conrelid')} AS cols,
              ${cols('confkey', 'confrelid')} AS refcols
         FROM pg_constraint con WHERE con.contype = 'f' AND con.confrelid = $1 AND con.conparentid = 0`,
      [p.oid],
    )
  ).rows;
  const needed: string[] = [];
  for (const fk of fks) {
    const mine = fk.cols.map((x: string) => `c.${x}`).join(', ');
    const hit = await pool.query(
      `SELECT 1 FROM ${fk.child} c
        WHERE (${mine}) IN (SELECT ${fk.refcols.join(', ')} FROM ${qualified(part)}) LIMIT 1`,
    );
    if (hit.rowCount) needed.push(fk.child);
  }
  return needed;
}

/**
 * Plain DETACH while a default partition exists (CONCURRENTLY is refused then) or on PostgreSQL 13 (it has no
 * CONCURRENTLY), CONCURRENTLY otherwise.
 */
async function detach(pool: Pool, l: Logger, spec: MaintainTableSpec, p: Parted, ref: TableRef): Promise<string> {
  const sql = `ALTER TABLE ${qualified(spec.table)} DETACH PARTITION ${qualified(ref)}`;
  const mode = detachMode(p.serverVersionNum, p.def !== null);
  if (!mode.concurrently) {
    // the detached table keeps its foreign keys with triggers of its own: SHARE ROW EXCLUSIVE on each referenced
    // table, after ACCESS EXCLUSIVE on the parent and the partition (pg_locks, PostgreSQL 15); all taken first,
    // in the application's order
    const refs = await referencedTables(pool, p.oid);
    const locks = [
      ...refs.map((r) => `LOCK TABLE ${r} IN SHARE ROW EXCLUSIVE MODE`),
      `LOCK TABLE ONLY ${qualified(spec.table)} IN ACCESS EXCLUSIVE MODE`,
      `LOCK TABLE ${qualified(ref)} IN ACCESS EXCLUSIVE MODE`,
      ...(p.def ? [`LOCK TABLE ${qualified(p.def)} IN ACCESS EXCLUSIVE MODE`] : []),
    ];
    await withLockRetry(pool, l, 'detach', spec.lockTimeoutMs, async (c) => {
      await lockUpFront(c, locks, lockPhaseBudgetMs(spec.lockTimeoutMs, 3));
      await c.query(sql);
    });
    return mode.note;
  }
  const c = await pool.connect();
  try {
    await c.query(`SET lock_timeout = ${spec.lockTimeoutMs * 20}`);
    await c.query(`${sql} CONCURRENTLY`);
  } finally {
    await c.query('RESET lock_timeout').catch(() => undefined);
    c.release();
  }
  return mode.note;
}

/** A detached partition archived as the table's mode says. */
async function archiveOne(pool: Pool, l: Logger, spec: MaintainTableSpec, name: string, report: TableReport) {
  const ref = { schema: spec.table.schema, name };
  const exists = (await pool.query(`SELECT to_regclass($1) IS NOT NULL AS ok`, [qualified(ref)])).rows[0].ok;
  if (!exists) {
    await archiveLog(pool, spec, name, 'archived');
    return;
  }
  const entry: TableReport['archived'][number] = { partition: name, mode: spec.archive };
  const drop = () => withLockRetry(pool, l, 'drop', spec.lockTimeoutMs, (c) => c.query(`DROP TABLE ${qualified(ref)}`));
  if (spec.archive === 'detach') {
    // one archive schema per source schema: partitions of same-named tables in two schemas never meet
    const archive = archiveSchema(spec.table.schema);
    await pool.query(`CREATE SCHEMA IF NOT EXISTS ${q(archive)}`);
    const move = `ALTER TABLE ${qualified(ref)} SET SCHEMA ${q(archive)}`;
    await withLockRetry(pool, l, 'archive', spec.lockTimeoutMs, (c) => c.query(move));
    entry.note = `now ${displayName({ schema: archive, name })}`;
  } else if (spec.archive === 'drop') {
    await drop();
  } else if (spec.archive === 'dump') {
    const d = await dumpPartition(pool, ref);
    Object.assign(entry, {
      file: d.file,
      rows: d.rows,
      note: `verified: ${d.rows} rows, sha256 ${d.sha256.slice(0, 12)}…`,
    });
    await archiveLog(pool, spec, name, 'dumped', {
      file: d.file,
      rows: d.rows,
      sha256: d.sha256,
      checksum: d.checksum,
    });
    await drop();
  } else {
    entry.note = `detached, left as ${qualified(ref)}`;
  }
  await archiveLog(pool, spec, name, 'archived');
  report.archived.push(entry);
}

/** Expired partitions detached, then every detached one archived. */
export async function retire(pool: Pool, l: Logger, spec: MaintainTableSpec, p: Parted, report: TableReport) {
  await migrate(pool);
  const pending = (
    await pool.query(
      `SELECT partition FROM partflow.archive_log WHERE table_schema = $1 AND table_name = $2 AND state = 'detached'`,
      [spec.table.schema, spec.table.name],
    )
  ).rows.map((r) => r.partition as string);
  for (const part of expiredPartitions(p.parts, p.current, spec.retentionMonths!)) {
    const ref = { schema: part.schema, name: part.name };
    const needed = await referencing(pool, p, ref);
    if (needed.length) {
      report.skipped.push({ partition: part.name, reason: `rows in ${needed.join(', ')} still reference it` });
      continue;
    }
    await archiveLog(pool, spec, part.name, 'detaching');
    const note = await detach(pool, l, spec, p, ref);
    await archiveLog(pool, spec, part.name, 'detached', { note });
    pending.push(part.name);
  }
  for (const name of pending) await archiveOne(pool, l, spec, name, report);
}
