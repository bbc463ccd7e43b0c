/**
 * The application-latency bound's probe (issue 24, item 2) against a real PostgreSQL: it looks up rows of the
 * table by their primary key as an application does (bench/impact.ts measured why a bare commit was not
 * enough), survives a renamed key column, falls back to a bare commit on an empty table, fails (so the bound
 * holds) when it waits for a lock, and leaves no setting behind on its pooled connection; the backfill's pacer
 * pauses the copy on what it measures.
 */
import { Client } from 'pg';
import { createActivities } from '../../activities';
import { AppProbe, probeBaseline } from '../../activities/runtime/replicas';
import { createLogger } from '../../src/logger';
import { backfillSql } from '../../src/plan';
import type { AppProbeSql } from '../../src/plan/backfill';
import { DEFAULT_REPLICA_BOUNDS } from '../../src/replicas';
import { createTestDb, TestDb } from '../helpers/pg';

let db: TestDb;
const log = createLogger({ component: 'test' }).child({}, { level: 'warn' });
beforeAll(async () => {
  db = await createTestDb('pacer');
  await db.pool.query(`CREATE TABLE pp (region text, id bigint, created_at timestamptz NOT NULL, note text,
    PRIMARY KEY (region, id))`);
  await db.pool.query(`INSERT INTO pp SELECT 'r' || (g % 3), g, now() - (g % 300) * interval '1 day', 'n' || g
    FROM generate_series(1, 100000) g`);
  await db.pool.query('ANALYZE pp');
});
afterAll(async () => {
  await db?.drop();
});

async function planOf(table: string) {
  const acts = createActivities({ pool: db.pool, log });
  return { acts, pre: await acts.preflight({ table }) };
}

describe('the application-latency probe', () => {
  let sql: AppProbeSql;
  beforeAll(async () => {
    sql = (await planOf('pp')).pre.plan.sql.appProbe!;
  });

  it('reads existing primary keys at random pages and finds their rows by the key', async () => {
    const keys = (await db.pool.query({ text: sql.keys, rowMode: 'array' })).rows as string[][];
    expect(keys.length).toBeGreaterThan(50);
    expect(new Set(keys.map((k) => k.join('/'))).size).toBeGreaterThan(20);
    for (const k of keys.slice(0, 20)) {
      expect((await db.pool.query(sql.read, k)).rows[0].found).toBe(true);
    }
    // the lookup is an index scan of the primary key, not a scan of the table
    const plan = (await db.pool.query(`EXPLAIN ${sql.read}`, keys[0])).rows.map((r) => r['QUERY PLAN']).join('\n');
    expect(plan).toMatch(/Index (Only )?Scan using pp_pkey/);
    const probe = new AppProbe(db.pool, sql);
    for (let i = 0; i < 5; i++) expect(await probe.once()).toEqual(expect.any(Number));
    expect(await probeBaseline(db.pool, sql)).toBeGreaterThan(0);
  });

  it('goes on after a key column is renamed, and times a bare commit on an empty table', async () => {
    await db.pool.query(`CREATE TABLE pp_r (LIKE pp INCLUDING ALL)`);
    await db.pool.query(`INSERT INTO pp_r SELECT * FROM pp`);
    const renamed = (await planOf('pp_r')).pre.plan.sql.appProbe!;
    await db.pool.query(`ALTER TABLE pp_r RENAME COLUMN id TO ident`);
    const c = await db.pool.connect();
    const probe = new AppProbe(c, renamed);
    try {
      expect(await probe.once()).toEqual(expect.any(Number));
      await c.query('TRUNCATE pp_r');
      const empty = new AppProbe(c, renamed);
      expect(await empty.once()).toEqual(expect.any(Number));
    } finally {
      await probe.release(c);
    }
  });

  it('fails when it waits for a lock, so that the bound holds; its pooled connection keeps no setting', async () => {
    const holder = new Client(db.conn);
    await holder.connect();
    const c = await db.pool.connect();
    const pid = (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    const probe = new AppProbe(c, sql);
    try {
      expect(await probe.once()).toEqual(expect.any(Number));
      await holder.query('BEGIN');
      await holder.query('LOCK TABLE pp IN ACCESS EXCLUSIVE MODE');
      const t0 = Date.now();
      expect(await probe.once()).toBeNull();
      expect(Date.now() - t0).toBeLessThan(10_000);
      await holder.query('ROLLBACK');
      expect(await probe.once()).toEqual(expect.any(Number));
    } finally {
      await holder.end();
      await probe.release(c);
    }
    // the same backend, back in the pool: lock_timeout is the server's default again
    const back = await db.pool.connect();
    try {
      if ((await back.query('SELECT pg_backend_pid() AS pid')).rows[0].pid === pid) {
        expect((await back.query('SHOW lock_timeout')).rows[0].lock_timeout).toBe('0');
      }
    } finally {
      back.release();
    }
  });

  it('the backfill pauses after its batches while the probe is over the bound', async () => {
    const { acts, pre } = await planOf('pp');
    const plan = pre.plan;
    await acts.claimRun(plan.table, plan);
    await acts.createShadow(plan, 500);
    await acts.installSyncTrigger(plan, 500);
    try {
      const input = {
        table: plan.table,
        copyMode: plan.copyMode,
        sql: backfillSql(plan),
        batchSize: 50,
        sleepMs: 20,
        maxMs: 6000,
        maxBatchMs: 50,
        replica: DEFAULT_REPLICA_BOUNDS,
      };
      // a baseline every probe meets: no pause
      const free = await acts.backfillChunk({ ...input, appBaselineMs: 1e6 });
      expect(free.appPauseMs).toBe(0);
      expect(free.rowsThisChunk).toBeGreaterThan(0);
      expect(free.done).toBe(false);
      // a baseline no probe can meet: the pacer pauses the copy once it has 100 samples (4 s) of the probe
      const bounded = await acts.backfillChunk({ ...input, appBaselineMs: -1 });
      expect(bounded.done).toBe(false);
      expect(bounded.appPauseMs).toBeGreaterThanOrEqual(50);
    } finally {
      await acts.beginUndo(plan.table);
      await acts.dropSyncTrigger(plan, 500);
      await acts.dropShadow(plan, 500);
      await acts.releaseRun(plan.table, 'rolled-back');
    }
  });
});
