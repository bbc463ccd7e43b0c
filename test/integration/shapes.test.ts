/**
 * partitionTable on tables set up the way applications really set them up (issue: "safe on every table an
 * application really has"). Each shape is either handled, proven with writers and their own record of what
 * they committed, or refused in preflight with one sentence while the catalog stays as it was.
 */
import { WorkflowFailedError, WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Client, ClientConfig } from 'pg';
import { compareWithRecord, Op, Writer } from '../../demo/writer';
import type { PartitionTableInput } from '../../src/input';
import { catalogSnapshot, serverVersionNum, TestDb, withClient as withDbClient } from '../helpers/pg';
import { startStack, Stack } from '../helpers/stack';
import { createTable, TestTable } from '../helpers/tables';
import { progress, sleep, waitFor } from '../helpers/workflow';

const TQ = 'partflow-shapes';
let stack: Stack;
let env: TestWorkflowEnvironment;
let db: TestDb;
let seq = 0;

beforeAll(async () => {
  stack = await startStack('shapes', TQ);
  ({ env, db } = stack);
});

afterAll(async () => {
  await stack?.teardown();
});

const writers: Writer[] = [];
afterEach(async () => {
  for (const w of writers.splice(0)) await w.stop().catch(() => undefined);
});

function start(input: PartitionTableInput): Promise<WorkflowHandle> {
  return env.client.workflow.start('partitionTable', {
    taskQueue: TQ,
    workflowId: `shapes-${++seq}-${Date.now()}`,
    args: [input],
  });
}

function writer(
  t: TestTable,
  opts: { user?: string; ops?: Op[]; onConnect?: string; snapshot?: boolean } = {},
): Writer {
  const conn: ClientConfig = { ...db.conn, ...(opts.user ? { user: opts.user } : {}) };
  const w = new Writer(t.spec, conn, {
    lanes: 3,
    opsPerSecondPerLane: 40,
    snapshot: opts.snapshot ?? true,
    seed: ++seq,
    ops: opts.ops,
    onConnect: opts.onConnect,
  });
  writers.push(w);
  return w;
}

const withClient = <T>(fn: (c: Client) => Promise<T>): Promise<T> => withDbClient(db.conn, fn);

/** The table equals the union of the writers' records (the first with the starting snapshot, the others only their own rows). */
async function expectMatches(t: TestTable, ...ws: Writer[]): Promise<void> {
  const record = new Map(ws[0].record);
  for (const w of ws.slice(1)) for (const [k, v] of w.record) record.set(k, v);
  const cmp = await withClient((c) => compareWithRecord(c, t.spec, record));
  expect({ missing: cmp.missing, extra: cmp.extra, different: cmp.different }).toEqual({
    missing: 0,
    extra: 0,
    different: 0,
  });
  expect(cmp.tableChecksum).toBe(cmp.recordChecksum);
}

/** Applies a column change that was undone to the rows a writer recorded meanwhile: null drops, a name renames. */
function undoInRecord(w: Writer, columns: Record<string, string | null>): void {
  for (const [k, v] of w.record) {
    const row = Object.entries(JSON.parse(v) as Record<string, unknown>);
    if (!row.some(([c]) => c in columns)) continue;
    const back = row.filter(([c]) => columns[c] !== null).map(([c, x]) => [c in columns ? columns[c] : c, x]);
    w.record.set(k, JSON.stringify(Object.fromEntries(back)));
  }
}

function expectNoErrors(...stats: { errors: number; errorSamples: string[] }[]): void {
  for (const s of stats) expect({ errors: s.errors, samples: s.errorSamples }).toEqual({ errors: 0, samples: [] });
}

async function relkind(name: string): Promise<string | undefined> {
  return (await db.pool.query(`SELECT relkind FROM pg_class WHERE oid = to_regclass($1)`, [name])).rows[0]?.relkind;
}

async function partflowLeftovers(): Promise<string[]> {
  const r = await db.pool.query(
    `SELECT 'trigger ' || tgname AS x FROM pg_trigger WHERE tgname LIKE 'partflow%'
     UNION ALL SELECT 'function ' || proname FROM pg_proc WHERE pronamespace = to_regnamespace('partflow')
     UNION ALL SELECT 'relation ' || relname FROM pg_class WHERE relname LIKE '%\\_pf\\_%' OR relnamespace = to_regnamespace('partflow') AND relname LIKE 'guard%'`,
  );
  return r.rows.map((x) => x.x);
}

