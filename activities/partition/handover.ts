/**
 * The handover before the cut-over (docs/sync-design.md, "The handover"): the last changes before the swap are
 * written into the copy by the application's own transactions, so that a snapshot taken before the swap sees the
 * table that takes the name exactly as it sees the original.
 *
 * Why: with the key log alone, the copy's newest row versions are partflow's (the last apply rounds, the drain
 * under the swap's lock), and a REPEATABLE READ or SERIALIZABLE snapshot older than them, first touching the
 * table after the swap, reads those rows stale and fails its writes (the snapshot guard's 40001).
 *
 * How:
 * 1. `on`: the forward trigger's function is replaced by the handover's (src/plan/keylog.ts
 *    keyLogHandoverFunctionSql), and `applied` set, in one transaction. From its commit a writer writes its
 *    change into the copy itself unless the change's key has an entry in the log as its snapshot sees it (then
 *    it logs the key as before).
 * 2. The log drained to empty (each round sets `applied` before it writes the copy).
 * 3. Every session whose snapshot may be older than the latest round is waited for until its transaction ends
 *    (as CREATE INDEX CONCURRENTLY waits), up to `PARTFLOW_HANDOVER_WAIT_MS` (30 s by default). No lock is held.
 * 4. Quiet when, after that, the log is still empty and no round ran since: every snapshot left sees every row
 *    version partflow wrote, and every later change is in the copy as its writer's own version. Otherwise (an
 *    older writer logged meanwhile) 2 and 3 again, until the deadline.
 * The swap then checks under its lock that nothing was applied since (`applied` unchanged, nothing drained):
 * quiet, it needs no snapshot guard; otherwise it installs the guard as before.
 */
import type { Pool } from 'pg';
import type { Logger } from '../../src/logger';
import type { Plan } from '../../src/plan';
import { CancelledFailure } from '@temporalio/common';
import { keyLogLockKey } from '../../src/plan/keylog';
import { activityContext, inTransaction, sleep } from '../runtime/db';
import { applyKeyLogWithin, keyLogBacklog } from './keylog';
import { fence, undoFence } from './run';
import { snapshotsOlderThan, waitForSessions } from './snapshotGuard';

export interface HandoverResult {
  /** every snapshot left sees partflow's last write into the copy, and the log is empty */
  quiet: boolean;
  /** the transaction id of the applier's latest round when it ended */
  applied: string | null;
  /** drain-and-wait rounds */
  rounds: number;
  /** how long the handover took, ms */
  ms: number;
  /** not quiet: the sessions whose snapshot was still older than the latest round at the deadline */
  heldBy?: string[];
}

export function handoverWaitMs(): number {
  const v = Number(process.env.PARTFLOW_HANDOVER_WAIT_MS);
  return Number.isFinite(v) && v >= 0 ? v : 30_000;
}

/**
 * `forward`: before the cut-over, into the copy; `reverse`: before the swap back, into the old table (the undo's
 * fence; runs whose plan gave uniqueness up have none).
 */
export type Direction = 'forward' | 'reverse';

function sqlOf(plan: Plan, direction: Direction) {
  return direction === 'forward'
    ? { h: plan.sql.handover, keyLog: plan.sql.keyLog, fn: plan.functions.forward, fenced: fence }
    : { h: plan.sql.reverseHandover, keyLog: plan.sql.reverseKeyLog, fn: plan.functions.reverse, fenced: undoFence };
}

/** The transaction id of the applier's latest round (text), or null when none has run. */
export async function appliedXid(
  c: { query: Pool['query'] },
  plan: Plan,
  direction: Direction = 'forward',
): Promise<string | null> {
  return ((await c.query(sqlOf(plan, direction).h!.applied)).rows[0]?.x as string | null) ?? null;
}

/**
 * Steps 1 to 4 above. Idempotent: a retried attempt replaces the function again and waits again. `details`:
 * what the caller's heartbeats carry (the cut-over's last check), kept in the handover's own.
 */
