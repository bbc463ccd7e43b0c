/**
 * maintainPartitions and its Schedule against a real PostgreSQL and the Temporal dev server.
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Client } from 'pg';
import { compareWithRecord, Writer } from '../../demo/writer';
import type { MaintainPartitionsInput } from '../../src/maintenance';
import { createMaintenanceSchedule } from '../../operator/schedule';
import type { MaintainResult } from '../../workflows/maintainPartitions';
import { hasDetachConcurrently } from '../../src/versions';
import { catalogSnapshot, serverVersionNum, TestDb } from '../helpers/pg';
import { startStack, Stack } from '../helpers/stack';
import { sleep } from '../helpers/workflow';

const TQ = 'partflow-maint';
let stack: Stack;
let env: TestWorkflowEnvironment;
let db: TestDb;
let n = 0;
let current: { y: number; m: number };
const archiveDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pf-archive-'));

/** YYYY_MM of the month `k` months from now (UTC), computed here independently of partflow's own arithmetic. */
function month(k: number): { name: string; start: string } {
  const idx = current.y * 12 + current.m - 1 + k;
  const y = Math.floor(idx / 12);
  const m = (idx % 12) + 1;
  const mm = String(m).padStart(2, '0');
  return { name: `${y}_${mm}`, start: `${y}-${mm}-01` };
}

beforeAll(async () => {
  process.env.PARTFLOW_ARCHIVE_DIR = archiveDir;
  stack = await startStack('maint', TQ);
  ({ env, db } = stack);
  const r = await db.pool.query(
    `SELECT extract(year FROM now() AT TIME ZONE 'UTC')::int AS y, extract(month FROM now() AT TIME ZONE 'UTC')::int AS m`,
  );
  current = { y: r.rows[0].y, m: r.rows[0].m };
});

afterAll(async () => {
  await stack?.teardown();
});

/** A partitioned table with UTC monthly partitions for months [from, to] relative to now, and a default. */
async function parted(name: string, from: number, to: number, withDefault = true, type = 'timestamptz'): Promise<void> {
  await db.pool.query(
    `CREATE TABLE ${name} (id bigserial, created_at ${type} NOT NULL, payload text, PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)`,
  );
  const zone = type === 'timestamptz' ? ' UTC' : '';
  for (let k = from; k <= to; k++) {
    await db.pool.query(
      `CREATE TABLE ${name}_${month(k).name} PARTITION OF ${name} FOR VALUES FROM ('${month(k).start}${zone}') TO ('${month(k + 1).start}${zone}')`,
    );
    await db.pool.query(
      `INSERT INTO ${name} (created_at, payload) SELECT '${month(k).start}${zone}'::${type} + g * interval '1 hour', 'p' || g FROM generate_series(0, 99) g`,
    );
  }
  if (withDefault) await db.pool.query(`CREATE TABLE ${name}_default PARTITION OF ${name} DEFAULT`);
}

const maintain = async (input: MaintainPartitionsInput): Promise<MaintainResult> =>
  (
    await env.client.workflow.start('maintainPartitions', { taskQueue: TQ, workflowId: `maint-${++n}`, args: [input] })
  ).result();