/** Starts a run that must be refused: one sentence matching `message`, and the catalog unchanged. */
async function expectRefused(input: PartitionTableInput, message: RegExp): Promise<void> {
  const before = await catalogSnapshot(db.pool, ['public', 'partflow']);
  const err = await (await start(input)).result().then(
    () => null,
    (e: WorkflowFailedError) => e,
  );
  expect(err).toBeInstanceOf(WorkflowFailedError);
  expect(err!.cause?.message).toMatch(message);
  expect(err!.cause?.message.replace(/e\.g\. /g, '').split('. ').length).toBeLessThanOrEqual(2); // one sentence
  expect(await catalogSnapshot(db.pool, ['public', 'partflow'])).toEqual(before);
}

test('least-privileged roles keep writing: INSERT-only, no DELETE, column grants carried over', async () => {
  const t = await createTable(db.pool, { schema: 'public', name: 'audit' }, 6_000, 'bigserial');
  await db.pool.query(`DO $$ BEGIN CREATE ROLE pf_inserter LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
  await db.pool.query(`DO $$ BEGIN CREATE ROLE pf_nodelete LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
  await db.pool.query(`DO $$ BEGIN CREATE ROLE pf_auditor LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
  await db.pool.query(`GRANT INSERT, SELECT ON public.audit TO pf_inserter`);
  await db.pool.query(`GRANT SELECT, INSERT, UPDATE ON public.audit TO pf_nodelete`);
  await db.pool.query(`GRANT USAGE ON SEQUENCE public.audit_id_seq TO pf_inserter, pf_nodelete`);
  await db.pool.query(`GRANT SELECT (id, payload), UPDATE (payload) ON public.audit TO pf_auditor`);
  const updater = writer(t, { user: 'pf_nodelete', ops: ['insert', 'update', 'move'] });
  await updater.start();
  const inserter = writer(t, { user: 'pf_inserter', ops: ['insert'], snapshot: false });
  await inserter.start();
  const h = await start({ table: 'audit', batchSize: 300, sleepMs: 20, approval: 'auto', rollbackWindow: '1h' });
  await waitFor(h, (p) => p.phase === 'rollback-window', 'cut-over');
  await sleep(1500); // the reverse trigger writes into audit_old for both roles
  const window = await progress(h);
  await h.signal('finalize');
  const result = await h.result();
  const s1 = await updater.stop();
  const s2 = await inserter.stop();
  expect(result.status).toBe('done');
  expectNoErrors(s1, s2);
  expect(s1.moves).toBeGreaterThan(5);
  expect(s2.inserts).toBeGreaterThan(20);
  await expectMatches(t, updater, inserter);
  // the counter of month-crossing updates saw the updater's moves
  expect(window.rowMoves).toBeGreaterThan(0);
  expect(result.rowMoves).toBeGreaterThanOrEqual(window.rowMoves);
  // column privileges on the new table, and a real login that uses them
  const priv = await db.pool.query(
    `SELECT has_column_privilege('pf_auditor', 'public.audit', 'payload', 'SELECT') AS sel, has_column_privilege('pf_auditor', 'public.audit', 'payload', 'UPDATE') AS upd,
            has_column_privilege('pf_auditor', 'public.audit', 'n', 'SELECT') AS other, has_table_privilege('pf_inserter', 'public.audit', 'INSERT') AS ins,
            has_table_privilege('pf_nodelete', 'public.audit', 'DELETE') AS del`,
  );
  expect(priv.rows[0]).toEqual({ sel: true, upd: true, other: false, ins: true, del: false });
  const auditor = new Client({ ...db.conn, user: 'pf_auditor' });
  await auditor.connect();
  expect((await auditor.query(`SELECT count(id) AS n FROM public.audit WHERE payload IS NOT NULL`)).rows[0].n).not.toBe(
    '0',
  );
  await expect(auditor.query(`SELECT n FROM public.audit LIMIT 1`)).rejects.toThrow(/permission denied/);
  await auditor.end();
});

test('writes that bypass ordinary triggers: replica-role sessions and a VACUUM FULL mid-backfill, then a rollback', async () => {
  const t = await createTable(db.pool, { schema: 'public', name: 'replicated' }, 12_000, 'uuid');
  const w = writer(t, { onConnect: `SET session_replication_role = replica` }); // a CDC sink or logical replication apply
  await w.start();
  // the application-latency bound off: 240 small batches under a noisy CI machine's pacing (up to 5 s a batch)
  // outlast the wait; this test is about replica-role writes and the rewrite, the bound has test/integration/pacer.test.ts
  const h = await start({
    table: 'replicated',
    batchSize: 50,
    sleepMs: 100,
    approval: 'signal',
    rollbackWindow: '1h',
    maxAppLatencyRatio: null,
  });
  const mid = await waitFor(h, (p) => p.phase === 'backfill' && p.checkpointPage > 20, 'backfill progress');
  await db.pool.query(`VACUUM FULL public.replicated`); // a new file: rows on other pages than the checkpoint knew
  const gate = await waitFor(h, (p) => p.awaitingApproval, 'approval gate', 180_000);
  expect(gate.verify?.ok).toBe(true);
  expect(gate.rowsCopied).toBeGreaterThan(mid.rowsCopied);
  const run = await db.pool.query(`SELECT rewrites FROM partflow.runs WHERE table_name = 'replicated'`);
  expect(run.rows[0].rewrites).toBe(1);
  await sleep(800); // replica-role writes at the gate
  await h.signal('approveCutover');
  await waitFor(h, (p) => p.phase === 'rollback-window', 'cut-over');
  await sleep(1500); // replica-role writes reach the old table through the reverse trigger
  await h.signal('rollback');
  expect((await h.result()).status).toBe('rolled-back');
  const stats = await w.stop();
  expectNoErrors(stats);
  expect(await relkind('public.replicated')).toBe('r');
  await expectMatches(t, w);
  expect(await partflowLeftovers()).toEqual([]);
});

test('TRUNCATE during the backfill and during the rollback window is mirrored', async () => {
  const t = await createTable(db.pool, { schema: 'public', name: 'truncated' }, 8_000, 'bigserial');
  const w = writer(t);
  await w.start();
  const h = await start({ table: 'truncated', batchSize: 50, sleepMs: 100, approval: 'auto', rollbackWindow: '1h' });
  await waitFor(h, (p) => p.phase === 'backfill' && p.checkpointPage > 10, 'backfill progress');
  await w.hold();
  await db.pool.query(`TRUNCATE public.truncated`);
  w.truncated();
  await w.release();
  await waitFor(h, (p) => p.phase === 'rollback-window', 'cut-over', 180_000);
  await sleep(800);
  await w.hold();
  await db.pool.query(`TRUNCATE public.truncated`); // the partitioned table now; the old one follows
  w.truncated();
  await w.release();
  await sleep(1200);
  await h.signal('rollback');
  expect((await h.result()).status).toBe('rolled-back');
  const stats = await w.stop();
  expectNoErrors(stats);
  expect(stats.inserts).toBeGreaterThan(10);
  await expectMatches(t, w);
});

test('a sync trigger disabled and enabled again at the gate: the cut-over refuses and the run rolls back', async () => {
  const t = await createTable(db.pool, { schema: 'public', name: 'bypassed' }, 3_000, 'uuid');
  const before = await catalogSnapshot(db.pool, ['public']);
  const h = await start({ table: 'bypassed', approval: 'signal', rollbackWindow: '0s' });
  await waitFor(h, (p) => p.awaitingApproval, 'approval gate');
  // pg_restore --disable-triggers does this: the rows written meanwhile never reach the copy
  await db.pool.query(`ALTER TABLE public.bypassed DISABLE TRIGGER ALL`);
  await db.pool.query(`INSERT INTO public.bypassed (payload) VALUES ('restored while triggers were off')`);
  await db.pool.query(`ALTER TABLE public.bypassed ENABLE ALWAYS TRIGGER partflow_sync_fwd`);
  await db.pool.query(`ALTER TABLE public.bypassed ENABLE ALWAYS TRIGGER partflow_sync_fwd_truncate`);
  await h.signal('approveCutover');
  const err = await h.result().then(
    () => null,
    (e: WorkflowFailedError) => e,
  );
  expect(err?.cause?.message).toMatch(
    /partflow's sync triggers on public\.bypassed were disabled, dropped or altered during the run .*not cutting over/,
  );
  expect(await relkind('public.bypassed')).toBe('r');
  expect((await db.pool.query(`SELECT count(*)::int AS n FROM public.bypassed`)).rows[0].n).toBe(3_001);
  expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);
  void t;
});

test('schema changes during the run: writes never fail, a column drop is blocked, the cut-over refuses and rolls back', async () => {
  const t = await createTable(db.pool, { schema: 'public', name: 'migrating' }, 8_000, 'uuid');
  const w = writer(t);
  await w.start();
  const h = await start({ table: 'migrating', batchSize: 50, sleepMs: 100, approval: 'signal', rollbackWindow: '0s' });
  await waitFor(h, (p) => p.phase === 'backfill' && p.checkpointPage > 5, 'backfill progress');
  // a deploy's migration in the middle of the backfill
  await db.pool.query(`ALTER TABLE public.migrating ADD COLUMN extra integer`);
  await db.pool.query(`ALTER TABLE public.migrating RENAME COLUMN status TO state`);
  await expect(db.pool.query(`ALTER TABLE public.migrating DROP COLUMN n`)).rejects.toThrow(
    /cannot drop column n of table migrating because other objects depend on it/,
  );
  await expect(db.pool.query(`ALTER TABLE public.migrating ALTER COLUMN payload TYPE varchar(100)`)).rejects.toThrow(
    /used by a view/,
  );
  await waitFor(h, (p) => p.awaitingApproval, 'approval gate', 180_000);
  await h.signal('approveCutover');
  const err = await h.result().then(
    () => null,
    (e: WorkflowFailedError) => e,
  );
  expect(err?.cause?.message).toMatch(
    /Table public\.migrating changed after the plan was made \(.*"?status"? text NOT NULL is gone.*extra integer is new.*\).*not cutting over/,
  );
  const stats = await w.stop();
  expectNoErrors(stats);
  expect(await relkind('public.migrating')).toBe('r');
  expect(await partflowLeftovers()).toEqual([]);
  // undo the deploy's change so that rows compare with what the writers recorded before it
  await db.pool.query(`ALTER TABLE public.migrating DROP COLUMN extra`);
  await db.pool.query(`ALTER TABLE public.migrating RENAME COLUMN state TO status`);
  // rows the writers recorded after the change carry the changed columns (row_to_json): map them back the same way
  undoInRecord(w, { extra: null, state: 'status' });
  await expectMatches(t, w);
});

test('a column added during the rollback window: rollback is refused with the reason until it is undone', async () => {
  const t = await createTable(db.pool, { schema: 'public', name: 'windowed' }, 3_000, 'uuid');
  const w = writer(t);
  await w.start();
  const h = await start({ table: 'windowed', approval: 'auto', rollbackWindow: '1h' });
  await waitFor(h, (p) => p.phase === 'rollback-window', 'cut-over');
  await db.pool.query(`ALTER TABLE public.windowed ADD COLUMN note text`);
  await h.signal('rollback');
  const refused = await waitFor(h, (p) => p.lastError !== null, 'rollback refused');
  expect(refused.phase).toBe('rollback-window');
  expect(refused.lastError).toMatch(
    /Rolling back public\.windowed now would lose what changed on it since the cut-over \(column note text is new\).*undo that change and signal rollback again, or finalize/,
  );
  await db.pool.query(`ALTER TABLE public.windowed DROP COLUMN note`);
  await h.signal('rollback');
  expect((await h.result()).status).toBe('rolled-back');
  const stats = await w.stop();
  expectNoErrors(stats);
  expect(await relkind('public.windowed')).toBe('r');
  undoInRecord(w, { note: null }); // rows recorded while the column existed
  await expectMatches(t, w);
});

test('unique constraints without the partition key: refused by default, given up only when named, listed in the plan', async () => {
  await db.pool
    .query(`CREATE TABLE public.members (id bigserial PRIMARY KEY, email text NOT NULL CONSTRAINT members_email_key UNIQUE,
    room int NOT NULL DEFAULT 0, created_at timestamptz NOT NULL DEFAULT now(), CONSTRAINT members_room_excl EXCLUDE USING btree (room WITH =) WHERE (room > 1000))`);
  await db.pool.query(
    `INSERT INTO public.members (email, created_at) SELECT 'u' || g || '@example.com', now() - g * interval '1 day' FROM generate_series(1, 300) g`,
  );
  await expectRefused(
    { table: 'members' },
    /members_email_key \(unique without created_at\), members_room_excl \(exclusion constraint\), which a table partitioned by created_at cannot enforce across partitions; .*"acceptLostConstraints"/,
  );
  const dry = await (
    await start({ table: 'members', dryRun: true, acceptLostConstraints: ['members_email_key', 'members_room_excl'] })
  ).result();
  expect(dry.plan.givenUp.join(' ')).toMatch(/Unique constraint members_email_key becomes a plain index/);
  expect(dry.plan.givenUp.join(' ')).toMatch(/Exclusion constraint members_room_excl .* is dropped/);
  expect(dry.plan.warnings.join(' ')).toMatch(
    /ON CONFLICT \(id\) fail after the cut-over .*ON CONFLICT \(id, created_at\)/,
  );
  const done = await (
    await start({
      table: 'members',
      approval: 'auto',
      rollbackWindow: '0s',
      acceptLostConstraints: ['members_email_key', 'members_room_excl'],
    })
  ).result();
  expect(done.status).toBe('done');
  // exactly what the plan said was given up: the e-mail is no longer unique
  await db.pool.query(`INSERT INTO public.members (email) VALUES ('u1@example.com')`);
  expect(
    (await db.pool.query(`SELECT count(*)::int AS n FROM public.members WHERE email = 'u1@example.com'`)).rows[0].n,
  ).toBe(2);
});

test('outliers (-infinity, infinity, a 1900 sentinel, 9999) go to the default partition; partitions cover the real data', async () => {
  const t = await createTable(db.pool, { schema: 'public', name: 'sentinels' }, 5_000, 'uuid');
  const sentinels = await db.pool.query(
    `INSERT INTO public.sentinels (payload, created_at) VALUES ('minus', '-infinity'), ('plus', 'infinity'), ('old', '1900-01-01'), ('far', '9999-12-15') RETURNING id`,
  );
  const w = writer(t);
  await w.start();
  const h = await start({ table: 'sentinels', batchSize: 500, approval: 'auto', rollbackWindow: '0s' });
  const p = await waitFor(h, (x) => x.phase === 'backfill' || x.phase === 'done' || x.rowsCopied > 0, 'plan');
  const result = await h.result();
  const stats = await w.stop();
  expect(result.status).toBe('done');
  expectNoErrors(stats);
  await expectMatches(t, w);
  expect(p.warnings.join(' ')).toMatch(/4 row\(s\) of public\.sentinels fall outside the monthly partitions/);
  expect(p.partitions).toBeLessThan(25); // 15 months of data + 3 ahead + default, not 1,500 years
  // the writer's lanes load every row, the sentinels too, and may update (payload) or delete them: each sentinel
  // still there (by its id) is in the default partition
  const ids = sentinels.rows.map((r) => r.id);
  const left = await db.pool.query(
    `SELECT id, tableoid::regclass::text AS part FROM public.sentinels WHERE id = ANY($1::uuid[])`,
    [ids],
  );
  expect(left.rowCount).toBeGreaterThan(0);
  expect([...new Set(left.rows.map((r) => r.part))]).toEqual(['sentinels_default']);
});

test('a generated column, virtual by default on PostgreSQL 18 and STORED before: carried as it is, computed under writers', async () => {
  const t = await createTable(db.pool, { schema: 'public', name: 'generated' }, 5_000, 'uuid');
  const virtual = (await serverVersionNum(db.pool)) >= 180000;
  // the same DDL on every version: 18 makes it virtual, 13 to 17 need STORED
  await db.pool.query(
    `ALTER TABLE public.generated ADD COLUMN payload_len int GENERATED ALWAYS AS (length(payload))${virtual ? '' : ' STORED'}`,
  );
  const kind = async (table: string) =>
    (
      await db.pool.query(
        `SELECT attgenerated::text AS g FROM pg_attribute WHERE attrelid = $1::regclass AND attname = 'payload_len'`,
        [table],
      )
    ).rows[0]?.g;
  expect(await kind('public.generated')).toBe(virtual ? 'v' : 's');
  const w = writer(t);
  await w.start();
  const h = await start({ table: 'generated', batchSize: 500, sleepMs: 10, approval: 'auto', rollbackWindow: '0s' });
  const result = await h.result();
  const stats = await w.stop();
  expect(result.status).toBe('done');
  expectNoErrors(stats);
  await expectMatches(t, w);
  expect(await relkind('public.generated')).toBe('p');
  expect(await kind('public.generated')).toBe(virtual ? 'v' : 's');
  const wrong = await db.pool.query(
    `SELECT count(*)::int AS n FROM public.generated WHERE payload_len IS DISTINCT FROM length(payload)`,
  );
  expect(wrong.rows[0].n).toBe(0);
});

test('a long history: refused above 120 monthly partitions, startMonth keeps everything older in one partition', async () => {
  await db.pool.query(
    `CREATE TABLE public.ledger (id bigserial PRIMARY KEY, created_at date NOT NULL, amount int NOT NULL)`,
  );
  await db.pool.query(
    `INSERT INTO public.ledger (created_at, amount) SELECT current_date - g * 7, g FROM generate_series(0, 52 * 15) g`,
  );
  await expectRefused(
    { table: 'ledger', column: 'created_at' },
    /span 1\d\d months from \d{4}-\d{2}, more than 120 monthly partitions; set "startMonth"/,
  );
  const startMonth = (await db.pool.query(`SELECT to_char(current_date - interval '2 years', 'YYYY-MM') AS m`)).rows[0]
    .m;
  const result = await (await start({ table: 'ledger', startMonth, approval: 'auto', rollbackWindow: '0s' })).result();
  expect(result.status).toBe('done');
  const parts = await db.pool.query(
    `SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'public.ledger'::regclass ORDER BY 1`,
  );
  expect(parts.rowCount).toBe(1 + 24 + 1 + 3 + 1); // older, 24 months, the current one, 3 ahead, default
  expect(parts.rows.find((r) => r.relname === 'ledger_older')?.bound).toMatch(
    new RegExp(`TO \\('${startMonth}-01'\\)`),
  );
  expect((await db.pool.query(`SELECT count(*)::int AS n FROM public.ledger`)).rows[0].n).toBe(52 * 15 + 1);
  expect((await db.pool.query(`SELECT count(*)::int AS n FROM public.ledger_default`)).rows[0].n).toBe(0);
});

test('settings LIKE does not copy are carried over: storage parameters, replica identity, statistics, comments, UNLOGGED; every partition is analyzed, one statement each (the parent is not: its sample of every partition holds one snapshot)', async () => {
  await db.pool
    .query(`CREATE TABLE public.tuned (id bigint PRIMARY KEY, created_at timestamptz NOT NULL, body text, CONSTRAINT tuned_body_ts UNIQUE (body, created_at))
                       WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.01, toast.autovacuum_enabled = false)`);
  await db.pool.query(`ALTER TABLE public.tuned REPLICA IDENTITY FULL`);
  await db.pool.query(`ALTER TABLE public.tuned ALTER COLUMN body SET STATISTICS 800`);
  await db.pool.query(`CREATE INDEX tuned_body ON public.tuned (body)`);
  await db.pool.query(`COMMENT ON INDEX public.tuned_body IS 'for lookups'`);
  await db.pool.query(`COMMENT ON CONSTRAINT tuned_pkey ON public.tuned IS 'the key'`);
  await db.pool.query(`COMMENT ON CONSTRAINT tuned_body_ts ON public.tuned IS 'one per instant'`);
  await db.pool.query(
    `INSERT INTO public.tuned SELECT g, now() - g * interval '1 day', md5(g::text) FROM generate_series(1, 400) g`,
  );
  await db.pool.query(
    `CREATE UNLOGGED TABLE public.scratchpad (id int PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now())`,
  );
  await db.pool.query(`INSERT INTO public.scratchpad SELECT g FROM generate_series(1, 50) g`);
  expect((await (await start({ table: 'tuned', approval: 'auto', rollbackWindow: '0s' })).result()).status).toBe(
    'done',
  );
  expect((await (await start({ table: 'scratchpad', approval: 'auto', rollbackWindow: '0s' })).result()).status).toBe(
    'done',
  );
  const parts = await db.pool.query(
    `SELECT c.relname, c.reloptions, c.relreplident, (SELECT attstattarget FROM pg_attribute WHERE attrelid = c.oid AND attname = 'body') AS stats,
            (SELECT reloptions FROM pg_class t WHERE t.oid = c.reltoastrelid) AS toast
       FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'public.tuned'::regclass`,
  );
  expect(parts.rowCount).toBeGreaterThan(10);
  for (const r of parts.rows) {
    expect({ name: r.relname, opts: r.reloptions, ri: r.relreplident, stats: r.stats, toast: r.toast }).toEqual({
      name: r.relname,
      opts: ['fillfactor=70', 'autovacuum_vacuum_scale_factor=0.01'],
      ri: 'f',
      stats: 800,
      toast: ['autovacuum_enabled=false'],
    });
  }
  const cat = await db.pool.query(
    `SELECT (SELECT relreplident FROM pg_class WHERE oid = 'public.tuned'::regclass) AS parent_ri,
            obj_description('public.tuned_body'::regclass, 'pg_class') AS idx_comment,
            (SELECT obj_description(oid, 'pg_constraint') FROM pg_constraint WHERE conrelid = 'public.tuned'::regclass AND conname = 'tuned_pkey') AS pk_comment,
            (SELECT obj_description(oid, 'pg_constraint') || ' ' || contype::text FROM pg_constraint WHERE conrelid = 'public.tuned'::regclass AND conname = 'tuned_body_ts') AS uq,
            (SELECT count(*)::int FROM pg_statistic WHERE starelid = 'public.tuned'::regclass AND stainherit) > 0 AS parent_analyzed,
            (SELECT bool_and(s.last_analyze IS NOT NULL) FROM pg_inherits i JOIN pg_stat_user_tables s ON s.relid = i.inhrelid
              WHERE i.inhparent = 'public.tuned'::regclass) AS partitions_analyzed,
            (SELECT array_agg(DISTINCT c.relpersistence::text) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'public.scratchpad'::regclass) AS unlogged`,
  );
  expect(cat.rows[0]).toEqual({
    parent_ri: 'f',
    idx_comment: 'for lookups',
    pk_comment: 'the key',
    uq: 'one per instant u',
    parent_analyzed: false,
    partitions_analyzed: true,
    unlogged: ['u'],
  });
});

describe('structures partflow refuses, with the reason and the way forward, changing nothing', () => {
  beforeAll(async () => {
    const q = (sql: string) => db.pool.query(sql);
    await q(`CREATE TABLE public.inh_parent (id int PRIMARY KEY, created_at timestamptz NOT NULL)`);
    await q(`CREATE TABLE public.inh_child (extra int) INHERITS (public.inh_parent)`);
    await q(`ALTER TABLE public.inh_child ADD PRIMARY KEY (id)`);
    await q(
      `CREATE TABLE public.events (id int, created_at timestamptz NOT NULL, PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)`,
    );
    await q(
      `CREATE TABLE public.events_2020 PARTITION OF public.events FOR VALUES FROM ('2020-01-01') TO ('2021-01-01')`,
    );
    await q(`CREATE TABLE public.atomic_t (id int PRIMARY KEY, created_at timestamptz NOT NULL)`);
    await q(
      `CREATE FUNCTION public.count_atomic() RETURNS bigint LANGUAGE sql BEGIN ATOMIC SELECT count(*) FROM public.atomic_t; END`,
    );
    await q(`CREATE TABLE public.policed (id int PRIMARY KEY, created_at timestamptz NOT NULL)`);
    await q(`CREATE TABLE public.guarded (id int PRIMARY KEY, owner_id int)`);
    await q(
      `CREATE POLICY see_own ON public.guarded USING (EXISTS (SELECT 1 FROM public.policed p WHERE p.id = owner_id))`,
    );
    await q(`CREATE TABLE public.typed (id int PRIMARY KEY, created_at timestamptz NOT NULL)`);
    await q(`CREATE TABLE public.snapshots (id int PRIMARY KEY, row_copy public.typed)`);
    await q(
      `CREATE TABLE public.gen_col (id int PRIMARY KEY, ts timestamptz NOT NULL, created_at timestamp GENERATED ALWAYS AS (ts AT TIME ZONE 'UTC') STORED)`,
    );
    await q(
      `CREATE TABLE public.deferred (id int PRIMARY KEY DEFERRABLE INITIALLY IMMEDIATE, created_at timestamptz NOT NULL)`,
    );
    await q(`CREATE TABLE public.broken_idx (id int PRIMARY KEY, created_at timestamptz NOT NULL, code int)`);
    await q(`INSERT INTO public.broken_idx VALUES (1, now(), 7), (2, now(), 7)`);
    await q(`CREATE UNIQUE INDEX CONCURRENTLY broken_code ON public.broken_idx (code)`).catch(() => undefined); // leaves an INVALID index
    await q(`CREATE TABLE public.included (id int PRIMARY KEY, created_at timestamptz NOT NULL, code int)`);
    await q(`CREATE UNIQUE INDEX included_code ON public.included (code) INCLUDE (created_at)`);
  });

  it.each<[string, PartitionTableInput, RegExp]>([
    ['an inheritance parent', { table: 'inh_parent' }, /has inheritance children \(inh_child\).*NO INHERIT/],
    ['an inheritance child', { table: 'inh_child' }, /inherits from inh_parent \(table inheritance\)/],
    ['a partition', { table: 'events_2020' }, /is itself a partition of events/],
    [
      'a BEGIN ATOMIC function body',
      { table: 'atomic_t' },
      /function count_atomic\(\) is bound to public\.atomic_t by OID .*drop it first and recreate it afterwards/,
    ],
    [
      "another table's policy",
      { table: 'policed' },
      /policy see_own on table guarded is bound to public\.policed by OID/,
    ],
    [
      "a column of the table's row type",
      { table: 'typed' },
      /column row_copy of table snapshots is bound to public\.typed by OID/,
    ],
    ['a generated partition column', { table: 'gen_col' }, /Column "created_at" of public\.gen_col is GENERATED/],
    [
      'a DEFERRABLE primary key',
      { table: 'deferred' },
      /deferred_pkey of public\.deferred are DEFERRABLE.*NOT DEFERRABLE first/,
    ],
    ['an INVALID index', { table: 'broken_idx' }, /broken_code of public\.broken_idx are INVALID/],
    [
      'a unique index with the partition column only in INCLUDE',
      { table: 'included' },
      /included_code \(unique without created_at in its key, only in INCLUDE\)/,
    ],
  ])('%s', async (_label, input, message) => {
    await expectRefused(input, message);
  });

  it('a publication FOR ALL TABLES or FOR TABLES IN SCHEMA', async () => {
    await db.pool.query(`CREATE TABLE public.published (id int PRIMARY KEY, created_at timestamptz NOT NULL)`);
    await db.pool.query(`CREATE PUBLICATION pf_everything FOR ALL TABLES`);
    try {
      await expectRefused(
        { table: 'published' },
        /Publication\(s\) pf_everything publish every table of "public" or of the database/,
      );
    } finally {
      await db.pool.query(`DROP PUBLICATION pf_everything`);
    }
    await db.pool.query(`CREATE PUBLICATION pf_schema FOR TABLES IN SCHEMA public`);
    try {
      await expectRefused({ table: 'published' }, /Publication\(s\) pf_schema publish every table/);
    } finally {
      await db.pool.query(`DROP PUBLICATION pf_schema`);
    }
  });
});
