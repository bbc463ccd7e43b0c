/**
 * Issue 25: the attach path. The table's rows stay where they are; it becomes the history partition of a new
 * partitioned table. Writers insert, update (the payload, the partition key, the id) and delete through the
 * whole run, each on its own rows, keeping their own record of what committed; the table is compared with that
 * record after a rollback and after a cut-over that stays. Refusals leave the catalog unchanged.
 */
import { WorkflowFailedError, WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { PartitionTableInput } from '../../src/input';
import type { PartitionTableResult } from '../../workflows/partitionTable';
import { Client } from 'pg';
import { compareWithRecord, Writer } from '../../demo/writer';
import { catalogSnapshot, TestDb } from '../helpers/pg';
import { createTable } from '../helpers/tables';
import { startStack, Stack } from '../helpers/stack';
import { sleep, waitFor } from '../helpers/workflow';
import { awaitingApprovalQuery } from '../../src/fleet';

const TQ = 'partflow-attach';
let stack: Stack;
let env: TestWorkflowEnvironment;
let db: TestDb;
let seq = 0;

beforeAll(async () => {
  stack = await startStack('attach', TQ);
  ({ env, db } = stack);
});

afterAll(async () => {
  await stack?.teardown();
});

const stops: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0)) await stop().catch(() => undefined);
});

function start(input: PartitionTableInput): Promise<WorkflowHandle> {
  return env.client.workflow.start('partitionTable', {
    taskQueue: TQ,
    workflowId: `attach-${++seq}-${Date.now()}`,
    args: [input],
  });
}

/** A cut-off a year ahead: the writers' and the tests' rows dated now stay in the history partition. */
function yearAhead(): string {
  const d = new Date();
  return `${d.getUTCFullYear() + 1}-${String(d.getUTCMonth() + 1).padStart(2, '0')}`;
}

/** An attach run of `table` with its cut-off a year ahead, in its rollback window of an hour. */
async function inWindow(table: string): Promise<{ h: WorkflowHandle; cutoffMonth: string }> {
  const cutoffMonth = yearAhead();
  const h = await start({ table, method: 'attach', cutoffMonth, approval: 'auto', rollbackWindow: '1h' });
  await waitFor(h, (p) => p.phase === 'rollback-window', 'the cut-over');
  return { h, cutoffMonth };
}

async function createImages(name: string, rows: number): Promise<void> {
  await db.pool.query(`
    CREATE TABLE ${name} (
      id bigserial PRIMARY KEY,
      user_id int NOT NULL,
      payload text,
      created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX ${name}_user_idx ON ${name} (user_id);
    CREATE INDEX ${name}_created_idx ON ${name} (created_at);
    COMMENT ON TABLE ${name} IS 'images';
    INSERT INTO ${name} (user_id, payload, created_at)
      SELECT g % 50, 'p' || g, now() - (g % 180) * interval '1 day' FROM generate_series(1, ${rows}) g;
    ANALYZE ${name};`);
}

interface Row {
  created_at: string;
  payload: string;
}

/**
 * Three lanes, each on its own rows (id % 3): no two lanes touch one row, so each lane's record of what it
 * committed, in order, is the truth for its rows. `future` lets inserts and moves date rows past the cut-off
 * (only once the table is partitioned: before, the CHECK would refuse them, as it must).
 */
