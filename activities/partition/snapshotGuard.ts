/**
 * Before a snapshot guard goes (src/plan/sync.ts, `snapshotGuardSql`): wait until no session of the database
 * holds a snapshot that may be older than the swap the guard was installed by. Without the guard such a
 * transaction's UPDATE or DELETE of a row changed just before the swap would match 0 rows and say nothing.
 *
 * A snapshot taken before the swap committed has an xmin at or before the swap's transaction id, and so has
 * its session's `backend_xmin`. As CREATE INDEX CONCURRENTLY does, the sessions that show one are listed once
 * and each is waited for until its transaction has ended (its `backend_xmin` gone or past the swap, its
 * `xact_start` changed, or the session gone): a session whose transactions all began after the swap, but whose
 * xmin an old transaction elsewhere holds back, is not waited for again and again. The application's sessions
 * are counted whatever role partflow runs as: without pg_read_all_stats, pg_stat_activity shows other roles'
 * sessions with `backend_type`, `state` and `xact_start` NULL but their `backend_xmin`.
 */
import type { Pool } from 'pg';
import { qualified, TableRef } from '../../src/ident';
import type { Logger } from '../../src/logger';
import { SNAPSHOT_GUARD_TRIGGER } from '../../src/plan/sync';
import { activityContext, runAll, sleep, withLockRetry } from '../runtime/db';
import { undoFence } from './run';

interface Older {
  pid: number;
  xactStart: string | null;
  line: string;
}

/** Sessions of this database whose snapshot may be older than the swap of `table`'s guard (none: no guard). */
export async function olderSnapshots(pool: Pool, table: TableRef): Promise<Older[]> {
  // the guard's argument: the swap's transaction id, as an xid8's text
  const g = await pool.query(
    `SELECT convert_from(substring(tgargs FROM 1 FOR position('\\x00'::bytea IN tgargs) - 1), 'UTF8') AS swap
       FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $2`,
    [qualified(table), SNAPSHOT_GUARD_TRIGGER],
  );
  return g.rowCount ? snapshotsOlderThan(pool, g.rows[0].swap as string) : [];
}

/**
 * Sessions of this database whose snapshot may be older than the transaction `xid` (an xid8's text): a
 * snapshot taken before it committed has an xmin at or before it (the guard's swap, the handover's last apply).
 */
export async function snapshotsOlderThan(pool: Pool, xid: string): Promise<Older[]> {
  const r = await pool.query(
    `WITH g AS (SELECT (($1::text::bigint % 4294967296)::text::xid) AS swap)
     SELECT a.pid, a.xact_start::text AS xact_start, coalesce(a.state, 'state not visible') AS state,
            coalesce(extract(epoch FROM now() - a.xact_start)::int::text || ' s', 'of unknown age') AS age,
            coalesce(left(a.query, 120), 'a session of role ' || coalesce(a.usename::text, '?')) AS query
       FROM pg_stat_activity a, g
      WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
        AND coalesce(a.backend_type, 'client backend') = 'client backend'
        AND a.backend_xmin IS NOT NULL AND age(a.backend_xmin) >= age(g.swap)`,
    [xid],
  );
  return r.rows.map((x) => ({
    pid: Number(x.pid),
    xactStart: x.xact_start,
    line: `pid ${x.pid} (${x.state}, transaction ${x.age}): ${x.query}`,
  }));
}

/**
 * The sessions listed once by `list`, each waited for until its transaction has ended (as CREATE INDEX
 * CONCURRENTLY waits), or until `untilMs` has passed. Returns those still waited for (none: all ended).
 */
export async function waitForSessions(
  pool: Pool,
  list: () => Promise<Older[]>,
  logger: Logger,
  what: string,
  untilMs = Infinity,
  details: () => Record<string, unknown> = () => ({}),
  pollMs = 100,
): Promise<Older[]> {
  const ctx = activityContext();
  let waiting = await list();
  let said = 0;
  while (waiting.length) {
    ctx?.heartbeat({ ...details(), step: what, sessions: waiting.map((w) => w.line) });
    if (Date.now() - said > 30_000) {
      logger.info({ sessions: waiting.map((w) => w.line) }, what);
      said = Date.now();
    }
    if (ctx?.cancellationSignal.aborted || Date.now() >= untilMs) return waiting;
    await sleep(Math.max(0, Math.min(pollMs, untilMs - Date.now())));
    const now = new Map((await list()).map((o) => [o.pid, o]));
    // still in the same transaction (a NULL start, when not visible, counts as the same)
    waiting = waiting.filter((w) => now.has(w.pid) && now.get(w.pid)!.xactStart === w.xactStart);
  }
  return waiting;
}

export async function waitForOlderSnapshots(pool: Pool, table: TableRef, logger: Logger): Promise<void> {
  // the candidates, once: later sessions took their snapshots after the swap
  const what = 'waiting for transactions older than the swap';
  await waitForSessions(
    pool,
    () => olderSnapshots(pool, table),
    logger,
    what,
    Infinity,
    () => ({}),
    1000,
  );
}

/**
 * A guard that ends with its run (the attach path's swap back: no sync undo follows it): once no snapshot
 * older than the swap is left, `drop` (beginning with its LOCK TABLE) takes it off, under the undo's fence.
 * Nothing when the guard is not there (plans made before it, or dropped by an earlier attempt).
 */
export async function retireSnapshotGuard(
  pool: Pool,
  table: TableRef,
  drop: string[] | undefined,
  logger: Logger,
  lockTimeoutMs: number,
): Promise<void> {
  const has = async () =>
    (
      await pool.query(`SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $2`, [
        qualified(table),
        SNAPSHOT_GUARD_TRIGGER,
      ])
    ).rowCount;
  if (!drop || !(await has())) return;
  await waitForOlderSnapshots(pool, table, logger);
  await withLockRetry(pool, logger, 'drop snapshot guard', lockTimeoutMs, async (c) => {
    await undoFence(c, table);
    await runAll(c, drop);
  });
  logger.info('snapshot guard dropped: no transaction older than the swap back is left');
}