test('default-partition rescue and premake with writers running; idempotent on the next runs', async () => {
  await parted('events', -3, -1);
  // rows for this month and for six months ahead wait in the default partition
  await db.pool.query(
    `INSERT INTO events (created_at, payload) SELECT now() + g * interval '1 minute', 'now' FROM generate_series(1, 50) g`,
  );
  await db.pool.query(
    `INSERT INTO events (created_at, payload) SELECT '${month(6).start} UTC'::timestamptz + g * interval '1 hour', 'ahead' FROM generate_series(1, 30) g`,
  );
  const w = new Writer(
    {
      table: 'events',
      id: 'id',
      ts: 'created_at',
      payload: 'payload',
      newIdExpr: `nextval(pg_get_serial_sequence('events', 'id'))`,
      insertSql: `INSERT INTO events AS t (created_at, payload) VALUES ($1, 'w')`,
    },
    db.conn,
    { lanes: 3, opsPerSecondPerLane: 40, snapshot: true },
  );
  await w.start();
  const first = await maintain({ tables: [{ table: 'events', premake: 3 }] });
  await sleep(300);
  const stats = await w.stop();
  expect(first.failures).toEqual([]);
  const created = first.tables[0].created;
  const byName = Object.fromEntries(created.map((c) => [c.partition, c.rowsMovedFromDefault]));
  // the writers may have moved or deleted some of them meanwhile; the record comparison below is the exact check
  expect(byName[`events_${month(0).name}`]).toBeGreaterThan(30);
  expect(byName[`events_${month(6).name}`]).toBeGreaterThan(15);
  for (const k of [1, 2, 3]) expect(Object.keys(byName)).toContain(`events_${month(k).name}`);
  expect({ errors: stats.errors, samples: stats.errorSamples }).toEqual({ errors: 0, samples: [] });
  // nothing lost, nothing duplicated: the table still holds exactly what the writers' record says
  const c = new Client(db.conn);
  await c.connect();
  const cmp = await compareWithRecord(c, { table: 'events', id: 'id' }, w.record);
  await c.end();
  expect({ missing: cmp.missing, extra: cmp.extra, different: cmp.different }).toEqual({
    missing: 0,
    extra: 0,
    different: 0,
  });
  // later runs: the stragglers the writers left in the default get their months; then nothing changes
  await maintain({ tables: [{ table: 'events', premake: 3 }] });
  const before = await catalogSnapshot(db.pool, ['public']);
  const third = await maintain({ tables: [{ table: 'events', premake: 3 }] });
  expect(third.tables[0].created).toEqual([]);
  expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);
  expect(third.tables[0].defaultPartition).toEqual({ name: 'events_default', rows: 0 });
  expect(third.tables[0].futurePartitions).toBeGreaterThanOrEqual(3);
});

test('premake and rescue eight times in a row while writers insert into exactly the months being created: no failed insert', async () => {
  let longest = 0;
  for (let i = 0; i < 8; i++) {
    const name = `race_${i}`;
    await db.pool.query(
      `CREATE TABLE ${name} (id bigserial, created_at timestamptz NOT NULL, payload text, PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)`,
    );
    await db.pool.query(`CREATE TABLE ${name}_default PARTITION OF ${name} DEFAULT`);
    // rows for this month and the next three already wait in the default partition
    await db.pool.query(
      `INSERT INTO ${name} (created_at, payload) SELECT now() + g * interval '1 day', 'waiting' FROM generate_series(0, 100) g`,
    );
    const w = new Writer(
      {
        table: name,
        id: 'id',
        ts: 'created_at',
        payload: 'payload',
        newIdExpr: `nextval(pg_get_serial_sequence('${name}', 'id'))`,
        insertSql: `INSERT INTO ${name} AS t (created_at, payload) VALUES ($1, 'w')`,
      },
      db.conn,
      {
        lanes: 4,
        opsPerSecondPerLane: 100,
        snapshot: true,
        seed: 100 + i,
        ops: ['insert', 'update'],
        insertDays: [-1, 110],
      },
    );
    await w.start();
    await sleep(200);
    const r = await maintain({ tables: [{ table: name, premake: 3 }] });
    await sleep(200);
    const stats = await w.stop();
    expect(r.failures).toEqual([]);
    expect(r.tables[0].created.length).toBeGreaterThanOrEqual(4);
    expect({ run: i, errors: stats.errors, samples: stats.errorSamples }).toEqual({ run: i, errors: 0, samples: [] });
    expect(stats.inserts).toBeGreaterThan(20);
    longest = Math.max(longest, stats.maxLatencyMs);
    const c = new Client(db.conn);
    await c.connect();
    const cmp = await compareWithRecord(c, { table: name, id: 'id' }, w.record);
    await c.end();
    expect({ missing: cmp.missing, extra: cmp.extra, different: cmp.different }).toEqual({
      missing: 0,
      extra: 0,
      different: 0,
    });
  }
  console.log(`[measure] maintenance premake and rescue, 8 runs under writers: longest writer wait ${longest} ms`);
});

