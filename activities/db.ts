/**
 * Database plumbing for activities: transactions, lock-timeout retries, SQLSTATE classification.
 * Only 55P03 (lock not available) and transient classes are retried; everything else becomes a
 * non-retryable ApplicationFailure that names the step.
 */
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { Pool, PoolClient, PoolConfig } from 'pg';
import { InputError } from '../src/ident';
import type { Logger } from '../src/logger';
import { metrics } from './metrics';

export const APPLICATION_NAME = 'partflow';

export function createPool(databaseUrl: string | undefined, extra: PoolConfig = {}): Pool {
  const pool = new Pool({ connectionString: databaseUrl, application_name: APPLICATION_NAME, max: 8, ...extra });
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
  return /Connection terminated|connection .*closed|Client has encountered a connection error|Client was closed and is not queryable/i.test(e.message ?? '');
}

/**
 * Rethrows `err` so that Temporal retries what is transient and fails fast, with one sentence, on
 * everything else.
 */
export function classify(err: unknown, step: string): never {
  if (err instanceof ApplicationFailure) throw err;
  if (err instanceof InputError) throw ApplicationFailure.nonRetryable(err.message, 'InvalidInput');
  if (isTransient(err)) throw err;
  const e = err as { code?: string; message?: string };
  throw ApplicationFailure.nonRetryable(
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

/**
 * Creates partflow's own bookkeeping objects (`CREATE ... IF NOT EXISTS`). Two workers doing it at once
 * race on the catalog: one wins, the other sees a unique violation and simply looks again.
 */
export async function ensureCatalog(pool: Pool, statements: string[]): Promise<void> {
  for (let i = 0; ; i++) {
    try {
      await inTransaction(pool, async (c) => {
        for (const sql of statements) await c.query(sql);
      });
      return;
    } catch (err) {
      const code = (err as { code?: string }).code;
      if ((code === '23505' || code === '42P07') && i < 3) continue;
      throw err;
    }
  }
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

export async function inTransaction<T>(
  pool: Pool,
  fn: (client: PoolClient) => Promise<T>,
  opts: { isolation?: 'REPEATABLE READ'; readOnly?: boolean; lockTimeoutMs?: number } = {},
): Promise<T> {
  const client = await pool.connect();
  let broken = false;
  try {
    await client.query(`BEGIN${opts.isolation ? ` ISOLATION LEVEL ${opts.isolation}` : ''}${opts.readOnly ? ' READ ONLY' : ''}`);
    if (opts.lockTimeoutMs !== undefined) await client.query(`SET LOCAL lock_timeout = ${Math.floor(opts.lockTimeoutMs)}`);
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

export interface LockRetryStats {
  attempts: number;
  lockWaitRetries: number;
  /** time inside the successful transaction, ms */
  holdMs: number;
}

/**
 * Runs DDL in one transaction with a short lock_timeout; on 55P03 rolls back, waits with jittered
 * exponential backoff and tries again, so a long-running transaction delays the step instead of queueing
 * every application query behind our lock request.
 */
export async function withLockRetry<T>(
  pool: Pool,
  log: Logger,
  step: string,
  lockTimeoutMs: number,
  fn: (client: PoolClient) => Promise<T>,
  maxAttempts = 8,
): Promise<{ result: T; stats: LockRetryStats }> {
  let lockWaitRetries = 0;
  for (let attempt = 1; ; attempt++) {
    const started = Date.now();
    try {
      const result = await inTransaction(pool, fn, { lockTimeoutMs });
      return { result, stats: { attempts: attempt, lockWaitRetries, holdMs: Date.now() - started } };
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === '55P03' && attempt < maxAttempts) {
        lockWaitRetries++;
        metrics.lockWaitRetry(step);
        const backoff = Math.min(10_000, 200 * 2 ** (attempt - 1));
        const wait = Math.round(backoff / 2 + Math.random() * backoff);
        log.warn({ step, attempt, waitMs: wait }, 'lock not available within lock_timeout; retrying');
        activityContext()?.heartbeat({ step, lockWaitRetries });
        await sleep(wait);
        continue;
      }
      classify(err, step);
    }
  }
}