function writers(table: string, ids: number[], future: () => string | null) {
  const record = new Map<number, Row | null>();
  const errors: string[] = [];
  let running = true;
  let n = 0;
  const counts = { insert: 0, update: 0, move: 0, rekey: 0, delete: 0 };
  const lane = async (lane: number) => {
    const mine = new Set(ids.filter((id) => id % 3 === lane));
    while (running) {
      const op = `w${lane}-${++n}`;
      const pick = [...mine][Math.floor(Math.random() * mine.size)];
      const r = Math.random();
      const ahead = future();
      try {
        if (r < 0.25 || pick === undefined) {
          const when =
            ahead && Math.random() < 0.5
              ? `'${ahead}'::timestamptz + random() * interval '20 days'`
              : `now() - random() * interval '100 days'`;
          // the lane's own ids: drawn until one is the lane's (the sequence is shared)
          const x = await db.pool.query(
            `INSERT INTO ${table} (user_id, payload, created_at) VALUES (1, $1, ${when}) RETURNING id, created_at::text, payload`,
            [op],
          );
          const id = Number(x.rows[0].id);
          record.set(id, { created_at: x.rows[0].created_at, payload: x.rows[0].payload });
          if (id % 3 === lane) mine.add(id);
          else {
            // not this lane's: delete it again at once (still this lane's write, recorded)
            await db.pool.query(`DELETE FROM ${table} WHERE id = $1`, [id]);
            record.set(id, null);
          }
          counts.insert++;
        } else if (r < 0.5) {
          const x = await db.pool.query(
            `UPDATE ${table} SET payload = $1 WHERE id = $2 RETURNING created_at::text, payload`,
            [op, pick],
          );
          if (x.rowCount) record.set(pick, x.rows[0]);
          counts.update++;
        } else if (r < 0.7) {
          // the partition key: to another month, past the cut-off once there is a partition for it
          const to =
            ahead && Math.random() < 0.5
              ? `'${ahead}'::timestamptz + interval '3 days'`
              : `created_at - interval '32 days'`;
          const x = await db.pool.query(
            `UPDATE ${table} SET created_at = ${to}, payload = $1 WHERE id = $2 RETURNING created_at::text, payload`,
            [op, pick],
          );
          if (x.rowCount) record.set(pick, x.rows[0]);
          counts.move++;
        } else if (r < 0.8) {
          // the id: a new one of the same lane
          const x = await db.pool.query(
            `UPDATE ${table} SET id = id + 3000000, payload = $1 WHERE id = $2 RETURNING id, created_at::text, payload`,
            [op, pick],
          );
          if (x.rowCount) {
            const id = Number(x.rows[0].id);
            record.set(pick, null);
            record.set(id, { created_at: x.rows[0].created_at, payload: x.rows[0].payload });
            mine.delete(pick);
            mine.add(id);
          }
          counts.rekey++;
        } else {
          const x = await db.pool.query(`DELETE FROM ${table} WHERE id = $1`, [pick]);
          if (x.rowCount) record.set(pick, null);
          mine.delete(pick);
          counts.delete++;
        }
      } catch (err) {
        errors.push(`${op}: ${(err as Error).message}`);
      }
      await sleep(5);
    }
  };
  const lanes = [0, 1, 2].map(lane);
  const stop = async () => {
    running = false;
    await Promise.all(lanes);
  };
  stops.push(stop);
  return { record, errors, counts, stop };
}

/** The table's rows against the start state with the writers' record applied. */
async function compare(table: string, before: Map<number, Row>, record: Map<number, Row | null>): Promise<void> {
  const expected = new Map(before);
  for (const [id, row] of record) {
    if (row) expected.set(id, row);
    else expected.delete(id);
  }
  const now = await db.pool.query(`SELECT id, created_at::text, payload FROM ${table} ORDER BY id`);
  const got = new Map(now.rows.map((r) => [Number(r.id), { created_at: r.created_at, payload: r.payload }]));
  const missing = [...expected.keys()].filter((id) => !got.has(id));
  const extra = [...got.keys()].filter((id) => !expected.has(id));
  const changed = [...expected.keys()].filter(
    (id) => got.has(id) && JSON.stringify(got.get(id)) !== JSON.stringify(expected.get(id)),
  );
  expect({ missing: missing.slice(0, 5), extra: extra.slice(0, 5), changed: changed.slice(0, 5) }).toEqual({
    missing: [],
    extra: [],
    changed: [],
  });
  expect(got.size).toBe(expected.size);
}

async function rowsOf(table: string): Promise<Map<number, Row>> {
  const r = await db.pool.query(`SELECT id, created_at::text, payload FROM ${table}`);
  return new Map(r.rows.map((x) => [Number(x.id), { created_at: x.created_at, payload: x.payload }]));
}

async function cutoffOf(h: WorkflowHandle): Promise<string> {
  await waitFor(h, (p) => p.phase !== 'preflight', 'the claim');
  // the plan is in the claim (partflow.runs): its cut-off month
  const r = await db.pool.query(
    `SELECT plan::jsonb->'sql'->'attach'->>'cutoff' AS c FROM partflow.runs WHERE workflow_id = $1`,
    [h.workflowId],
  );
  return `${r.rows[0]?.c}-01 00:00:00+00`;
}

test('a dry run shows the attach path: its steps, its undo, the cut-off, and no copy', async () => {
  await createImages('dry', 1000);
  const before = await catalogSnapshot(db.pool, ['public']);
  const r: PartitionTableResult = await (await start({ table: 'dry', method: 'attach', dryRun: true })).result();
  expect(r.status).toBe('dry-run');
  expect(r.plan!.method).toBe('attach');
  const steps = [...new Set(r.statements!.map((x: { step: string }) => x.step))];
  expect(steps).toEqual([
    'attach key',
    'shadow',
    'attach check',
    'cutover',
    'undo cutover',
    'undo attach check',
    'undo shadow',
    'undo attach key',
  ]);
  const sql = r.statements!.map((x: { sql: string }) => x.sql).join('\n');
  expect(sql).toMatch(/CREATE UNIQUE INDEX CONCURRENTLY "dry_pfa_key" ON "public"."dry" \("id", "created_at"\)/);
  expect(sql).toMatch(
    /ADD CONSTRAINT "dry_pfa_bound" CHECK \("created_at" < '\d{4}-\d{2}-01 00:00:00 UTC'::timestamptz\) NOT VALID/,
  );
  expect(sql).toMatch(/ATTACH PARTITION "public"."dry_history" FOR VALUES FROM \(MINVALUE\) TO/);
  expect(sql).not.toMatch(/partflow_sync|_pf_log/);
  expect(r.plan!.warnings.join('\n')).toMatch(/Attach path: the ~1000 rows stay in public\.dry/);
  expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);
});

