/** activities/runtime/db.ts: how errors are classified, and the lock-retry helper's loop (with a scripted pool). */
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import type { Pool } from 'pg';
import { classify, isTransient, withLockRetry } from '../../activities/runtime/db';
import { InputError } from '../../src/ident';
import { createLogger } from '../../src/logger';

const log = createLogger({ test: 'db' }).child({}, { level: 'fatal' });

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('did not throw');
}

describe('classify', () => {
  it('lets failures that are already classified through, and a cancellation', () => {
    const f = ApplicationFailure.nonRetryable('x', 'PlanMismatch');
    expect(thrown(() => classify(f, 'step'))).toBe(f);
    const c = new CancelledFailure('cancelled');
    expect(thrown(() => classify(c, 'step'))).toBe(c);
  });
  it('makes bad input a non-retryable InvalidInput with the sentence unchanged', () => {
    const e = thrown(() => classify(new InputError('Field "x" is wrong.'), 'step')) as ApplicationFailure;
    expect(e).toBeInstanceOf(ApplicationFailure);
    expect({ type: e.type, nonRetryable: e.nonRetryable, message: e.message }).toEqual({
      type: 'InvalidInput',
      nonRetryable: true,
      message: 'Field "x" is wrong.',
    });
  });
  it.each([
    ['lock timeout', { code: '55P03' }],
    ['serialization', { code: '40001' }],
    ['deadlock', { code: '40P01' }],
    ['admin shutdown', { code: '57P01' }],
    ['connection failure class 08', { code: '08006' }],
    ['refused connection', { code: 'ECONNREFUSED' }],
    ['a client that lost its server', { message: 'Connection terminated unexpectedly' }],
  ])('rethrows a transient error (%s) as it is, for Temporal to retry', (_l, e) => {
    const err = Object.assign(new Error((e as { message?: string }).message ?? 'x'), e);
    expect(isTransient(err)).toBe(true);
    expect(thrown(() => classify(err, 'step'))).toBe(err);
  });
  it('makes anything else a non-retryable DatabaseError naming the step and the SQLSTATE', () => {
    const err = Object.assign(new Error('relation "t" does not exist'), { code: '42P01' });
    const e = thrown(() => classify(err, 'shadow')) as ApplicationFailure;
    expect({ type: e.type, nonRetryable: e.nonRetryable, message: e.message }).toEqual({
      type: 'DatabaseError',
      nonRetryable: true,
      message: 'shadow failed: relation "t" does not exist (SQLSTATE 42P01)',
    });
  });
});

/** A pool whose one connection records every statement and fails the step's statement as scripted. */
function scriptedPool(failures: (string | null)[]): { pool: Pool; log: string[] } {
  const seen: string[] = [];
  let attempt = 0;
  const client = {
    query: async (sql: string) => {
      seen.push(sql);
      if (sql === 'STEP') {
        const code = failures[attempt++] ?? null;
        if (code) throw Object.assign(new Error(`scripted ${code}`), { code });
      }
      return { rows: [], rowCount: 0 };
    },
    release: () => undefined,
  };
  return { pool: { connect: async () => client, query: client.query } as unknown as Pool, log: seen };
}

describe('withLockRetry', () => {
  it('runs the step in a transaction with the lock timeout, rolls back and retries on 55P03, then commits', async () => {
    const { pool, log: seen } = scriptedPool(['55P03', '55P03', null]);
    const r = await withLockRetry(pool, log, 'test step', 250, (c) => c.query('STEP'));
    expect(r.stats).toMatchObject({ attempts: 3, lockWaitRetries: 2 });
    expect(seen.filter((s) => s.startsWith('BEGIN'))).toEqual(
      Array(3).fill('BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = 250'),
    );
    expect(seen.filter((s) => s === 'ROLLBACK')).toHaveLength(2);
    expect(seen.at(-1)).toBe('COMMIT');
  });

  it('after maxAttempts hands the lock timeout to Temporal as it is: the activity is retried later', async () => {
    const { pool, log: seen } = scriptedPool(['55P03', '55P03', '55P03']);
    const err = await withLockRetry(pool, log, 'test step', 100, (c) => c.query('STEP'), 2).catch((e) => e);
    expect(err).not.toBeInstanceOf(ApplicationFailure);
    expect(err.code).toBe('55P03');
    expect(seen.filter((s) => s === 'STEP')).toHaveLength(2);
  });

  it('does not retry an error that is not a lock wait', async () => {
    const { pool, log: seen } = scriptedPool(['42P01', null]);
    const err = await withLockRetry(pool, log, 'test step', 100, (c) => c.query('STEP')).catch((e) => e);
    expect(err.type).toBe('DatabaseError');
    expect(seen.filter((s) => s === 'STEP')).toHaveLength(1);
  });
});
