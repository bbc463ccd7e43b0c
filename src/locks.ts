import { InputError } from './ident';

/**
 * How long one DDL attempt may wait for its lock. An application statement that arrives while we wait queues
 * behind our request, so its wait is at most this plus how long we then hold the lock (a few ms for every step
 * partflow takes): 50 ms keeps it under the 100 ms partflow promises. A failed attempt rolls back and is tried
 * again after a jittered backoff (activities/runtime/db.ts withLockRetry); operators may raise it per run.
 */
export const DEFAULT_LOCK_TIMEOUT_MS = 50;

/** The `lockTimeoutMs` field of a workflow's input: the default when absent, a whole number of ms from 10 to 60000. */
export function lockTimeoutField(value: unknown): number {
  const ms = value === undefined ? DEFAULT_LOCK_TIMEOUT_MS : Number(value);
  if (!Number.isInteger(ms) || ms < 10 || ms > 60_000)
    throw new InputError('Field "lockTimeoutMs" must be a whole number from 10 to 60000.');
  return ms;
}

/**
 * What each partition adds to how long a statement on a partitioned table holds its lock when PostgreSQL
 * visits every partition under it (the parent's foreign key adopting the partitions' ones, SET NOT NULL, a
 * CHECK added or dropped): about 0.45 ms per partition measured on a 2-core machine, 53 ms for 120.
 */
export const HOLD_PER_PARTITION_MS = 0.5;
const MIN_LOCK_TIMEOUT_MS = 10;

/**
 * The lock wait left to a statement that will hold its lock across `partitions` partitions: an application
 * statement queued behind it waits for our wait plus our hold, so the hold is taken out of the budget (down
 * to 10 ms; more attempts make up for the shorter ones). A plain table (0 partitions) keeps `lockTimeoutMs`.
 */
export function lockTimeoutAcross(lockTimeoutMs: number, partitions: number): number {
  return Math.min(
    lockTimeoutMs,
    Math.max(MIN_LOCK_TIMEOUT_MS, Math.round(lockTimeoutMs - partitions * HOLD_PER_PARTITION_MS)),
  );
}

/**
 * The lock timeout and attempts of a statement that holds its lock across `partitions` partitions (0: a
 * plain table, the usual 8 attempts): the shorter waits get more attempts.
 */
export function lockAcross(lockTimeoutMs: number, partitions: number): { ms: number; maxAttempts: number } {
  return { ms: lockTimeoutAcross(lockTimeoutMs, partitions), maxAttempts: partitions ? 20 : 8 };
}

/**
 * The whole LOCK phase of a step (activities/runtime/db.ts lockUpFront): `tables` waits of `lockTimeoutMs` each, and
 * well under 1 ms for each of `partitions` partitions' locks. Far below deadlock_timeout at the default budget.
 */
export function lockPhaseBudgetMs(lockTimeoutMs: number, tables: number, partitions = 0): number {
  return tables * lockTimeoutMs + partitions;
}