test('retention detaches exactly the partitions entirely older than the cutoff, also across a time zone', async () => {
  await parted('ledger', -14, 1);
  await parted('ledger_tokyo', -14, 1);
  await parted('days', -14, 0, false, 'date');
  const r = await maintain({
    tables: [
      { table: 'ledger', retention: '12 months', archive: 'detach', premake: 1 },
      // the partitions' UTC midnights are 09:00 in Tokyo: the month ending at the cutoff's 09:00 is not entirely older
      { table: 'ledger_tokyo', retention: '12 months', archive: 'none', premake: 0, timeZone: 'Asia/Tokyo' },
      { table: 'days', retention: '1 year', archive: 'drop', premake: 0 },
    ],
  });
  expect(r.failures).toEqual([]);
  expect(r.tables[0].archived.map((a) => a.partition)).toEqual([
    `ledger_${month(-14).name}`,
    `ledger_${month(-13).name}`,
  ]);
  expect(r.tables[1].archived.map((a) => a.partition)).toEqual([`ledger_tokyo_${month(-14).name}`]);
  expect(r.tables[2].archived.map((a) => a.partition)).toEqual([`days_${month(-14).name}`, `days_${month(-13).name}`]);
  const where = await db.pool.query(
    `SELECT n.nspname || '.' || c.relname AS t FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname IN ($1, $2, $3) ORDER BY 1`,
    [`ledger_${month(-14).name}`, `ledger_${month(-12).name}`, `days_${month(-14).name}`],
  );
  expect(where.rows.map((x) => x.t)).toEqual([`archive.ledger_${month(-14).name}`, `public.ledger_${month(-12).name}`]);
  expect(r.tables[0].archived[0].note).toBe(`now archive.ledger_${month(-14).name}`);
  // the month the cutoff falls in is still attached, with its rows
  const kept = await db.pool.query(
    `SELECT count(*)::int AS n FROM ledger WHERE created_at >= '${month(-12).start} UTC' AND created_at < '${month(-11).start} UTC'`,
  );
  expect(kept.rows[0].n).toBe(100);
});

test("an archived partition loses the table's foreign keys: a later DELETE in a live table neither cascades into the archive nor fails on it", async () => {
  await db.pool.query(`CREATE TABLE owners (id bigint PRIMARY KEY)`);
  await db.pool.query(`INSERT INTO owners VALUES (1), (2)`);
  await parted('owned', -14, 0);
  await db.pool.query(`ALTER TABLE owned ADD COLUMN owner_id bigint REFERENCES owners ON DELETE CASCADE`);
  await db.pool.query(`ALTER TABLE owned ADD COLUMN keeper_id bigint REFERENCES owners`);
  await db.pool.query(`UPDATE owned SET owner_id = 1, keeper_id = 2`);
  // and a key on itself: a reply in the oldest month to a row of this month (its clones on the table, one per
  // partition it references, go with it)
  await db.pool.query(`ALTER TABLE owned ADD COLUMN parent_id bigint, ADD COLUMN parent_at timestamptz`);
  await db.pool.query(
    `ALTER TABLE owned ADD CONSTRAINT owned_parent_fk FOREIGN KEY (parent_id, parent_at) REFERENCES owned (id, created_at) ON DELETE CASCADE`,
  );
  const old = `owned_${month(-14).name}`;
  const parent = (await db.pool.query(`SELECT id, created_at FROM owned_${month(0).name} LIMIT 1`)).rows[0];
  await db.pool.query(`UPDATE ${old} SET parent_id = $1, parent_at = $2`, [parent.id, parent.created_at]);
  const dry = await maintain({ tables: [{ table: 'owned', retention: '12 months', archive: 'detach' }], dryRun: true });
  const step = dry.tables[0].planned!.find((x) => x.step === 'archive' && x.partition === old)!;
  expect(step.forward.slice(0, 4)).toEqual([
    `ALTER TABLE "public"."${old}" DROP CONSTRAINT IF EXISTS "owned_keeper_id_fkey"`,
    `ALTER TABLE "public"."${old}" DROP CONSTRAINT IF EXISTS "owned_owner_id_fkey"`,
    `ALTER TABLE "public"."${old}" DROP CONSTRAINT IF EXISTS "owned_parent_fk"`,
    'CREATE SCHEMA IF NOT EXISTS "archive"',
  ]);
  const r = await maintain({ tables: [{ table: 'owned', retention: '12 months', archive: 'detach' }] });
  expect(r.failures).toEqual([]);
  expect(r.tables[0].archived.find((a) => a.partition === old)?.note).toBe(
    `now archive.${old}; its foreign keys owned_keeper_id_fkey, owned_owner_id_fkey, owned_parent_fk dropped`,
  );
  expect(r.tables[0].archived.length).toBe(2); // the oldest two months, both unlinked
  const left = await db.pool.query(
    `SELECT count(*)::int AS n FROM pg_constraint WHERE contype = 'f' AND conrelid::regclass::text LIKE 'archive.%'`,
  );
  expect(left.rows[0].n).toBe(0);
  // the replies' parent goes, its archived replies stay
  await db.pool.query(`DELETE FROM owned WHERE id = $1`, [parent.id]);
  // the live table's rows go with their owner; the archive's stay, and its keeper may go
  await db.pool.query(`DELETE FROM owners WHERE id = 1`);
  await db.pool.query(`DELETE FROM owned WHERE keeper_id = 2`);
  await db.pool.query(`DELETE FROM owners WHERE id = 2`);
  expect((await db.pool.query(`SELECT count(*)::int AS n FROM owned`)).rows[0].n).toBe(0);
  expect(
    (await db.pool.query(`SELECT count(*)::int AS n FROM archive.${old} WHERE parent_id IS NOT NULL`)).rows[0].n,
  ).toBe(100);
  expect((await db.pool.query(`SELECT count(*)::int AS n FROM archive.${old}`)).rows[0].n).toBe(100);
});