test('rows dated past the cut-off, triggers, and a cutoffMonth too near are refused before anything changes', async () => {
  await createImages('far', 100);
  await db.pool.query(`INSERT INTO far (user_id, created_at) VALUES (1, now() + interval '5 years')`);
  const before = await catalogSnapshot(db.pool, ['public']);
  const refused = async (input: Partial<PartitionTableInput>) => {
    const err = await (await start({ table: 'far', method: 'attach', ...input })).result().catch((e: unknown) => e);
    return (err as WorkflowFailedError).cause?.message ?? 'not refused';
  };
  expect(await refused({})).toMatch(
    /^1 row\(s\) of public\.far are dated on or after the cut-off \(the newest .*set "cutoffMonth" after them, or use "method": "copy"/,
  );
  expect(await refused({ cutoffMonth: '2020-01' })).toMatch(
    /Field "cutoffMonth" \(2020-01\) must be at least two months after the current month/,
  );
  await db.pool.query(`DELETE FROM far WHERE created_at > now() + interval '1 year'`);
  await db.pool.query(`CREATE FUNCTION far_touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$`);
  await db.pool.query(`CREATE TRIGGER far_touch BEFORE UPDATE ON far FOR EACH ROW EXECUTE FUNCTION far_touch()`);
  expect(await refused({})).toMatch(/Trigger\(s\) far_touch of public\.far: .*use "method": "copy", which carries it/);
  await db.pool.query(`DROP TRIGGER far_touch ON far; DROP FUNCTION far_touch()`);
  expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);
});

