/**
 * Retention: interrupted detaches finished, expired partitions detached (unless rows elsewhere still
 * reference them), then archived as the table's `archive` mode says. Every state goes to partflow.archive_log
 * first, so an interrupted run picks up where it stopped.
 */
import type { Pool } from 'pg';
import { displayName, qualified, TableRef } from '../../src/ident';
import type { Logger } from '../../src/logger';
import { expiredPartitions, MaintainTableSpec } from '../../src/maintenance';
import { archiveStep, detachStep, finishDetachSql, MaintenanceStep } from '../../src/maintenanceSql';
import { lockPhaseBudgetMs } from '../../src/locks';
import { lockUpFront, withLockRetry } from '../runtime/db';
import { referencedTables, referencing } from './month';
import { migrate } from '../runtime/migrate';
import { archiveSchema, dumpPartition } from './archive';
import { archiveLog, detachedPartitions, markDetached } from '../runtime/archiveLog';
import type { Parted } from './inspect';
import type { TableReport } from './report';
import { detachMode, hasDetachConcurrently } from '../../src/versions';

/**
 * A DETACH ... CONCURRENTLY interrupted after its first transaction left a partition "detach pending":
 * every later detach of the table fails until it is finished (FINALIZE waits for older snapshots; it takes
 * SHARE UPDATE EXCLUSIVE on the parent, writes go on).
 */
export async function finishDetaches(
  pool: Pool,
  logger: Logger,
  spec: MaintainTableSpec,
  p: Parted,
  report: TableReport,
) {
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
    const sql = finishDetachSql(spec.table, part);
    if (spec.dryRun) {
      plan(report, { step: 'detach', partition: part.name, locks: [], forward: [sql], undo: [] });
      continue;
    }
    await withLockRetry(pool, logger, 'finish detach', spec.lockTimeoutMs * 20, (c) => c.query(sql));
    report.warnings.push(
      `${part.name} was left "detach pending" by an interrupted DETACH CONCURRENTLY; the detach was finished ` +
        `(it is now a table of its own, ${qualified(part)}).`,
    );
    report.finishedDetaches = [...(report.finishedDetaches ?? []), part.name];
    // one of ours (retention was detaching it): its archiving goes on below
    await migrate(pool);
    await markDetached(pool, spec.table.schema, part.name);
  }
}

/** The partition's `FOR VALUES` clause as PostgreSQL prints it: what the detach's undo attaches again. */
async function boundOf(pool: Pool, ref: TableRef): Promise<string> {
  const r = await pool.query(`SELECT pg_get_expr(relpartbound, oid) AS b FROM pg_class WHERE oid = to_regclass($1)`, [
    qualified(ref),
  ]);
  return r.rows[0]?.b ?? '';
}

/** A step a dry run reports instead of running. */
function plan(report: TableReport, step: MaintenanceStep): void {
  report.planned = [...(report.planned ?? []), step];
}

/**
 * The expired partition's detach (detachStep): CONCURRENTLY where the server has it and no default partition
 * exists, plainly otherwise, every lock taken first in the application's order. Returns the step and the mode's
 * note.
 */
async function detachOf(pool: Pool, spec: MaintainTableSpec, p: Parted, ref: TableRef) {
  const mode = detachMode(p.serverVersionNum, p.def !== null);
  const parted = { table: spec.table, def: p.def, referenced: await referencedTables(pool, p.oid) };
  return { step: detachStep(parted, ref, await boundOf(pool, ref), mode.concurrently), note: mode.note };
}

async function detach(pool: Pool, logger: Logger, spec: MaintainTableSpec, step: MaintenanceStep): Promise<void> {
  const [sql] = step.forward;
  if (step.locks.length) {
    await withLockRetry(pool, logger, 'detach', spec.lockTimeoutMs, async (c) => {
      await lockUpFront(c, step.locks, lockPhaseBudgetMs(spec.lockTimeoutMs, 3));
      await c.query(sql);
    });
    return;
  }
  // CONCURRENTLY: no transaction block; its waits are its own (SHARE UPDATE EXCLUSIVE), bounded longer
  const c = await pool.connect();
  try {
    await c.query(`SET lock_timeout = ${spec.lockTimeoutMs * 20}`);
    await c.query(sql);
  } finally {
    await c.query('RESET lock_timeout').catch(() => undefined);
    c.release();
  }
}