test('a dump archive is verified before the drop and restores to the same checksum', async () => {
  await parted('audit_log', -4, 0, false);
  const before = await db.pool.query(
    `SELECT coalesce(sum(hashtextextended(t::text, 0)), 0)::text AS s, count(*)::int AS n FROM audit_log_${month(-4).name} t`,
  );
  const r = await maintain({ tables: [{ table: 'audit_log', retention: '3 months', archive: 'dump', premake: 0 }] });
  expect(r.failures).toEqual([]);
  const a = r.tables[0].archived.find((x) => x.partition === `audit_log_${month(-4).name}`)!;
  expect(a.rows).toBe(100);
  expect(fs.existsSync(a.file!)).toBe(true);
  expect((await db.pool.query(`SELECT to_regclass($1) AS t`, [`audit_log_${month(-4).name}`])).rows[0].t).toBeNull();
  const side = JSON.parse(fs.readFileSync(`${a.file}.json`, 'utf8'));
  expect(side.checksum).toBe(before.rows[0].s);
  expect(side.columns).toEqual([
    { name: 'id', type: 'bigint' },
    { name: 'created_at', type: 'timestamp with time zone' },
    { name: 'payload', type: 'text' },
  ]);
  expect(side.settings).toMatch(/DateStyle=ISO,YMD .*extra_float_digits=3/);
  // restore: the file is COPY text, gzip
  await db.pool.query(`CREATE TABLE restored (LIKE audit_log)`);
  await new Promise<void>((resolve, reject) => {
    const p = spawn(
      'sh',
      ['-c', `gunzip -c '${a.file}' | psql -X -v ON_ERROR_STOP=1 '${db.url}' -c 'COPY restored FROM STDIN'`],
      { stdio: 'inherit' },
    );
    p.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`restore exited ${code}`))));
  });
  const after = await db.pool.query(
    `SELECT coalesce(sum(hashtextextended(t::text, 0)), 0)::text AS s, count(*)::int AS n FROM restored t`,
  );
  expect(after.rows[0]).toEqual(before.rows[0]);
});

test('one broken table is reported and the others are still maintained', async () => {
  await db.pool.query(`CREATE TABLE plain (id int PRIMARY KEY, created_at timestamptz NOT NULL)`);
  await parted('healthy', -1, -1);
  const r = await maintain({
    tables: [{ table: 'missing_table' }, { table: 'plain' }, { table: 'healthy', premake: 2 }],
  });
  expect(r.ok).toBe(false);
  expect(r.failures).toEqual([
    { table: 'public.missing_table', error: 'Table public.missing_table does not exist.' },
    { table: 'public.plain', error: 'Table public.plain is not partitioned; partition it with partitionTable first.' },
  ]);
  expect(r.tables.map((t) => t.table)).toEqual(['public.healthy']);
  expect(r.tables[0].created.map((c) => c.partition)).toEqual([0, 1, 2].map((k) => `healthy_${month(k).name}`));
});