test('writers through the cut-over, the rollback window and a rollback: the table is as before with every write; then a cut-over that stays', async () => {
  await createImages('img', 20000);
  await db.pool.query(
    `CREATE TABLE img_likes (id serial PRIMARY KEY, img_id bigint REFERENCES img (id) ON DELETE CASCADE)`,
  );
  await db.pool.query(`CREATE VIEW img_recent AS SELECT id, payload FROM img WHERE user_id < 10`);
  const catalogBefore = await catalogSnapshot(db.pool, ['public']);
  const start0 = await rowsOf('img');
  let ahead: string | null = null;
  const w = writers('img', [...start0.keys()], () => ahead);
  const h = await start({ table: 'img', method: 'attach', rollbackWindow: '1h', inboundForeignKeys: 'drop' });
  const cutoff = await cutoffOf(h);
  await waitFor(h, (p) => p.phase === 'awaiting-approval', 'the approval');
  // the CHECK is there, validated; the table is still plain
  const check = await db.pool.query(`SELECT convalidated FROM pg_constraint WHERE conname = 'img_pfa_bound'`);
  expect(check.rows[0].convalidated).toBe(true);
  await sleep(500);
  await h.signal('approveCutover');
  await waitFor(h, (p) => p.phase === 'rollback-window', 'the cut-over');
  const kind = await db.pool.query(`SELECT relkind FROM pg_class WHERE oid = 'img'::regclass`);
  expect(kind.rows[0].relkind).toBe('p');
  const parts = await db.pool.query(
    `SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
      WHERE i.inhparent = 'img'::regclass ORDER BY 1`,
  );
  expect(parts.rows.find((p) => p.relname === 'img_history')?.bound).toMatch(/^FOR VALUES FROM \(MINVALUE\) TO/);
  // the application writes past the cut-off now: into the monthly partitions
  ahead = cutoff;
  await sleep(3000);
  const inMonths = await db.pool.query(`SELECT count(*)::int AS n FROM img WHERE tableoid <> 'img_history'::regclass`);
  expect(inMonths.rows[0].n).toBeGreaterThan(0);
  await h.signal('rollback');
  const r: PartitionTableResult = await h.result();
  expect(r.status).toBe('rolled-back');
  ahead = null;
  await sleep(300);
  await w.stop();
  expect(w.errors).toEqual([]);
  await compare('img', start0, w.record);
  expect(await catalogSnapshot(db.pool, ['public'])).toEqual(catalogBefore);
  for (const k of Object.values(w.counts)) expect(k).toBeGreaterThan(0);
  expect(r.swapBack!.movedRows).toBeGreaterThan(0);
  expect(r.cutover!.scanSkipped).toBe(true);
  // issue 28 item 1: the history reads as the steps of the plan (each activity's summary)
  const summaries = ((await h.fetchHistory()).events ?? [])
    .filter((e) => e.activityTaskScheduledEventAttributes && e.userMetadata?.summary?.data)
    .map((e) => JSON.parse(Buffer.from(e.userMetadata!.summary!.data!).toString()));
  expect(summaries).toEqual([
    'are the fleet search attributes registered?',
    'preflight public.img: read the catalog, make the plan',
    'claim public.img in partflow.runs',
    'build img_pfa_key CONCURRENTLY',
    expect.stringMatching(/^create public\.img_pf_shadow, \d+ empty partitions$/),
    expect.stringMatching(/^add and validate CHECK img_pfa_bound \(< \d{4}-\d{2}\)$/),
    'cut over: attach public.img_history to the new public.img',
    'rollback requested: can the table be put back?',
    'undo: detach public.img_history, move the rows written since back',
    'undo: drop the CHECK img_pfa_bound',
    'undo: drop the partitioned copy of public.img',
    'undo: drop the index img_pfa_key CONCURRENTLY',
  ]);
  console.log(
    `attach: cut-over lock ${r.cutover?.lockHoldMs} ms; swap back lock ${r.swapBack!.lockHoldMs} ms moving ` +
      `${r.swapBack!.movedRows} rows; writes ${JSON.stringify(w.counts)}`,
  );

  // again, and the cut-over stays: every write there, in the partition its date says
  const start1 = await rowsOf('img');
  const w2 = writers('img', [...start1.keys()], () => ahead);
  // the rows dated past the first cut-off (moved back by the rollback) need a later one: a month on
  const [y, m] = cutoff.slice(0, 7).split('-').map(Number);
  const cutoffMonth = m === 12 ? `${y + 1}-01` : `${y}-${String(m + 1).padStart(2, '0')}`;
  const h2 = await start({
    table: 'img',
    method: 'attach',
    cutoffMonth,
    approval: 'auto',
    rollbackWindow: '1s',
    inboundForeignKeys: 'drop',
  });
  const cutoff2 = await cutoffOf(h2);
  await waitFor(h2, (p) => ['rollback-window', 'done'].includes(p.phase), 'the cut-over');
  ahead = cutoff2;
  const r2: PartitionTableResult = await h2.result();
  expect(r2.status).toBe('done');
  await sleep(2000);
  await w2.stop();
  expect(w2.errors).toEqual([]);
  await compare('img', start1, w2.record);
  const misplaced = await db.pool.query(
    `SELECT count(*)::int AS n FROM img WHERE (tableoid = 'img_history'::regclass) <> (created_at < $1::timestamptz)`,
    [cutoff2],
  );
  expect(misplaced.rows[0].n).toBe(0);
  const pk = await db.pool.query(`SELECT pg_get_constraintdef(oid) AS d FROM pg_constraint WHERE conname = 'img_pkey'`);
  expect(pk.rows[0].d).toBe('PRIMARY KEY (id, created_at)');
  const view = await db.pool.query(`SELECT count(*)::int AS n FROM img_recent`);
  expect(view.rows[0].n).toBe((await db.pool.query(`SELECT count(*)::int AS n FROM img WHERE user_id < 10`)).rows[0].n);
  console.log(`attach (stays): cut-over lock ${r2.cutover!.lockHoldMs} ms; writes ${JSON.stringify(w2.counts)}`);
});

test('maintainPartitions knows the history partition: reported, premade after it, never retired while it holds recent rows', async () => {
  await createImages('mh', 2000);
  const r: PartitionTableResult = await (
    await start({ table: 'mh', method: 'attach', approval: 'auto', rollbackWindow: '1s' })
  ).result();
  expect(r.status).toBe('done');
  const before = await db.pool.query(`SELECT count(*)::int AS n FROM mh_history`);
  const m = await (
    await env.client.workflow.start('maintainPartitions', {
      taskQueue: TQ,
      workflowId: `attach-maint-${Date.now()}`,
      args: [{ tables: [{ table: 'mh', premake: 6, retention: '2 months' }] }],
    })
  ).result();
  expect(m.failures).toEqual([]);
  const report = m.tables[0];
  const history = report.partitions.find((p: { name: string }) => p.name === 'mh_history');
  expect(history).toMatchObject({ from: expect.stringMatching(/^0000-01/) });
  expect(report.archived).toEqual([]);
  expect(report.created.length).toBeGreaterThan(0);
  const after = await db.pool.query(`SELECT count(*)::int AS n FROM mh_history`);
  expect(after.rows[0].n).toBe(before.rows[0].n);
  const attached = await db.pool.query(
    `SELECT count(*)::int AS n FROM pg_inherits WHERE inhrelid = 'mh_history'::regclass`,
  );
  expect(attached.rows[0].n).toBe(1);
});

