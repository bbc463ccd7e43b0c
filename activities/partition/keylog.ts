/**
 * Applying the key log (src/plan/keylog.ts, docs/sync-design.md): each logged key's current row re-copied from
 * the table into the copy, from partflow's own READ COMMITTED transactions.
 */
import type { Pool, PoolClient } from 'pg';
import type { Plan } from '../../src/plan';
import { KeyLogApplySql, KeyLogSeenSql, RECHECK_MAX, RECHECK_OUTSIDE_MAX } from '../../src/plan/keylog';
import { failure } from '../../src/failures';
import { displayName } from '../../src/ident';
import { createLogger, Logger } from '../../src/logger';
import { activityContext, classify, inTransaction, sleep } from '../runtime/db';
import { faultPoint } from '../runtime/faults';
import { Deps, stepLog } from '../runtime/deps';
import { ownPlan } from './run';

/** The fault suite's `apply` point logs here (PARTFLOW_FAULT_POINT=apply); null otherwise. */
const faultLog: Logger | null = process.env.PARTFLOW_FAULT_POINT === 'apply' ? createLogger({ step: 'apply' }) : null;

/** A row's key arrays `a1`..`an` (array literals, one per key column), in order: the next statement's $1..$n. */
function keyArrays(row: Record<string, unknown>): unknown[] {
  return Object.keys(row)
    .filter((k) => /^a\d+$/.test(k))
    .sort((a, b) => Number(a.slice(1)) - Number(b.slice(1)))
    .map((k) => row[k]);
}

/**
 * One round in the caller's transaction `c`: up to `limit` entries committed before it taken from the log,
 * their keys deleted from the copy and copied again as the table has them now. Returns the distinct keys.
 * The caller holds the advisory lock exclusively (or, at the cut-over, the tables' ACCESS EXCLUSIVE locks).
 */
export async function applyRound(c: PoolClient, sql: KeyLogApplySql, limit: number): Promise<number> {
  const r = await c.query(sql.take, [limit]);
  const n: number = r.rows[0].n;
  if (!n) return 0;
  const arrays = keyArrays(r.rows[0]);
  // this round's transaction id, before it writes the copy: the handover's trigger looks at it
  if (sql.mark) await c.query(sql.mark);
  await c.query(sql.clear, arrays);
  if (faultLog) await faultPoint('apply', faultLog); // entries taken and keys cleared, nothing copied yet
  if (!sql.lost) {
    await c.query(sql.copy, arrays);
    return n;
  }
  // the rollback window: rows the old table cannot hold are recorded in this round's transaction, and the
  // round goes on (a rollback is refused from then on, rollbackLoss)
  const dup = sql.duplicates ? (await c.query(sql.duplicates, arrays)).rows[0]?.fact : null;
  if (dup) await c.query(sql.lost, [dup]);
  // every row of such an old-table key parked, to be applied again when a rollback is asked (recheckParked)
  if (dup && sql.parkDuplicates) await c.query(sql.parkDuplicates, arrays);
  await c.query('SAVEPOINT partflow_copy');
  try {
    await c.query(sql.copy, arrays);
  } catch (err) {
    const e = err as { code?: string; constraint?: string; detail?: string };
    if (e.code !== '23505' || !sql.copyKept) throw err;
    await c.query('ROLLBACK TO SAVEPOINT partflow_copy');
    await c.query(sql.lost, [`a row its ${e.constraint ?? 'unique index'} rejects (${e.detail ?? 'no detail'})`]);
    if (sql.park) await c.query(sql.park, arrays);
    await c.query(sql.copyKept, arrays);
  }
  await c.query('RELEASE SAVEPOINT partflow_copy');
  return n;
}

/**
 * The keys a round parked (the old table could not take their rows then) applied again, all in one round in the
 * caller's transaction `c` (which holds the applier's lock, or the swap back's): the run's record of what the old
 * table cannot hold is emptied first, and that round records again what it still cannot take. So a duplicate
 * that has ended since, or a transaction whose changes were split over rounds (a unique value handed from one
 * row to another), no longer refuses a rollback. Plans without parking, or more than `max` parked keys (plans
 * made before RECHECK_OUTSIDE_MAX: more than RECHECK_MAX): nothing is done and the record stands.
 */
export async function recheckParked(
  c: PoolClient,
  sql: KeyLogApplySql | undefined,
  max = RECHECK_MAX,
): Promise<number> {
  const rc = sql?.recheck;
  if (!rc) return 0;
  if (!rc.countUpTo) max = Math.min(max, RECHECK_MAX);
  const n = Number((await (rc.countUpTo ? c.query(rc.countUpTo, [max + 1]) : c.query(rc.count))).rows[0].n);
  if (n > max) return 0;
  // nothing parked: a record without keys is one whose duplicate ended between the round's check and its parking
  // (two statements), and the round's copy then met one row: nothing is lost for it
  await c.query(rc.forget);
  return n ? applyRound(c, rc.sql, max) : 0;
}

