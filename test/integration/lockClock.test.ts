/**
 * The cut-overs' lock time (activities/runtime/lockClock.ts) against a real PostgreSQL: measured by a session
 * queued behind the lock, so it counts the whole hold, and it does not count the unlink of dropped files that
 * PostgreSQL does after releasing its locks (the attach path's COMMIT drops the original primary key's index).
 */
import { LockClock } from '../../activities/runtime/lockClock';
import { inTransaction } from '../../activities/runtime/db';
import { createTestDb, TestDb } from '../helpers/pg';

let db: TestDb;

beforeAll(async () => {
  db = await createTestDb('lockclock');
  await db.pool.query(`CREATE TABLE lc (id bigint PRIMARY KEY, v text)`);
  await db.pool.query(`INSERT INTO lc SELECT g, 'x' FROM generate_series(1, 1000) g`);
});
afterAll(async () => {
  await db?.drop();
});

test('the hold is counted from the grant to the release, a statement under the lock included', async () => {
  const clock = await LockClock.open(db.pool, 'public.lc');
  const writer = { blockedFor: 0 };
  await inTransaction(db.pool, async (c) => {
    await c.query('LOCK TABLE lc IN ACCESS EXCLUSIVE MODE');
    clock.locked();
    const t0 = Date.now();
    const w = db.pool.query(`UPDATE lc SET v = 'y' WHERE id = 1`).then(() => (writer.blockedFor = Date.now() - t0));
    await c.query('SELECT pg_sleep(0.3)');
    await clock.arm(c);
    void w;
  });
  clock.close();
  const held = await clock.heldMs();
  // a writer queued from the start of the hold waited for all of it: the figure is not less than the sleep
  expect(held).toBeGreaterThanOrEqual(300);
  await new Promise((r) => setTimeout(r, 50));
  expect(writer.blockedFor).toBeGreaterThanOrEqual(250);
});

test('a dropped index: the figure is where the queued session went on, not later than the COMMIT', async () => {
  await db.pool.query(`CREATE TABLE lc2 (id bigint PRIMARY KEY, v text)`);
  await db.pool.query(`INSERT INTO lc2 SELECT g, repeat('x', 20) FROM generate_series(1, 200000) g`);
  const clock = await LockClock.open(db.pool, 'public.lc2');
  await inTransaction(db.pool, async (c) => {
    await c.query('LOCK TABLE lc2 IN ACCESS EXCLUSIVE MODE');
    clock.locked();
    await c.query('ALTER TABLE lc2 DROP CONSTRAINT lc2_pkey');
    await clock.arm(c);
  });
  const commit = clock.commitMs();
  clock.close();
  const held = await clock.heldMs();
  expect(held).toBeGreaterThanOrEqual(0);
  expect(held).toBeLessThanOrEqual(commit + 1);
  // the watcher went on: the table is readable and its index is gone
  expect((await db.pool.query(`SELECT count(*)::int AS n FROM pg_indexes WHERE tablename = 'lc2'`)).rows[0].n).toBe(0);
});

test('a watcher that cannot connect: the COMMIT is the figure', async () => {
  const clock = await LockClock.open(
    { connect: () => Promise.reject(new Error('no connection')) } as unknown as typeof db.pool,
    'public.lc',
  );
  await inTransaction(db.pool, async (c) => {
    await c.query('LOCK TABLE lc IN ACCESS EXCLUSIVE MODE');
    clock.locked();
    await c.query('SELECT pg_sleep(0.1)');
    await clock.arm(c);
  });
  clock.close();
  expect(await clock.heldMs()).toBeGreaterThanOrEqual(100);
});

test('the watcher goes back to the pool without its lock_timeout', async () => {
  const pool = new (await import('pg')).Pool({ ...db.conn, max: 1 });
  try {
    const clock = await LockClock.open(pool, 'public.lc');
    await inTransaction(db.pool, async (c) => {
      await c.query('LOCK TABLE lc IN ACCESS EXCLUSIVE MODE');
      clock.locked();
      await clock.arm(c);
    });
    clock.close();
    await clock.heldMs();
    // the pool's one connection is the watcher's: the next user of it gets the server's default
    const r = await pool.query(`SELECT current_setting('lock_timeout') AS t`);
    expect(r.rows[0].t).toBe('0');
  } finally {
    await pool.end();
  }
});
