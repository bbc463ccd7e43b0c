/**
 * Issue 29: what real tables carry, carried instead of refused; and (item 6) the application's statements that
 * partitioning breaks, found in pg_stat_statements and refused by name. Item 1: the table's own triggers, each
 * application write firing them once through the copy, the cut-over, the rollback window and a rollback; what
 * PostgreSQL does not accept on a partitioned table refused before anything changes. Item 2: the views that read
 * the table read the new one after the cut-over and the old one after a rollback, with their options, owners,
 * grants and comments.
 */
import { WorkflowFailedError, WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { PartitionTableInput } from '../../src/input';
import type { Client, PoolClient } from 'pg';
import { catalogSnapshot, TestDb, withClient } from '../helpers/pg';
import { startStack, Stack } from '../helpers/stack';
import { sleep, waitFor } from '../helpers/workflow';

const TQ = 'partflow-carried';
let stack: Stack;
let env: TestWorkflowEnvironment;
let db: TestDb;
let seq = 0;

beforeAll(async () => {
  stack = await startStack('carried', TQ);
  ({ env, db } = stack);
});

afterAll(async () => {
  await stack?.teardown();
});

const stops: (() => Promise<void>)[] = [];
afterEach(async () => {
  // a failed test must not leave writers running into the next one
  for (const stop of stops.splice(0)) await stop().catch(() => undefined);
});

function start(input: PartitionTableInput): Promise<WorkflowHandle> {
  return env.client.workflow.start('partitionTable', {
    taskQueue: TQ,
    workflowId: `carried-${++seq}-${Date.now()}`,
    args: [input],
  });
}

/** The table's triggers as PostgreSQL shows them, the table's name left out: what must be the same. */
async function triggersOf(table: string): Promise<string[]> {
  const r = await db.pool.query(
    `SELECT t.tgname || ' ' || t.tgenabled::text || ' ' || replace(pg_get_triggerdef(t.oid), ' ON ' || t.tgrelid::regclass::text || ' ', ' ON _ ')
            || ' ' || coalesce(obj_description(t.oid, 'pg_trigger'), '-') AS x
       FROM pg_trigger t WHERE t.tgrelid = $1::regclass AND NOT t.tgisinternal
        AND t.tgname NOT IN ('partflow_sync_fwd', 'partflow_sync_rev', 'partflow_sync_fwd_truncate', 'partflow_sync_rev_truncate',
                            'partflow_snapshot_guard')
      ORDER BY 1`,
    [table],
  );
  return r.rows.map((x) => x.x);
}

interface Op {
  kind: 'INSERT' | 'UPDATE' | 'DELETE';
  id: number;
  op: string;
  move?: boolean;
}

/** Writers inserting, updating (also the month), deleting; each write names itself in `op`; the record of commits. */
function writer(ids: number[]) {
  const ops: Op[] = [];
  let n = 0;
  let running = true;
  let serializationFailures = 0;
  // each lane on its own rows (id % 3): two lanes never write one row, so each lane's record of what it committed,
  // in order, is the truth for its rows (CI of 558d41e: two lanes updated id 1028 at once, the later commit's
  // reply reached the test first, and the record named the earlier one the last)
  const live = new Set(ids);
  const lane = async (lane: number) => {
    while (running) {
      const op = `w${lane}-${++n}`;
      const mine = [...live].filter((id) => id % 3 === lane % 3);
      const pick = mine[Math.floor(Math.random() * mine.length)];
      try {
        const r = Math.random();
        if (r < 0.3 || pick === undefined) {
          const x = await db.pool.query(
            `INSERT INTO tg (payload, op, created_at) VALUES ($1, $1, now() - random() * interval '60 days') RETURNING id`,
            [op],
          );
          live.add(Number(x.rows[0].id)); // another lane's row if id % 3 says so: only this insert is this lane's
          ops.push({ kind: 'INSERT', id: Number(x.rows[0].id), op });
        } else if (r < 0.6) {
          const x = await db.pool.query(`UPDATE tg SET payload = $1, op = $1 WHERE id = $2 RETURNING id`, [op, pick]);
          if (x.rowCount) ops.push({ kind: 'UPDATE', id: pick, op });
        } else if (r < 0.8) {
          const x = await db.pool.query(
            `UPDATE tg SET created_at = created_at - interval '32 days', op = $1 WHERE id = $2 RETURNING id`,
            [op, pick],
          );
          if (x.rowCount) ops.push({ kind: 'UPDATE', id: pick, op, move: true });
        } else {
          live.delete(pick);
          const x = await db.pool.query(`DELETE FROM tg WHERE id = $1 RETURNING op`, [pick]);
          if (x.rowCount) ops.push({ kind: 'DELETE', id: pick, op: x.rows[0].op });
        }
      } catch (err) {
        // an application's 40001 (a row moved to another month while updated: the plan warns of it) had no effect;
        // an application retries, these lanes go on
        if ((err as { code?: string }).code !== '40001') throw err;
        serializationFailures++;
      }
      await sleep(10);
    }
  };
  const lanes = [1, 2, 3].map(lane);
  const stop = async () => {
    running = false;
    await Promise.all(lanes);
  };
  stops.push(stop);
  return { ops, stop, serializationFailures: () => serializationFailures };
}

/** The views as the application sees them, and the kind of table each one reads directly. */
async function viewsState(): Promise<string[]> {
  const r = await db.pool.query(
    `SELECT c.relname || ' ' || c.relkind::text || ' ' || coalesce(array_to_string(c.reloptions, ','), '-') || ' ' ||
            pg_get_userbyid(c.relowner) || ' ' || coalesce(c.relacl::text, '-') || ' ' ||
            coalesce(obj_description(c.oid, 'pg_class'), '-') || ' ' || pg_get_viewdef(c.oid) AS x
       FROM pg_class c WHERE c.relname LIKE 'tv\\_v%' ORDER BY 1`,
  );
  return r.rows.map((x) => x.x);
}

async function readsKind(view: string): Promise<string[]> {
  const r = await db.pool.query(
    `SELECT DISTINCT t.relname || ':' || t.relkind::text AS x FROM pg_rewrite w JOIN pg_depend d ON d.objid = w.oid
       JOIN pg_class t ON t.oid = d.refobjid
      WHERE w.ev_class = $1::regclass AND d.classid = 'pg_rewrite'::regclass AND t.oid <> w.ev_class ORDER BY 1`,
    [view],
  );
  return r.rows.map((x) => x.x);
}

// first in this file: on a fresh database partflow's schema does not exist yet at preflight (views were once
// missed then: a NULL schema OID excluded every view)
test('views read the new table after the cut-over and the old one after a rollback, with their options, owners and grants', async () => {
  await db.pool.query(`DO $$ BEGIN CREATE ROLE pf_view_owner; EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
  await db.pool.query(`DO $$ BEGIN CREATE ROLE pf_view_reader; EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
  await db.pool.query(
    `CREATE TABLE tv (id bigserial PRIMARY KEY, tenant text NOT NULL, payload text, created_at timestamptz NOT NULL)`,
  );
  await db.pool.query(
    `INSERT INTO tv (tenant, payload, created_at) SELECT CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END, 'p' || g,
       now() - (g % 50) * interval '1 day' FROM generate_series(1, 3000) g`,
  );
  await db.pool.query(`GRANT SELECT ON tv TO pf_view_owner`);
  await db.pool.query(
    `CREATE VIEW tv_v_recent WITH (security_barrier) AS
       SELECT id, payload, created_at FROM tv WHERE created_at > now() - interval '30 days'`,
  );
  await db.pool.query(`ALTER VIEW tv_v_recent OWNER TO pf_view_owner`);
  await db.pool.query(`GRANT SELECT ON tv_v_recent TO pf_view_reader`);
  await db.pool.query(`COMMENT ON VIEW tv_v_recent IS 'the last 30 days'`);
  await db.pool.query(
    `CREATE VIEW tv_v_tenant AS SELECT id, tenant, payload, created_at FROM tv WHERE tenant = 'a' WITH CASCADED CHECK OPTION`,
  );
  await db.pool.query(`CREATE VIEW tv_v_invoker WITH (security_invoker = true) AS SELECT count(*) AS n FROM tv`);
  await db.pool.query(`CREATE VIEW tv_v_top AS SELECT id FROM tv_v_recent ORDER BY created_at DESC LIMIT 10`);
  const views = await viewsState();

  // writers through the table and through the auto-updatable view with its check option
  let running = true;
  let written = 0;
  let refusedByCheck = 0;
  const write = (async () => {
    while (running) {
      await db.pool.query(`INSERT INTO tv_v_tenant (tenant, payload, created_at) VALUES ('a', 'view', now())`);
      await db.pool.query(`INSERT INTO tv (tenant, payload, created_at) VALUES ('b', 'table', now())`);
      await db.pool
        .query(`INSERT INTO tv_v_tenant (tenant, payload, created_at) VALUES ('b', 'x', now())`)
        .catch((e: { code?: string }) => {
          if (e.code !== '44000') throw e;
          refusedByCheck++;
        });
      written += 2;
      await sleep(20);
    }
  })();
  stops.push(async () => {
    running = false;
    await write;
  });
  const h = await start({ table: 'tv', batchSize: 1000, approval: 'signal', rollbackWindow: '1h', reverifyEvery: '0' });
  await waitFor(h, (p) => p.phase === 'awaiting-approval', 'verified', 180_000);
  expect(await readsKind('tv_v_recent')).toEqual(['tv:r']);
  await h.signal('approveCutover');
  await waitFor(h, (p) => p.phase === 'rollback-window', 'cut over', 120_000);
  // the views read the new (partitioned) table, defined and owned as before; the one on a view follows
  expect(await readsKind('tv_v_recent')).toEqual(['tv:p']);
  expect(await readsKind('tv_v_tenant')).toEqual(['tv:p']);
  expect(await readsKind('tv_v_invoker')).toEqual(['tv:p']);
  expect(await viewsState()).toEqual(views);
  const through = async () =>
    (
      await db.pool.query(
        `SELECT (SELECT n FROM tv_v_invoker)::int AS v, (SELECT count(*) FROM tv)::int AS t,
                (SELECT count(*) FROM tv_v_tenant)::int AS va, (SELECT count(*) FROM tv WHERE tenant = 'a')::int AS ta`,
      )
    ).rows[0];
  const inWindow = await through();
  expect(inWindow.v).toBe(inWindow.t);
  expect(inWindow.va).toBe(inWindow.ta);
  await sleep(1500);
  await h.signal('rollback');
  await h.result();
  running = false;
  await write;
  expect(await readsKind('tv_v_recent')).toEqual(['tv:r']);
  expect(await readsKind('tv_v_tenant')).toEqual(['tv:r']);
  expect(await viewsState()).toEqual(views);
  const after = await through();
  expect(after.v).toBe(after.t);
  expect(after.t).toBe(3000 + written);
  expect(refusedByCheck).toBeGreaterThan(0);
});

test('a materialized view is refused with the reason; a view changed during the run refuses the cut-over', async () => {
  await db.pool.query(`CREATE TABLE tm (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL)`);
  await db.pool.query(`INSERT INTO tm (created_at) SELECT now() - g * interval '1 day' FROM generate_series(1, 200) g`);
  await db.pool.query(
    `CREATE MATERIALIZED VIEW tm_daily AS SELECT date_trunc('day', created_at) AS d, count(*) FROM tm GROUP BY 1`,
  );
  const before = await catalogSnapshot(db.pool, ['public']);
  const err = await (await start({ table: 'tm' })).result().catch((e: unknown) => e);
  expect((err as WorkflowFailedError).cause?.message).toMatch(
    /Materialized view\(s\) public\.tm_daily read public\.tm: after the swap a REFRESH would read the old table/,
  );
  expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);
  await db.pool.query(`DROP MATERIALIZED VIEW tm_daily`);
  await db.pool.query(`CREATE VIEW tm_v AS SELECT id FROM tm`);
  const h = await start({ table: 'tm', approval: 'signal', rollbackWindow: '1h', reverifyEvery: '0' });
  await waitFor(h, (p) => p.phase === 'awaiting-approval', 'verified', 120_000);
  await db.pool.query(`CREATE OR REPLACE VIEW tm_v AS SELECT id, created_at FROM tm`);
  await h.signal('approveCutover');
  const refused = await h.result().catch((e: unknown) => e);
  expect((refused as WorkflowFailedError).cause?.message).toMatch(
    /The views that read public\.tm changed after the plan was made \(view public\.tm_v changed or is gone; view public\.tm_v is new or changed\)/,
  );
  expect(await readsKind('tm_v')).toEqual(['tm:r']);
});

/** As a logging-in role: what it sees of `tr_rls` and whether its writes are allowed. */
async function asRole<T>(role: string, fn: (c: Client) => Promise<T>): Promise<T> {
  return withClient({ ...db.conn, user: role }, fn);
}

async function seenBy(role: string): Promise<string[]> {
  return asRole(role, async (c) =>
    (await c.query(`SELECT id || ' ' || tenant || ' ' || payload AS x FROM tr_rls ORDER BY id`)).rows.map((r) => r.x),
  );
}

/** Each role's writes: its own tenant's insert and update allowed, the other tenant's refused by a policy. */
async function writesOf(role: string, other: string): Promise<string[]> {
  return asRole(role, async (c) => {
    const out: string[] = [];
    const tryIt = async (what: string, sql: string, args: unknown[]) => {
      try {
        const r = await c.query(sql, args);
        out.push(`${what} ${r.rowCount}`);
      } catch (e) {
        out.push(`${what} ${(e as { code?: string }).code}`);
      }
    };
    await tryIt('insert own', `INSERT INTO tr_rls (tenant, payload, created_at) VALUES ($1, 'w', now())`, [role]);
    await tryIt('insert other', `INSERT INTO tr_rls (tenant, payload, created_at) VALUES ($1, 'w', now())`, [other]);
    await tryIt('update other', `UPDATE tr_rls SET payload = 'x' WHERE tenant = $1`, [other]);
    await tryIt('update hidden', `UPDATE tr_rls SET payload = 'x' WHERE hidden`, []);
    return out;
  });
}

test('row-level security: every policy, ENABLE and FORCE carried; logging-in roles see and write exactly what they could', async () => {
  for (const r of ['pf_alice', 'pf_bob']) {
    await db.pool.query(`DO $$ BEGIN CREATE ROLE ${r} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
  }
  await db.pool.query(
    `CREATE TABLE tr_rls (id bigserial PRIMARY KEY, tenant text NOT NULL, payload text, hidden boolean NOT NULL DEFAULT false,
       created_at timestamptz NOT NULL)`,
  );
  await db.pool.query(
    `INSERT INTO tr_rls (tenant, payload, hidden, created_at) SELECT CASE WHEN g % 2 = 0 THEN 'pf_alice' ELSE 'pf_bob' END,
       'p' || g, g % 7 = 0, now() - (g % 40) * interval '1 day' FROM generate_series(1, 600) g`,
  );
  await db.pool.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON tr_rls TO pf_alice, pf_bob`);
  await db.pool.query(`GRANT USAGE ON SEQUENCE tr_rls_id_seq TO pf_alice, pf_bob`);
  await db.pool.query(`ALTER TABLE tr_rls ENABLE ROW LEVEL SECURITY`);
  await db.pool.query(`ALTER TABLE tr_rls FORCE ROW LEVEL SECURITY`);
  await db.pool.query(`CREATE POLICY own ON tr_rls FOR ALL TO pf_alice, pf_bob USING (tenant = current_user)`);
  await db.pool.query(
    `CREATE POLICY not_hidden ON tr_rls AS RESTRICTIVE FOR UPDATE TO PUBLIC USING (NOT hidden) WITH CHECK (NOT hidden)`,
  );
  await db.pool.query(
    `CREATE POLICY insert_own ON tr_rls FOR INSERT TO pf_alice, pf_bob WITH CHECK (tenant = current_user)`,
  );
  await db.pool.query(`COMMENT ON POLICY own ON tr_rls IS 'each tenant its own rows'`);
  const policies = async () =>
    (
      await db.pool.query(
        `SELECT p.policyname || ' ' || p.permissive || ' ' || p.roles::text || ' ' || p.cmd || ' ' || coalesce(p.qual, '-')
                || ' ' || coalesce(p.with_check, '-') || ' ' || coalesce(obj_description(o.oid, 'pg_policy'), '-') AS x
           FROM pg_policies p JOIN pg_policy o ON o.polname = p.policyname AND o.polrelid = 'tr_rls'::regclass
          WHERE p.tablename = 'tr_rls' ORDER BY 1`,
      )
    ).rows.map((r) => r.x);
  const flags = async () =>
    (
      await db.pool.query(
        `SELECT relkind::text, relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'tr_rls'::regclass`,
      )
    ).rows[0];
  const before = { policies: await policies(), alice: await seenBy('pf_alice'), bob: await seenBy('pf_bob') };
  expect(before.alice.length).toBe(300);
  const writesBefore = await writesOf('pf_alice', 'pf_bob');
  expect(writesBefore).toEqual(['insert own 1', 'insert other 42501', 'update other 0', 'update hidden 0']);

  const h = await start({
    table: 'tr_rls',
    batchSize: 200,
    approval: 'signal',
    rollbackWindow: '1h',
    reverifyEvery: '0',
  });
  await waitFor(h, (p) => p.phase === 'awaiting-approval', 'verified', 120_000);
  await h.signal('approveCutover');
  await waitFor(h, (p) => p.phase === 'rollback-window', 'cut over', 120_000);
  expect(await flags()).toEqual({ relkind: 'p', relrowsecurity: true, relforcerowsecurity: true });
  expect(await policies()).toEqual(before.policies);
  // each role sees exactly its rows (the insert above included) and writes exactly as before
  const alice = await seenBy('pf_alice');
  expect(alice.length).toBe(301);
  expect(await seenBy('pf_bob')).toEqual(before.bob);
  expect(await writesOf('pf_alice', 'pf_bob')).toEqual(writesBefore);
  // a partition named directly: no grant to other roles, so no way around the parent's policies
  const part = (
    await db.pool.query(`SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
      WHERE i.inhparent = 'tr_rls'::regclass ORDER BY 1 LIMIT 1`)
  ).rows[0].relname;
  await expect(asRole('pf_bob', (c) => c.query(`SELECT * FROM ${part}`))).rejects.toMatchObject({ code: '42501' });
  // a policy added in the window: the swap back would drop it, so the rollback is refused until it is gone
  await db.pool.query(`CREATE POLICY p_window ON tr_rls AS RESTRICTIVE TO pf_alice USING (tenant <> 'x')`);
  await h.signal('rollback');
  const refusedRollback = await waitFor(
    h,
    (p) => /would undo a change of its triggers or row-level security/.test(p.lastError ?? ''),
    'rollback refused',
    60_000,
  );
  expect(refusedRollback.lastError).toMatch(/policy p_window .* is new/);
  expect(refusedRollback.phase).toBe('rollback-window');
  await db.pool.query(`DROP POLICY p_window ON tr_rls`);
  await h.signal('rollback');
  await h.result();
  expect(await flags()).toEqual({ relkind: 'r', relrowsecurity: true, relforcerowsecurity: true });
  expect(await policies()).toEqual(before.policies);
  expect((await seenBy('pf_alice')).length).toBe(302);
  expect(await seenBy('pf_bob')).toEqual(before.bob);
});

test('a partflow role the policies apply to is refused before anything changes', async () => {
  await db.pool.query(`DO $$ BEGIN CREATE ROLE pf_runner LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
  await db.pool.query(`CREATE TABLE tr_forced (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL)`);
  await db.pool.query(
    `INSERT INTO tr_forced (created_at) SELECT now() - g * interval '1 day' FROM generate_series(1, 50) g`,
  );
  await db.pool.query(`ALTER TABLE tr_forced OWNER TO pf_runner`);
  await db.pool.query(`CREATE SCHEMA IF NOT EXISTS partflow`);
  await db.pool.query(`GRANT USAGE ON SCHEMA partflow TO pf_runner`);
  await db.pool.query(
    `DO $$ BEGIN IF to_regclass('partflow.runs') IS NOT NULL THEN GRANT SELECT ON partflow.runs TO pf_runner; END IF;
                IF to_regclass('partflow.fix_runs') IS NOT NULL THEN GRANT SELECT ON partflow.fix_runs TO pf_runner; END IF;
           END $$`,
  );
  await db.pool.query(`ALTER TABLE tr_forced ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY`);
  const { buildPlan } = await import('../../src/plan');
  const { readTableInfo } = await import('../../activities/runtime/inspect');
  const { validatePartitionInput } = await import('../../src/input');
  const opts = validatePartitionInput({ table: 'tr_forced' });
  const info = await asRole('pf_runner', async (c) => {
    await c.query('BEGIN READ ONLY');
    const i = await readTableInfo(c as unknown as PoolClient, opts, 'wf');
    await c.query('ROLLBACK');
    return { ...i, policies: [] };
  });
  expect(() => buildPlan(info, opts)).toThrow(
    /Table public\.tr_forced has row-level security forced on its owner and partflow runs as pf_runner, whom its policies apply to/,
  );
});

test('rules bound to the table and views reading it with ONLY are refused before anything changes', async () => {
  await db.pool.query(`CREATE TABLE tq (id bigserial PRIMARY KEY, v text, created_at timestamptz NOT NULL)`);
  await db.pool.query(
    `INSERT INTO tq (v, created_at) SELECT 'p', now() - g * interval '1 day' FROM generate_series(1, 50) g`,
  );
  const refusal = async () => {
    const err = await (await start({ table: 'tq' })).result().catch((e: unknown) => e);
    return (err as WorkflowFailedError).cause?.message ?? 'no refusal';
  };
  const before = await catalogSnapshot(db.pool, ['public']);
  // a view's INSERT rule that writes the table: it would keep writing the old one
  await db.pool.query(`CREATE VIEW tq_ins AS SELECT 1 AS x`);
  await db.pool.query(
    `CREATE RULE tq_ins_r AS ON INSERT TO tq_ins DO INSTEAD INSERT INTO tq (created_at, v) VALUES (now(), 'r')`,
  );
  expect(await refusal()).toMatch(/rule tq_ins_r on view tq_ins is bound to public\.tq by OID/);
  await db.pool.query(`DROP VIEW tq_ins`);
  // a rule of another table that writes it
  await db.pool.query(`CREATE TABLE tq_src (x int)`);
  await db.pool.query(
    `CREATE RULE tq_src_r AS ON INSERT TO tq_src DO ALSO INSERT INTO tq (created_at, v) VALUES (now(), 'a')`,
  );
  expect(await refusal()).toMatch(/rule tq_src_r on table tq_src is bound to public\.tq by OID/);
  await db.pool.query(`DROP TABLE tq_src`);
  // a view reading it with ONLY: no rows once it is partitioned
  await db.pool.query(`CREATE VIEW tq_only AS SELECT id FROM ONLY tq`);
  expect(await refusal()).toMatch(/View\(s\) public\.tq_only read public\.tq with ONLY/);
  await db.pool.query(`DROP VIEW tq_only`);
  expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);
});

test('triggers carried: each write fires them once through the cut-over, the rollback window and a rollback', async () => {
  await db.pool.query(
    `CREATE TABLE tg (id bigserial PRIMARY KEY, payload text, op text, version int NOT NULL DEFAULT 1,
       created_at timestamptz NOT NULL)`,
  );
  await db.pool.query(
    `INSERT INTO tg (payload, op, created_at) SELECT 'p' || g, 'init-' || g, now() - (g % 60) * interval '1 day'
       FROM generate_series(1, 4000) g`,
  );
  await db.pool.query(`CREATE TABLE tg_audit (n bigserial, tg_op text, id bigint, op text)`);
  await db.pool.query(`CREATE TABLE tg_statements (n bigserial)`);
  await db.pool.query(`CREATE FUNCTION tg_version() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN NEW.version := OLD.version + 1; RETURN NEW; END $$`);
  await db.pool.query(`CREATE FUNCTION tg_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
      INSERT INTO tg_audit (tg_op, id, op) VALUES (TG_OP, CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END,
        CASE WHEN TG_OP = 'DELETE' THEN OLD.op ELSE NEW.op END);
      RETURN NULL; END $$`);
  await db.pool.query(`CREATE FUNCTION tg_statement() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN INSERT INTO tg_statements DEFAULT VALUES; RETURN NULL; END $$`);
  await db.pool.query(`CREATE TRIGGER tg_version BEFORE UPDATE ON tg FOR EACH ROW EXECUTE FUNCTION tg_version()`);
  await db.pool.query(
    `CREATE TRIGGER tg_audit AFTER INSERT OR UPDATE OR DELETE ON tg FOR EACH ROW EXECUTE FUNCTION tg_audit()`,
  );
  await db.pool.query(`ALTER TABLE tg ENABLE ALWAYS TRIGGER tg_audit`);
  await db.pool.query(`COMMENT ON TRIGGER tg_audit ON tg IS 'every change, once'`);
  await db.pool.query(
    `CREATE TRIGGER tg_statement AFTER INSERT ON tg FOR EACH STATEMENT EXECUTE FUNCTION tg_statement()`,
  );
  // a trigger the application keeps disabled, with a WHEN and UPDATE OF: carried disabled
  await db.pool.query(
    `CREATE TRIGGER tg_off BEFORE UPDATE OF payload ON tg FOR EACH ROW WHEN (OLD.payload IS DISTINCT FROM NEW.payload)
       EXECUTE FUNCTION tg_version()`,
  );
  await db.pool.query(`ALTER TABLE tg DISABLE TRIGGER tg_off`);
  const triggers = await triggersOf('tg');

  // row triggers are refused until accepted, before anything changes
  const before = await catalogSnapshot(db.pool, ['public']);
  const refused = await (await start({ table: 'tg' })).result().catch((e: unknown) => e);
  expect((refused as WorkflowFailedError).cause?.message).toMatch(
    /Trigger tg_audit of public\.tg fires for each row, .* runs as a DELETE and an INSERT.*"acceptTriggerChanges": \["tg_audit"\]/,
  );
  expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);

  const w = writer(Array.from({ length: 4000 }, (_, i) => i + 1));
  const h = await start({
    table: 'tg',
    batchSize: 1000,
    sleepMs: 20,
    approval: 'signal',
    rollbackWindow: '1h',
    reverifyEvery: '0',
    acceptTriggerChanges: ['tg_audit', 'tg_version', 'tg_off'],
  });
  await waitFor(h, (p) => p.phase === 'awaiting-approval', 'verified', 180_000);
  await h.signal('approveCutover');
  await waitFor(h, (p) => p.phase === 'rollback-window', 'cut over', 120_000);
  // the new table has the triggers, as they were; the old one has them disabled
  expect((await db.pool.query(`SELECT relkind FROM pg_class WHERE oid = 'tg'::regclass`)).rows[0].relkind).toBe('p');
  expect(await triggersOf('tg')).toEqual(triggers);
  const old = await db.pool.query(
    `SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'tg_old'::regclass AND NOT tgisinternal
        AND tgname NOT LIKE 'partflow\\_%' ORDER BY 1`,
  );

  await sleep(3000); // writes on the new table, applied to the old one by partflow
  await h.signal('rollback');
  await h.result();
  await w.stop();
  expect((await db.pool.query(`SELECT relkind FROM pg_class WHERE oid = 'tg'::regclass`)).rows[0].relkind).toBe('r');
  expect(await triggersOf('tg')).toEqual(triggers);

  // the audit: each committed insert and update exactly once, under its own kind (a month move after the
  // cut-over is PostgreSQL's DELETE and INSERT on a partitioned table: INSERT, plus a DELETE of the row before)
  const audit = (await db.pool.query(`SELECT tg_op, id::int, op FROM tg_audit ORDER BY n`)).rows as {
    tg_op: string;
    id: number;
    op: string;
  }[];
  const writes = w.ops.filter((o) => o.kind !== 'DELETE');
  const seen = new Map<string, string[]>();
  for (const a of audit.filter((x) => x.tg_op !== 'DELETE')) seen.set(a.op, [...(seen.get(a.op) ?? []), a.tg_op]);
  const wrong = writes.filter((o) => {
    const kinds = seen.get(o.op) ?? [];
    return !(kinds.length === 1 && (kinds[0] === o.kind || (o.move && kinds[0] === 'INSERT')));
  });
  expect(wrong).toEqual([]);
  expect(seen.size).toBe(writes.length);
  const deletes = audit.filter((x) => x.tg_op === 'DELETE');
  const moved = new Set(w.ops.filter((o) => o.move && seen.get(o.op)?.[0] === 'INSERT').map((o) => o.id));
  const deleted = w.ops.filter((o) => o.kind === 'DELETE');
  expect(deletes.length).toBe(deleted.length + w.ops.filter((o) => o.move && seen.get(o.op)?.[0] === 'INSERT').length);
  for (const d of deleted)
    expect(deletes.filter((x) => x.id === d.id && x.op === d.op).length).toBeGreaterThanOrEqual(1);
  expect(deletes.filter((x) => !deleted.some((d) => d.id === x.id && d.op === x.op) && !moved.has(x.id))).toEqual([]);

  // the BEFORE trigger ran once per update: never for partflow's writes into the copy or the old table
  const updates = new Map<number, number>();
  for (const o of w.ops) if (o.kind === 'UPDATE') updates.set(o.id, (updates.get(o.id) ?? 0) + 1);
  const rows = (await db.pool.query(`SELECT id::int, version, op FROM tg`)).rows;
  expect(rows.filter((r) => r.version !== 1 + (updates.get(r.id) ?? 0))).toEqual([]);
  // the statement trigger: once per INSERT statement
  const statements = (await db.pool.query(`SELECT count(*)::int AS n FROM tg_statements`)).rows[0].n;
  expect(statements).toBe(w.ops.filter((o) => o.kind === 'INSERT').length);
  // and the rows are what the writers committed
  const last = new Map<number, string | null>();
  for (let i = 1; i <= 4000; i++) last.set(i, `init-${i}`);
  for (const o of w.ops) last.set(o.id, o.kind === 'DELETE' ? null : o.op);
  const expected = [...last]
    .filter(([, op]) => op !== null)
    .map(([id, op]) => `${id} ${op}`)
    .sort();
  expect(rows.map((r) => `${r.id} ${r.op}`).sort()).toEqual(expected);
  // through the window the old table had them disabled: only partflow wrote it
  expect(old.rows.map((r) => `${r.tgname} ${r.tgenabled}`)).toEqual([
    'tg_audit D',
    'tg_off D',
    'tg_statement D',
    'tg_version D',
  ]);
});

test('what PostgreSQL does not accept on a partitioned table is refused before anything changes', async () => {
  await db.pool.query(`CREATE TABLE tr (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL)`);
  await db.pool.query(`INSERT INTO tr (created_at) SELECT now() - g * interval '1 day' FROM generate_series(1, 100) g`);
  await db.pool.query(`CREATE FUNCTION tr_noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$`);
  await db.pool.query(
    `CREATE TRIGGER tr_rows AFTER INSERT ON tr REFERENCING NEW TABLE AS fresh FOR EACH ROW EXECUTE FUNCTION tr_noop()`,
  );
  await db.pool.query(`CREATE FUNCTION tr_month() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN NEW.created_at := date_trunc('month', NEW.created_at); RETURN NEW; END $$`);
  await db.pool.query(`CREATE TRIGGER tr_month BEFORE INSERT ON tr FOR EACH ROW EXECUTE FUNCTION tr_month()`);
  const before = await catalogSnapshot(db.pool, ['public']);
  const first = await (
    await start({ table: 'tr', acceptTriggerChanges: ['tr_month', 'tr_rows'] })
  )
    .result()
    .catch((e: unknown) => e);
  expect((first as WorkflowFailedError).cause?.message).toMatch(
    /Trigger tr_rows of public\.tr cannot be created on a partitioned table: .*transition tables are not supported/,
  );
  await db.pool.query(`DROP TRIGGER tr_rows ON tr`);
  const second = await (await start({ table: 'tr' })).result().catch((e: unknown) => e);
  expect((second as WorkflowFailedError).cause?.message).toMatch(
    /Trigger tr_month of public\.tr runs BEFORE each row and its function or arguments name the partition column created_at/,
  );
  expect((await catalogSnapshot(db.pool, ['public'])).filter((x) => !x.includes('tr_rows'))).toEqual(
    before.filter((x) => !x.includes('tr_rows')),
  );
  // accepted: carried, and a dry run lists it
  const dry = await (await start({ table: 'tr', dryRun: true, acceptTriggerChanges: ['tr_month'] })).result();
  expect(JSON.stringify(dry)).toMatch(/Trigger\(s\) tr_month of public\.tr are created on the new table/);
  expect(JSON.stringify(dry)).toContain('CREATE TRIGGER tr_month BEFORE INSERT ON \\"public\\".\\"tr\\" FOR EACH ROW');
});

test('after the rollback window the new table keeps the triggers and fires them once', async () => {
  await db.pool.query(`CREATE TABLE tf (id bigserial PRIMARY KEY, op text, created_at timestamptz NOT NULL)`);
  await db.pool.query(
    `INSERT INTO tf (op, created_at) SELECT 'i', now() - g * interval '1 day' FROM generate_series(1, 500) g`,
  );
  await db.pool.query(`CREATE TABLE tf_audit (tg_op text, id bigint)`);
  await db.pool.query(`CREATE FUNCTION tf_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
      INSERT INTO tf_audit VALUES (TG_OP, CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END); RETURN NULL; END $$`);
  await db.pool.query(
    `CREATE TRIGGER tf_audit AFTER INSERT OR UPDATE OR DELETE ON tf FOR EACH ROW EXECUTE FUNCTION tf_audit()`,
  );
  // the application's own trigger, whatever its name: carried like the others
  await db.pool.query(
    `CREATE TRIGGER partflow_app_stmt AFTER DELETE ON tf FOR EACH STATEMENT EXECUTE FUNCTION tf_audit()`,
  );
  await db.pool.query(`ALTER TABLE tf ENABLE REPLICA TRIGGER tf_audit`);
  await db.pool.query(`ALTER TABLE tf ENABLE ALWAYS TRIGGER tf_audit`);
  const triggers = await triggersOf('tf');
  const h = await start({ table: 'tf', approval: 'auto', rollbackWindow: '0s', acceptTriggerChanges: ['tf_audit'] });
  expect((await h.result()).status).toBe('done');
  expect(await triggersOf('tf')).toEqual(triggers);
  await db.pool.query(`INSERT INTO tf (op, created_at) VALUES ('new', now())`);
  await db.pool.query(`UPDATE tf SET op = 'u' WHERE id = 7`);
  await db.pool.query(`DELETE FROM tf WHERE id = 8`);
  const audit = (await db.pool.query(`SELECT tg_op, id::int FROM tf_audit ORDER BY tg_op, id NULLS LAST`)).rows;
  expect(audit).toEqual([
    { tg_op: 'DELETE', id: 8 },
    { tg_op: 'DELETE', id: null }, // the statement trigger: no row
    { tg_op: 'INSERT', id: 501 },
    { tg_op: 'UPDATE', id: 7 },
  ]);
});

test("the application's ON CONFLICT (id) upsert, seen by pg_stat_statements, is refused by name before anything changes", async () => {
  await db.pool.query(`CREATE EXTENSION IF NOT EXISTS pg_stat_statements`);
  await db.pool.query(
    `CREATE TABLE up (id bigserial PRIMARY KEY, v text, created_at timestamptz NOT NULL DEFAULT now())`,
  );
  await db.pool.query(`INSERT INTO up (v) SELECT 'p' || g FROM generate_series(1, 100) g`);
  await db.pool.query(`SELECT pg_stat_statements_reset()`);
  // what TypeORM's repository.upsert(entity, ['id']) sends
  for (let i = 1; i <= 3; i++) {
    await db.pool.query(`INSERT INTO up (id, v) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v`, [
      i,
      'u',
    ]);
  }
  // and one that keeps working: the partition column in the conflict target, with a unique index that matches it
  // before the conversion too
  await db.pool.query(`CREATE UNIQUE INDEX up_id_created_at ON up (id, created_at)`);
  await db.pool.query(
    `INSERT INTO up (id, v, created_at) VALUES (1000, 'x', now()) ON CONFLICT (id, created_at) DO NOTHING`,
  );
  const before = await catalogSnapshot(db.pool, ['public']);
  const err = await (await start({ table: 'up', dryRun: true })).result().catch((e: unknown) => e);
  const message = (err as WorkflowFailedError).cause?.message ?? 'not refused';
  expect(message).toMatch(
    /The application runs statements on public\.up that fail or change meaning once it is partitioned by created_at \(pg_stat_statements\): "INSERT INTO up \(id, v\) VALUES \(\$1, \$2\) ON CONFLICT \(id\) DO UPDATE SET v = EXCLUDED\.v" \(3 calls: ON CONFLICT \(id\) has no unique index to match: 42P10\)/,
  );
  expect(message).not.toMatch(/id, created_at/);
  expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);
  // statistics reset (the statement no longer runs): the plan is made
  await db.pool.query(`SELECT pg_stat_statements_reset()`);
  expect((await (await start({ table: 'up', dryRun: true })).result()).status).toBe('dry-run');
});

test('item 6: the widening needs pg_stat_statements or acceptLostConstraints; upserts through a view and keyless ON CONFLICT are judged; lookups by id alone are listed', async () => {
  await db.pool.query(
    `CREATE TABLE wk (id bigserial PRIMARY KEY, v text, created_at timestamptz NOT NULL DEFAULT now())`,
  );
  await db.pool.query(`INSERT INTO wk (v) SELECT 'p' || g FROM generate_series(1, 100) g`);
  await db.pool.query(`CREATE VIEW wk_api AS SELECT id, v, created_at FROM wk`);
  const before = await catalogSnapshot(db.pool, ['public']);
  const refusal = async (input: Partial<PartitionTableInput>) => {
    const err = await (await start({ table: 'wk', dryRun: true, ...input })).result().catch((e: unknown) => e);
    return (err as WorkflowFailedError).cause?.message ?? 'not refused';
  };

  // 1. without pg_stat_statements nothing shows the statements: the widening is refused unless accepted
  await db.pool.query(`DROP EXTENSION IF EXISTS pg_stat_statements`);
  expect(await refusal({})).toMatch(
    /^The primary key wk_pkey of public\.wk becomes \(id, created_at\), so \(id\) is unique per partition only, and pg_stat_statements is not installed or not readable in this database.*list "wk_pkey" in "acceptLostConstraints"/,
  );
  const accepted = await (await start({ table: 'wk', dryRun: true, acceptLostConstraints: ['wk_pkey'] })).result();
  expect(accepted.plan!.givenUp).toContainEqual(
    expect.stringMatching(/^\(id\) is unique per partition only.*statements were not checked, accepted/),
  );

  // 2. installed: an upsert through the view with ON CONFLICT (id) fails after the cut-over: refused even when
  // the widening is accepted
  await db.pool.query(`CREATE EXTENSION pg_stat_statements`);
  await db.pool.query(`SELECT pg_stat_statements_reset()`);
  await db.pool.query(`INSERT INTO wk_api (id, v) VALUES (1, 'x') ON CONFLICT (id) DO NOTHING`);
  expect(await refusal({ acceptLostConstraints: ['wk_pkey'] })).toMatch(
    /"INSERT INTO wk_api \(id, v\) VALUES \(\$1, \$2\) ON CONFLICT \(id\) DO NOTHING" \(1 calls: ON CONFLICT \(id\) has no unique index to match: 42P10\)/,
  );

  // 3. an INSERT ... ON CONFLICT DO NOTHING without a target checks (id, created_at) afterwards: refused unless
  // the widening is accepted
  await db.pool.query(`SELECT pg_stat_statements_reset()`);
  for (let i = 0; i < 2; i++)
    await db.pool.query(`INSERT INTO wk (id, v) VALUES ($1, 'y') ON CONFLICT DO NOTHING`, [5]);
  expect(await refusal({})).toMatch(
    /\(2 calls: ON CONFLICT without a target checks the primary key with created_at in it\).*accepted with "wk_pkey" in "acceptLostConstraints"/,
  );

  // 4. accepted: the plan is made, and the hot lookups by id alone are in its warnings with their calls
  for (let i = 0; i < 4; i++) await db.pool.query(`SELECT v FROM wk WHERE id = $1`, [i + 1]);
  const plan = (await (await start({ table: 'wk', dryRun: true, acceptLostConstraints: ['wk_pkey'] })).result()).plan!;
  expect(plan.warnings).toContainEqual(
    expect.stringMatching(
      /^"SELECT v FROM wk WHERE id = \$1" \(4 calls\) does not name created_at: after the cut-over it visits every partition\.$/,
    ),
  );
  expect(plan.givenUp).toContain(
    '(id) is unique per partition only, not across the table (primary key wk_pkey widened).',
  );
  expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);
  await db.pool.query(`SELECT pg_stat_statements_reset()`);
});

/**
 * Two lanes writing replies to a table that references itself: insert one to a parent, re-parent one of their own
 * and move it a month back, delete one of their own (two lanes on one row would meet the partitioned table's own
 * 40001). `parent()` picks a parent as the statements' first parameters; the record of commits gives the rows
 * `id → "<parent> <op>"` the writers expect.
 */
function replyLanes(table: string, parent: () => { id: number; args: unknown[] }) {
  const ops: { kind: string; id: number; op: string; parent: number }[] = [];
  const errors: string[] = [];
  let running = true;
  let n = 0;
  const cols = parent().args.length === 1 ? ['parent_id'] : ['parent_id', 'parent_at'];
  const ps = cols.map((_, i) => `$${i + 1}`);
  const insert =
    `INSERT INTO ${table} (${cols.join(', ')}, op, created_at) ` +
    `VALUES (${ps.join(', ')}, $${cols.length + 1}, now() - random() * interval '60 days') RETURNING id`;
  const update =
    `UPDATE ${table} SET ${cols.map((c, i) => `${c} = ${ps[i]}`).join(', ')}, op = $${cols.length + 1}, ` +
    `created_at = created_at - interval '32 days' WHERE id = $${cols.length + 2}`;
  const lane = async () => {
    const mine: number[] = [];
    while (running) {
      const op = `w-${++n}`;
      const r = Math.random();
      const p = parent();
      try {
        if (r < 0.5 || !mine.length) {
          const x = await db.pool.query(insert, [...p.args, op]);
          mine.push(Number(x.rows[0].id));
          ops.push({ kind: 'INSERT', id: Number(x.rows[0].id), op, parent: p.id });
        } else if (r < 0.8) {
          const id = mine[Math.floor(Math.random() * mine.length)];
          const x = await db.pool.query(update, [...p.args, op, id]);
          if (x.rowCount) ops.push({ kind: 'UPDATE', id, op, parent: p.id });
        } else {
          const id = mine.splice(Math.floor(Math.random() * mine.length), 1)[0];
          const x = await db.pool.query(`DELETE FROM ${table} WHERE id = $1`, [id]);
          if (x.rowCount) ops.push({ kind: 'DELETE', id, op, parent: 0 });
        }
      } catch (err) {
        errors.push((err as Error).message);
      }
      await sleep(10);
    }
  };
  const lanes = [lane(), lane()];
  const stop = async () => {
    running = false;
    await Promise.all(lanes);
  };
  stops.push(stop);
  const expected = () => {
    const rows = new Map<number, string>();
    for (const o of ops) {
      if (o.kind === 'DELETE') rows.delete(o.id);
      else rows.set(o.id, `${o.parent} ${o.op}`);
    }
    return rows;
  };
  return { ops, errors, stop, expected };
}

describe('item 4: self-referencing foreign keys', () => {
  /** The table's foreign keys as PostgreSQL shows them, with the table each names. */
  const selfKeys = async (name: string) =>
    (
      await db.pool.query(
        `SELECT conrelid::regclass::text || ' ' || conname || ' ' || convalidated::text || ' ' || pg_get_constraintdef(oid) AS x
           FROM pg_constraint WHERE contype = 'f' AND conname = $1 ORDER BY 1`,
        [name],
      )
    ).rows.map((r) => r.x);

  test('refused without inboundForeignKeys "drop", naming the key; with it given up, dropped at the cut-over, restored and validated by a rollback', async () => {
    await db.pool
      .query(`CREATE TABLE th (id bigserial PRIMARY KEY, parent_id bigint CONSTRAINT th_parent_fk REFERENCES th (id),
                           op text, created_at timestamptz NOT NULL)`);
    // roots 1..300, then replies to them: the writers only reply to roots and delete only their own replies
    await db.pool.query(
      `INSERT INTO th (op, created_at) SELECT 'root', now() - g * interval '5 hours' FROM generate_series(1, 300) g`,
    );
    await db.pool.query(
      `INSERT INTO th (parent_id, op, created_at) SELECT 1 + g % 300, 'reply', now() - g * interval '3 hours' FROM generate_series(1, 900) g`,
    );
    const before = await catalogSnapshot(db.pool, ['public']);
    const refused = await (await start({ table: 'th' })).result().catch((e: unknown) => e);
    expect((refused as WorkflowFailedError).cause?.message).toMatch(
      /public\.th references itself by foreign key th_parent_fk \(parent_id\) REFERENCES th\(id\)/,
    );
    expect((refused as WorkflowFailedError).cause?.message).toMatch(/"inboundForeignKeys": "drop"/);
    expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);

    const dry = await (await start({ table: 'th', dryRun: true, inboundForeignKeys: 'drop' })).result();
    expect(dry.plan.givenUp.join(' ')).toMatch(/foreign key th_parent_fk of public\.th on itself/);
    // the copy never gets it: it would name the old table, and rows are copied in key order
    expect(JSON.stringify(dry.plan.sql.shadowForeignKeys)).not.toContain('th_parent_fk');

    const fk = await selfKeys('th_parent_fk');
    expect(fk).toEqual(['th th_parent_fk true FOREIGN KEY (parent_id) REFERENCES th(id)']);
    const w = replyLanes('th', () => {
      const id = 1 + Math.floor(Math.random() * 300);
      return { id, args: [id] };
    });
    const h = await start({
      table: 'th',
      inboundForeignKeys: 'drop',
      approval: 'auto',
      rollbackWindow: '1h',
      batchSize: 100,
    });
    await waitFor(h, (x) => x.phase === 'rollback-window', 'cut-over');
    expect(await selfKeys('th_parent_fk')).toEqual([]); // neither on the new table nor on the old one
    await sleep(1000);
    await h.signal('rollback');
    const result = await h.result();
    await w.stop();
    expect(result.status).toBe('rolled-back');
    expect(result.undoProblems).toEqual([]);
    expect(await selfKeys('th_parent_fk')).toEqual(fk);
    expect(w.errors).toEqual([]);
    // the table is what the writers committed
    const expected = w.expected();
    const got = await db.pool.query(`SELECT id::int, parent_id::int AS parent, op FROM th WHERE op LIKE 'w-%'`);
    expect(new Map(got.rows.map((r) => [r.id, `${r.parent} ${r.op}`]))).toEqual(expected);
    expect(w.ops.length).toBeGreaterThan(50);
    expect(
      (await db.pool.query(`SELECT count(*)::int AS n FROM th WHERE op <> 'root' AND op NOT LIKE 'w-%'`)).rows[0].n,
    ).toBe(900);
    // the attach path the same way: dropped from the table that becomes the history partition, restored by a rollback
    const a = await start({
      table: 'th',
      method: 'attach',
      inboundForeignKeys: 'drop',
      approval: 'auto',
      rollbackWindow: '1h',
    });
    await waitFor(a, (x) => x.phase === 'rollback-window', 'attach cut-over');
    expect(await selfKeys('th_parent_fk')).toEqual([]);
    await db.pool.query(`INSERT INTO th (parent_id, op, created_at) VALUES (7, 'window', now())`);
    await a.signal('rollback');
    expect((await a.result()).undoProblems).toEqual([]);
    expect(await selfKeys('th_parent_fk')).toEqual(fk);
    // kept partitioned: the key stays dropped, the table takes replies as before
    const f = await start({ table: 'th', inboundForeignKeys: 'drop', approval: 'auto', rollbackWindow: '0s' });
    expect((await f.result()).status).toBe('done');
    expect(await selfKeys('th_parent_fk')).toEqual([]);
    await db.pool.query(`INSERT INTO th (parent_id, op, created_at) VALUES (8, 'after', now())`);
    expect((await db.pool.query(`SELECT count(*)::int AS n FROM th`)).rows[0].n).toBe(1200 + expected.size + 2);
  });

  test('one that carries the partition column: kept on PostgreSQL 18 (NOT VALID in the cut-over, validated after it) through cut-overs and rollbacks with writers; refused with the reason before 18', async () => {
    await db.pool
      .query(`CREATE TABLE tk (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL, parent_id bigint, parent_at timestamptz,
                           op text, UNIQUE (id, created_at),
                           CONSTRAINT tk_parent_fk FOREIGN KEY (parent_id, parent_at) REFERENCES tk (id, created_at),
                           -- named like the first one's per-partition clones (tk_parent_fk_1, ...)
                           CONSTRAINT tk_parent_fk_1 FOREIGN KEY (parent_id, parent_at) REFERENCES tk (id, created_at))`);
    // roots 1..200 spread over months, then replies to them (some in other months than their root)
    await db.pool.query(
      `INSERT INTO tk (created_at, op) SELECT now() - g * interval '9 hours', 'root' FROM generate_series(1, 200) g`,
    );
    await db.pool.query(
      `INSERT INTO tk (created_at, parent_id, parent_at, op)
       SELECT now() - g * interval '5 hours', r.id, r.created_at, 'reply' FROM generate_series(1, 600) g
         JOIN tk r ON r.id = 1 + g % 200`,
    );
    const version = Number((await db.pool.query('SHOW server_version_num')).rows[0].server_version_num);
    const before = await catalogSnapshot(db.pool, ['public']);
    if (version < 180000) {
      const refused = await (await start({ table: 'tk' })).result().catch((e: unknown) => e);
      expect((refused as WorkflowFailedError).cause?.message).toMatch(
        /public\.tk references itself by foreign key tk_parent_fk .*every row under a lock that blocks writes, so partflow keeps it only on 18/,
      );
      expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);
      // given up on the explicit input: the cut-over goes through (the unique constraint the key names is one
      // index, not one per constraint naming it) and the new table does not have the key
      const dropped = await start({ table: 'tk', inboundForeignKeys: 'drop', approval: 'auto', rollbackWindow: '0s' });
      expect((await dropped.result()).status).toBe('done');
      const left = await db.pool.query(
        `SELECT count(*)::int AS n FROM pg_constraint WHERE conname LIKE 'tk_parent_fk%'`,
      );
      expect(left.rows[0].n).toBe(0);
      expect((await db.pool.query(`SELECT count(*)::int AS n FROM tk`)).rows[0].n).toBe(800);
      return;
    }
    /** The key where it is: `<table> <validated>` of the top-level constraint, and how many clones are not valid. */
    const keyState = async () => {
      const r = await db.pool.query(
        `SELECT coalesce(string_agg(conrelid::regclass::text || ' ' || convalidated::text, ', ' ORDER BY conname) FILTER (WHERE conparentid = 0), '') AS top,
                count(*) FILTER (WHERE NOT convalidated)::int AS invalid, count(*)::int AS n,
                string_agg(conname || ' ' || pg_get_constraintdef(oid), '; ' ORDER BY conname) FILTER (WHERE conparentid = 0) AS def
           FROM pg_constraint WHERE contype = 'f' AND conname LIKE 'tk_parent_fk%'`,
      );
      return r.rows[0] as { top: string; invalid: number; n: number; def: string };
    };
    const original = await keyState();
    expect(original.top).toBe('tk true, tk true');
    const dry = await (await start({ table: 'tk', dryRun: true })).result();
    expect(dry.plan.givenUp.join(' ')).not.toMatch(/tk_parent_fk/);
    expect(dry.plan.warnings.join(' ')).toMatch(/Foreign key tk_parent_fk of public\.tk on itself is kept/);
    // the one named like the other's clones first: PostgreSQL names those clones around the names taken
    expect(dry.plan.sql.keptKeys.add).toEqual([
      'ALTER TABLE "public"."tk" ADD CONSTRAINT "tk_parent_fk_1" FOREIGN KEY (parent_id, parent_at) REFERENCES tk(id, created_at) NOT VALID',
      'ALTER TABLE "public"."tk" ADD CONSTRAINT "tk_parent_fk" FOREIGN KEY (parent_id, parent_at) REFERENCES tk(id, created_at) NOT VALID',
    ]);
    expect(JSON.stringify(dry.plan.sql.shadowForeignKeys)).not.toContain('tk_parent_fk');

    // the timestamps as text: a JavaScript Date would cut them to milliseconds, and name no row
    const roots = (await db.pool.query(`SELECT id::int, created_at::text FROM tk WHERE op = 'root'`)).rows as {
      id: number;
      created_at: string;
    }[];
    const w = replyLanes('tk', () => {
      const root = roots[Math.floor(Math.random() * roots.length)];
      return { id: root.id, args: [root.id, root.created_at] };
    });
    /** A reply to a row that does not exist: refused by the key wherever it is. */
    const orphan = () =>
      db.pool
        .query(`INSERT INTO tk (created_at, parent_id, parent_at, op) VALUES (now(), 987654, now(), 'orphan')`)
        .then(
          () => 'accepted',
          (e: { code?: string }) => e.code,
        );

    // the copy path: on the new table through the window, the old table's back after the rollback
    const h = await start({ table: 'tk', approval: 'auto', rollbackWindow: '1h', batchSize: 100 });
    await waitFor(h, (x) => x.phase === 'rollback-window', 'cut-over');
    const onNew = await keyState();
    expect(onNew.top).toBe('tk true, tk true');
    expect(onNew.invalid).toBe(0);
    expect(onNew.n).toBeGreaterThan(2); // the partitions' clones
    expect(onNew.def).toBe(original.def);
    expect(await orphan()).toBe('23503');
    await sleep(1000);
    await h.signal('rollback');
    const result = await h.result();
    expect(result.status).toBe('rolled-back');
    expect(result.undoProblems).toEqual([]);
    expect(await keyState()).toEqual(original);

    // the attach path: on the parent and so on the history partition too; a rollback detaches without it
    const a = await start({ table: 'tk', method: 'attach', approval: 'auto', rollbackWindow: '1h' });
    await waitFor(a, (x) => x.phase === 'rollback-window', 'attach cut-over');
    const attached = await keyState();
    expect(attached.top).toBe('tk true, tk true');
    expect(attached.invalid).toBe(0);
    expect(await orphan()).toBe('23503');
    await sleep(500);
    await a.signal('rollback');
    expect((await a.result()).undoProblems).toEqual([]);
    expect(await keyState()).toEqual(original);

    // a cut-over that stays: the key on the new table, validated, checking writes
    const f = await start({ table: 'tk', approval: 'auto', rollbackWindow: '0s' });
    const done = await f.result();
    expect(done.status).toBe('done');
    await w.stop();
    const kept = await keyState();
    expect(kept.top).toBe('tk true, tk true');
    expect(kept.invalid).toBe(0);
    expect(await orphan()).toBe('23503');
    expect(w.errors).toEqual([]);
    const got = await db.pool.query(`SELECT id::int, parent_id::int AS parent, op FROM tk WHERE op LIKE 'w-%'`);
    expect(new Map(got.rows.map((r) => [r.id, `${r.parent} ${r.op}`]))).toEqual(w.expected());
    expect(w.ops.length).toBeGreaterThan(50);
    expect((await db.pool.query(`SELECT count(*)::int AS n FROM tk WHERE op IN ('root', 'reply')`)).rows[0].n).toBe(
      800,
    );
    // maintenance attaches new months under the key (the ATTACH gives each its clone), and they are checked too
    const m = await env.client.workflow.execute('maintainPartitions', {
      taskQueue: TQ,
      workflowId: `carried-maint-${Date.now()}`,
      args: [{ tables: [{ table: 'tk', premake: 4 }] }],
    });
    expect(m.failures).toEqual([]);
    const ahead = (parent: number, parentAt: string) =>
      db.pool
        .query(
          `INSERT INTO tk (created_at, parent_id, parent_at, op)
           VALUES (date_trunc('month', now()) + interval '3 months 1 day', $1, $2, 'ahead')
           RETURNING tableoid::regclass::text AS part`,
          [parent, parentAt],
        )
        .then(
          (x) => x.rows[0].part as string,
          (e: { code?: string }) => e.code,
        );
    expect(await ahead(roots[0].id, roots[0].created_at)).toMatch(/^tk_\d{4}_\d{2}$/);
    expect(await ahead(987654, roots[0].created_at)).toBe('23503');
    const invalid = await db.pool.query(
      `SELECT count(*)::int AS n FROM pg_constraint WHERE conname LIKE 'tk_parent_fk%' AND NOT convalidated`,
    );
    expect(invalid.rows[0].n).toBe(0);
  });
});