/**
 * Rounds until the log has nothing committed left or `untilMs` has passed, each waiting for the applier's lock
 * `lockWaitMs` at most (drainKeyLog stops at a round of fewer than `limit` keys: a transaction that changed a few
 * rows many times fills a round with few keys).
 */
export async function drainToEmpty(pool: Pool, sql: KeyLogApplySql, untilMs: number, lockWaitMs: number) {
  while (Date.now() < untilMs) {
    const n = await applyKeyLogWithin(pool, sql, 1000, lockWaitMs);
    if (n === 0) return;
    if (n === null) await sleep(Math.min(lockWaitMs, 100));
  }
}

/**
 * recheckParked in a transaction of its own under the applier's lock, waited for `lockWaitMs` at most, up to
 * RECHECK_OUTSIDE_MAX keys (no lock of the table's is held).
 */
export async function recheckParkedWithin(pool: Pool, sql: KeyLogApplySql, lockWaitMs: number): Promise<void> {
  if (sql.recheck) await underApplierLock(pool, sql, lockWaitMs, (c) => recheckParked(c, sql, RECHECK_OUTSIDE_MAX));
}

/**
 * One round in a transaction of its own under the exclusive advisory lock (a batch of the copy in flight
 * finishes first). Returns how many distinct keys it re-copied; 0 when the log had nothing committed.
 * Idempotent: a round that dies rolls back, its entries stay in the log.
 */
export async function applyKeyLog(pool: Pool, sql: KeyLogApplySql, limit = 1000): Promise<number> {
  const round = async (c: PoolClient) => {
    await c.query(sql.lock); // waits for the batches in flight (short: maxBatchMs)
    // from here a lock the application holds is waited for briefly only, and the source is locked before the
    // copy: an application's TRUNCATE (the table, then the copy through partflow's trigger) is never the one
    // the deadlock detector aborts
    await c.query(`SET LOCAL lock_timeout = ${APPLY_LOCK_TIMEOUT_MS}`);
    if (sql.lockSource) await c.query(sql.lockSource);
    return applyRound(c, sql, limit);
  };
  for (let attempt = 1; ; attempt++) {
    try {
      return await inTransaction(pool, round);
    } catch (err) {
      const code = (err as { code?: string }).code;
      if ((code !== '55P03' && code !== '40P01') || attempt >= APPLY_LOCK_ATTEMPTS) throw err;
      await sleep(20 + Math.random() * 80 * Math.min(attempt, 5));
    }
  }
}

/**
 * One round whose wait for the applier's lock is bounded by `lockWaitMs` (the handover: a writer that wrote the
 * copy holds the lock shared to its transaction's end, and while the round waits every writer logs): null when
 * the lock was not had in time, else as applyKeyLog. `first` runs after the lock, before the round (the
 * handover's own statements, under the same lock).
 */
export async function applyKeyLogWithin(
  pool: Pool,
  sql: KeyLogApplySql,
  limit: number,
  lockWaitMs: number,
  first?: (c: PoolClient) => Promise<void>,
): Promise<number | null> {
  return underApplierLock(pool, sql, lockWaitMs, (c) => applyRound(c, sql, limit), first);
}

/**
 * `body` in a transaction of its own under the applier's lock, waited for `lockWaitMs` at most, and the source in
 * ACCESS SHARE (after `first`); null when the lock was not had in time (or a deadlock chose this transaction).
 */
async function underApplierLock<T>(
  pool: Pool,
  sql: KeyLogApplySql,
  lockWaitMs: number,
  body: (c: PoolClient) => Promise<T>,
  first?: (c: PoolClient) => Promise<void>,
): Promise<T | null> {
  try {
    return await inTransaction(pool, async (c) => {
      await c.query(`SET LOCAL lock_timeout = ${Math.max(1, Math.floor(lockWaitMs))}`);
      await c.query(sql.lock);
      await c.query(`SET LOCAL lock_timeout = ${APPLY_LOCK_TIMEOUT_MS}`);
      if (first) await first(c);
      if (sql.lockSource) await c.query(sql.lockSource);
      return body(c);
    });
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === '55P03' || code === '40P01') return null;
    throw err;
  }
}

/** The applier's lock waits: below deadlock_timeout (1 s by default), retried with a jittered backoff. */
const APPLY_LOCK_TIMEOUT_MS = 200;
const APPLY_LOCK_ATTEMPTS = 50;

