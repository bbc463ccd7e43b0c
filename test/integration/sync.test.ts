/**
 * Issue 24, the items that do not wait for the new sync design: keys whose `=` is not identity (a
 * nondeterministic collation, numeric), and what the application removes from the new table during the
 * rollback window.
 */
import { WorkflowFailedError, WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { PoolClient } from 'pg';
import type { PartitionTableInput } from '../../src/input';
import { drainKeyLog } from '../../activities/partition/keylog';
import { keyLogApplySql, keyLogInstallSql, keyLogLockKey, KeyLogSpec } from '../../src/plan/keylog';
import type { TestDb } from '../helpers/pg';
import { handoverWait, startStack, Stack } from '../helpers/stack';
import { sleep, waitFor } from '../helpers/workflow';

const TQ = 'partflow-sync';
let stack: Stack;
let env: TestWorkflowEnvironment;
let db: TestDb;
let seq = 0;

beforeAll(async () => {
  stack = await startStack('sync', TQ);
  ({ env, db } = stack);
});

afterAll(async () => {
  await stack?.teardown();
});

function start(input: PartitionTableInput): Promise<WorkflowHandle> {
  return env.client.workflow.start('partitionTable', {
    taskQueue: TQ,
    workflowId: `sync-${++seq}-${Date.now()}`,
    args: [input],
  });
}

/** A test table's rows in id order, the timestamp as text: what the application sees. */
async function rowsOf(table: string): Promise<Record<string, unknown>[]> {
  return (await db.pool.query(`SELECT id, payload, created_at::text AS t FROM ${table} ORDER BY id`)).rows;
}

/** The sync's trigger function `fn` (`partflow.fwd_<oid>`, `partflow.rev_<oid>`) is the handover's. */
async function handingOver(fn: string): Promise<boolean> {
  const r = await db.pool.query(
    `SELECT prosrc LIKE '%pg_try_advisory_xact_lock_shared%' AS on FROM pg_proc WHERE oid = $1::regproc`,
    [fn],
  );
  return r.rows[0]?.on === true;
}

async function waitHandingOver(fn: string): Promise<void> {
  for (let i = 0; i < 300 && !(await handingOver(fn)); i++) await sleep(100);
  expect(await handingOver(fn)).toBe(true);
}

/** The key values exactly as stored (JavaScript compares them byte for byte), sorted. */
async function keys(table: string, column: string): Promise<string[]> {
  const r = await db.pool.query(`SELECT ${column}::text AS k FROM ${table}`);
  return r.rows.map((x) => x.k as string).sort();
}

describe('3. keys whose = is not identity', () => {
  it('a case-only change of a key under a nondeterministic collation reaches the copy, and the old table on rollback', async () => {
    await db.pool.query(
      `CREATE COLLATION IF NOT EXISTS ci_pf (provider = icu, locale = 'und-u-ks-level2', deterministic = false)`,
    );
    await db.pool.query(
      `CREATE TABLE co (code text COLLATE ci_pf PRIMARY KEY, amount numeric NOT NULL, note text,
         created_at timestamptz NOT NULL)`,
    );
    await db.pool.query(
      `INSERT INTO co SELECT 'user' || g, g::numeric, 'n' || g, now() - (g % 90) * interval '1 day'
         FROM generate_series(1, 30000) g`,
    );
    const expected = new Map<string, string>(); // code (lower-case) -> code as the application left it
    for (let i = 1; i <= 30000; i++) expected.set(`user${i}`, `user${i}`);
    const upper = async (from: number, to: number, table = 'co') => {
      for (let i = from; i <= to; i++) {
        const cur = expected.get(`user${i}`)!;
        const next = cur === cur.toUpperCase() ? cur.toLowerCase() : cur.toUpperCase();
        await db.pool.query(`UPDATE ${table} SET code = $2, amount = amount::numeric(20,2) WHERE code = $1`, [
          cur,
          next,
        ]);
        expected.set(`user${i}`, next);
      }
    };
    const h = await start({ table: 'co', batchSize: 100, sleepMs: 50, approval: 'signal', rollbackWindow: '1h' });
    await waitFor(h, (p) => p.phase === 'backfill' && p.checkpointPage > 0, 'backfill');
    await upper(1, 200); // during the copy: some rows copied already, some not
    await waitFor(h, (p) => p.phase === 'awaiting-approval', 'verified');
    await upper(150, 300); // after the last verification pass
    await h.signal('approveCutover');
    await waitFor(h, (p) => p.phase === 'rollback-window', 'cut over');
    const want = () => [...expected.values()].sort();
    expect(await keys('co', 'code')).toEqual(want());
    // numeric keys too: 1.00, not 1
    expect(await keys('co', 'amount')).toContain('1.00');
    await upper(250, 400); // in the rollback window: the reverse trigger
    await h.signal('rollback');
    expect((await h.result()).status).toBe('rolled-back');
    expect(await keys('co', 'code')).toEqual(want());
    expect(await keys('co', 'amount')).toContain('400.00');
  });
});

describe('4. the rollback window: what bypassed the reverse trigger makes a rollback refuse', () => {
  const n = async (sql: string): Promise<number> => Number((await db.pool.query(sql)).rows[0].n);
  async function windowOf(name: string): Promise<WorkflowHandle> {
    await db.pool.query(
      `CREATE TABLE ${name} (id bigserial PRIMARY KEY, payload text, created_at timestamptz NOT NULL)`,
    );
    await db.pool.query(
      `INSERT INTO ${name} (payload, created_at) SELECT 'p' || g, now() - (g % 120) * interval '1 day'
         FROM generate_series(1, 1200) g`,
    );
    const h = await start({ table: name, approval: 'auto', rollbackWindow: '1h' });
    await waitFor(h, (p) => p.phase === 'rollback-window', 'cut over');
    return h;
  }
  /** The rollback signalled, and refused with a message matching `what` while the window goes on. */
  async function refused(h: WorkflowHandle, what: RegExp): Promise<string> {
    await h.signal('rollback');
    for (let i = 0; i < 100; i++) {
      const p = await h.query<{ phase: string; lastError: string | null }>('progress');
      if (p.phase !== 'rollback-window') throw new Error(`the rollback went on: ${p.phase}`);
      if (p.lastError && what.test(p.lastError)) return p.lastError;
      await sleep(100);
    }
    throw new Error(`no refusal matching ${what}`);
  }
  async function finalizeKeeps(h: WorkflowHandle, table: string): Promise<void> {
    const before = await n(`SELECT count(*) AS n FROM ${table}`);
    await h.signal('finalize');
    expect((await h.result()).status).toBe('done');
    expect(await n(`SELECT count(*) AS n FROM ${table}`)).toBe(before);
  }

  it('a partition truncated, detached or dropped in the window makes the rollback refuse, naming it', async () => {
    const h = await windowOf('rw');
    const parts = (
      await db.pool.query(
        `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = 'rw'::regclass ORDER BY c.relname`,
      )
    ).rows.map((r) => r.relname as string);
    const withRows: string[] = [];
    for (const p of parts) if ((await n(`SELECT count(*) AS n FROM ${p}`)) > 0) withRows.push(p);
    expect(withRows.length).toBeGreaterThanOrEqual(3);
    await db.pool.query(`TRUNCATE ${withRows[0]}`);
    const first = await refused(h, /truncated or rewritten/);
    expect(first).toMatch(
      new RegExp(
        `^Rolling back public\\.rw now could lose rows or bring back removed ones .*partition ${withRows[0]} truncated or rewritten`,
      ),
    );
    await db.pool.query(`ALTER TABLE rw DETACH PARTITION ${withRows[1]}`);
    await db.pool.query(`DROP TABLE ${withRows[2]}`);
    const second = await refused(h, /detached or dropped/);
    expect(second).toContain(`partition ${withRows[1]}, ${withRows[2]} detached or dropped`);
    // nothing came back: the table is what the application left
    await finalizeKeeps(h, 'rw');
  });

  it('a pre-filled partition attached, and rows moved out of the default into a new one', async () => {
    const h = await windowOf('rwa');
    await db.pool.query(`CREATE TABLE rwa_2035_01 (LIKE rwa INCLUDING DEFAULTS)`);
    await db.pool.query(
      `INSERT INTO rwa_2035_01 (payload, created_at) SELECT 'a' || g, '2035-01-15' FROM generate_series(1, 10) g`,
    );
    await db.pool.query(
      `ALTER TABLE rwa ATTACH PARTITION rwa_2035_01 FOR VALUES FROM ('2035-01-01') TO ('2035-02-01')`,
    );
    await refused(h, /partition rwa_2035_01 attached or created since/);
    await finalizeKeeps(h, 'rwa');
  });

  it('a partition detached, changed and attached again under its name and file', async () => {
    const h = await windowOf('rwd');
    const p = (
      await db.pool.query(
        `SELECT c.relname AS p, pg_get_expr(c.relpartbound, c.oid) AS b FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = 'rwd'::regclass AND c.relname <> 'rwd_default'
          ORDER BY c.relname LIMIT 1 OFFSET 2`,
      )
    ).rows[0];
    await db.pool.query(`ALTER TABLE rwd DETACH PARTITION ${p.p}`);
    await db.pool.query(`DELETE FROM ${p.p} WHERE id IN (SELECT id FROM ${p.p} LIMIT 3)`);
    await db.pool.query(`ALTER TABLE rwd ATTACH PARTITION ${p.p} ${p.b}`);
    await refused(h, new RegExp(`partition ${p.p} detached and attached again`));
    await finalizeKeeps(h, 'rwd');
  });

  it("rows written while partflow's reverse trigger was disabled", async () => {
    const h = await windowOf('rwt');
    await db.pool.query(`ALTER TABLE rwt DISABLE TRIGGER USER`);
    await db.pool.query(`INSERT INTO rwt (payload, created_at) SELECT 'bulk' || g, now() FROM generate_series(1, 7) g`);
    await db.pool.query(`ALTER TABLE rwt ENABLE TRIGGER USER`);
    await refused(h, /reverse trigger disabled or changed/);
    await finalizeKeeps(h, 'rwt');
  });

  it('a cancel whose swap back is refused leaves the new table working, and cleanup finishes it', async () => {
    const h = await windowOf('rwc');
    const part = (
      await db.pool.query(
        `SELECT c.relname AS p FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = 'rwc'::regclass AND c.relname <> 'rwc_default' ORDER BY c.relname LIMIT 1 OFFSET 2`,
      )
    ).rows[0].p;
    await db.pool.query(`TRUNCATE ${part}`);
    const before = await n(`SELECT count(*) AS n FROM rwc`);
    await h.cancel();
    await expect(h.result()).rejects.toThrow();
    expect(
      (await db.pool.query(`SELECT run_state FROM partflow.runs WHERE table_name = 'rwc'`)).rows[0].run_state,
    ).toBe('undoing');
    // the application's writes still work, READ COMMITTED or not
    const c = await db.pool.connect();
    try {
      await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      await c.query(`INSERT INTO rwc (payload, created_at) VALUES ('rr', now())`);
      await c.query('ROLLBACK');
      await c.query(`INSERT INTO rwc (payload, created_at) VALUES ('rc', now())`);
    } finally {
      c.release();
    }
    const r = await env.client.workflow.execute('cleanupTable', {
      taskQueue: TQ,
      workflowId: `rwc-cleanup-${Date.now()}`,
      args: [{ table: 'rwc', remove: true, workflowId: h.workflowId }],
    });
    expect((r as { removed: boolean }).removed).toBe(true);
    expect((await db.pool.query(`SELECT relkind FROM pg_class WHERE oid = 'rwc'::regclass`)).rows[0].relkind).toBe('p');
    expect(await n(`SELECT count(*) AS n FROM rwc`)).toBe(before + 1);
    expect(
      await n(`SELECT count(*) AS n FROM pg_trigger WHERE tgrelid = 'rwc'::regclass AND tgname LIKE 'partflow%'`),
    ).toBe(0);
  });
});

describe('3b. a float key changed by a session with other float text settings', () => {
  it('reaches the copy through the key log: = sees what the text hides', async () => {
    await db.pool.query(`CREATE TABLE fk_src (k float8 PRIMARY KEY, v text)`);
    await db.pool.query(`CREATE TABLE fk_dst (k float8 PRIMARY KEY, v text)`);
    const spec: KeyLogSpec = {
      source: { schema: 'public', name: 'fk_src' },
      target: { schema: 'public', name: 'fk_dst' },
      log: { schema: 'public', name: 'fk_log' },
      fn: { schema: 'public', name: 'fk_fn' },
      key: [{ name: 'k', type: 'double precision' }],
      columns: ['k', 'v'],
      lockKey: 4711,
      looseKeys: true,
    };
    for (const sql of keyLogInstallSql(spec)) await db.pool.query(sql);
    await db.pool.query(`INSERT INTO fk_src VALUES (0.1::float8 + 0.2::float8, 'x')`);
    const c = await db.pool.connect();
    try {
      await c.query('SET extra_float_digits = 0');
      await c.query(`UPDATE fk_src SET k = 0.3 WHERE v = 'x'`);
      await c.query(`UPDATE fk_src SET k = '-0' WHERE v = 'x'`);
      await c.query(`UPDATE fk_src SET k = '0' WHERE v = 'x'`);
    } finally {
      await c.query('RESET extra_float_digits');
      c.release();
    }
    await drainKeyLog(db.pool, keyLogApplySql(spec));
    const rows = async (t: string) => (await db.pool.query(`SELECT k::text AS k, v FROM ${t} ORDER BY 1`)).rows;
    expect(await rows('fk_dst')).toEqual(await rows('fk_src'));
    expect(await rows('fk_dst')).toEqual([{ k: '0', v: 'x' }]);
  });
});

describe('a cut-over with a backlog in the key log', () => {
  it('drains it before the lock, applies the rest under it, and the new table is exactly the old one', async () => {
    await db.pool.query(`CREATE TABLE bl (id bigserial PRIMARY KEY, payload text, created_at timestamptz NOT NULL)`);
    await db.pool.query(
      `INSERT INTO bl (payload, created_at) SELECT 'p' || g, now() - (g % 60) * interval '1 day'
         FROM generate_series(1, 30000) g`,
    );
    const h = await start({ table: 'bl', batchSize: 1000, approval: 'signal', rollbackWindow: '1h' });
    await waitFor(h, (p) => p.phase === 'awaiting-approval', 'verified', 120_000);
    // 30,000 keys logged at once (and moved a month), then the approval at once: a backlog for the cut-over
    await db.pool.query(`UPDATE bl SET payload = payload || '!', created_at = created_at - interval '1 month'`);
    await db.pool.query(`DELETE FROM bl WHERE id % 7 = 0`);
    const before = await rowsOf('bl');
    await h.signal('approveCutover');
    const cut = await waitFor(h, (p) => p.phase === 'rollback-window', 'cut over', 120_000);
    console.log(JSON.stringify({ backlogCutover: cut.cutover }));
    expect((await db.pool.query(`SELECT relkind FROM pg_class WHERE oid = 'bl'::regclass`)).rows[0].relkind).toBe('p');
    const after = await rowsOf('bl');
    expect(after.length).toBe(before.length);
    expect(after).toEqual(before);
    const logs = await db.pool.query(
      `SELECT to_regclass('bl_pf_log') IS NULL AND to_regclass('bl_pf_rlog') IS NOT NULL AS ok`,
    );
    expect(logs.rows[0].ok).toBe(true); // the forward log went with the cut-over, the reverse one came
    await h.signal('finalize');
    expect((await h.result()).status).toBe('done');
  });
});

describe('1. writers that are not READ COMMITTED: the key log is exact for them', () => {
  it('the POSTGRES-TRAPS case: a REPEATABLE READ delete and update of rows copied after its snapshot commit and stay done after the cut-over', async () => {
    await db.pool.query(`CREATE TABLE rr (id bigserial PRIMARY KEY, payload text, created_at timestamptz NOT NULL)`);
    await db.pool.query(
      `INSERT INTO rr (payload, created_at) SELECT 'p' || g, now() - (g % 60) * interval '1 day'
         FROM generate_series(1, 30000) g`,
    );
    const h = await start({ table: 'rr', batchSize: 100, sleepMs: 50, approval: 'signal', rollbackWindow: '1h' });
    await waitFor(h, (p) => p.phase === 'backfill' && p.checkpointPage > 0, 'backfill');
    const errors: string[] = [];
    await Promise.all(
      ['REPEATABLE READ', 'SERIALIZABLE'].map(async (level, i) => {
        const c = await db.pool.connect();
        try {
          // the snapshot first, the writes after the backfill copied those rows (the first pages)
          await c.query(`BEGIN ISOLATION LEVEL ${level}`);
          await c.query(`SELECT count(*) FROM rr`);
          await sleep(1500);
          await c.query(`DELETE FROM rr WHERE id IN (${1 + i}, ${29998 + i})`);
          await c.query(`UPDATE rr SET payload = 'changed' WHERE id = ${10 + i}`);
          await c.query('COMMIT');
        } catch (err) {
          errors.push(`${level}: ${(err as Error).message}`);
          await c.query('ROLLBACK').catch(() => undefined);
        } finally {
          c.release();
        }
      }),
    );
    // without partflow both commit; with the old in-snapshot trigger the UPDATE failed with 40001 and the
    // DELETE left the row in the copy
    expect(errors).toEqual([]);
    const before = await rowsOf('rr');
    await waitFor(h, (p) => p.phase === 'awaiting-approval', 'verified', 120_000);
    await h.signal('approveCutover');
    await waitFor(h, (p) => p.phase === 'rollback-window', 'cut over', 60_000);
    const t = await db.pool.query(`SELECT relkind FROM pg_class WHERE oid = 'rr'::regclass`);
    expect(t.rows[0].relkind).toBe('p');
    const after = await rowsOf('rr');
    expect(after).toEqual(before);
    expect(after.filter((r) => [1, 2, 29998, 29999].includes(Number(r.id)))).toEqual([]);
    expect(after.filter((r) => r.payload === 'changed').map((r) => Number(r.id))).toEqual([10, 11]);
    await h.signal('finalize');
    await h.result();
  });
});

describe("1b. a REPEATABLE READ or SERIALIZABLE transaction older than the cut-over and its handover's deadline", () => {
  // Its snapshot sees the new table only as far as the key log had been applied when it was taken. A row the
  // application inserted just before it, applied after it, is not there for it: without a guard its UPDATE and
  // DELETE matched 0 rows and said nothing (the application's write lost). With the snapshot guard they fail
  // with 40001, which such an application retries, and the retry (a new snapshot) finds the row.
  it.each(['REPEATABLE READ', 'SERIALIZABLE'])(
    '%s: its UPDATE and DELETE fail with 40001, not 0 rows',
    async (level) => {
      const t = level === 'SERIALIZABLE' ? 'sg_ser' : 'sg_rr';
      await db.pool.query(`CREATE TABLE ${t} (id bigint PRIMARY KEY, payload text, created_at timestamptz NOT NULL)`);
      await db.pool.query(
        `INSERT INTO ${t} SELECT g, 'p' || g, now() - (g % 60) * interval '1 day' FROM generate_series(1, 3000) g`,
      );
      const h = await start({ table: t, batchSize: 500, approval: 'signal', rollbackWindow: '1h' });
      await waitFor(h, (p) => p.phase === 'awaiting-approval', 'verified', 120_000);
      const oid = Number((await db.pool.query(`SELECT $1::regclass::oid AS o`, [t])).rows[0].o);
      // the applier held off (it takes the key log's lock exclusively) until the straddler has its snapshot
      const holder = await db.pool.connect();
      const [s1, s2, s3] = [await db.pool.connect(), await db.pool.connect(), await db.pool.connect()];
      try {
        await holder.query(`SELECT pg_advisory_lock_shared(${keyLogLockKey(oid)})`);
        await db.pool.query(`INSERT INTO ${t} VALUES (5001, 'inserted just before', now())`);
        await db.pool.query(`INSERT INTO ${t} VALUES (5002, 'inserted just before', now())`);
        for (const s of [s1, s2, s3]) {
          await s.query(`BEGIN ISOLATION LEVEL ${level}`);
          await s.query(`SELECT count(*) FROM pg_class`); // the snapshot: both rows committed before it
        }
        await holder.query(`SELECT pg_advisory_unlock_shared(${keyLogLockKey(oid)})`);
        // the straddlers stay open through the cut-over: the handover waits for them until its deadline; by
        // default (olderSnapshots "wait") the cut-over is held and tried again, naming them; the operator then
        // lets it go ahead with the guard, which says who held it
        const restoreWait = handoverWait(2000);
        await h.signal('approveCutover');
        const held = await waitFor(h, (p) => (p.cutoverHeld?.attempts ?? 0) >= 1, 'cut-over held', 60_000).catch(
          (e) => {
            restoreWait();
            throw e;
          },
        );
        expect(held.phase).toBe('cutover');
        expect(held.olderSnapshots).toBe('wait');
        expect(held.cutoverHeld!.heldBy.length).toBeGreaterThanOrEqual(3);
        expect(held.lastError).toMatch(
          new RegExp(`^The cut-over of public\\.${t} waits: sessions hold snapshots older than partflow's last write`),
        );
        expect(await handingOver(`partflow.fwd_${oid}`)).toBe(false); // handed back: the application's writes go to the key log
        await h.signal('approveCutover', { olderSnapshots: 'guard' });
        const cut = await waitFor(h, (p) => p.phase === 'rollback-window', 'cut over', 60_000).finally(restoreWait);
        expect([cut.cutoverHeld, cut.olderSnapshots, cut.lastError]).toEqual([null, 'guard', null]);
        expect(cut.cutover?.handover).toMatchObject({ quiet: false, guarded: true });
        expect(cut.cutover!.handover!.heldBy.length).toBeGreaterThanOrEqual(3);
        const outcome = (s: typeof s1, sql: string) =>
          s.query(sql).then(
            (r) => `${r.rowCount} rows`,
            (e: { code?: string }) => e.code ?? 'error',
          );
        const update = await outcome(s1, `UPDATE ${t} SET payload = 'straddler' WHERE id = 5001`);
        const del = await outcome(s2, `DELETE FROM ${t} WHERE id = 5002`);
        // a statement that names the row's partition: that partition's statement triggers fire, not the table's
        const part = (await db.pool.query(`SELECT tableoid::regclass::text AS p FROM ${t} WHERE id = 5002`)).rows[0].p;
        const direct = await outcome(s3, `DELETE FROM ${part} WHERE id = 5002`);
        for (const s of [s1, s2, s3]) await s.query('ROLLBACK');
        expect({ update, del, direct }).toEqual({ update: '40001', del: '40001', direct: '40001' });
        // the application's retry, a new snapshot: both find their row
        await s1.query(`BEGIN ISOLATION LEVEL ${level}`);
        expect((await s1.query(`UPDATE ${t} SET payload = 'straddler' WHERE id = 5001`)).rowCount).toBe(1);
        expect((await s1.query(`DELETE FROM ${t} WHERE id = 5002`)).rowCount).toBe(1);
        await s1.query('COMMIT');
      } finally {
        holder.release();
        for (const s of [s1, s2, s3]) {
          await s.query('ROLLBACK').catch(() => undefined);
          s.release();
        }
      }
      const left = await db.pool.query(`SELECT id, payload FROM ${t} WHERE id BETWEEN 5000 AND 5999 ORDER BY id`);
      // what committed stays (SERIALIZABLE: as in the control, a pivot may have been cancelled)
      expect(left.rows.length).toBeGreaterThan(0);
      await h.signal('finalize');
      expect((await h.result()).status).toBe('done');
      // finalize took the guard away with the reverse sync
      const trg = await db.pool.query(`SELECT count(*)::int AS n FROM pg_trigger WHERE tgrelid = $1::regclass`, [t]);
      expect(trg.rows[0].n).toBe(0);
      const parts = await db.pool.query(
        `SELECT count(*)::int AS n FROM pg_trigger WHERE tgname = 'partflow_snapshot_guard'
            AND tgrelid IN (SELECT relid FROM pg_partition_tree($1::regclass))`,
        [t],
      );
      expect(parts.rows[0].n).toBe(0);
    },
  );
});

describe('1d. the handover: the last changes before the cut-over written by their writers', () => {
  // The cut-over first hands the sync over to the writers (activities/partition/handover.ts): from then on a
  // change is written into the copy by the writer's own transaction, and the swap waits until no snapshot older
  // than partflow's last write into the copy is left. A snapshot taken before the swap then sees the new table
  // exactly as it sees the old one, and the swap needs no snapshot guard.
  type Tally = {
    guard: number;
    serialization: number;
    stale: string[];
    lost: string[];
    errors: string[];
    commits: number;
  };

  it("REPEATABLE READ and SERIALIZABLE readers and writers through the cut-over: no stale read, no failure of partflow's own", async () => {
    const t = 'hw';
    await db.pool.query(`CREATE TABLE ${t} (id bigint PRIMARY KEY, payload text, created_at timestamptz NOT NULL)`);
    await db.pool.query(`CREATE TABLE ${t}_side (id bigint PRIMARY KEY, v text)`); // the writers' own record
    await db.pool.query(
      `INSERT INTO ${t} SELECT g, 'p' || g, now() - (g % 60) * interval '1 day' FROM generate_series(1, 2000) g`,
    );
    await db.pool.query(`INSERT INTO ${t}_side SELECT id, payload FROM ${t}`);
    const h = await start({ table: t, batchSize: 500, approval: 'signal', rollbackWindow: '1h' });
    await waitFor(h, (p) => p.phase === 'awaiting-approval', 'verified', 120_000);
    // the same writers, first on an unconverted copy of the table for the same time: their own 40001s
    const load = (t: string, tally: Tally, stopped: () => boolean): Promise<void>[] => {
      const levels = ['REPEATABLE READ', 'REPEATABLE READ', 'SERIALIZABLE', 'SERIALIZABLE'];
      const workers = levels.map(async (level, w) => {
        const c = await db.pool.connect();
        let n = 0;
        try {
          while (!stopped()) {
            const k = 1 + Math.floor(Math.random() * 2000);
            const nv = `w${w}-${++n}`;
            try {
              await c.query(`BEGIN ISOLATION LEVEL ${level}`);
              // the snapshot: the record first, the table a moment later (a cut-over may come between)
              const rec = (await c.query(`SELECT v FROM ${t}_side WHERE id = $1`, [k])).rows[0]?.v;
              await sleep(10 + Math.random() * 40);
              const row = (await c.query(`SELECT payload FROM ${t} WHERE id = $1`, [k])).rows[0]?.payload;
              if (row !== rec) tally.stale.push(`${level} id ${k}: table ${row}, record ${rec}`);
              const u = await c.query(`UPDATE ${t} SET payload = $2 WHERE id = $1`, [k, nv]);
              if (u.rowCount !== 1) tally.lost.push(`${level} id ${k}: UPDATE matched ${u.rowCount}`);
              await c.query(`UPDATE ${t}_side SET v = $2 WHERE id = $1`, [k, nv]);
              await c.query('COMMIT');
              tally.commits++;
            } catch (err) {
              await c.query('ROLLBACK').catch(() => undefined);
              const e = err as { code?: string; message: string };
              if (e.code === '40001' && /partflow/.test(e.message)) tally.guard++;
              else if (e.code === '40001') tally.serialization++;
              else tally.errors.push(`${level}: ${e.code} ${e.message}`);
            }
          }
        } finally {
          c.release();
        }
      });
      // a READ COMMITTED writer beside them: inserts, month moves and deletes, recorded in the same transactions
      const rc = (async () => {
        let id = 100_000;
        while (!stopped()) {
          const c = await db.pool.connect();
          try {
            await c.query('BEGIN');
            await c.query(`INSERT INTO ${t} VALUES ($1, 'rc', now())`, [++id]);
            await c.query(`INSERT INTO ${t}_side VALUES ($1, 'rc')`, [id]);
            await c.query(`UPDATE ${t} SET created_at = created_at - interval '1 month' WHERE id = $1`, [id - 1]);
            if (id % 3 === 0) {
              await c.query(`DELETE FROM ${t} WHERE id = $1`, [id - 2]);
              await c.query(`DELETE FROM ${t}_side WHERE id = $1`, [id - 2]);
            }
            await c.query('COMMIT');
          } catch (err) {
            await c.query('ROLLBACK').catch(() => undefined);
            tally.errors.push(`READ COMMITTED: ${(err as Error).message}`);
          } finally {
            c.release();
          }
          await sleep(5);
        }
      })();
      return [...workers, rc];
    };
    await db.pool.query(`CREATE TABLE ${t}_ctl (LIKE ${t} INCLUDING ALL)`);
    await db.pool.query(`CREATE TABLE ${t}_ctl_side (LIKE ${t}_side INCLUDING ALL)`);
    await db.pool.query(`INSERT INTO ${t}_ctl SELECT * FROM ${t}`);
    await db.pool.query(`INSERT INTO ${t}_ctl_side SELECT * FROM ${t}_side`);
    const control: Tally = { guard: 0, serialization: 0, stale: [], lost: [], errors: [], commits: 0 };
    let controlStop = false;
    const controlRun = load(`${t}_ctl`, control, () => controlStop);
    await sleep(4000);
    controlStop = true;
    await Promise.all(controlRun);
    const tally: Tally = { guard: 0, serialization: 0, stale: [], lost: [], errors: [], commits: 0 };
    let stop = false;
    const running = load(t, tally, () => stop);
    try {
      await sleep(1000);
      await h.signal('approveCutover');
      const cut = await waitFor(h, (p) => p.phase === 'rollback-window', 'cut over', 120_000);
      await sleep(1500);
      stop = true;
      await Promise.all(running);
      console.log(
        JSON.stringify({
          handover: cut.cutover?.handover,
          tally: { ...tally, stale: tally.stale.slice(0, 5) },
          // the same writers on the unconverted table: their own serialization failures, per commit
          control: { commits: control.commits, serialization: control.serialization, errors: control.errors },
        }),
      );
      expect(cut.cutover?.handover).toMatchObject({ quiet: true, guarded: false });
    } finally {
      stop = true;
      await Promise.all(running);
    }
    expect(tally.commits).toBeGreaterThan(20);
    expect({ stale: control.stale, lost: control.lost, errors: control.errors }).toEqual({
      stale: [],
      lost: [],
      errors: [],
    });
    expect({ guard: tally.guard, stale: tally.stale, lost: tally.lost, errors: tally.errors }).toEqual({
      guard: 0,
      stale: [],
      lost: [],
      errors: [],
    });
    const diff = await db.pool.query(
      `SELECT count(*)::int AS n FROM ${t} a FULL JOIN ${t}_side b USING (id) WHERE a.payload IS DISTINCT FROM b.v`,
    );
    expect(diff.rows[0].n).toBe(0);
    const guards = await db.pool.query(
      `SELECT count(*)::int AS n FROM pg_trigger WHERE tgname = 'partflow_snapshot_guard'`,
    );
    expect(guards.rows[0].n).toBe(0);
    await h.signal('finalize');
    expect((await h.result()).status).toBe('done');
  });

  it.each(['REPEATABLE READ', 'SERIALIZABLE'])(
    '%s: a snapshot taken during the handover reads and writes the new table as the old one, without a guard',
    async (level) => {
      const t = level === 'SERIALIZABLE' ? 'ho_ser' : 'ho_rr';
      await db.pool.query(`CREATE TABLE ${t} (id bigint PRIMARY KEY, payload text, created_at timestamptz NOT NULL)`);
      await db.pool.query(
        `INSERT INTO ${t} SELECT g, 'p' || g, now() - (g % 60) * interval '1 day' FROM generate_series(1, 3000) g`,
      );
      const oid = Number((await db.pool.query(`SELECT $1::regclass::oid AS o`, [t])).rows[0].o);
      const h = await start({ table: t, batchSize: 500, approval: 'signal', rollbackWindow: '1h' });
      await waitFor(h, (p) => p.phase === 'awaiting-approval', 'verified', 120_000);
      // an older snapshot keeps the handover waiting while the straddlers take theirs
      const old = await db.pool.connect();
      const [s1, s2, s3] = [await db.pool.connect(), await db.pool.connect(), await db.pool.connect()];
      try {
        await old.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
        await old.query('SELECT count(*) FROM pg_class');
        await h.signal('approveCutover');
        await waitHandingOver(`partflow.fwd_${oid}`);
        await sleep(500); // the handover's drain
        // the application, READ COMMITTED: written into the copy by its own transactions, nothing logged
        await db.pool.query(`INSERT INTO ${t} VALUES (5001, 'inserted', now()), (5002, 'inserted', now())`);
        await db.pool.query(`INSERT INTO ${t} VALUES (5003, 'inserted', now())`);
        await db.pool.query(
          `UPDATE ${t} SET payload = 'recent', created_at = created_at - interval '1 month' WHERE id = 10`,
        );
        expect((await db.pool.query(`SELECT count(*)::int AS n FROM ${t}_pf_log`)).rows[0].n).toBe(0);
        const same = await db.pool.query(
          `SELECT (SELECT xmin::text FROM ${t} WHERE id = 5001) = (SELECT xmin::text FROM ${t}_pf_shadow WHERE id = 5001) AS ok`,
        );
        expect(same.rows[0].ok).toBe(true); // the copy's row version is the writer's own
        for (const s of [s1, s2, s3]) {
          await s.query(`BEGIN ISOLATION LEVEL ${level}`);
          await s.query(`SELECT count(*) FROM pg_class`); // the snapshot: after those writes, before the swap
        }
        await old.query('ROLLBACK'); // the handover goes quiet, the swap follows
        const cut = await waitFor(h, (p) => p.phase === 'rollback-window', 'cut over', 60_000);
        expect(cut.cutover?.handover).toMatchObject({ quiet: true, guarded: false });
        const outcome = (s: typeof s1, sql: string) =>
          s.query(sql).then(
            (r) => `${r.rowCount} rows`,
            (e: { code?: string }) => e.code ?? 'error',
          );
        const read = (await s1.query(`SELECT payload FROM ${t} WHERE id = 10`)).rows[0]?.payload;
        const update = await outcome(s1, `UPDATE ${t} SET payload = 'straddler' WHERE id = 5001`);
        const del = await outcome(s2, `DELETE FROM ${t} WHERE id = 5002`);
        const part = (await db.pool.query(`SELECT tableoid::regclass::text AS p FROM ${t} WHERE id = 5003`)).rows[0].p;
        const direct = await outcome(s3, `DELETE FROM ${part} WHERE id = 5003`);
        const commit = (s: typeof s1) =>
          s.query('COMMIT').then(
            () => 'committed',
            (e: { code?: string }) => e.code ?? 'error',
          );
        const commits = [];
        for (const s of [s1, s2, s3]) commits.push(await commit(s));
        // the same statements on the new table with snapshots taken after the swap: what this workload gets
        // without a straddle (SERIALIZABLE on small analyzed partitions: their scans lock whole partitions)
        await db.pool.query(`INSERT INTO ${t} VALUES (6001, 'inserted', now()), (6002, 'inserted', now())`);
        await db.pool.query(`INSERT INTO ${t} VALUES (6003, 'inserted', now())`);
        for (const s of [s1, s2, s3]) {
          await s.query(`BEGIN ISOLATION LEVEL ${level}`);
          await s.query(`SELECT count(*) FROM pg_class`);
        }
        await s1.query(`SELECT payload FROM ${t} WHERE id = 10`);
        await s1.query(`UPDATE ${t} SET payload = 'control' WHERE id = 6001`);
        await s2.query(`DELETE FROM ${t} WHERE id = 6002`);
        await s3.query(`DELETE FROM ${part} WHERE id = 6003`);
        const control = [];
        for (const s of [s1, s2, s3]) control.push(await commit(s));
        console.log(JSON.stringify({ level, commits, control }));
        expect({ read, update, del, direct, commits }).toEqual({
          read: 'recent',
          update: '1 rows',
          del: '1 rows',
          direct: '1 rows',
          commits: control,
        });
      } finally {
        await old.query('ROLLBACK').catch(() => undefined);
        old.release();
        for (const s of [s1, s2, s3]) {
          await s.query('ROLLBACK').catch(() => undefined);
          s.release();
        }
      }
      const left = await db.pool.query(`SELECT id, payload FROM ${t} WHERE id BETWEEN 5000 AND 5999 ORDER BY id`);
      // what committed stays (SERIALIZABLE: as in the control, a pivot may have been cancelled)
      expect(left.rows.length).toBeGreaterThan(0);
      await h.signal('finalize');
      expect((await h.result()).status).toBe('done');
    },
  );
});

describe('1e. the handover and a snapshot older than an apply round', () => {
  it('REPEATABLE READ: a row copied again after its snapshot is logged, not written (no 40001); another is written by it', async () => {
    const t = 'ho_old';
    await db.pool.query(`CREATE TABLE ${t} (id bigint PRIMARY KEY, payload text, created_at timestamptz NOT NULL)`);
    await db.pool.query(
      `INSERT INTO ${t} SELECT g, 'p' || g, now() - (g % 60) * interval '1 day' FROM generate_series(1, 3000) g`,
    );
    const oid = Number((await db.pool.query(`SELECT $1::regclass::oid AS o`, [t])).rows[0].o);
    const h = await start({ table: t, batchSize: 500, approval: 'signal', rollbackWindow: '1h' });
    await waitFor(h, (p) => p.phase === 'awaiting-approval', 'verified', 120_000);
    const holder = await db.pool.connect();
    const w = await db.pool.connect();
    try {
      // row 30 changed and logged; the applier held off until the writer has its snapshot
      await holder.query(`SELECT pg_advisory_lock_shared(${keyLogLockKey(oid)})`);
      await db.pool.query(`UPDATE ${t} SET payload = 'changed before' WHERE id = 30`);
      await w.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      await w.query('SELECT count(*) FROM pg_class');
      await holder.query(`SELECT pg_advisory_unlock_shared(${keyLogLockKey(oid)})`);
      // the applier copies row 30 again: a row version of partflow's that the writer's snapshot does not see
      for (let i = 0; i < 100; i++) {
        if ((await db.pool.query(`SELECT count(*)::int AS n FROM ${t}_pf_log`)).rows[0].n === 0) break;
        await sleep(100);
      }
      await h.signal('approveCutover');
      await waitHandingOver(`partflow.fwd_${oid}`);
      const r30 = await w.query(`UPDATE ${t} SET payload = 'by the old snapshot' WHERE id = 30`);
      const r40 = await w.query(`UPDATE ${t} SET payload = 'by the old snapshot' WHERE id = 40`);
      // 30: its entry is still in the log for this snapshot, so logged; 40: no entry, written into the copy
      const logged = await w.query(`SELECT id FROM ${t}_pf_log ORDER BY seq`);
      await w.query('COMMIT');
      expect({ r30: r30.rowCount, r40: r40.rowCount }).toEqual({ r30: 1, r40: 1 });
      expect(logged.rows.map((r) => Number(r.id))).toEqual([30, 30]);
    } finally {
      holder.release();
      await w.query('ROLLBACK').catch(() => undefined);
      w.release();
    }
    const cut = await waitFor(h, (p) => p.phase === 'rollback-window', 'cut over', 60_000);
    expect(cut.cutover?.handover).toMatchObject({ quiet: true, guarded: false });
    const rows = await db.pool.query(`SELECT id, payload FROM ${t} WHERE id IN (30, 40) ORDER BY id`);
    expect(rows.rows).toEqual([
      { id: '30', payload: 'by the old snapshot' },
      { id: '40', payload: 'by the old snapshot' },
    ]);
    await h.signal('finalize');
    expect((await h.result()).status).toBe('done');
  });
});

describe('1b. by default (olderSnapshots "wait") a snapshot older than the swap holds the cut-over instead', () => {
  it.each(['REPEATABLE READ', 'SERIALIZABLE'])(
    '%s: it writes the original table exactly meanwhile and commits; then the cut-over goes quiet, with no guard and no 40001',
    async (level) => {
      const t = level === 'SERIALIZABLE' ? 'sw_ser' : 'sw_rr';
      await db.pool.query(`CREATE TABLE ${t} (id bigint PRIMARY KEY, payload text, created_at timestamptz NOT NULL)`);
      await db.pool.query(
        `INSERT INTO ${t} SELECT g, 'p' || g, now() - (g % 60) * interval '1 day' FROM generate_series(1, 3000) g`,
      );
      const h = await start({ table: t, batchSize: 500, approval: 'signal', rollbackWindow: '1h' });
      await waitFor(h, (p) => p.phase === 'awaiting-approval', 'verified', 120_000);
      const s1 = await db.pool.connect();
      const restoreWait = handoverWait(1000);
      const out: Record<string, string> = {};
      try {
        await s1.query(`BEGIN ISOLATION LEVEL ${level}`);
        await s1.query(`SELECT payload FROM ${t} WHERE id = 7`); // its snapshot, older than any handover
        const pid = (await s1.query('SELECT pg_backend_pid() AS p')).rows[0].p;
        await h.signal('approveCutover');
        const held = await waitFor(h, (p) => (p.cutoverHeld?.attempts ?? 0) >= 1, 'cut-over held', 60_000);
        out.phase = held.phase;
        out.heldBy = String(held.cutoverHeld!.heldBy.some((x) => x.includes(`pid ${pid} (`)));
        // others write meanwhile (their changes go to the key log) and the straddler writes the rows it read
        await db.pool.query(`UPDATE ${t} SET payload = 'other' WHERE id = 8`);
        const ok = (q: string) =>
          s1.query(q).then(
            (r) => `${r.rowCount} rows`,
            (e: { code?: string }) => e.code ?? 'error',
          );
        out.update = await ok(`UPDATE ${t} SET payload = 'straddler' WHERE id = 7`);
        out.del = await ok(`DELETE FROM ${t} WHERE id = 9`);
        out.commit = await ok('COMMIT');
      } finally {
        await s1.query('ROLLBACK').catch(() => undefined);
        s1.release();
      }
      const cut = await waitFor(h, (p) => p.phase === 'rollback-window', 'cut over', 90_000).finally(restoreWait);
      expect(out).toEqual({
        phase: 'cutover',
        heldBy: 'true',
        update: '1 rows',
        del: '1 rows',
        commit: 'null rows',
      });
      expect(cut.cutover?.handover).toMatchObject({ quiet: true, guarded: false });
      expect([cut.cutoverHeld, cut.lastError]).toEqual([null, null]);
      const rows = await db.pool.query(
        `SELECT count(*)::int AS n, string_agg(payload, ',' ORDER BY id) FILTER (WHERE id IN (7, 8, 9)) AS p FROM ${t}`,
      );
      expect(rows.rows[0]).toEqual({ n: 2999, p: 'straddler,other' });
      await h.signal('finalize');
      expect((await h.result()).status).toBe('done');
    },
    240_000,
  );
});

/** A table of 3,000 rows and its run in the rollback window (approval by signal, a window of an hour). */
async function inWindow(t: string, input: Partial<PartitionTableInput> = {}) {
  await db.pool.query(`CREATE TABLE ${t} (id bigint PRIMARY KEY, payload text, created_at timestamptz NOT NULL)`);
  await db.pool.query(
    `INSERT INTO ${t} SELECT g, 'p' || g, now() - (g % 60) * interval '1 day' FROM generate_series(1, 3000) g`,
  );
  const oid = Number((await db.pool.query(`SELECT $1::regclass::oid AS o`, [t])).rows[0].o);
  const h = await start({ table: t, batchSize: 500, approval: 'signal', rollbackWindow: '1h', ...input });
  await waitFor(h, (p) => p.phase === 'awaiting-approval', 'verified', 120_000);
  await h.signal('approveCutover');
  await waitFor(h, (p) => p.phase === 'rollback-window', 'cut over', 60_000);
  return { h, oid };
}

/**
 * Row 5003 written in the window and `s1` a REPEATABLE READ snapshot taken before the reverse applier's round that
 * copies it (`holder` keeps the applier off meanwhile): partflow's next write into the old table is newer than it.
 */
async function straddleRound(t: string, oid: number, holder: PoolClient, s1: PoolClient): Promise<void> {
  await holder.query(`SELECT pg_advisory_lock_shared(${keyLogLockKey(oid, 'reverse')})`);
  await db.pool.query(`INSERT INTO ${t} VALUES (5003, 'written in the window', now())`);
  await s1.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
  await s1.query(`SELECT count(*) FROM pg_class`);
  await holder.query(`SELECT pg_advisory_unlock_shared(${keyLogLockKey(oid, 'reverse')})`);
}

describe('1c. the same the other way: a snapshot older than the swap back', () => {
  it('olderSnapshots "guard": its UPDATE of a row the application wrote in the window fails with 40001; the guard stays until it ends', async () => {
    const t = 'sg_back';
    const { h, oid } = await inWindow(t, { olderSnapshots: 'guard' });
    const holder = await db.pool.connect();
    const s1 = await db.pool.connect();
    const guarded = async () =>
      (
        await db.pool.query(`SELECT count(*)::int AS n FROM pg_trigger WHERE tgrelid = $1::regclass AND tgname = $2`, [
          t,
          'partflow_snapshot_guard',
        ])
      ).rows[0].n;
    let restoreWait = () => undefined as void;
    try {
      await straddleRound(t, oid, holder, s1);
      restoreWait = handoverWait(2000); // the straddler holds the swap back's handover: its deadline
      await h.signal('rollback');
      const plain = async () =>
        (await db.pool.query(`SELECT relkind FROM pg_class WHERE oid = $1::regclass`, [t])).rows[0].relkind === 'r';
      for (let i = 0; i < 600 && !(await plain()); i++) await sleep(100);
      expect(await plain()).toBe(true);
      await sleep(1500); // the undo goes on to drop the sync: it waits for this snapshot, the guard stays
      expect(await guarded()).toBe(1);
      const update = await s1.query(`UPDATE ${t} SET payload = 'straddler' WHERE id = 5003`).then(
        (r) => `${r.rowCount} rows`,
        (e: { code?: string }) => e.code ?? 'error',
      );
      await s1.query('ROLLBACK');
      expect(update).toBe('40001');
    } finally {
      restoreWait();
      holder.release();
      await s1.query('ROLLBACK').catch(() => undefined);
      s1.release();
    }
    expect((await h.result()).status).toBe('rolled-back');
    expect(await guarded()).toBe(0);
    const row = await db.pool.query(`SELECT payload FROM ${t} WHERE id = 5003`);
    expect(row.rows).toEqual([{ payload: 'written in the window' }]);
  });
});

describe("1c. (wait) the swap back held by a snapshot older than partflow's last write into the old table", () => {
  it('olderSnapshots "wait" (the default): the rollback waits for the straddler, which writes and commits as without partflow; then swapped back with no guard, every row exact', async () => {
    const t = 'sg_back_wait';
    const { h, oid } = await inWindow(t);
    const holder = await db.pool.connect();
    const s1 = await db.pool.connect();
    let restoreWait = () => undefined as void;
    const out: Record<string, unknown> = {};
    try {
      await straddleRound(t, oid, holder, s1);
      restoreWait = handoverWait(1000);
      const pid = (await s1.query('SELECT pg_backend_pid() AS p')).rows[0].p;
      await h.signal('rollback');
      const held = await waitFor(h, (p) => (p.swapBackHeld?.attempts ?? 0) >= 1, 'swap back held', 90_000);
      await sleep(2500); // the next attempt waits for the straddler, with no handover: nothing swaps meanwhile
      out.phase = held.phase;
      out.heldByPid = held.swapBackHeld!.heldBy.some((x) => x.includes(String(pid)));
      out.lastError = /^The swap back \(the rollback\) of public\.sg_back_wait waits/.test(held.lastError ?? '');
      out.kind = (await db.pool.query(`SELECT relkind FROM pg_class WHERE oid = $1::regclass`, [t])).rows[0].relkind;
      // the straddler, still open: it writes the table (the new one) as it would without partflow, and commits
      out.update = await s1.query(`UPDATE ${t} SET payload = 'straddler' WHERE id = 7`).then(
        (r) => `${r.rowCount} rows`,
        (e: { code?: string }) => e.code ?? 'error',
      );
      await s1.query('COMMIT');
    } finally {
      restoreWait();
      await holder.query(`SELECT pg_advisory_unlock_all()`).catch(() => undefined);
      holder.release();
      await s1.query('ROLLBACK').catch(() => undefined);
      s1.release();
    }
    const r = (await h.result()) as { status: string };
    const guard = await db.pool.query(
      `SELECT count(*)::int AS n FROM pg_trigger WHERE tgrelid = $1::regclass AND tgname = 'partflow_snapshot_guard'`,
      [t],
    );
    const rows = await db.pool.query(`SELECT id::int, payload FROM ${t} WHERE id IN (7, 5003) ORDER BY id`);
    console.log(JSON.stringify({ out, status: r.status }));
    expect(out).toEqual({ phase: 'rolling-back', heldByPid: true, lastError: true, kind: 'p', update: '1 rows' });
    expect(r.status).toBe('rolled-back');
    expect(guard.rows[0].n).toBe(0);
    expect(rows.rows).toEqual([
      { id: 7, payload: 'straddler' },
      { id: 5003, payload: 'written in the window' },
    ]);
  });
});

describe('1f. the handover before the swap back', () => {
  it('REPEATABLE READ: a snapshot taken during it reads and writes the original table as it would the new one, without a guard', async () => {
    const t = 'ho_back';
    const { h, oid } = await inWindow(t);
    const old = await db.pool.connect();
    const [s1, s2] = [await db.pool.connect(), await db.pool.connect()];
    try {
      await old.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      await old.query('SELECT count(*) FROM pg_class'); // keeps the handover waiting
      await h.signal('rollback');
      await waitHandingOver(`partflow.rev_${oid}`);
      await sleep(500);
      // the application writes the new table; its own transactions write the old one too
      await db.pool.query(`INSERT INTO ${t} VALUES (5001, 'inserted', now()), (5002, 'inserted', now())`);
      await db.pool.query(
        `UPDATE ${t} SET payload = 'recent', created_at = created_at - interval '1 month' WHERE id = 10`,
      );
      expect((await db.pool.query(`SELECT count(*)::int AS n FROM ${t}_pf_rlog`)).rows[0].n).toBe(0);
      const same = await db.pool.query(
        `SELECT (SELECT xmin::text FROM ${t} WHERE id = 5001) = (SELECT xmin::text FROM ${t}_old WHERE id = 5001) AS ok`,
      );
      expect(same.rows[0].ok).toBe(true);
      for (const s of [s1, s2]) {
        await s.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
        await s.query('SELECT count(*) FROM pg_class');
      }
      await old.query('ROLLBACK');
      const plain = async () =>
        (await db.pool.query(`SELECT relkind FROM pg_class WHERE oid = $1::regclass`, [t])).rows[0].relkind === 'r';
      for (let i = 0; i < 600 && !(await plain()); i++) await sleep(100);
      expect(await plain()).toBe(true);
      const guard = await db.pool.query(
        `SELECT count(*)::int AS n FROM pg_trigger WHERE tgrelid = $1::regclass AND tgname = 'partflow_snapshot_guard'`,
        [t],
      );
      expect(guard.rows[0].n).toBe(0);
      const read = (await s1.query(`SELECT payload FROM ${t} WHERE id = 10`)).rows[0]?.payload;
      const update = (await s1.query(`UPDATE ${t} SET payload = 'straddler' WHERE id = 5001`)).rowCount;
      const del = (await s2.query(`DELETE FROM ${t} WHERE id = 5002`)).rowCount;
      await s1.query('COMMIT');
      await s2.query('COMMIT');
      expect({ read, update, del }).toEqual({ read: 'recent', update: 1, del: 1 });
    } finally {
      await old.query('ROLLBACK').catch(() => undefined);
      old.release();
      for (const s of [s1, s2]) {
        await s.query('ROLLBACK').catch(() => undefined);
        s.release();
      }
    }
    const r = await h.result();
    expect(r.status).toBe('rolled-back');
    const rows = await db.pool.query(`SELECT id, payload FROM ${t} WHERE id IN (10, 5001, 5002) ORDER BY id`);
    expect(rows.rows).toEqual([
      { id: '10', payload: 'recent' },
      { id: '5001', payload: 'straddler' },
    ]);
  });
});

describe('5. the last check at the cut-over: the keys changed since the last verification pass', () => {
  async function seenAndApplied(table: string, atLeast = 1) {
    for (let i = 0; i < 100; i++) {
      const r = await db.pool.query(
        `SELECT (SELECT count(*) FROM ${table}_pf_log)::int AS waiting, (SELECT count(*) FROM ${table}_pf_seen)::int AS seen`,
      );
      if (!r.rows[0].waiting && r.rows[0].seen >= atLeast) return;
      await sleep(200);
    }
    throw new Error(`the key log of ${table} was not applied`);
  }

  it('a change the copy lost after the verification is found before the swap, copied again and reported', async () => {
    await db.pool.query(`CREATE TABLE lc (id bigserial PRIMARY KEY, payload text, created_at timestamptz NOT NULL)`);
    await db.pool.query(
      `INSERT INTO lc (payload, created_at) SELECT 'p' || g, now() - (g % 60) * interval '1 day'
         FROM generate_series(1, 3000) g`,
    );
    const h = await start({
      table: 'lc',
      batchSize: 1000,
      approval: 'signal',
      rollbackWindow: '1h',
      reverifyEvery: '0',
    });
    await waitFor(h, (p) => p.phase === 'awaiting-approval', 'verified', 120_000);
    await db.pool.query(`UPDATE lc SET payload = 'changed' WHERE id IN (5, 6)`);
    await seenAndApplied('lc');
    // id 5 changed again, applied in a round of its own: recorded twice, one key
    await db.pool.query(`UPDATE lc SET payload = 'changed again' WHERE id = 5`);
    await seenAndApplied('lc', 3);
    // behind partflow's back, after the applier copied the change: the copy lost it
    await db.pool.query(`UPDATE lc_pf_shadow SET payload = 'lost' WHERE id = 5`);
    const before = await rowsOf('lc');
    await h.signal('approveCutover');
    const cut = await waitFor(h, (p) => p.phase === 'rollback-window', 'cut over', 120_000);
    // keys 5 and 6 compared (5 recorded twice, counted once), copied again and compared again under the lock
    expect(cut.cutover?.lastCheck?.keys).toBe(4);
    expect(cut.cutover?.lastCheck?.repaired).toEqual([expect.stringMatching(/^1 key\(s\): \(5,/)]);
    // where the lock time went, in order of the parts (the figures themselves are the machine's)
    const parts = cut.cutover!.lockPhases!;
    expect(Object.keys(parts)).toEqual(['checked', 'drained', 'lastCheck', 'swapped', 'recorded', 'workerStallMs']);
    expect(parts.checked <= parts.drained && parts.drained <= parts.lastCheck).toBe(true);
    expect(parts.lastCheck <= parts.swapped && parts.swapped <= parts.recorded).toBe(true);
    expect(await rowsOf('lc')).toEqual(before);
    await h.signal('finalize');
    expect((await h.result()).status).toBe('done');
  });

  it('keys under a nondeterministic collation changed after the verification: nothing is reported repaired', async () => {
    await db.pool.query(
      `CREATE COLLATION IF NOT EXISTS ci_pf (provider = icu, locale = 'und-u-ks-level2', deterministic = false)`,
    );
    await db.pool.query(
      `CREATE TABLE cig (code text COLLATE ci_pf PRIMARY KEY, note text, created_at timestamptz NOT NULL)`,
    );
    await db.pool.query(
      `INSERT INTO cig SELECT 'user' || g, 'n' || g, now() - (g % 60) * interval '1 day' FROM generate_series(1, 3000) g`,
    );
    await db.pool.query('ANALYZE cig');
    const h = await start({
      table: 'cig',
      batchSize: 1000,
      approval: 'signal',
      rollbackWindow: '0',
      reverifyEvery: '0',
    });
    await waitFor(h, (p) => p.phase === 'awaiting-approval', 'verified', 120_000);
    // a case-only key change: the log records both spellings of each key
    await db.pool.query(
      `UPDATE cig SET code = upper(code) WHERE code IN (SELECT 'user' || g FROM generate_series(1, 500) g)`,
    );
    await seenAndApplied('cig', 500);
    await h.signal('approveCutover');
    const cut = await waitFor(h, (p) => !!p.cutover, 'cut over', 120_000);
    expect(cut.cutover?.lastCheck?.repaired).toEqual([]);
    expect((await h.result()).status).toBe('done');
    expect(
      (await db.pool.query(`SELECT count(*)::int AS n FROM cig WHERE code COLLATE "C" LIKE 'USER%'`)).rows[0].n,
    ).toBe(500);
  });

  it('a cut-over with a backlog of keys and a writer, idle transactions ended after 300 ms: nothing waits idle', async () => {
    const n = 100_000;
    await db.pool.query(`CREATE TABLE lb (id bigserial PRIMARY KEY, payload text, created_at timestamptz NOT NULL)`);
    await db.pool.query(
      `INSERT INTO lb (payload, created_at) SELECT 'p' || g, now() - (g % 60) * interval '1 day'
         FROM generate_series(1, ${n}) g`,
    );
    const h = await start({
      table: 'lb',
      batchSize: 20000,
      approval: 'signal',
      rollbackWindow: '0',
      reverifyEvery: '0',
    });
    await waitFor(h, (p) => p.phase === 'awaiting-approval', 'verified', 300_000);
    // every row changed at once and the cut-over approved at once: a backlog in the log, n keys to check, and a
    // writer keeping the log from ever being empty
    await db.pool.query(`UPDATE lb SET payload = payload || '+'`);
    const written = new Map<number, number>();
    let writing = true;
    const writer = (async () => {
      while (writing) {
        const id = 1 + Math.floor(Math.random() * n);
        await db.pool.query(`UPDATE lb SET payload = payload || '.' WHERE id = $1`, [id]);
        written.set(id, (written.get(id) ?? 0) + 1);
        await sleep(5);
      }
    })();
    await db.pool.query(`ALTER SYSTEM SET idle_in_transaction_session_timeout = '300ms'`);
    await db.pool.query('SELECT pg_reload_conf()');
    try {
      await h.signal('approveCutover');
      const cut = await waitFor(h, (p) => !!p.cutover, 'cut over', 300_000);
      expect(cut.cutover?.lastCheck?.keys).toBeGreaterThanOrEqual(n);
    } finally {
      writing = false;
      await writer;
      await db.pool.query(`ALTER SYSTEM RESET idle_in_transaction_session_timeout`);
      await db.pool.query('SELECT pg_reload_conf()');
    }
    expect((await h.result()).status).toBe('done');
    const r = await db.pool.query(`SELECT id::int, payload FROM lb ORDER BY id`);
    expect(r.rows.length).toBe(n);
    const wrong = r.rows.filter((x) => x.payload !== `p${x.id}+${'.'.repeat(written.get(x.id) ?? 0)}`);
    expect(wrong).toEqual([]);
  });

  it('a difference that copying again does not mend refuses the cut-over, naming the keys; the table stays', async () => {
    await db.pool.query(`CREATE TABLE lr (id bigserial PRIMARY KEY, payload text, created_at timestamptz NOT NULL)`);
    await db.pool.query(
      `INSERT INTO lr (payload, created_at) SELECT 'p' || g, now() - (g % 60) * interval '1 day'
         FROM generate_series(1, 3000) g`,
    );
    const h = await start({
      table: 'lr',
      batchSize: 1000,
      approval: 'signal',
      rollbackWindow: '1h',
      reverifyEvery: '0',
    });
    await waitFor(h, (p) => p.phase === 'awaiting-approval', 'verified', 120_000);
    // a copy that spoils what it is given (a stand-in for any bug of the sync): every row copied from now on
    await db.pool.query(`CREATE FUNCTION lr_spoil() RETURNS trigger LANGUAGE plpgsql AS
      $$ BEGIN NEW.payload := 'spoiled'; RETURN NEW; END $$`);
    await db.pool.query(
      `CREATE TRIGGER lr_spoil BEFORE INSERT ON lr_pf_shadow FOR EACH ROW EXECUTE FUNCTION lr_spoil()`,
    );
    await db.pool.query(`UPDATE lr SET payload = 'changed' WHERE id = 9`);
    await seenAndApplied('lr');
    const before = await rowsOf('lr');
    await h.signal('approveCutover');
    const err = await h.result().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkflowFailedError);
    expect((err as WorkflowFailedError).cause?.message).toMatch(
      /last check before the cut-over of public\.lr found 1 key\(s\) whose rows differ .*keys \(9,/,
    );
    expect((await db.pool.query(`SELECT relkind FROM pg_class WHERE oid = 'lr'::regclass`)).rows[0].relkind).toBe('r');
    expect(await rowsOf('lr')).toEqual(before);
  });
});
