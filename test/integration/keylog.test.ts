/**
 * docs/sync-design.md, working step 1: the key log and its applier, without partitionTable. Writers in READ
 * COMMITTED, REPEATABLE READ and SERIALIZABLE (each taking its snapshot first, retrying 40001 as such
 * applications must) insert, update (also the key and the partition column) and delete while a copy runs in
 * batches and the applier re-copies logged keys; at the end the copy equals the table, and no error of any
 * writer came from partflow's trigger.
 */
import { Client } from 'pg';
import { inTransaction } from '../../activities/runtime/db';
import { applyKeyLog, drainKeyLog } from '../../activities/partition/keylog';
import { keyLogApplySql, KeyLogSpec, keyLogDropSql, keyLogInstallSql } from '../../src/plan/keylog';
import { truncateFunctionSql } from '../../src/plan/sync';
import { createTestDb, TestDb } from '../helpers/pg';
import { sleep } from '../helpers/workflow';

let db: TestDb;
beforeAll(async () => {
  db = await createTestDb('keylog');
});
afterAll(async () => {
  await db?.drop();
});

const spec: KeyLogSpec = {
  source: { schema: 'public', name: 'kl_src' },
  target: { schema: 'public', name: 'kl_copy' },
  log: { schema: 'public', name: 'kl_log' },
  fn: { schema: 'public', name: 'kl_fn' },
  key: [
    { name: 'id', type: 'bigint' },
    { name: 'created_at', type: 'timestamp with time zone' },
  ],
  columns: ['id', 'created_at', 'v', 'note'],
  lockKey: 424242,
};

type Level = 'READ COMMITTED' | 'REPEATABLE READ' | 'SERIALIZABLE';

interface LaneStats {
  level: Level;
  committed: number;
  serializationFailures: number;
  /** errors raised inside partflow's trigger (its function name in the error's context) */
  fromTrigger: string[];
  other: string[];
}

async function lane(level: Level, seed: number, until: () => boolean): Promise<LaneStats> {
  const c = new Client(db.conn);
  await c.connect();
  const st: LaneStats = { level, committed: 0, serializationFailures: 0, fromTrigger: [], other: [] };
  let x = seed;
  const rnd = (n: number) => {
    x = (x * 1103515245 + 12345) % 2147483648;
    return x % n;
  };
  try {
    while (!until()) {
      const id = 1 + rnd(3000);
      const op = rnd(6);
      const sql = [
        `INSERT INTO kl_src (id, created_at, v, note) VALUES (${100000 + seed * 100000 + rnd(90000)}, now() - interval '${rnd(90)} days', 1, 'new') ON CONFLICT DO NOTHING`,
        `UPDATE kl_src SET v = v + 1 WHERE id = ${id}`,
        `UPDATE kl_src SET created_at = created_at - interval '1 month' WHERE id = ${id}`,
        `UPDATE kl_src SET id = id + 1000000 WHERE id = ${id}`,
        `DELETE FROM kl_src WHERE id = ${id}`,
        `UPDATE kl_src SET note = md5(note) WHERE id = ${id}`,
      ][op];
      try {
        await c.query(`BEGIN ISOLATION LEVEL ${level}`);
        await c.query(`SELECT count(*) FROM kl_src WHERE id < 10`); // the snapshot first, as in POSTGRES-TRAPS
        await sleep(rnd(20));
        await c.query(sql);
        await c.query('COMMIT');
        st.committed++;
      } catch (err) {
        const e = err as { code?: string; message: string; where?: string };
        await c.query('ROLLBACK').catch(() => undefined);
        // a 40001 can surface in whichever statement runs next once SSI has doomed the transaction, the
        // trigger's included: counted as the writers' own; any other error inside the trigger is partflow's
        if (e.code === '40001') st.serializationFailures++;
        else if (e.where && /kl_fn/.test(e.where)) st.fromTrigger.push(`${e.code} ${e.message}`);
        else st.other.push(`${e.code} ${e.message}`);
      }
    }
  } finally {
    await c.end();
  }
  return st;
}

/** The copy in key order, batch by batch, each batch under the shared lock and ON CONFLICT DO NOTHING. */
async function copyInBatches(): Promise<void> {
  let last = -1n;
  for (;;) {
    const n = await inTransaction(db.pool, async (c) => {
      await c.query(keyLogApplySql(spec).batchLock);
      const r = await c.query(
        `WITH b AS (SELECT id, created_at, v, note FROM kl_src WHERE id > $1 ORDER BY id LIMIT 100),
              i AS (INSERT INTO kl_copy SELECT * FROM b ON CONFLICT DO NOTHING)
         SELECT count(*)::int AS n, max(id)::text AS last FROM b`,
        [last.toString()],
      );
      if (r.rows[0].n) last = BigInt(r.rows[0].last);
      return r.rows[0].n as number;
    });
    if (!n) return;
    await sleep(60);
  }
}

