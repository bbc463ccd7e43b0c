/**
 * How long one DDL attempt may wait for its lock. An application statement that arrives while we wait queues
 * behind our request, so its wait is at most this plus how long we then hold the lock (a few ms for every step
 * partflow takes): 50 ms keeps it under the 100 ms partflow promises. A failed attempt rolls back and is tried
 * again after a jittered backoff (activities/db.ts withLockRetry); operators may raise it per run.
 */
export const DEFAULT_LOCK_TIMEOUT_MS = 50;