describe("the attack on the attach path (helper-9's findings)", () => {
  const refusal = async (input: PartitionTableInput) => {
    const err = await (await start(input)).result().catch((e: unknown) => e);
    return (err as WorkflowFailedError).cause?.message ?? 'not refused';
  };

  it('1. cleanup of a dead attach run removes its CHECK and indexes; until then a new run is refused', async () => {
    await createImages('cl', 300);
    const before = await catalogSnapshot(db.pool, ['public']);
    const h = await start({ table: 'cl', method: 'attach' });
    await waitFor(h, (p) => p.phase === 'awaiting-approval', 'the approval');
    await h.terminate('a dead run');
    expect(await refusal({ table: 'cl', method: 'attach', dryRun: true })).toMatch(
      /^CHECK cl_pfa_bound, index cl_pfa_key of public\.cl are left from an earlier attach run: look with partflow cleanup public\.cl/,
    );
    const seen = await env.client.workflow.execute('cleanupTable', {
      taskQueue: TQ,
      workflowId: `attach-cleanup-look-${Date.now()}`,
      args: [{ table: 'cl' }],
    });
    expect(seen.leftovers).toEqual(
      expect.arrayContaining(['check cl_pfa_bound on cl', 'index cl_pfa_key', 'table cl_pf_shadow (partitioned copy)']),
    );
    const removed = await env.client.workflow.execute('cleanupTable', {
      taskQueue: TQ,
      workflowId: `attach-cleanup-${Date.now()}`,
      args: [{ table: 'cl', remove: true, workflowId: h.workflowId }],
    });
    expect(removed.removed).toBe(true);
    expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);
    await db.pool.query(`INSERT INTO cl (user_id, created_at) VALUES (1, now() + interval '4 months')`);
    expect(
      (await (await start({ table: 'cl', method: 'attach', dryRun: true, cutoffMonth: '2099-01' })).result()).status,
    ).toBe('dry-run');
  });

  it('2. a table and a column whose names hold a double quote and a space', async () => {
    await db.pool.query(
      `CREATE TABLE "We""ird t" ("i d" bigserial PRIMARY KEY, "Cre ated""" timestamp NOT NULL DEFAULT now())`,
    );
    await db.pool.query(
      `INSERT INTO "We""ird t" ("Cre ated""") SELECT now() - g * interval '1 day' FROM generate_series(1, 300) g`,
    );
    const r: PartitionTableResult = await (
      await start({
        table: '"We""ird t"',
        column: '"Cre ated"""',
        method: 'attach',
        approval: 'auto',
        rollbackWindow: '1s',
      })
    ).result();
    expect(r.status).toBe('done');
    expect(r.oldTable).toBe('public."We""ird t_history"');
    expect((await db.pool.query(`SELECT count(*)::int AS n FROM "We""ird t"`)).rows[0].n).toBe(300);
  });

  it("3. a function's ON CONFLICT (id) on the table is refused by name, whatever pg_stat_statements saw", async () => {
    await createImages('fu', 100);
    await db.pool.query(
      `CREATE FUNCTION bump(i bigint) RETURNS void LANGUAGE plpgsql AS $$ BEGIN INSERT INTO fu (id, user_id) VALUES (i, 1) ON CONFLICT (id) DO UPDATE SET payload = 'x'; END $$`,
    );
    await db.pool.query(`SELECT pg_stat_statements_reset()`);
    await db.pool.query(`SELECT bump(3)`);
    const before = await catalogSnapshot(db.pool, ['public']);
    expect(await refusal({ table: 'fu', method: 'attach' })).toMatch(
      /function bump\(bigint\) \(ON CONFLICT \(id\) has no unique index to match: 42P10\)/,
    );
    expect(await refusal({ table: 'fu' })).toMatch(/function bump\(bigint\)/);
    expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);
    await db.pool.query(`DROP FUNCTION bump(bigint)`);
  });

  it('4. a NO INHERIT CHECK is refused before anything changes, on both paths', async () => {
    await createImages('noinh', 100);
    await db.pool.query(`ALTER TABLE noinh ADD CONSTRAINT pos CHECK (user_id >= 0) NO INHERIT`);
    const before = await catalogSnapshot(db.pool, ['public']);
    for (const method of ['attach', 'copy'] as const) {
      expect(await refusal({ table: 'noinh', method })).toMatch(
        /^CHECK pos of public\.noinh is NO INHERIT, which a partitioned table cannot have/,
      );
    }
    expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);
  });

  it('5. a rollback that would put one id twice in the table is refused naming it; once resolved it goes', async () => {
    await createImages('dup', 300);
    const h = await start({ table: 'dup', method: 'attach', approval: 'auto', rollbackWindow: '1h' });
    const cutoff = await cutoffOf(h);
    await waitFor(h, (p) => p.phase === 'rollback-window', 'the cut-over');
    await db.pool.query(
      `INSERT INTO dup (id, user_id, created_at) VALUES (3, 1, $1::timestamptz + interval '2 days')`,
      [cutoff],
    );
    await h.signal('rollback');
    await waitFor(h, (p) => /cannot put public\.dup back/.test(p.lastError ?? ''), 'the refusal');
    expect((await h.query<{ phase: string; lastError: string }>('progress')).lastError).toMatch(
      /its original primary key \(id\) would hold \(3\) twice, written since the cut-over with another created_at; delete or change one of each/,
    );
    await db.pool.query(`DELETE FROM dup WHERE id = 3 AND created_at >= $1::timestamptz`, [cutoff]);
    await h.signal('rollback');
    const r: PartitionTableResult = await h.result();
    expect(r.status).toBe('rolled-back');
    expect((await db.pool.query(`SELECT relkind FROM pg_class WHERE oid = 'dup'::regclass`)).rows[0].relkind).toBe('r');
  });
});

