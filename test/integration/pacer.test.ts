/**
 * The application-latency bound's probe (issue 24, item 2) against a real PostgreSQL: it looks up rows of the
 * table by their primary key as an application does (bench/impact.ts measured why a bare commit was not
 * enough) and writes WAL as a write does, never sends a key through the client (a key whose text form does not
 * parse back under the session's DateStyle), survives a renamed key column, falls back to a bare commit on an empty table, fails (so the bound
 * holds) when it waits for a lock, and leaves no setting behind on its pooled connection; the backfill's pacer
 * pauses the copy on what it measures.
 */
import { Client } from 'pg';
import { createActivities } from '../../activities';
import { AppProbe, CommitProber, probeBaseline } from '../../activities/runtime/replicas';
import { metrics } from '../../activities/runtime/metrics';
import { migrate } from '../../activities/runtime/migrate';
import { createLogger } from '../../src/logger';
import { backfillSql, Plan } from '../../src/plan';
import type { AppProbeSql } from '../../src/plan/backfill';
import { DEFAULT_REPLICA_BOUNDS } from '../../src/replicas';
import { PACE } from '../../src/pacer';
import { createTestDb, TestDb } from '../helpers/pg';

let db: TestDb;
const log = createLogger({ component: 'test' }).child({}, { level: 'warn' });
beforeAll(async () => {
  db = await createTestDb('pacer');
  await migrate(db.pool);
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

/** A run of `table` up to its sync's install, as partitionTable gets there, for the backfill's chunks. */
async function runOf(table: string) {
  const { acts, pre } = await planOf(table);
  const plan = pre.plan;
  await acts.claimRun(plan.table, plan);
  await acts.createShadow(plan, 500);
  await acts.installSyncTrigger(plan, 500);
  return { acts, plan };
}

/** A run of a new table of `rows` rows, about 88 to a page (a batch of 5,000 rows: 57 pages at most). */
async function runOfNew(table: string, rows: number) {
  await db.pool.query(`CREATE TABLE ${table} (id bigint PRIMARY KEY, created_at timestamptz NOT NULL, note text)`);
  await db.pool.query(`INSERT INTO ${table} SELECT g, now() - (g % 300) * interval '1 day', repeat('n', 40) || g
    FROM generate_series(1, ${rows}) g`);
  await db.pool.query(`ANALYZE ${table}`);
  return runOf(table);
}

/** A backfill chunk's input for the run's plan: batches of at most 50 pages and 50 ms, the default bounds. */
function chunkOf(plan: Plan, sleepMs: number) {
  const { table, copyMode } = plan;
  return {
    table,
    copyMode,
    sql: backfillSql(plan),
    batchSize: 50,
    sleepMs,
    maxBatchMs: 50,
    replica: DEFAULT_REPLICA_BOUNDS,
  };
}

/** The run undone, as a rollback before the cut-over does. */
async function undoRun(acts: Awaited<ReturnType<typeof runOf>>['acts'], plan: Plan) {
  await acts.beginUndo(plan.table);
  await acts.dropSyncTrigger(plan, 500);
  await acts.dropShadow(plan, 500);
  await acts.releaseRun(plan.table, 'rolled-back');
}

describe('the application-latency probe', () => {
  let sql: AppProbeSql;
  beforeAll(async () => {
    sql = (await planOf('pp')).pre.plan.sql.appProbe!;
  });

  it('reads live rows at random pages and finds each again by its primary key, reading the heap', async () => {
    const tids = (await db.pool.query(sql.keys)).rows.map((r) => r.tid as string);
    expect(tids.length).toBeGreaterThan(50);
    expect(new Set(tids).size).toBeGreaterThan(50);
    for (const tid of tids.slice(0, 20)) {
      expect((await db.pool.query(sql.read, [tid])).rows[0]).toEqual({ wrote: '1', found: true });
    }
    // the lookup: the row at the TID, then an index scan of the primary key (not of the table), heap included
    const plan = (await db.pool.query(`EXPLAIN ${sql.read}`, [tids[0]])).rows.map((r) => r['QUERY PLAN']).join('\n');
    expect(plan).toMatch(/Tid Scan on pp/);
    expect(plan).toMatch(/ Index Scan using pp_pkey/);
    expect(plan).not.toMatch(/Seq Scan on pp/);
    const c = await db.pool.connect();
    const probe = new AppProbe(c, sql);
    for (let i = 0; i < 5; i++) expect(await probe.once()).toEqual(expect.any(Number));
    await probe.release();
    expect(await probeBaseline(db.pool, sql)).toBeGreaterThan(0);
  });

  it('writes WAL and its own row, gone when the connection goes back', async () => {
    const c = await db.pool.connect();
    const pid = (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    const probe = new AppProbe(c, sql);
    const lsn = async () => (await db.pool.query('SELECT pg_current_wal_insert_lsn() AS l')).rows[0].l;
    const before = await lsn();
    expect(await probe.once()).toEqual(expect.any(Number));
    expect(await probe.once()).toEqual(expect.any(Number));
    const probes = await db.pool.query('SELECT probes FROM partflow.probe WHERE pid = $1', [pid]);
    expect(probes.rows).toEqual([{ probes: '2' }]);
    expect(
      (await db.pool.query('SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1) AS d', [before])).rows[0].d > 0,
    ).toBe(true);
    await probe.release();
    expect((await db.pool.query('SELECT 1 FROM partflow.probe WHERE pid = $1', [pid])).rowCount).toBe(0);
  });

  it('keys that do not survive a text round trip (DateStyle SQL, a zone abbreviation) never leave the server', async () => {
    await db.pool.query(`CREATE TABLE pp_tz (created_at timestamptz NOT NULL, id bigint, note text,
      PRIMARY KEY (created_at, id))`);
    await db.pool.query(`INSERT INTO pp_tz SELECT now() - g * interval '1 minute 0.75939 s', g, 'n'
      FROM generate_series(1, 5000) g`);
    const tzSql = (await planOf('pp_tz')).pre.plan.sql.appProbe!;
    const c = await db.pool.connect();
    await c.query(`SET DateStyle = 'SQL, DMY'`);
    await c.query(`SET TimeZone = 'Asia/Jakarta'`);
    const probe = new AppProbe(c, tzSql);
    try {
      // read back as text in this session the key is "05/12/2026 14:52:44.75939 WIB", which does not parse
      const tids = (await c.query(tzSql.keys)).rows.map((r) => r.tid as string);
      for (const tid of tids.slice(0, 20)) expect((await c.query(tzSql.read, [tid])).rows[0].found).toBe(true);
      for (let i = 0; i < 5; i++) expect(await probe.once()).toEqual(expect.any(Number));
      expect(probe.lastError).toBeNull();
    } finally {
      await c.query('RESET DateStyle; RESET TimeZone');
      await probe.release();
    }
  });

  it('drops the TID of a row updated since it was read; a probe waiting over the limit counts as failed', async () => {
    const c = await db.pool.connect();
    const probe = new AppProbe(c, sql);
    const tidsOf = () => (probe as unknown as { tids: string[] }).tids;
    try {
      expect(await probe.once()).toEqual(expect.any(Number));
      const before = tidsOf().length;
      // every row the probe knows moves to a new TID
      await db.pool.query(`UPDATE pp SET note = note WHERE ctid = ANY($1::tid[])`, [tidsOf()]);
      for (let i = 0; i < 10; i++) await probe.once();
      expect(tidsOf().length).toBeLessThan(before);
    } finally {
      await probe.release();
    }
    // the prober behind a lock: after 500 ms a failed sample is there before the probe's own lock timeout
    const holder = new Client(db.conn);
    await holder.connect();
    const samples: { at: number; ms: number | null; error?: string }[] = [];
    const prober = new CommitProber(await db.pool.connect(), samples, sql);
    try {
      prober.start();
      await new Promise((r) => setTimeout(r, 300));
      await holder.query('BEGIN');
      await holder.query('LOCK TABLE pp IN ACCESS EXCLUSIVE MODE');
      await new Promise((r) => setTimeout(r, 700));
      prober.markStuck(500);
      expect(samples.at(-1)).toMatchObject({ ms: null, error: expect.stringMatching(/a probe has been waiting/) });
    } finally {
      await holder.query('ROLLBACK');
      await holder.end();
      await prober.stop();
    }
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
      expect(probe.lastError).toBeNull();
      await c.query('TRUNCATE pp_r');
      const empty = new AppProbe(c, renamed);
      expect(await empty.once()).toEqual(expect.any(Number));
    } finally {
      await probe.release();
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
      expect(probe.lastError).toMatch(/lock timeout/);
      expect(Date.now() - t0).toBeLessThan(10_000);
      await holder.query('ROLLBACK');
      expect(await probe.once()).toEqual(expect.any(Number));
    } finally {
      await holder.end();
      await probe.release();
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

  it("a run's copy of a big table starts slow and relaxes where the probe allows; the next run starts afresh", async () => {
    const { acts, plan } = await runOf('pp');
    const [slow, every, first] = [PACE.startSlowPages, PACE.rebaselineEveryMs, PACE.rebaselineFirstMs];
    PACE.startSlowPages = 1; // pp counts as big
    [PACE.rebaselineEveryMs, PACE.rebaselineFirstMs] = [600_000, 600_000]; // the figures below stay as handed in
    try {
      const input = chunkOf(plan, 0);
      // a figure every probe meets: the run starts at the start pause, then halves it every 4 s of samples
      const first = await acts.backfillChunk({ ...input, appBaselineMs: 7e6, maxMs: 1500 });
      expect(first.appPauseMs).toBe(PACE.startPauseMs);
      const relaxed = await acts.backfillChunk({ ...input, appBaselineMs: 7e6, maxMs: 9000 });
      expect(relaxed.appPauseMs).toBeLessThan(PACE.startPauseMs);
      // the run's later chunks go on from its pace, not from the start
      const on = await acts.backfillChunk({ ...input, appBaselineMs: 7e6, maxMs: 300 });
      expect(on.appPauseMs).toBeLessThanOrEqual(relaxed.appPauseMs!);
      // a figure no probe meets pushes its run's pause up; the next run of the table starts at the start pause
      const up = await acts.backfillChunk({ ...input, appBaselineMs: -7, maxMs: 6000 });
      expect(up.appPauseMs).toBeGreaterThan(PACE.startPauseMs);
      const still = await acts.backfillChunk({ ...input, appBaselineMs: -7, maxMs: 300 });
      expect(still.appPauseMs).toBeGreaterThanOrEqual(up.appPauseMs!);
      const next = await acts.backfillChunk({ ...input, appBaselineMs: 8e6, maxMs: 1500 });
      expect(next.appPauseMs).toBe(PACE.startPauseMs);
      // a small table starts at 0
      PACE.startSlowPages = 1e9;
      const small = await acts.backfillChunk({ ...input, appBaselineMs: 9e6, maxMs: 500 });
      expect(small.appPauseMs).toBe(0);
      expect(small.done).toBe(false);
    } finally {
      [PACE.startSlowPages, PACE.rebaselineEveryMs, PACE.rebaselineFirstMs] = [slow, every, first];
      await undoRun(acts, plan);
    }
  });

  it("a batch that waited for the key log's lock keeps its size: the wait is not the copy's", async () => {
    // the applier of another stream (up to 500 ms between batches) and an idle measurement (about 4 s) hold the
    // key log's lock; a batch counted its wait as its own time and shrank to a page for minutes (the demo's
    // parallel copy: 60 batches of 4.3 to 5.9 s, each after an idle measurement of the other stream)
    const { acts, plan } = await runOfNew('pw', 300_000);
    const holder = new Client({ connectionString: db.url });
    await holder.connect();
    try {
      const input = { ...chunkOf(plan, 0), batchSize: 5000 }; // rows: 57 pages of pw
      const warm = await acts.backfillChunk({ ...input, maxMs: 400 });
      const warmSize = warm.pagesThisChunk / warm.batches;
      expect(warm.done).toBe(false);
      expect(warmSize).toBeGreaterThanOrEqual(10);
      // the key log's lock, exclusive, held for 1.5 s while the next batch starts
      await holder.query('BEGIN');
      await holder.query(backfillSql(plan).keyLog!.lock);
      const release = new Promise((r) => setTimeout(r, 1500)).then(() => holder.query('COMMIT'));
      const waited = await acts.backfillChunk({ ...input, maxMs: 100 });
      await release;
      expect(waited.elapsedMs).toBeGreaterThanOrEqual(1400);
      expect(waited.batches).toBeGreaterThanOrEqual(1);
      // the next chunk's batches are of the size before the wait (a batch slower under load halves it at most
      // once or twice), not a page growing by a fifth per batch (2 pages a batch on average in 20 ms, before)
      const after = await acts.backfillChunk({ ...input, maxMs: 20 });
      expect(after.batches).toBeGreaterThanOrEqual(1);
      expect(after.pagesThisChunk / after.batches).toBeGreaterThanOrEqual(warmSize / 4);
    } finally {
      await holder.end();
      await undoRun(acts, plan);
    }
  });

  it("a retry's wait for the key log's lock is not the batch's either", async () => {
    // (helper-28) the first attempt has the lock, its copy waits for the shadow's lock and gives up (55P03); the
    // key log's lock, asked for meanwhile, is granted at the rollback and held 2.5 s: the retries wait for it
    const { acts, plan } = await runOfNew('pr', 150_000);
    const spy = jest.spyOn(metrics, 'batchDuration');
    const [app, applier, watch] = [db.url, db.url, db.url].map((u) => new Client({ connectionString: u }));
    await Promise.all([app.connect(), applier.connect(), watch.connect()]);
    try {
      const input = { ...chunkOf(plan, 0), batchSize: 5000 };
      await acts.backfillChunk({ ...input, maxMs: 400 });
      spy.mockClear();
      await app.query('BEGIN');
      await app.query('LOCK TABLE pr_pf_shadow IN SHARE MODE');
      const chunk = acts.backfillChunk({ ...input, maxMs: 100 });
      // the batch's INSERT waits for the shadow
      for (let i = 0; i < 200; i++) {
        const { rows } = await watch.query(`SELECT count(*)::int AS n FROM pg_stat_activity
          WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()`);
        if (rows[0].n > 0) break;
        await new Promise((r) => setTimeout(r, 5));
      }
      await applier.query('BEGIN');
      const granted = applier.query(backfillSql(plan).keyLog!.lock);
      await new Promise((r) => setTimeout(r, 300));
      await app.query('COMMIT');
      await granted;
      await new Promise((r) => setTimeout(r, 2500));
      await applier.query('COMMIT');
      const r = await chunk;
      expect(r.batches).toBeGreaterThanOrEqual(1);
      expect(r.elapsedMs).toBeGreaterThanOrEqual(2500);
      // the first batch's own time: its copy's 200 ms wait for the shadow (lock_timeout) and its copies, not 2.5 s
      const first = spy.mock.calls[0][1] as number;
      expect(first).toBeLessThan(1500);
    } finally {
      spy.mockRestore();
      await app.query('ROLLBACK').catch(() => undefined);
      await applier.query('ROLLBACK').catch(() => undefined);
      await Promise.all([app.end(), applier.end(), watch.end()]);
      await undoRun(acts, plan);
    }
  });

  it('the backfill pauses after its batches while the probe is over the bound', async () => {
    const { acts, plan } = await runOf('pp');
    try {
      const input = { ...chunkOf(plan, 20), maxMs: 6000 };
      // a baseline every probe meets: no pause
      const free = await acts.backfillChunk({ ...input, appBaselineMs: 1e6 });
      expect(free.appPauseMs).toBe(0);
      expect(free.rowsThisChunk).toBeGreaterThan(0);
      expect(free.done).toBe(false);
      // a baseline no probe can meet: the pacer pauses the copy once it has 100 samples (4 s) of the probe
      const bounded = await acts.backfillChunk({ ...input, appBaselineMs: -1 });
      expect(bounded.done).toBe(false);
      expect(bounded.appPauseMs).toBeGreaterThanOrEqual(50);
      expect(bounded.appBaselineMs).toBe(-1); // not due yet (PACE.rebaselineEveryMs): the figure handed in
      // a figure measured at a busier moment (here absurdly high: every probe meets it) is measured again with
      // the copy held once it is due, and the copy is paced against what the probe meets idle now
      const [every, first] = [PACE.rebaselineEveryMs, PACE.rebaselineFirstMs];
      [PACE.rebaselineEveryMs, PACE.rebaselineFirstMs] = [200, 200];
      try {
        const again = await acts.backfillChunk({ ...input, appBaselineMs: 1e6, maxMs: 3000 });
        expect(again.appBaselineMs).toBeGreaterThan(0);
        expect(again.appBaselineMs).toBeLessThan(1000);
        expect(again.rowsThisChunk).toBeGreaterThan(0);
        // a later run of the same table (its own figure, from its own install) paces against its own figure,
        // not the one measured again for the run before it in this worker
        [PACE.rebaselineEveryMs, PACE.rebaselineFirstMs] = [600_000, 600_000];
        const later = await acts.backfillChunk({ ...input, appBaselineMs: 5e5, maxMs: 500 });
        expect(later.appBaselineMs).toBe(5e5);
      } finally {
        [PACE.rebaselineEveryMs, PACE.rebaselineFirstMs] = [every, first];
      }
    } finally {
      await undoRun(acts, plan);
    }
  });
});