async function contentDiff(): Promise<{ missing: number; extra: number }> {
  const r = await db.pool.query(
    `SELECT (SELECT count(*) FROM (SELECT * FROM kl_src EXCEPT SELECT * FROM kl_copy) a)::int AS missing,
            (SELECT count(*) FROM (SELECT * FROM kl_copy EXCEPT SELECT * FROM kl_src) b)::int AS extra`,
  );
  return r.rows[0];
}

async function run(withLog: boolean, ms: number): Promise<LaneStats[]> {
  await db.pool.query(`DROP TABLE IF EXISTS kl_src, kl_copy`);
  await db.pool.query(
    `CREATE TABLE kl_src (id bigint PRIMARY KEY, created_at timestamptz NOT NULL, v int NOT NULL, note text)`,
  );
  await db.pool.query(
    `INSERT INTO kl_src SELECT g, now() - (g % 90) * interval '1 day' + g * interval '1 microsecond', 0, 'n' || g
       FROM generate_series(1, 3000) g`,
  );
  await db.pool.query(
    `CREATE TABLE kl_copy (id bigint NOT NULL, created_at timestamptz NOT NULL, v int NOT NULL, note text,
       PRIMARY KEY (id, created_at))`,
  );
  if (withLog) for (const s of keyLogInstallSql(spec)) await db.pool.query(s);
  const end = Date.now() + ms;
  const until = () => Date.now() > end;
  const lanes = (['READ COMMITTED', 'REPEATABLE READ', 'SERIALIZABLE'] as Level[]).flatMap((l, i) => [
    lane(l, 2 * i + 1, until),
    lane(l, 2 * i + 2, until),
  ]);
  if (withLog) {
    const copy = copyInBatches();
    const applier = (async () => {
      while (!until()) {
        await applyKeyLog(db.pool, keyLogApplySql(spec), 200);
        await sleep(30);
      }
    })();
    await copy;
    await applier;
  }
  const stats = await Promise.all(lanes);
  return stats;
}

function byLevel(stats: LaneStats[]): Record<string, { committed: number; serializationFailures: number }> {
  const out: Record<string, { committed: number; serializationFailures: number }> = {};
  for (const s of stats) {
    const o = (out[s.level] ??= { committed: 0, serializationFailures: 0 });
    o.committed += s.committed;
    o.serializationFailures += s.serializationFailures;
  }
  return out;
}

test('the copy equals the table after the drain, under writers in all three isolation levels; the trigger raises nothing', async () => {
  const baseline = await run(false, 6000);
  const stats = await run(true, 6000);
  await drainKeyLog(db.pool, keyLogApplySql(spec));
  expect(await contentDiff()).toEqual({ missing: 0, extra: 0 });
  expect(stats.flatMap((s) => s.fromTrigger)).toEqual([]);
  expect(stats.flatMap((s) => s.other)).toEqual([]);
  const each = byLevel(stats);
  for (const level of ['READ COMMITTED', 'REPEATABLE READ', 'SERIALIZABLE'])
    expect(each[level].committed).toBeGreaterThan(20);
  // the writers' own conflicts (two lanes per level on 3,000 rows) happen with or without the log: printed, not
  // asserted (a count that depends on timing)
  console.log(JSON.stringify({ withoutLog: byLevel(baseline), withLog: each }));
  for (const s of keyLogDropSql(spec)) await db.pool.query(s);
});