test('the Schedule exists after create, and a trigger runs maintainPartitions', async () => {
  await parted('scheduled', -1, -1);
  const id = await createMaintenanceSchedule(
    env.client,
    { tables: [{ table: 'scheduled', premake: 1 }] },
    { scheduleId: 'test-maintenance', taskQueue: TQ },
  );
  const handle = env.client.schedule.getHandle(id);
  const d = await handle.describe();
  expect(d.action.workflowType).toBe('maintainPartitions');
  expect(d.policies.overlap).toBe('SKIP');
  expect(d.info.nextActionTimes.length).toBeGreaterThan(0);
  await handle.trigger();
  let runId: string | undefined;
  for (let i = 0; i < 100 && !runId; i++) {
    runId = (await handle.describe()).info.recentActions[0]?.action.workflow.firstExecutionRunId;
    if (!runId) await sleep(200);
  }
  const wf = (await handle.describe()).info.recentActions[0].action.workflow;
  const result: MaintainResult = await env.client.workflow.getHandle(wf.workflowId, wf.firstExecutionRunId).result();
  expect(result.tables[0].created.map((c) => c.partition)).toEqual([
    `scheduled_${month(0).name}`,
    `scheduled_${month(1).name}`,
  ]);
  await handle.delete();
});

test('sentinel dates in the default partition (infinity, -infinity, 9999, 1900) stay there and are reported; the rest goes on', async () => {
  await parted('sentry', -2, 0);
  await db.pool
    .query(`INSERT INTO sentry (created_at, payload) VALUES ('infinity', 's1'), ('-infinity', 's2'), ('9999-12-15 UTC', 's3'), ('1900-01-01 UTC', 's4'),
                       ('${month(2).start} UTC'::timestamptz + interval '3 days', 'ahead')`);
  const r = await maintain({ tables: [{ table: 'sentry', premake: 3, retention: '12 months', archive: 'drop' }] });
  expect(r.failures).toEqual([]);
  const t = r.tables[0];
  expect(t.created.map((c) => c.partition).sort()).toEqual([1, 2, 3].map((k) => `sentry_${month(k).name}`));
  expect(t.sentinels?.rows).toBe(4);
  expect(t.warnings.join(' ')).toMatch(
    /4 row\(s\) in sentry_default are dated far outside the partitions .*stay in the default partition/,
  );
  const parts = await db.pool.query(
    `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'sentry'::regclass ORDER BY 1`,
  );
  expect(parts.rows.map((x) => x.relname).filter((n: string) => /9999|1900|10000/.test(n))).toEqual([]);
  expect(
    (await db.pool.query(`SELECT payload FROM sentry_default ORDER BY payload`)).rows.map((x) => x.payload),
  ).toEqual(['s1', 's2', 's3', 's4']);
  // a second run: nothing new, no failure
  const again = await maintain({ tables: [{ table: 'sentry', premake: 3, retention: '12 months', archive: 'drop' }] });
  expect(again.failures).toEqual([]);
  expect(again.tables[0].created).toEqual([]);
});

test('a table in a partitionTable rollback window is left alone, so a rollback loses nothing', async () => {
  await db.pool.query(
    `CREATE TABLE windowed (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL, payload text)`,
  );
  await db.pool.query(
    `INSERT INTO windowed (created_at, payload) SELECT now() - g * interval '1 day', 'old' FROM generate_series(1, 200) g`,
  );
  const h = await env.client.workflow.start('partitionTable', {
    taskQueue: TQ,
    workflowId: `maint-pt-${++n}`,
    args: [{ table: 'windowed', approval: 'auto', rollbackWindow: '1h' }],
  });
  for (let i = 0; i < 200; i++) {
    if ((await h.query<{ phase: string }>('progress')).phase === 'rollback-window') break;
    await sleep(150);
  }
  // two years ahead: the new table's default partition; the reverse trigger copies it into windowed_old
  await db.pool.query(`INSERT INTO windowed (created_at, payload) VALUES (now() + interval '2 years', 'far ahead')`);
  const r = await maintain({ tables: [{ table: 'windowed', premake: 3 }] });
  expect(r.failures).toEqual([]);
  expect(r.tables[0].created).toEqual([]);
  expect(r.tables[0].warnings.join(' ')).toMatch(
    /partflow run partitionTable maint-pt-\d+ holds public\.windowed: nothing was created, detached, moved or archived/,
  );
  await h.signal('rollback');
  expect((await h.result()).status).toBe('rolled-back');
  expect((await db.pool.query(`SELECT count(*)::int AS n FROM windowed WHERE payload = 'far ahead'`)).rows[0].n).toBe(
    1,
  );
  expect((await db.pool.query(`SELECT count(*)::int AS n FROM windowed`)).rows[0].n).toBe(201);
});

