import { InputError } from './ident';

/**
 * How long one DDL attempt may wait for its lock. An application statement that arrives while we wait queues
 * behind our request, so its wait is at most this plus how long we then hold the lock (a few ms for every step
 * partflow takes): 50 ms keeps it under the 100 ms partflow promises. A failed attempt rolls back and is tried
 * again after a jittered backoff (activities/db.ts withLockRetry); operators may raise it per run.
 */
export const DEFAULT_LOCK_TIMEOUT_MS = 50;

/** The `lockTimeoutMs` field of a workflow's input: the default when absent, a whole number of ms from 10 to 60000. */
export function lockTimeoutField(value: unknown): number {
  const ms = value === undefined ? DEFAULT_LOCK_TIMEOUT_MS : Number(value);
  if (!Number.isInteger(ms) || ms < 10 || ms > 60_000)
    throw new InputError('Field "lockTimeoutMs" must be a whole number from 10 to 60000.');
  return ms;
}