test('the POSTGRES-TRAPS reproduction: REPEATABLE READ and SERIALIZABLE writers whose snapshot predates the copy of their rows', async () => {
  await db.pool.query(`DROP TABLE IF EXISTS kl_src, kl_copy, kl_log`);
  await db.pool.query(
    `CREATE TABLE kl_src (id bigint PRIMARY KEY, created_at timestamptz NOT NULL, v int NOT NULL, note text)`,
  );
  await db.pool.query(
    `INSERT INTO kl_src SELECT g, now() - g * interval '1 day', 0, 'n' FROM generate_series(1, 50) g`,
  );
  await db.pool.query(
    `CREATE TABLE kl_copy (id bigint NOT NULL, created_at timestamptz NOT NULL, v int NOT NULL, note text,
       PRIMARY KEY (id, created_at))`,
  );
  for (const s of keyLogInstallSql(spec)) await db.pool.query(s);
  const sessions = await Promise.all(
    ['REPEATABLE READ', 'SERIALIZABLE'].map(async (level) => {
      const c = new Client(db.conn);
      await c.connect();
      await c.query(`BEGIN ISOLATION LEVEL ${level}`);
      await c.query(`SELECT count(*) FROM kl_src`); // the snapshot, before the copy
      return c;
    }),
  );
  // the copy of every row commits after both snapshots
  await inTransaction(db.pool, async (c) => {
    await c.query(keyLogApplySql(spec).batchLock);
    await c.query(`INSERT INTO kl_copy SELECT * FROM kl_src ON CONFLICT DO NOTHING`);
  });
  const results: string[] = [];
  for (const [i, c] of sessions.entries()) {
    const r = await c
      .query(`UPDATE kl_src SET v = v + 1 WHERE id = ${10 + i}`)
      .then(() => c.query(`DELETE FROM kl_src WHERE id = ${20 + i}`))
      .then(() => c.query('COMMIT'))
      .then(
        () => 'committed',
        (e: { code?: string; message: string }) => `${e.code} ${e.message}`,
      );
    results.push(r);
    await c.end();
  }
  // with the trigger writing into the copy, the update failed with 40001 and the delete missed the copy's row
  expect(results).toEqual(['committed', 'committed']);
  await drainKeyLog(db.pool, keyLogApplySql(spec));
  expect(await contentDiff()).toEqual({ missing: 0, extra: 0 });
  expect(Number((await db.pool.query(`SELECT count(*) AS n FROM kl_copy WHERE id IN (20, 21)`)).rows[0].n)).toBe(0);
  for (const s of keyLogDropSql(spec)) await db.pool.query(s);
});

test('an application TRUNCATE racing an apply round is never the deadlock victim: the round locks the table before the copy', async () => {
  await db.pool.query(`DROP TABLE IF EXISTS tt, tt_copy, tt_pf_log`);
  await db.pool.query(`CREATE TABLE tt (id bigint PRIMARY KEY, v text, created_at date NOT NULL)`);
  await db.pool.query(
    `CREATE TABLE tt_copy (id bigint, v text, created_at date NOT NULL, PRIMARY KEY (id, created_at))`,
  );
  const tt: KeyLogSpec = {
    source: { schema: 'public', name: 'tt' },
    target: { schema: 'public', name: 'tt_copy' },
    log: { schema: 'public', name: 'tt_pf_log' },
    fn: { schema: 'public', name: 'tt_pf_fn' },
    key: [
      { name: 'id', type: 'bigint' },
      { name: 'created_at', type: 'date' },
    ],
    columns: ['id', 'v', 'created_at'],
    lockKey: 4243,
  };
  for (const s of keyLogInstallSql(tt)) await db.pool.query(s);
  // the TRUNCATE companion, as the sync step installs it: the application's TRUNCATE empties the copy too
  await db.pool.query(truncateFunctionSql({ schema: 'public', name: 'tt_pf_trunc' }, tt.target));
  await db.pool.query(
    `CREATE TRIGGER partflow_trunc AFTER TRUNCATE ON tt FOR EACH STATEMENT EXECUTE FUNCTION tt_pf_trunc()`,
  );
  await db.pool.query(`INSERT INTO tt SELECT g, 'v', date '2024-01-01' + g FROM generate_series(1, 100) g`);
  const sql = keyLogApplySql(tt);
  const [a, x] = [new Client(db.conn), new Client(db.conn)];
  await a.connect();
  await x.connect();
  try {
    // one apply round as applyKeyLog sends it, paused after `clear` (the copy's rows locked)
    await a.query('BEGIN ISOLATION LEVEL READ COMMITTED');
    await a.query(sql.lock);
    await a.query('SET LOCAL lock_timeout = 200');
    if (sql.lockSource) await a.query(sql.lockSource);
    const r = (await a.query(sql.take, [1000])).rows[0];
    await a.query(sql.clear, [r.a1, r.a2]);
    await x.query('BEGIN');
    const app = x.query('TRUNCATE tt').then(
      () => 'ok',
      (e) => `${e.code} ${e.message}`,
    );
    await sleep(100);
    const round = a.query(sql.copy, [r.a1, r.a2]).then(
      () => 'ok',
      (e) => `${e.code} ${e.message}`,
    );
    expect(await round).toBe('ok');
    await a.query('COMMIT');
    // without the table locked first, the TRUNCATE was aborted with 40P01 deadlock detected
    expect(await app).toBe('ok');
    await x.query('COMMIT');
  } finally {
    await a.end();
    await x.end();
  }
  expect(Number((await db.pool.query(`SELECT count(*) AS n FROM tt_copy`)).rows[0].n)).toBe(0);
  for (const s of keyLogDropSql(tt)) await db.pool.query(s);
});