test('issue 28 item 2: a run waiting for approval is found across the fleet by its search attributes', async () => {
  await createImages('fleet', 200);
  const h = await start({ table: 'fleet', method: 'attach' });
  await waitFor(h, (p) => p.phase === 'awaiting-approval', 'the approval');
  const listed = async (query: string) => {
    const ids: string[] = [];
    for await (const w of env.client.workflow.list({ query })) ids.push(w.workflowId);
    return ids;
  };
  const query = awaitingApprovalQuery('public.fleet');
  expect(query).toBe(
    "PartflowAwaitingApproval = true AND ExecutionStatus = 'Running' AND PartflowTable = 'public.fleet'",
  );
  for (let i = 0; i < 50 && !(await listed(query)).includes(h.workflowId); i++) await sleep(200);
  expect(await listed(query)).toEqual([h.workflowId]);
  expect(await listed(`PartflowPhase = 'awaiting-approval' AND PartflowTable = 'public.fleet'`)).toEqual([
    h.workflowId,
  ]);
  await h.signal('rollback');
  expect((await h.result()).status).toBe('rolled-back');
  for (let i = 0; i < 50 && (await listed(query)).length; i++) await sleep(200);
  expect(await listed(query)).toEqual([]);
  expect(await listed(`PartflowPhase = 'rolled-back' AND PartflowTable = 'public.fleet'`)).toEqual([h.workflowId]);
});

test('writers in READ COMMITTED, REPEATABLE READ and SERIALIZABLE through the attach cut-over and a rollback: no error, the table equals their record', async () => {
  const t = await createTable(db.pool, { schema: 'public', name: 'iso' }, 5000, 'bigserial');
  const levels = ['READ COMMITTED', 'REPEATABLE READ', 'SERIALIZABLE'] as const;
  const w = new Writer(t.spec, db.conn, { lanes: 3, opsPerSecondPerLane: 40, snapshot: true, isolation: [...levels] });
  await w.start();
  stops.push(async () => void (await w.stop()));
  // a year ahead: the writers date rows up to two months ahead and move them by a month at a time
  const { h, cutoffMonth } = await inWindow('iso');
  await sleep(2000);
  await h.signal('rollback');
  expect((await h.result()).status).toBe('rolled-back');
  await sleep(1000);
  const h2 = await start({ table: 'iso', method: 'attach', cutoffMonth, approval: 'auto', rollbackWindow: '1s' });
  expect((await h2.result()).status).toBe('done');
  await sleep(1000);
  const stats = await w.stop();
  expect({ errors: stats.errors, samples: stats.errorSamples }).toEqual({ errors: 0, samples: [] });
  const c = new Client(db.conn);
  await c.connect();
  const cmp = await compareWithRecord(c, t.spec, w.record);
  await c.end();
  expect({ missing: cmp.missing, extra: cmp.extra, different: cmp.different }).toEqual({
    missing: 0,
    extra: 0,
    different: 0,
  });
  expect(cmp.tableChecksum).toBe(cmp.recordChecksum);
  console.log(
    `isolation writers: ${stats.ops} ops, 40001 by level ${JSON.stringify(stats.serializationFailuresByLevel)}`,
  );
});