/**
 * The foreign keys a (detached or attached) partition has, by name: not the clones a key referencing a
 * partitioned table has on the same table (`<key>_<n>`, one per referenced partition), which go with their key.
 */
async function foreignKeysOf(pool: Pool, part: TableRef): Promise<string[]> {
  const r = await pool.query(
    `SELECT k.conname FROM pg_constraint k WHERE k.conrelid = to_regclass($1) AND k.contype = 'f'
        AND NOT EXISTS (SELECT FROM pg_constraint p WHERE p.oid = k.conparentid AND p.conrelid = k.conrelid)
      ORDER BY k.conname`,
    [qualified(part)],
  );
  return r.rows.map((x) => x.conname as string);
}

/** A detached partition archived as the table's mode says. */
async function archiveOne(pool: Pool, logger: Logger, spec: MaintainTableSpec, name: string, report: TableReport) {
  const ref = { schema: spec.table.schema, name };
  const exists = (await pool.query(`SELECT to_regclass($1) IS NOT NULL AS ok`, [qualified(ref)])).rows[0].ok;
  if (!exists) {
    await archiveLog(pool, spec, name, 'archived');
    return;
  }
  const entry: TableReport['archived'][number] = { partition: name, mode: spec.archive };
  const archive = archiveSchema(spec.table.schema);
  const keys = await foreignKeysOf(pool, ref);
  const step = archiveStep(ref, spec.archive, archive, keys);
  const run = (sql: string, what: string) => withLockRetry(pool, logger, what, spec.lockTimeoutMs, (c) => c.query(sql));
  // detach, none: the detached partition's foreign keys go first (archiveStep); a retry finds fewer
  const unlink = spec.archive === 'detach' || spec.archive === 'none' ? step.forward.slice(0, keys.length) : [];
  for (const sql of unlink) await run(sql, 'drop the foreign key of the detached partition');
  const dropped = keys.length && unlink.length ? `; its foreign keys ${keys.join(', ')} dropped` : '';
  if (spec.archive === 'detach') {
    const [createSchema, move] = step.forward.slice(keys.length);
    await pool.query(createSchema);
    await run(move, 'archive');
    entry.note = `now ${displayName({ schema: archive, name })}${dropped}`;
  } else if (spec.archive === 'drop') {
    await run(step.forward[0], 'drop');
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
    await run(step.forward[0], 'drop');
  } else {
    entry.note = `detached, left as ${qualified(ref)}${dropped}`;
  }
  await archiveLog(pool, spec, name, 'archived');
  report.archived.push(entry);
}

/** Expired partitions detached, then every detached one archived; a dry run reports the steps instead. */
export async function retire(pool: Pool, logger: Logger, spec: MaintainTableSpec, p: Parted, report: TableReport) {
  if (!spec.dryRun) await migrate(pool);
  const pending = await detachedPartitions(pool, spec.table);
  const archive = archiveSchema(spec.table.schema);
  for (const part of expiredPartitions(p.parts, p.current, spec.retentionMonths!)) {
    const ref = { schema: part.schema, name: part.name };
    const needed = await referencing(pool, p, ref);
    if (needed.length) {
      report.skipped.push({ partition: part.name, reason: `rows in ${needed.join(', ')} still reference it` });
      continue;
    }
    const { step, note } = await detachOf(pool, spec, p, ref);
    if (spec.dryRun) {
      plan(report, { ...step, ...(note ? { note } : {}) });
      plan(report, archiveStep(ref, spec.archive, archive, await foreignKeysOf(pool, ref)));
      continue;
    }
    await archiveLog(pool, spec, part.name, 'detaching');
    await detach(pool, logger, spec, step);
    await archiveLog(pool, spec, part.name, 'detached', { note });
    pending.push(part.name);
  }
  for (const name of pending) {
    const ref = { schema: spec.table.schema, name };
    if (spec.dryRun) plan(report, archiveStep(ref, spec.archive, archive, await foreignKeysOf(pool, ref)));
    else await archiveOne(pool, logger, spec, name, report);
  }
}