/**
 * Rounds until one finds fewer than `limit` entries (the log is as short as the writers keep it), or until
 * `untilMs` (a timestamp) has passed. Returns the keys re-copied. With `lockWaitMs`, a round that does not get
 * the applier's lock within it ends the drain (where the handover may be on: an application transaction that
 * wrote the copy holds the lock shared to its end, and a waiting applier sends every writer to the log).
 */
export async function drainKeyLog(
  pool: Pool,
  sql: KeyLogApplySql,
  limit = 1000,
  untilMs = Infinity,
  lockWaitMs?: number,
): Promise<number> {
  let total = 0;
  for (;;) {
    const n =
      lockWaitMs === undefined
        ? await applyKeyLog(pool, sql, limit)
        : await applyKeyLogWithin(pool, sql, limit, lockWaitMs);
    if (n === null) return total;
    total += n;
    if (n < limit || Date.now() > untilMs) return total;
  }
}

/** Entries waiting in the log. */
export async function keyLogBacklog(c: Pool | PoolClient, sql: KeyLogApplySql): Promise<number> {
  return Number((await c.query(sql.backlog)).rows[0].n);
}

/**
 * While the run waits (paused, for approval, or through the rollback window with the reverse log): the key log
 * applied every FOLLOW_EVERY_MS until the workflow cancels this activity, so that the log stays short however
 * long the wait. Heartbeats carry the backlog.
 */
export async function followKeyLog(
  { pool, log }: Deps,
  plan: Plan,
  direction: 'forward' | 'reverse' = 'forward',
): Promise<{ keys: number }> {
  const sql = direction === 'forward' ? plan.sql.keyLog : plan.sql.reverseKeyLog;
  if (!sql) return { keys: 0 };
  const logger = stepLog(log, 'key-log', plan.table);
  const ctx = activityContext();
  let keys = 0;
  try {
    while (!ctx?.cancellationSignal.aborted) {
      // still this workflow's run: an applier the workflow stopped waiting for must not act on a later run's log
      await ownPlan(pool, plan.table, plan);
      // bounded waits: this applier may outlive its cancellation into the handover (docs/sync-design.md)
      keys += await drainKeyLog(pool, sql, 1000, Date.now() + 1000, FOLLOW_LOCK_WAIT_MS);
      ctx?.heartbeat({ step: 'key log', keys, backlog: await keyLogBacklog(pool, sql) });
      if (!ctx) break;
      await sleep(FOLLOW_EVERY_MS);
    }
  } catch (err) {
    // the log is gone: the run went on (cut-over, swap back, finalize or undo) while this applier, which the
    // workflow does not wait for, was still running
    if ((err as { code?: string }).code === '42P01') return { keys };
    classify(err, 'applying the key log');
  }
  logger.info({ keys }, 'key log followed');
  return { keys };
}

const FOLLOW_EVERY_MS = 1000;
const FOLLOW_LOCK_WAIT_MS = 500;

/**
 * Recorded entries compared per snapshot before the cut-over's lock (issue 24, item 5), adapted to the rows'
 * width: halved while a slice takes longer than LAST_CHECK_SLICE_MS (or hits a statement_timeout), doubled
 * back while it is quick, so that no snapshot lives long whatever the row size.
 */
const LAST_CHECK_SLICE = 5_000;
const LAST_CHECK_SLICE_MS = 1_000;
/**
 * Entries recorded during the check that may be left for under the lock (each costs about 0.06 ms of it:
 * 3,489 took 216 ms in the second attack); more, and the check goes on first.
 */
const LAST_CHECK_REMAINDER = 500;

export interface LastCheck {
  /** the recorded keys' `seq` compared up to, before and under the lock */
  upTo: number;
  /** keys compared (distinct per slice; a key copied again is compared, and counted, again) */
  keys: number;
  /** ranges that differed and were equal once their keys were copied again */
  repaired: string[];
}

type Difference = { n: number; keys: string[] } | null;

/** The difference among the keys recorded in ($from, $to] of `seen`, in `c`'s snapshot, with the keys compared. */
async function seenDifference(c: PoolClient, seen: KeyLogSeenSql, from: number, to: number) {
  if (!seen.slice || !seen.sliceCompare) {
    // a plan made before the slice statements
    const row = (await c.query(seen.compare!, [from, to])).rows[0];
    return { keys: to - from, d: row.n ? { n: row.n, keys: row.keys } : null };
  }
  const s = (await c.query(seen.slice, [from, to])).rows[0];
  if (!s.n) return { keys: 0, d: null };
  const row = (await c.query(seen.sliceCompare, keyArrays(s))).rows[0];
  return { keys: s.n as number, d: (row.n ? { n: row.n, keys: row.keys } : null) as Difference };
}