test('a REPEATABLE READ snapshot older than the swap back: its UPDATE of a row moved back fails with 40001, not 0 rows; the guard goes when it ends', async () => {
  await createImages('straddle', 2000);
  const { h, cutoffMonth } = await inWindow('straddle');
  // written since the cut-over: in a monthly partition, moved back into the table by the swap back's transaction
  await db.pool.query(`INSERT INTO straddle (id, user_id, payload, created_at) VALUES (900001, 1, 'new', $1)`, [
    `${cutoffMonth}-15`,
  ]);
  // the swap back builds the original key's index CONCURRENTLY first, which waits for every older snapshot: a
  // straddler is one that began after that build (here built ahead, under the name the plan gives it)
  await db.pool.query(`CREATE UNIQUE INDEX CONCURRENTLY straddle_pfa_back ON straddle_history (id)`);
  const s = await db.pool.connect();
  try {
    await s.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    await s.query('SELECT count(*) FROM pg_class'); // the snapshot, before the swap back
    await h.signal('rollback');
    const swapped = async () =>
      (await db.pool.query(`SELECT relkind = 'r' AS ok FROM pg_class WHERE oid = 'straddle'::regclass`)).rows[0].ok;
    for (let i = 0; i < 150 && !(await swapped()); i++) await sleep(200);
    expect(await swapped()).toBe(true);
    // without the guard: 0 rows, the row moved back is a version its snapshot does not see
    const outcome = await s.query(`UPDATE straddle SET payload = 'straddler' WHERE id = 900001`).then(
      (r) => `${r.rowCount} rows`,
      (e: { code?: string }) => e.code ?? 'error',
    );
    expect(outcome).toBe('40001');
    await s.query('ROLLBACK');
    // the undo waited for that transaction; now it ends, the guard with it
    expect((await h.result()).status).toBe('rolled-back');
    const left = await db.pool.query(
      `SELECT count(*)::int AS n FROM pg_trigger WHERE tgname = 'partflow_snapshot_guard'`,
    );
    expect(left.rows[0].n).toBe(0);
    expect((await db.pool.query(`UPDATE straddle SET payload = 'retry' WHERE id = 900001`)).rowCount).toBe(1);
  } finally {
    await s.query('ROLLBACK').catch(() => undefined);
    s.release();
  }
});

test('a swap back that moves no row: a REPEATABLE READ or SERIALIZABLE snapshot older than it updates and deletes as without partflow (no guard)', async () => {
  await createImages('strad0', 2000);
  const { h } = await inWindow('strad0');
  // written since the cut-over, dated before the cut-off: in the history partition, which becomes the table again
  await db.pool.query(`INSERT INTO strad0 (id, user_id, payload, created_at) VALUES (900001, 1, 'new', now())`);
  await db.pool.query(`CREATE UNIQUE INDEX CONCURRENTLY strad0_pfa_back ON strad0_history (id)`);
  const sessions = await Promise.all(['REPEATABLE READ', 'SERIALIZABLE'].map(() => db.pool.connect()));
  try {
    for (const [i, level] of ['REPEATABLE READ', 'SERIALIZABLE'].entries()) {
      await sessions[i].query(`BEGIN ISOLATION LEVEL ${level}`);
      await sessions[i].query('SELECT count(*) FROM pg_class'); // the snapshot, before the swap back
    }
    await h.signal('rollback');
    const plain = async () =>
      (await db.pool.query(`SELECT relkind = 'r' AS ok FROM pg_class WHERE oid = 'strad0'::regclass`)).rows[0].ok;
    for (let i = 0; i < 150 && !(await plain()); i++) await sleep(200);
    expect(await plain()).toBe(true);
    const [rr, ser] = sessions;
    const outcome = (p: Promise<{ rowCount: number | null }>) =>
      p.then(
        (r) => `${r.rowCount} rows`,
        (e: { code?: string }) => e.code ?? 'error',
      );
    expect(await outcome(rr.query(`UPDATE strad0 SET payload = 'straddler' WHERE id = 900001`))).toBe('1 rows');
    expect(await outcome(rr.query(`DELETE FROM strad0 WHERE id = 1`))).toBe('1 rows');
    expect(await outcome(ser.query(`UPDATE strad0 SET payload = 'ser' WHERE id = 2`))).toBe('1 rows');
    expect(await outcome(ser.query(`DELETE FROM strad0 WHERE id = 3`))).toBe('1 rows');
    await rr.query('COMMIT');
    await ser.query('COMMIT');
    expect((await h.result()).status).toBe('rolled-back');
    // nothing was moved back: every row of the table is a version the application wrote, so no guard was needed
    const guards = await db.pool.query(
      `SELECT count(*)::int AS n FROM pg_trigger WHERE tgname = 'partflow_snapshot_guard'`,
    );
    expect(guards.rows[0].n).toBe(0);
    const r = await db.pool.query(`SELECT id, payload FROM strad0 WHERE id IN (1, 2, 3, 900001) ORDER BY id`);
    expect(r.rows).toEqual([
      { id: '2', payload: 'ser' },
      { id: '900001', payload: 'straddler' },
    ]);
  } finally {
    for (const s of sessions) {
      await s.query('ROLLBACK').catch(() => undefined);
      s.release();
    }
  }
});