export async function handOver(
  pool: Pool,
  plan: Plan,
  logger: Logger,
  details: () => Record<string, unknown> = () => ({}),
  direction: Direction = 'forward',
  waitMs = handoverWaitMs(),
): Promise<HandoverResult> {
  const { h, keyLog, fenced } = sqlOf(plan, direction);
  if (!h || !keyLog) throw new Error('a handover needs a plan with one');
  const started = Date.now();
  const until = started + waitMs;
  const ctx = activityContext();
  const cancelled = () => {
    if (ctx?.cancellationSignal.aborted) throw new CancelledFailure('handover cancelled');
  };
  // the function replaced and `applied` set under the applier's lock: no round in flight that a snapshot
  // seeing this mark would not see (and the first round's keys applied in the same transaction)
  let on = false;
  while (!on) {
    cancelled();
    const n = await applyKeyLogWithin(pool, keyLog, 1000, ROUND_LOCK_WAIT_MS, async (c) => {
      await fenced(c, plan.table);
      await c.query(h.on);
      await c.query(h.mark);
    });
    on = n !== null;
    if (!on && Date.now() >= until) {
      const heldBy = await lockHolders(pool, plan, direction);
      return { quiet: false, applied: null, rounds: 0, ms: Date.now() - started, heldBy };
    }
  }
  let rounds = 0;
  for (;;) {
    rounds++;
    ctx?.heartbeat({ ...details(), step: 'handover: draining the key log', rounds });
    // to empty (what is left at the deadline the swap drains under its lock, and then guards); a round is not
    // begun on an empty log, and waits for its lock briefly: while it waits, every writer logs
    while (Date.now() < until && (await keyLogBacklog(pool, keyLog)) > 0) {
      cancelled();
      const n = await applyKeyLogWithin(pool, keyLog, 1000, ROUND_LOCK_WAIT_MS);
      if (n === null) await sleep(ROUND_LOCK_WAIT_MS);
      else if (n === 0) break;
    }
    const applied = await appliedXid(pool, plan, direction);
    const waiting = applied
      ? await waitForSessions(
          pool,
          () => snapshotsOlderThan(pool, applied),
          logger,
          'handover: waiting for transactions older than the last apply',
          until,
          details,
        )
      : [];
    cancelled();
    const backlog = await keyLogBacklog(pool, keyLog);
    if (!waiting.length && backlog === 0 && (await appliedXid(pool, plan, direction)) === applied) {
      return { quiet: true, applied, rounds, ms: Date.now() - started };
    }
    if (Date.now() >= until) {
      const heldBy = [...waiting.map((w) => w.line), ...(backlog ? await lockHolders(pool, plan, direction) : [])];
      return {
        quiet: false,
        applied: await appliedXid(pool, plan, direction),
        rounds,
        ms: Date.now() - started,
        heldBy,
      };
    }
  }
}

/** How long a handover's round waits for the applier's lock before it lets the writers go on and tries again. */
const ROUND_LOCK_WAIT_MS = 100;

/**
 * The sessions that hold the applier's lock shared (writers that wrote into the copy, their transactions still
 * open), or wait for it: what keeps the log from being drained.
 */
async function lockHolders(pool: Pool, plan: Plan, direction: Direction): Promise<string[]> {
  const key = keyLogLockKey(plan.tableOid, direction);
  const r = await pool.query(
    `SELECT l.pid, l.mode, l.granted, coalesce(a.state, 'state not visible') AS state,
            coalesce(extract(epoch FROM now() - a.xact_start)::int::text || ' s', 'of unknown age') AS age,
            coalesce(left(a.query, 120), '') AS query
       FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database
            WHERE datname = current_database())
        AND ((l.classid::bigint << 32) | l.objid::bigint) = $1::bigint AND l.pid <> pg_backend_pid()`,
    [String(key)],
  );
  return r.rows.map(
    (x) =>
      `pid ${x.pid} (${x.state}, transaction ${x.age}) ${x.granted ? 'holds' : 'waits for'} the key log's lock ` +
      `${x.mode === 'ShareLock' ? 'shared' : 'exclusively'}: ${x.query}`,
  );
}

/** The plain key log's function again (the swap gave up): best effort, the log is always exact. */
export async function handBack(
  pool: Pool,
  plan: Plan,
  logger: Logger,
  direction: Direction = 'forward',
): Promise<void> {
  const { h, fn, fenced } = sqlOf(plan, direction);
  if (!h) return;
  try {
    await inTransaction(pool, async (c) => {
      await fenced(c, plan.table);
      // the trigger's function is still there (the swap did not commit): otherwise nothing to hand back
      const live = await c.query(`SELECT to_regprocedure($1) IS NOT NULL AS ok`, [`${fn}()`]);
      if (live.rows[0].ok) await c.query(h.off);
    });
  } catch (err) {
    logger.warn({ err: (err as Error).message }, 'handover: could not put the plain key log back');
  }
}