test('a partition left "detach pending" by an interrupted DETACH CONCURRENTLY is finished, and later detaches work', async () => {
  await parted('pending', -20, -17, false);
  if (!hasDetachConcurrently(await serverVersionNum(db.pool))) {
    // PostgreSQL 13 has no DETACH CONCURRENTLY, so nothing is ever "detach pending": retention detaches plainly
    const r = await maintain({ tables: [{ table: 'pending', premake: 0, retention: '18 months', archive: 'detach' }] });
    expect(r.failures).toEqual([]);
    expect(r.tables[0].finishedDetaches ?? []).toEqual([]);
    expect(r.tables[0].archived.map((a) => a.partition).sort()).toEqual([
      `pending_${month(-20).name}`,
      `pending_${month(-19).name}`,
    ]);
    const notes = await db.pool.query(
      `SELECT DISTINCT detail->>'note' AS note FROM partflow.archive_log WHERE table_name = 'pending'`,
    );
    expect(notes.rows).toEqual([
      { note: 'plain DETACH (a brief exclusive lock on the parent): PostgreSQL 13 has no DETACH CONCURRENTLY (14+)' },
    ]);
    return;
  }
  const holder = new Client(db.conn);
  await holder.connect();
  await holder.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
  await holder.query('SELECT count(*) FROM pending'); // an old snapshot: the detach's second phase waits for it
  const c = new Client({ ...db.conn, options: '-c statement_timeout=1000' });
  await c.connect();
  await expect(c.query(`ALTER TABLE pending DETACH PARTITION pending_${month(-20).name} CONCURRENTLY`)).rejects.toThrow(
    /statement timeout/,
  );
  await c.end();
  await holder.query('COMMIT');
  await holder.end();
  const stuck = await db.pool.query(
    `SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = 'pending_${month(-20).name}'::regclass`,
  );
  expect(stuck.rows).toEqual([{ inhdetachpending: true }]);
  const r = await maintain({ tables: [{ table: 'pending', premake: 0, retention: '18 months', archive: 'detach' }] });
  expect(r.failures).toEqual([]);
  expect(r.tables[0].finishedDetaches).toEqual([`pending_${month(-20).name}`]);
  // retention then detached the next expired ones, which failed while the detach was pending
  expect(r.tables[0].archived.map((a) => a.partition).sort()).toEqual([`pending_${month(-19).name}`]);
  expect(
    (
      await db.pool.query(
        `SELECT count(*)::int AS n FROM pg_inherits WHERE inhparent = 'pending'::regclass AND inhdetachpending`,
      )
    ).rows[0].n,
  ).toBe(0);
});