test('helper-30: a swap back with nothing left to move, whose monthly partition held a row an older snapshot sees, still guards it (40001 as on a plain table, not 0 rows)', async () => {
  await createImages('strad1', 500);
  await createImages('strad1_ctrl', 500);
  const { h, cutoffMonth } = await inWindow('strad1');
  const tables = ['strad1', 'strad1_ctrl'];
  // dated past the cut-off: in a monthly partition of strad1
  for (const t of tables)
    await db.pool.query(`INSERT INTO ${t} (id, user_id, payload, created_at) VALUES (900001, 1, 'x', $1)`, [
      `${cutoffMonth}-15`,
    ]);
  await db.pool.query(`CREATE UNIQUE INDEX CONCURRENTLY strad1_pfa_back ON strad1_history (id)`);
  const s = await db.pool.connect();
  try {
    await s.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    await s.query('SELECT count(*) FROM pg_class'); // the snapshot: it sees row 900001
    // gone after the snapshot: nothing is left to move back, but the snapshot still sees the row it deleted
    for (const t of tables) await db.pool.query(`DELETE FROM ${t} WHERE id = 900001`);
    await h.signal('rollback');
    const plain = async () =>
      (await db.pool.query(`SELECT relkind = 'r' AS ok FROM pg_class WHERE oid = 'strad1'::regclass`)).rows[0].ok;
    for (let i = 0; i < 150 && !(await plain()); i++) await sleep(200);
    expect(await plain()).toBe(true);
    const outcomes: string[] = [];
    for (const t of tables) {
      await s.query('SAVEPOINT a');
      outcomes.push(
        await s.query(`UPDATE ${t} SET payload = 's' WHERE id = 900001`).then(
          (r) => `${r.rowCount} rows`,
          (e: { code?: string }) => e.code ?? 'error',
        ),
      );
      await s.query('ROLLBACK TO SAVEPOINT a');
    }
    // on the plain table: 40001 (a concurrent delete); without the guard strad1 said 0 rows
    expect(outcomes).toEqual(['40001', '40001']);
    await s.query('ROLLBACK');
    expect((await h.result()).status).toBe('rolled-back');
  } finally {
    await s.query('ROLLBACK').catch(() => undefined);
    s.release();
  }
});

test('a run ended while its swap back waits for an older snapshot: cleanup removes the guard once that snapshot ends', async () => {
  await createImages('strad2', 500);
  const before = await catalogSnapshot(db.pool, ['public']);
  const { h, cutoffMonth } = await inWindow('strad2');
  // a row the swap back moves, so that it installs its guard
  await db.pool.query(`INSERT INTO strad2 (id, user_id, payload, created_at) VALUES (900001, 1, 'new', $1)`, [
    `${cutoffMonth}-15`,
  ]);
  await db.pool.query(`CREATE UNIQUE INDEX CONCURRENTLY strad2_pfa_back ON strad2_history (id)`);
  const s = await db.pool.connect();
  const guards = async () =>
    (await db.pool.query(`SELECT count(*)::int AS n FROM pg_trigger WHERE tgname = 'partflow_snapshot_guard'`)).rows[0]
      .n as number;
  try {
    await s.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    await s.query('SELECT count(*) FROM pg_class');
    await h.signal('rollback');
    const plain = async () =>
      (await db.pool.query(`SELECT relkind = 'r' AS ok FROM pg_class WHERE oid = 'strad2'::regclass`)).rows[0].ok;
    for (let i = 0; i < 150 && !(await plain()); i++) await sleep(200);
    expect(await plain()).toBe(true);
    await sleep(500); // the swap back's activity now waits for the straddler
    await h.terminate('ended while the swap back waits');
    const seen = await env.client.workflow.execute('cleanupTable', {
      taskQueue: TQ,
      workflowId: `attach-cleanup-look-${Date.now()}`,
      args: [{ table: 'strad2' }],
    });
    expect(seen.leftovers).toEqual(expect.arrayContaining(['trigger partflow_snapshot_guard on strad2']));
    const removing = env.client.workflow.execute('cleanupTable', {
      taskQueue: TQ,
      workflowId: `attach-cleanup-${Date.now()}`,
      args: [{ table: 'strad2', remove: true, workflowId: h.workflowId }],
    });
    await sleep(2000);
    expect(await guards()).toBe(1); // the removal waits for the straddler, as finalize does
    await s.query('ROLLBACK');
    expect((await removing).removed).toBe(true);
    expect(await guards()).toBe(0);
    const after = await catalogSnapshot(db.pool, ['public']);
    expect(after).toEqual(before);
  } finally {
    await s.query('ROLLBACK').catch(() => undefined);
    s.release();
  }
});