/** The same in a read-only snapshot of its own: both sides as of one moment. */
function seenDifferenceNow(pool: Pool, seen: KeyLogSeenSql, from: number, to: number) {
  return inTransaction(pool, (c) => seenDifference(c, seen, from, to), {
    isolation: 'REPEATABLE READ',
    readOnly: true,
  });
}

/** Where the check starts: where it stopped, or before the first entry recorded (a reset keeps `seq` going). */
async function firstToCheck(c: Pool | PoolClient, seen: KeyLogSeenSql, upTo: number): Promise<number> {
  if (!seen.min) return upTo;
  const min = Number((await c.query(seen.min)).rows[0].n);
  return Math.max(upTo, min - 1);
}

/**
 * Before the cut-over's lock, outside any transaction of the cut-over: the rows of every key the applier copied
 * since the last verification pass began, compared on both sides, LAST_CHECK_SLICE recorded keys per snapshot,
 * from `check.upTo` on, the log drained before each slice (however long the check, the log stays as short as
 * the writers keep it). A slice that differs has its keys logged and applied again and is compared once more:
 * equal then, it is reported as repaired; still different, the cut-over is refused with the keys.
 */
export async function lastCheckBeforeLock(
  pool: Pool,
  plan: Plan,
  sql: KeyLogApplySql,
  check: LastCheck,
  lockWaitMs?: number,
) {
  const seen = sql.seen;
  if (!seen) return;
  const max = async () => Number((await pool.query(seen.max)).rows[0].n);
  check.upTo = await firstToCheck(pool, seen, check.upTo);
  let slice = LAST_CHECK_SLICE;
  // what the check's own drains record while it runs is compared too, until what is left for under the lock
  // is small
  for (let to = await max(); to - check.upTo > 0; to = await max()) {
    while (check.upTo < to) {
      const [from, end] = [check.upTo, Math.min(to, check.upTo + slice)];
      // keys still in the log are left out of the comparison (and compared under the cut-over's lock)
      await drainKeyLog(pool, sql, 1000, Infinity, lockWaitMs);
      const started = Date.now();
      let compared;
      try {
        compared = await seenDifferenceNow(pool, seen, from, end);
      } catch (err) {
        // a statement_timeout: the same entries again in smaller slices
        if ((err as { code?: string }).code !== '57014' || slice === 1) throw err;
        slice = Math.ceil(slice / 2);
        continue;
      }
      const ms = Date.now() - started;
      if (ms > LAST_CHECK_SLICE_MS) slice = Math.max(1, Math.floor(slice / 2));
      else if (ms < LAST_CHECK_SLICE_MS / 4) slice = Math.min(LAST_CHECK_SLICE, slice * 2);
      const { keys, d } = compared;
      if (d) {
        await pool.query(seen.requeue, [from, end]);
        await drainKeyLog(pool, sql);
        const again = await seenDifferenceNow(pool, seen, from, end);
        if (again.d) throw lastCheckFailure(plan, again.d, 'before');
        check.repaired.push(`${d.n} key(s): ${d.keys.join(', ')}`);
      }
      check.keys += keys;
      check.upTo = end;
    }
    if ((await max()) - check.upTo <= LAST_CHECK_REMAINDER) return;
  }
}

/**
 * Under the cut-over's lock, after the log's remainder was applied: the keys recorded since the check before
 * the lock (nothing can change them now). A difference refuses the cut-over.
 */
export async function lastCheckUnderLock(c: PoolClient, plan: Plan, sql: KeyLogApplySql, check: LastCheck) {
  const seen = sql.seen;
  if (!seen) return;
  const to = Number((await c.query(seen.max)).rows[0].n);
  const from = await firstToCheck(c, seen, check.upTo);
  if (to <= from) return;
  const { keys, d } = await seenDifference(c, seen, from, to);
  if (d) throw lastCheckFailure(plan, d, 'under');
  check.keys += keys;
  check.upTo = to;
}

function lastCheckFailure(plan: Plan, d: { n: number; keys: string[] }, when: 'before' | 'under') {
  return failure(
    `The last check before the cut-over of ${displayName(plan.table)} found ${d.n} key(s) whose rows differ ` +
      `between the table and the copy${when === 'before' ? ' after they were copied again' : ' under the lock'} ` +
      `(keys ${d.keys.join(', ')}), changed since the last verification pass; not cutting over: the run rolls ` +
      'back (report it: the copy missed a change).',
    'CopyDiverged',
    d,
  );
}

/** A verification pass begins: the keys recorded so far were compared by the passes before it. */
export async function resetSeen(pool: Pool, sql: KeyLogApplySql | undefined): Promise<void> {
  if (sql?.seen) await pool.query(sql.seen.reset);
}
