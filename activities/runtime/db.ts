/**
 * Database plumbing for activities: transactions, lock-timeout retries, SQLSTATE classification.
 * Only 55P03 (lock not available) and transient classes are retried; everything else becomes a
 * non-retryable ApplicationFailure that names the step.
 */
import { Context } from '@temporalio/activity';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { Pool, PoolClient, PoolConfig } from 'pg';
import { InputError } from '../../src/ident';
import type { Logger } from '../../src/logger';
import { LockClock } from './lockClock';
import { metrics } from './metrics';
import { failure } from '../../src/failures';

const APPLICATION_NAME = 'partflow';

/**
 * Each stream of a parallel copy (up to 16) holds a connection for its latency probe through its chunk and
 * takes another for each batch: 8 connections let 8 streams' probes take the whole pool and every batch wait
 * for good (attack review, 2026-12-05). Room for 16 streams twice, the applier, a cut-over and its lock watcher.
 */
const POOL_MAX = 40;

export function createPool(databaseUrl: string | undefined, extra: PoolConfig = {}): Pool {
  const pool = new Pool({ connectionString: databaseUrl, application_name: APPLICATION_NAME, max: POOL_MAX, ...extra });
  pool.on('error', () => undefined); // an idle client lost its server: the next query reconnects
  // A checked-out client has no error listener of pg-pool's: a server shutdown between two queries of a
  // transaction would be an unhandled 'error' event and kill the worker process. The next query on that
  // client fails instead ("Client was closed"), which is classified as transient and retried.
  pool.on('connect', (client) => client.on('error', () => undefined));
  return pool;
}

/** SQLSTATEs worth another try: lock timeout, serialization, deadlock, shutdown, connection loss. */
const TRANSIENT = new Set(['55P03', '40001', '40P01', '57P01', '57P02', '57P03', '53300', '53400']);
const TRANSIENT_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ENOTFOUND']);

export function isTransient(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  if (!e) return false;
  if (e.code && (TRANSIENT.has(e.code) || e.code.startsWith('08') || TRANSIENT_CODES.has(e.code))) return true;
  const lost = [
    'Connection terminated',
    'connection .*closed',
    'Client has encountered a connection error',
    'Client was closed and is not queryable',
  ];
  return new RegExp(lost.join('|'), 'i').test(e.message ?? '');
}

/**
 * Rethrows `err` so that Temporal retries what is transient and fails fast, with one sentence, on
 * everything else.
 */
