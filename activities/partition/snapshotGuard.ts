/**
 * Before a snapshot guard goes (src/plan/sync.ts, `snapshotGuardSql`): wait until no session of the database
 * holds a snapshot that may be older than the swap the guard was installed by. Without the guard such a
 * transaction's UPDATE or DELETE of a row changed just before the swap would match 0 rows and say nothing.
 *
 * A snapshot taken before the swap committed has an xmin at or before the swap's transaction id, and so has
 * the session's `backend_xmin`; so when no client session's `backend_xmin` is at or before it, none is left
 * (the same wait CREATE INDEX CONCURRENTLY does for older snapshots; a session whose xmin is held back by an
 * older transaction is waited for too). While one is there the step heartbeats and says which session.
 */
import type { Pool } from 'pg';
import { qualified, TableRef } from '../../src/ident';
import type { Logger } from '../../src/logger';
import { SNAPSHOT_GUARD_TRIGGER } from '../../src/plan/sync';
import { activityContext, sleep } from '../runtime/db';

/** Client sessions of this database whose snapshot may be older than the swap of `table`'s guard. */
export async function olderSnapshots(pool: Pool, table: TableRef): Promise<string[]> {
  const r = await pool.query(
    `WITH g AS (
       SELECT (convert_from(substring(t.tgargs FROM 1 FOR position('\\x00'::bytea IN t.tgargs) - 1), 'UTF8')
                 ::xid8::text::bigint % 4294967296)::text::xid AS swap
         FROM pg_trigger t WHERE t.tgrelid = to_regclass($1) AND t.tgname = $2)
     SELECT a.pid, a.state, extract(epoch FROM now() - a.xact_start)::int AS age_s, left(a.query, 120) AS query
       FROM pg_stat_activity a, g
      WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'
        AND a.backend_xmin IS NOT NULL AND age(a.backend_xmin) >= age(g.swap)`,
    [qualified(table), SNAPSHOT_GUARD_TRIGGER],
  );
  return r.rows.map((x) => `pid ${x.pid} (${x.state}, transaction of ${x.age_s} s): ${x.query}`);
}

export async function waitForOlderSnapshots(pool: Pool, table: TableRef, logger: Logger): Promise<void> {
  const ctx = activityContext();
  let said = 0;
  for (;;) {
    const older = await olderSnapshots(pool, table);
    if (!older.length) return;
    ctx?.heartbeat({ step: 'waiting for snapshots older than the swap', sessions: older });
    if (Date.now() - said > 30_000) {
      logger.info({ sessions: older }, 'waiting for transactions older than the swap before dropping its guard');
      said = Date.now();
    }
    if (ctx?.cancellationSignal.aborted) return;
    await sleep(1000);
  }
}