test("new partitions belong to the parent's owner, archives of another schema do not collide, names over 63 bytes are refused", async () => {
  await db.pool.query(`DO $$ BEGIN CREATE ROLE pf_owner; EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
  await db.pool.query(`CREATE SCHEMA app2`);
  await parted('app2.ledger', -14, -12);
  await db.pool.query(`ALTER TABLE app2.ledger OWNER TO pf_owner`);
  for (const k of [-14, -13, -12]) await db.pool.query(`ALTER TABLE app2.ledger_${month(k).name} OWNER TO pf_owner`);
  await db.pool.query(`ALTER TABLE app2.ledger_default OWNER TO pf_owner`);
  const r = await maintain({
    tables: [{ table: 'app2.ledger', premake: 1, retention: '13 months', archive: 'detach' }],
  });
  expect(r.failures).toEqual([]);
  const owners = await db.pool.query(
    `SELECT DISTINCT pg_get_userbyid(c.relowner) AS o FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'app2.ledger'::regclass`,
  );
  expect(owners.rows).toEqual([{ o: 'pf_owner' }]);
  expect(r.tables[0].archived[0].note).toBe(`now archive_app2.ledger_${month(-14).name}`); // public.ledger's archive is archive.ledger_*
  const long = `l${'o'.repeat(55)}ng`;
  await parted(long, -1, -1);
  const f = await maintain({ tables: [{ table: long, premake: 1 }] });
  expect(f.failures[0].error).toMatch(/would be 66 bytes, over PostgreSQL's 63/);
});

test('a default partition too big to move or check within the lock timeout: months are skipped with the reason, no long lock taken', async () => {
  await parted('bigdef', -2, -2);
  await db.pool.query(
    `INSERT INTO bigdef (created_at, payload) SELECT '${month(-1).start} UTC'::timestamptz + (g % 1000) * interval '1 minute', 'stuck' FROM generate_series(1, 60000) g`,
  );
  await db.pool.query(`ANALYZE bigdef_default`);
  const r = await maintain({ tables: [{ table: 'bigdef', premake: 1 }], lockTimeoutMs: 20 });
  expect(r.failures).toEqual([]);
  expect(r.tables[0].created).toEqual([]);
  const skipped = Object.fromEntries(r.tables[0].skipped.map((x) => [x.partition, x.reason]));
  expect(skipped[`bigdef_${month(-1).name}`]).toMatch(
    /would block writes to public\.bigdef for about \d+ ms \(the ATTACH checks the 60\d{3} rows of bigdef_default, 60000 of them to move\), over lockTimeoutMs 20/,
  );
  expect(skipped[`bigdef_${month(0).name}`]).toMatch(
    /checks the 60\d{3} rows of bigdef_default\), over lockTimeoutMs 20/,
  );
  expect((await db.pool.query(`SELECT count(*)::int AS n FROM bigdef_default`)).rows[0].n).toBe(60000);
  // with a lock timeout that accepts the stall, the same run moves them
  const again = await maintain({ tables: [{ table: 'bigdef', premake: 1 }], lockTimeoutMs: 60_000 });
  expect(again.tables[0].created.find((c) => c.partition === `bigdef_${month(-1).name}`)?.rowsMovedFromDefault).toBe(
    60000,
  );
});

test('rows in the default partition that a foreign key references are not moved out (the move would run its ON DELETE CASCADE): the month is skipped with the reason', async () => {
  await parted('refd', -2, -1);
  await db.pool.query(
    `CREATE TABLE refs (id bigserial PRIMARY KEY, event_id bigint, event_at timestamptz,
                        FOREIGN KEY (event_id, event_at) REFERENCES refd (id, created_at) ON DELETE CASCADE)`,
  );
  // this month's rows wait in the default, one of them referenced; next month's rows too, none referenced
  await db.pool.query(
    `INSERT INTO refd (created_at, payload) SELECT now() - g * interval '1 minute', 'now' FROM generate_series(1, 5) g`,
  );
  await db.pool.query(
    `INSERT INTO refd (created_at, payload) SELECT '${month(1).start} UTC'::timestamptz + g * interval '1 hour', 'next' FROM generate_series(1, 4) g`,
  );
  await db.pool.query(
    `INSERT INTO refs (event_id, event_at) SELECT id, created_at FROM refd WHERE payload = 'now' ORDER BY id LIMIT 1`,
  );
  // without an index on the referencing columns, finding the referenced rows would scan refs under the lock
  const unindexed = await maintain({ tables: [{ table: 'refd', premake: 1 }] });
  expect(unindexed.failures).toEqual([]);
  expect(unindexed.tables[0].created).toEqual([]);
  expect(unindexed.tables[0].skipped.map((x) => x.partition)).toEqual([
    `refd_${month(0).name}`,
    `refd_${month(1).name}`,
  ]);
  for (const x of unindexed.tables[0].skipped) {
    expect(x.reason).toMatch(/no index leads with the columns of the foreign key\(s\) refs \(event_id, event_at\)/);
  }
  // a BRIN index leads with them too, but finding the rows through it still reads all of refs
  await db.pool.query(`CREATE INDEX refs_brin ON refs USING brin (event_id, event_at)`);
  const brin = await maintain({ tables: [{ table: 'refd', premake: 1 }] });
  expect(brin.tables[0].created).toEqual([]);
  await db.pool.query(`DROP INDEX refs_brin`);
  await db.pool.query(`CREATE INDEX ON refs (event_at, event_id)`);
  const r = await maintain({ tables: [{ table: 'refd', premake: 1 }] });
  expect(r.failures).toEqual([]);
  expect(r.tables[0].skipped.length).toBe(1); // once, though both the rescue and the premake want the month
  const skipped = Object.fromEntries(r.tables[0].skipped.map((x) => [x.partition, x.reason]));
  expect(skipped[`refd_${month(0).name}`]).toMatch(
    /rows of \d{4}-\d{2} in public\.refd_default are referenced by foreign keys of refs; .*ON DELETE action, so the month is not created/,
  );
  expect(r.tables[0].created.map((c) => [c.partition, c.rowsMovedFromDefault])).toEqual([[`refd_${month(1).name}`, 4]]);
  // nothing deleted by the key's action, nothing moved for the skipped month
  expect((await db.pool.query(`SELECT count(*)::int AS n FROM refs`)).rows[0].n).toBe(1);
  expect((await db.pool.query(`SELECT count(*)::int AS n FROM refd_default`)).rows[0].n).toBe(5);
  expect((await db.pool.query(`SELECT to_regclass($1) AS t`, [`refd_${month(0).name}`])).rows[0].t).toBeNull();
});

test('a dry run lists each step with its statements and undo and changes nothing; the run does those steps; their undo restores the table', async () => {
  await parted('dry', -14, -1);
  await db.pool.query(
    `INSERT INTO dry (created_at, payload) SELECT now() + g * interval '1 minute', 'now' FROM generate_series(1, 20) g`,
  );
  const contents = async () =>
    (
      await db.pool.query(
        `SELECT tableoid::regclass::text AS part, count(*)::int AS n, sum(hashtext(id || payload))::bigint AS h
           FROM dry GROUP BY 1 ORDER BY 1`,
      )
    ).rows;
  const before = { catalog: await catalogSnapshot(db.pool, ['public']), rows: await contents() };
  const input: MaintainPartitionsInput = {
    tables: [{ table: 'dry', retention: '12 months', archive: 'detach', premake: 2 }],
  };
  const dry = await maintain({ ...input, dryRun: true });
  expect(dry.failures).toEqual([]);
  // the Web UI's history names the step (issue 28 item 1)
  const events = (await env.client.workflow.getHandle(`maint-${n}`).fetchHistory()).events ?? [];
  const summary = events.find((e) => e.activityTaskScheduledEventAttributes)?.userMetadata?.summary?.data;
  expect(JSON.parse(Buffer.from(summary!).toString())).toBe('plan (dry run) public.dry');
  const planned = dry.tables[0].planned ?? [];
  expect(planned.map((s) => `${s.step} ${s.partition}`)).toEqual([
    `create partition dry_${month(0).name}`,
    `create partition dry_${month(1).name}`,
    `create partition dry_${month(2).name}`,
    `detach dry_${month(-14).name}`,
    `archive dry_${month(-14).name}`,
    `detach dry_${month(-13).name}`,
    `archive dry_${month(-13).name}`,
  ]);
  expect(planned[0].forward.join('\n')).toContain(`INSERT INTO "public"."dry_${month(0).name}"`);
  expect(dry.tables[0].created).toEqual([]);
  expect({ catalog: await catalogSnapshot(db.pool, ['public']), rows: await contents() }).toEqual(before);

  const done = await maintain(input);
  expect(done.failures).toEqual([]);
  expect(done.tables[0].created.map((c) => c.partition)).toEqual(
    planned.filter((s) => s.step === 'create partition').map((s) => s.partition),
  );
  expect(done.tables[0].created[0].rowsMovedFromDefault).toBe(20);
  expect(done.tables[0].archived.map((a) => a.partition)).toEqual(
    planned.filter((s) => s.step === 'archive').map((s) => s.partition),
  );
  // each step's undo, last step first, gives the table back as it was
  for (const s of [...planned].reverse()) for (const sql of s.undo) await db.pool.query(sql);
  expect({ catalog: await catalogSnapshot(db.pool, ['public']), rows: await contents() }).toEqual(before);
});