export function classify(err: unknown, step: string): never {
  if (err instanceof ApplicationFailure || err instanceof CancelledFailure) throw err;
  if (err instanceof InputError) throw failure(err.message, 'InvalidInput');
  if (isTransient(err)) throw err;
  const e = err as { code?: string; message?: string };
  throw failure(
    `${step} failed: ${e?.message ?? String(err)}${e?.code ? ` (SQLSTATE ${e.code})` : ''}`,
    'DatabaseError',
  );
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The running activity's context, or undefined when called outside one (scripts, tests). */
export function activityContext(): Context | undefined {
  try {
    return Context.current();
  } catch {
    return undefined;
  }
}

/** The id of the workflow that runs the current activity, or null outside an activity. */
export function currentWorkflowId(): string | null {
  return activityContext()?.info.workflowExecution?.workflowId ?? null;
}

/** Heartbeats every few seconds while `work` runs, so a long statement is not mistaken for a dead worker. */
export async function withHeartbeat<T>(details: () => unknown, work: () => Promise<T>): Promise<T> {
  const c = activityContext();
  if (!c) return work();
  c.heartbeat(details());
  const timer = setInterval(() => c.heartbeat(details()), 3000);
  try {
    return await work();
  } finally {
    clearInterval(timer);
  }
}

/**
 * The locks a DDL statement will take, taken first in its transaction (LOCK TABLE, in the given order), so the
 * statement never waits for a lock once it holds one. Each LOCK waits at most the transaction's lock_timeout per
 * table and `budgetMs` in all (statement_timeout): partflow's whole lock phase stays far below PostgreSQL's
 * deadlock_timeout (1 s by default), so in any wait cycle with an application transaction partflow gives up
 * first (55P03, retried later by withLockRetry) and the application never sees 40P01.
 */
export async function lockUpFront(c: PoolClient, locks: string[], budgetMs: number): Promise<void> {
  if (!locks.length) return;
  // one round trip: the budget, the locks and the budget reset in one simple query (a round trip under the first
  // lock is time the application queued behind it waits; an error stops the rest, the transaction then aborted)
  const timeout = `SET LOCAL statement_timeout = ${Math.max(10, Math.floor(budgetMs))}`;
  try {
    await c.query([timeout, ...locks, 'SET LOCAL statement_timeout TO DEFAULT'].join(';\n'));
  } catch (err) {
    if ((err as { code?: string }).code !== '57014') throw err;
    // the lock phase ran out of its budget: the same as a lock_timeout for the caller's retry
    throw Object.assign(new Error(`the lock phase took longer than ${budgetMs} ms: ${(err as Error).message}`), {
      code: '55P03',
    });
  }
}

export async function inTransaction<T>(
  pool: Pool,
  fn: (client: PoolClient) => Promise<T>,
  opts: { isolation?: 'REPEATABLE READ'; readOnly?: boolean; lockTimeoutMs?: number; asyncCommit?: boolean } = {},
): Promise<T> {
  const client = await pool.connect();
  let broken = false;
  try {
    // one round trip: BEGIN and the transaction's settings in one simple query; the isolation level always
    // named: a database or role whose default_transaction_isolation is higher must not change partflow's
    // (a batch whose snapshot predated its wait for the key log's lock could write an old row back)
    const begin = [`BEGIN ISOLATION LEVEL ${opts.isolation ?? 'READ COMMITTED'}${opts.readOnly ? ' READ ONLY' : ''}`];
    if (opts.lockTimeoutMs !== undefined) begin.push(`SET LOCAL lock_timeout = ${Math.floor(opts.lockTimeoutMs)}`);
    if (opts.asyncCommit) begin.push('SET LOCAL synchronous_commit = off');
    await client.query(begin.join('; '));
    const out = await fn(client);
    await client.query('COMMIT');
    return out;
  } catch (err) {
    try {
      await client.query('ROLLBACK');
    } catch {
      broken = true;
    }
    throw err;
  } finally {
    client.release(broken);
  }
}

/**
 * Runs statements (no parameters) in one round trip, in the transaction `c` is in: under a lock the
 * application waits for, every round trip is time it waits.
 */
export async function runAll(c: PoolClient, statements: string[]): Promise<void> {
  if (statements.length) await c.query(statements.join(';\n'));
}

export interface LockRetryStats {
  attempts: number;
  lockWaitRetries: number;
  /**
   * time inside the successful transaction, ms; with `watch`, from its first statement to where a session
   * queued behind its locks went on (LockClock)
   */
  holdMs: number;
  /** with `watch`: from its first statement to the COMMIT's return (which unlinks dropped files after the locks) */
  commitMs?: number;
}

/** An autovacuum partflow may cancel: not one that prevents transaction-id wraparound. */
const PLAIN_AUTOVACUUM = "backend_type = 'autovacuum worker' AND query NOT LIKE '%to prevent wraparound%'";

/** One withLockRetry call: what its helpers log and count. */
interface Retrying {
  pool: Pool;
  log: Logger;
  step: string;
  ctx: Context | undefined;
  lockWaitRetries: number;
  /** the caller's own heartbeat details, kept in every heartbeat of the step (what a retry picks up) */
  details?: () => object;
}

/** Jittered exponential backoff after a lock wait; a cancelled activity stops here at once. */
async function backOff(r: Retrying, attempt: number, why: Record<string, unknown>): Promise<void> {
  r.lockWaitRetries++;
  metrics.lockWaitRetry(r.step);
  const backoff = Math.min(10_000, 200 * 2 ** (attempt - 1));
  const wait = Math.round(backoff / 2 + Math.random() * backoff);
  r.log.warn({ step: r.step, attempt, waitMs: wait, ...why }, 'lock not available within lock_timeout; retrying');
  r.ctx?.heartbeat({ ...r.details?.(), step: r.step, lockWaitRetries: r.lockWaitRetries });
  if (r.ctx)
    await r.ctx.sleep(wait); // rejects with CancelledFailure on cancellation
  else await sleep(wait);
}

async function cancelAutovacuum(r: Retrying, pid: number, query: string): Promise<boolean> {
  const x = await r.pool.query('SELECT pg_cancel_backend($1) AS ok', [pid]).catch(() => null);
  if (!x?.rows[0]?.ok) return false;
  r.log.warn(
    { step: r.step, pid, query },
    'cancelled an autovacuum holding the table so that the DDL does not queue behind it',
  );
  return true;
}

/**
 * While the attempt waits for a lock, an autovacuum that started after the look-ahead is cancelled at
 * once instead of after deadlock_timeout, so the application queued behind us waits milliseconds.
 */
function watched<T>(r: Retrying, fn: (client: PoolClient) => Promise<T>): (c: PoolClient) => Promise<T> {
  return async (c) => {
    const pid = (c as unknown as { processID: number }).processID; // the backend's pid, from the handshake
    let done = false;
    const watchdog = (async () => {
      while (!done) {
        await sleep(25);
        if (done) break;
        const blockers = await r.pool
          .query(
            `SELECT pid, left(query, 160) AS query FROM pg_stat_activity
              WHERE pid = ANY (pg_blocking_pids($1)) AND ${PLAIN_AUTOVACUUM}`,
            [pid],
          )
          .catch(() => ({ rows: [] as { pid: number; query: string }[] }));
        for (const x of blockers.rows) await cancelAutovacuum(r, x.pid, x.query);
      }
    })();
    try {
      return await fn(c);
    } finally {
      done = true; // not awaited: the commit must not wait for the watchdog's sleep
      void watchdog.catch(() => undefined);
    }
  };
}

/**
 * The look-ahead: who would make an attempt wait now. Plain autovacuums are cancelled (a worker goes on to
 * the next partition when cancelled: look again until none is left); what remains is returned.
 */
async function blockers(r: Retrying, relations: string[], lockTimeoutMs: number) {
  let blocking: Awaited<ReturnType<typeof longLockHolders>> = [];
  for (let look = 0; look < 20; look++) {
    const holders = await longLockHolders(r.pool, relations, lockTimeoutMs).catch(() => []);
    blocking = [];
    let cancelled = 0;
    for (const h of holders) {
      if (h.cancellable && (await cancelAutovacuum(r, h.pid, h.query))) cancelled++;
      else blocking.push(h);
    }
    if (!cancelled) break;
    await sleep(20);
  }
  return blocking;
}

/**
 * Runs DDL in one transaction with a short lock_timeout; on 55P03 rolls back, waits with jittered
 * exponential backoff and tries again, so a long-running transaction delays the step instead of queueing
 * every application query behind our lock request.
 *
 * With `relations`, it looks before it leaps: while a transaction older than the lock timeout holds a lock
 * on one of them or their partitions, an attempt would only queue the application behind us for the whole
 * lock_timeout, so it is not made; the wait counts as a retry. A plain autovacuum on them is cancelled first
 * (PostgreSQL does the same for any lock request that waits deadlock_timeout, which our shorter lock_timeout
 * never reaches; an anti-wraparound one is waited for). When cancelling is refused (privileges), we wait.
 */
export async function withLockRetry<T>(
  pool: Pool,
  log: Logger,
  step: string,
  lockTimeoutMs: number,
  fn: (client: PoolClient) => Promise<T>,
  opts: number | LockRetryOptions = 8,
): Promise<{ result: T; stats: LockRetryStats }> {
  const o: LockRetryOptions = typeof opts === 'number' ? { maxAttempts: opts } : opts;
  const clock = o.watch ? await LockClock.open(pool, o.watch) : undefined;
  try {
    return await retrying(pool, log, step, lockTimeoutMs, clock ? clock.timed(fn) : fn, o, clock);
  } finally {
    clock?.close();
  }
}

export interface LockRetryOptions {
  maxAttempts?: number;
  /** look ahead for long lock holders on these before each attempt */
  relations?: string[];
  /** what each attempt does first, outside its transaction */
  before?: () => Promise<void>;
  details?: () => object;
  /** a table the step locks: its hold is measured where a session queued behind the lock goes on (LockClock) */
  watch?: string;
}

async function retrying<T>(
  pool: Pool,
  log: Logger,
  step: string,
  lockTimeoutMs: number,
  fn: (client: PoolClient) => Promise<T>,
  { maxAttempts = 8, relations = [], before, details }: LockRetryOptions,
  clock: LockClock | undefined,
): Promise<{ result: T; stats: LockRetryStats }> {
  const r: Retrying = { pool, log, step, ctx: activityContext(), lockWaitRetries: 0, details };
  const run = relations.length ? watched(r, fn) : fn;
  for (let attempt = 1; ; attempt++) {
    // a cancelled activity stops retrying at once: the workflow waits for it before undoing anything
    if (r.ctx?.cancellationSignal.aborted) throw new CancelledFailure(`${step} cancelled while waiting for its lock`);
    // what each attempt does first, outside its transaction (the cut-over's drain and check): the step's
    // transaction is open only while it runs statements, never idle waiting for other connections; its
    // failures are classified as the step's own
    if (before) {
      try {
        await before();
      } catch (err) {
        classify(err, step);
      }
    }
    if (relations.length && attempt < maxAttempts) {
      const blocking = await blockers(r, relations, lockTimeoutMs);
      if (blocking.length) {
        await backOff(r, attempt, {
          heldBy: blocking.map((h) => `pid ${h.pid} for ${Math.round(h.ageMs)} ms: ${h.query}`),
        });
        continue;
      }
    }
    const started = Date.now();
    try {
      const result = await withHeartbeat(
        () => ({ ...details?.(), step, attempt, lockWaitRetries: r.lockWaitRetries }),
        () => inTransaction(pool, run, { lockTimeoutMs }),
      );
      const stats = { attempts: attempt, lockWaitRetries: r.lockWaitRetries, holdMs: Date.now() - started };
      if (clock) Object.assign(stats, { commitMs: clock.commitMs(), holdMs: await clock.heldMs() });
      return { result, stats };
    } catch (err) {
      if ((err as { code?: string }).code === '55P03' && attempt < maxAttempts) {
        await backOff(r, attempt, {});
        continue;
      }
      classify(err, step);
    }
  }
}

/**
 * Sessions other than ours holding a granted lock on one of `relations` or their partitions (DDL on a
 * partitioned table locks those too) in a transaction older than `olderThanMs` or idle in transaction
 * (it lets go only when its client acts), or autovacuum.
 */
async function longLockHolders(
  pool: Pool,
  relations: string[],
  olderThanMs: number,
): Promise<{ pid: number; ageMs: number; query: string; cancellable: boolean }[]> {
  const r = await pool.query(
    `SELECT DISTINCT a.pid, extract(epoch FROM now() - coalesce(a.xact_start, a.query_start)) * 1000 AS age_ms,
            left(a.query, 160) AS query,
            ${PLAIN_AUTOVACUUM} AS cancellable -- pg_locks has no backend_type or query column
       FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_backend_pid()
        -- pg_partition_tree is empty for a plain table
        AND l.relation IN (SELECT to_regclass(x) FROM unnest($1::text[]) x
                           UNION SELECT t.relid FROM unnest($1::text[]) x, LATERAL pg_partition_tree(to_regclass(x)) t)
        AND (a.backend_type = 'autovacuum worker' OR a.state LIKE 'idle in transaction%'
             OR coalesce(a.xact_start, a.query_start) < now() - make_interval(secs => $2::float8 / 1000))`,
    [relations, olderThanMs],
  );
  return r.rows.map((x) => ({ pid: x.pid, ageMs: Number(x.age_ms), query: x.query, cancellable: x.cancellable }));
}
