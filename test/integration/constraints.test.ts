/**
 * fixConstraints against a real PostgreSQL and the Temporal dev server, with writers running.
 */
import { WorkflowFailedError } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import { Client } from 'pg';
import { createActivities } from '../../activities';
import { createPool } from '../../activities/runtime/db';
import { Writer, WriterSpec } from '../../demo/writer';
import { fillDemoData, schemaSql } from '../../demo/schema';
import type { FixConstraintsInput, ForeignKeyFixInput } from '../../src/constraints';
import { createLogger } from '../../src/logger';
import type { FixProgress, FixResult } from '../../workflows/fixConstraints';
import { catalogSnapshot, createTestDb, TestDb } from '../helpers/pg';
import { startStack, Stack } from '../helpers/stack';
import { forwardThenUndo, sleep } from '../helpers/workflow';

const TQ = 'partflow-fix';
let stack: Stack;
let env: TestWorkflowEnvironment;
let db: TestDb;
let n = 0;
const writers: Writer[] = [];

beforeAll(async () => {
  stack = await startStack('fix', TQ);
  ({ env, db } = stack);
  await db.pool.query(
    `CREATE TABLE users (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), email text NOT NULL UNIQUE, nick text)`,
  );
  await db.pool.query(`INSERT INTO users (email) SELECT 'u' || g || '@x' FROM generate_series(1, 200) g`);
});

afterEach(async () => {
  for (const w of writers.splice(0)) await w.stop().catch(() => undefined);
});

afterAll(async () => {
  await stack?.teardown();
});

const run = (input: FixConstraintsInput) =>
  env.client.workflow.start('fixConstraints', { taskQueue: TQ, workflowId: `fix-${++n}-${Date.now()}`, args: [input] });

async function failure(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => null,
    (e) => e,
  );
  expect(err).toBeInstanceOf(WorkflowFailedError);
  return (err as WorkflowFailedError).cause!.message;
}

/** A child table with `orphans` rows whose user_id points at no user, and writers adding valid rows. */
async function childTable(name: string, rows: number, orphans: number, partitioned = false): Promise<WriterSpec> {
  const part = partitioned ? ' PARTITION BY RANGE (created_at)' : '';
  await db.pool.query(
    `CREATE TABLE ${name} (id bigserial, user_id uuid, payload text, created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (id, created_at))${part}`,
  );
  if (partitioned) {
    for (const m of [-2, -1, 0, 1]) {
      await db.pool.query(
        `CREATE TABLE ${name}_p${m + 2} PARTITION OF ${name} FOR VALUES FROM (date_trunc('month', now()) + interval '${m} month') TO (date_trunc('month', now()) + interval '${m + 1} month')`,
      );
    }
    await db.pool.query(`CREATE TABLE ${name}_default PARTITION OF ${name} DEFAULT`);
  }
  await db.pool.query(
    `INSERT INTO ${name} (user_id, payload, created_at)
     SELECT CASE WHEN g % 9 = 0 THEN NULL ELSE (SELECT id FROM users ORDER BY id OFFSET g % 200 LIMIT 1) END, md5(g::text), now() - (g % 80) * interval '1 day'
       FROM generate_series(1, $1::int) g`,
    [rows],
  );
  if (orphans)
    await db.pool.query(
      `INSERT INTO ${name} (user_id, payload) SELECT gen_random_uuid(), 'orphan' FROM generate_series(1, $1::int)`,
      [orphans],
    );
  return {
    table: name,
    id: 'id',
    ts: 'created_at',
    payload: 'payload',
    newIdExpr: `nextval(pg_get_serial_sequence('${name}', 'id'))`,
    insertSql: `INSERT INTO ${name} AS t (user_id, payload, created_at) VALUES ((SELECT id FROM users ORDER BY random() LIMIT 1), 'w', $1)`,
  };
}

function writer(spec: WriterSpec): Writer {
  const w = new Writer(spec, db.conn, { lanes: 3, opsPerSecondPerLane: 40, snapshot: false });
  writers.push(w);
  return w;
}

const fk = (table: string, orphans: 'fail' | 'set-null' | 'delete' = 'fail'): ForeignKeyFixInput => ({
  kind: 'foreignKey',
  table,
  columns: ['user_id'],
  references: { table: 'users', columns: ['id'] },
  onDelete: 'SET NULL',
  onUpdate: 'CASCADE',
  orphans,
});

async function constraintState(table: string): Promise<{ rel: string; convalidated: boolean }[]> {
  const r = await db.pool.query(
    `SELECT conrelid::regclass::text AS rel, convalidated FROM pg_constraint WHERE contype = 'f' AND conname = $1 ORDER BY 1`,
    [`fk_${table}_user_id`],
  );
  return r.rows;
}

test('orphans "fail": the audit reports counts and the query that lists them, no row values, and nothing changes', async () => {
  await childTable('c_fail', 2000, 3);
  const before = await catalogSnapshot(db.pool, ['public', 'partflow']);
  const msg = await failure((await run({ fixes: [fk('c_fail')] })).result());
  expect(msg).toMatch(
    /^Nothing was changed: public\.c_fail\(user_id\) → public\.users\(id\): 3 orphan row\(s\) \(list them with: SELECT c\."id", c\."created_at", c\."user_id" FROM "public"\."c_fail" c WHERE c\."user_id" IS NOT NULL AND NOT EXISTS/,
  );
  expect(msg).not.toMatch(/[0-9a-f]{8}-[0-9a-f]{4}-/); // no key values
  const listed = await db.pool.query(/list them with: (SELECT .*?)\)(;|$)/.exec(msg)![1]);
  expect(listed.rowCount).toBe(3);
  expect(await catalogSnapshot(db.pool, ['public', 'partflow'])).toEqual(before);
});

test('orphans "set-null" under write load: repaired in batches, recorded, validated; writers never wait past the lock timeout', async () => {
  const spec = await childTable('c_setnull', 5000, 7);
  const w = writer(spec);
  await w.start();
  const h = await run({ fixes: [fk('c_setnull', 'set-null')], batchSize: 3 });
  const result: FixResult = await h.result();
  const stats = await w.stop();
  expect(result.applied).toEqual([
    {
      fix: 'public.c_setnull(user_id) → public.users(id)',
      name: 'fk_c_setnull_user_id',
      skipped: false,
      rowsRepaired: 7,
      indexCreated: true,
    },
  ]);
  expect(await constraintState('c_setnull')).toEqual([{ rel: 'c_setnull', convalidated: true }]);
  const left = await db.pool.query(
    `SELECT count(*)::int AS n FROM c_setnull WHERE payload = 'orphan' AND user_id IS NOT NULL`,
  );
  expect(left.rows[0].n).toBe(0);
  const rec = await db.pool.query(
    `SELECT count(*)::int AS n FROM partflow.repairs WHERE workflow_id = $1 AND action = 'set-null'`,
    [h.workflowId],
  );
  expect(rec.rows[0].n).toBe(7);
  expect(
    (await db.pool.query(`SELECT state FROM partflow.fix_runs WHERE workflow_id = $1`, [h.workflowId])).rows,
  ).toEqual([{ state: 'done' }]);
  const idx = await db.pool.query(
    `SELECT indisvalid FROM pg_index WHERE indexrelid = 'c_setnull_user_id_pf_fk_idx'::regclass`,
  );
  expect(idx.rows[0].indisvalid).toBe(true);
  expect({ errors: stats.errors, samples: stats.errorSamples }).toEqual({ errors: 0, samples: [] });
  expect(stats.maxLatencyMs).toBeLessThan(500 + 400);
  console.log(
    `[measure] fixConstraints set-null under writers: longest writer wait ${stats.maxLatencyMs} ms over ${stats.ops} ops`,
  );
});

test('undo after a failure restores the exact prior state: deleted orphans come back, constraints and indexes go', async () => {
  await childTable('c_undo', 1000, 5);
  await db.pool.query(`CREATE TABLE contacts (id int PRIMARY KEY, email text CHECK (email IS NULL OR email <> 'bad'))`);
  await db.pool.query(
    `INSERT INTO contacts SELECT g, CASE WHEN g % 4 = 0 THEN NULL ELSE 'e' || g END FROM generate_series(1, 40) g`,
  );
  const before = await catalogSnapshot(db.pool, ['public']);
  const data = async () =>
    (
      await db.pool.query(
        `SELECT (SELECT md5(string_agg(c::text, ',' ORDER BY id)) FROM c_undo c) AS a, (SELECT md5(string_agg(c::text, ',' ORDER BY id)) FROM contacts c) AS b`,
      )
    ).rows[0];
  const dataBefore = await data();
  // the first fix deletes 5 orphans; the second fills NULLs with a value the table's CHECK refuses, so it fails
  const h = await run({
    fixes: [fk('c_undo', 'delete'), { kind: 'notNull', table: 'contacts', column: 'email', nulls: { fill: 'bad' } }],
  });
  const msg = await failure(h.result());
  expect(msg).toMatch(/repair for contacts_email_pf_not_null failed: .*violates check constraint/);
  expect((await h.query<FixProgress>('progress')).phase).toBe('failed');
  expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);
  expect(await data()).toEqual(dataBefore);
});

test('NULLs: "fail" refuses; a fill value fills, records, and makes the column NOT NULL without leaving the helper check', async () => {
  await db.pool.query(`CREATE TABLE forms (id int PRIMARY KEY, email varchar(150), msg text)`);
  await db.pool.query(
    `INSERT INTO forms SELECT g, CASE WHEN g % 10 = 0 THEN NULL ELSE 'f' || g END, 'hi' FROM generate_series(1, 500) g`,
  );
  expect(
    await failure((await run({ fixes: [{ kind: 'notNull', table: 'forms', column: 'email' }] })).result()),
  ).toMatch(/public\.forms\.email NOT NULL: 50 NULL row\(s\)/);
  const r: FixResult = await (
    await run({
      fixes: [{ kind: 'notNull', table: 'forms', column: 'email', nulls: { fill: 'unknown@example.invalid' } }],
    })
  ).result();
  expect(r.applied[0].rowsRepaired).toBe(50);
  const cat = await db.pool.query(
    `SELECT attnotnull, (SELECT count(*)::int FROM pg_constraint WHERE conrelid = 'forms'::regclass AND contype = 'c') AS checks FROM pg_attribute WHERE attrelid = 'forms'::regclass AND attname = 'email'`,
  );
  expect(cat.rows[0]).toEqual({ attnotnull: true, checks: 0 });
  expect(
    (await db.pool.query(`SELECT count(*)::int AS n FROM forms WHERE email = 'unknown@example.invalid'`)).rows[0].n,
  ).toBe(50);
});

test('a fix already in place is recognised and skipped', async () => {
  await childTable('c_done', 100, 0);
  await db.pool.query(`ALTER TABLE c_done ADD CONSTRAINT existing_fk FOREIGN KEY (user_id) REFERENCES users (id)`);
  const before = await catalogSnapshot(db.pool, ['public']);
  const r: FixResult = await (await run({ fixes: [fk('c_done')] })).result();
  expect(r.applied[0].skipped).toBe(true);
  expect(r.audit[0].alreadyDone).toBe(true);
  expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);
});

test('a partitioned referencing table: every partition and the parent end validated, index per partition, writers unharmed', async () => {
  const spec = await childTable('c_parted', 4000, 0, true);
  const w = writer(spec);
  await w.start();
  const r: FixResult = await (await run({ fixes: [fk('c_parted')] })).result();
  const stats = await w.stop();
  expect(r.applied[0]).toMatchObject({ skipped: false, indexCreated: true });
  const states = await constraintState('c_parted');
  expect(states.map((s) => s.rel)).toEqual([
    'c_parted',
    'c_parted_default',
    'c_parted_p0',
    'c_parted_p1',
    'c_parted_p2',
    'c_parted_p3',
  ]);
  expect(states.every((s) => s.convalidated)).toBe(true);
  const idx = await db.pool.query(
    `SELECT count(*)::int AS n FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname LIKE 'c_parted%pf_fk_idx' AND i.indisvalid`,
  );
  expect(idx.rows[0].n).toBe(6);
  expect({ errors: stats.errors, samples: stats.errorSamples }).toEqual({ errors: 0, samples: [] });
  expect(stats.maxLatencyMs).toBeLessThan(500 + 400);
  console.log(
    `[measure] fixConstraints on a partitioned table (per-partition NOT VALID, VALIDATE, parent adopts) under writers: longest writer wait ${stats.maxLatencyMs} ms over ${stats.ops} ops`,
  );
});

test('a long transaction holding the table: the DDL retries under lock_timeout and goes through once it ends', async () => {
  const spec = await childTable('c_locked', 1000, 0);
  await db.pool.query(`CREATE INDEX ON c_locked (user_id)`);
  const w = writer(spec);
  await w.start();
  const holder = new Client(db.conn);
  await holder.connect();
  await holder.query('BEGIN');
  await holder.query('LOCK TABLE c_locked IN ROW EXCLUSIVE MODE'); // what any writing transaction holds, until COMMIT
  const h = await run({ fixes: [fk('c_locked')], lockTimeoutMs: 200 });
  await sleep(2500);
  expect(await constraintState('c_locked')).toEqual([]);
  await holder.query('COMMIT');
  await holder.end();
  await h.result();
  const stats = await w.stop();
  expect((await h.query<FixProgress>('progress')).lockWaitRetries).toBeGreaterThan(0);
  expect(await constraintState('c_locked')).toEqual([{ rel: 'c_locked', convalidated: true }]);
  expect({ errors: stats.errors, samples: stats.errorSamples }).toEqual({ errors: 0, samples: [] });
  expect(stats.maxLatencyMs).toBeLessThan(200 + 400);
});

describe('bad input: one sentence, nothing changed', () => {
  beforeAll(async () => {
    await db.pool.query(`CREATE TABLE notes (id int PRIMARY KEY, user_id text, owner_email text)`);
  });
  it.each<[string, FixConstraintsInput, RegExp]>([
    ['missing table', { fixes: [fk('nope')] }, /table public\.nope does not exist/],
    ['missing column', { fixes: [{ kind: 'notNull', table: 'notes', column: 'title' }] }, /has no column "title"/],
    [
      'type mismatch',
      { fixes: [fk('notes')] },
      /public\.notes\.user_id is text but public\.users\.id is uuid; the types must match/,
    ],
    [
      'referenced columns without a unique constraint',
      {
        fixes: [
          {
            kind: 'foreignKey',
            table: 'notes',
            columns: ['owner_email'],
            references: { table: 'users', columns: ['nick'] },
          },
        ],
      },
      /public\.users\(nick\) has no primary key or unique constraint/,
    ],
    ['unknown kind', { fixes: [{ kind: 'check', table: 'notes' } as never] }, /kind must be "foreignKey" or "notNull"/],
  ])('%s', async (_l, input, msg) => {
    const before = await catalogSnapshot(db.pool, ['public', 'partflow']);
    expect(await failure((await run(input)).result())).toMatch(msg);
    expect(await catalogSnapshot(db.pool, ['public', 'partflow'])).toEqual(before);
  });
});

test('the seed preset on the seed schema: audit and SQL as a dry run, then end to end', async () => {
  const seed = await createTestDb('seed');
  const seedPool = createPool(seed.url);
  try {
    for (const sql of schemaSql()) await seed.pool.query(sql);
    await fillDemoData(seed.pool, 5000, 14, () => undefined);
    const w = await Worker.create({
      connection: env.nativeConnection,
      taskQueue: 'seed-fix',
      workflowsPath: require.resolve('../../workflows'),
      activities: createActivities({ pool: seedPool, log: createLogger().child({}, { level: 'warn' }) }),
    });
    await w.runUntil(async () => {
      const start = (input: FixConstraintsInput) =>
        env.client.workflow.start('fixConstraints', {
          taskQueue: 'seed-fix',
          workflowId: `seed-${++n}`,
          args: [input],
        });
      const dry: FixResult = await (await start({ preset: 'seed-critical-fixes', dryRun: true })).result();
      expect(dry.audit.map((a) => a.name)).toEqual([
        'fk_generated_images_user_id',
        'fk_generated_images_industry_id',
        'fk_generated_images_category_id',
        'fk_generated_images_product_type_id',
        'fk_generated_images_product_pose_id',
        'fk_generated_images_product_theme_id',
        'fk_generated_images_product_background_id',
        'fk_generated_images_ai_face_id',
        'fk_user_businesses_user_id',
        'fk_contact_forms_read_by',
        'contact_forms_email_pf_not_null',
        'user_addresses_user_id_pf_not_null',
      ]);
      expect(dry.audit[0].sql!.join('\n')).toMatch(
        /ADD CONSTRAINT "fk_generated_images_user_id" FOREIGN KEY \("user_id"\) REFERENCES "public"\."users" \("id"\) ON DELETE SET NULL ON UPDATE CASCADE NOT VALID/,
      );
      // the seed's data has images and businesses of deleted users, and contact forms without an e-mail
      const byName = Object.fromEntries(dry.audit.map((a) => [a.name, a.violations]));
      expect(byName.fk_generated_images_user_id).toBeGreaterThan(0);
      expect(byName.fk_user_businesses_user_id).toBe(3);
      expect(byName.contact_forms_email_pf_not_null).toBeGreaterThan(0);
      expect(await failure((await start({ preset: 'seed-critical-fixes' })).result())).toMatch(
        /^Nothing was changed: .*fk_generated_images_user_id|^Nothing was changed: public\.generated_images\(user_id\)/,
      );
      const r: FixResult = await (
        await start({
          preset: 'seed-critical-fixes',
          overrides: {
            fk_generated_images_user_id: { orphans: 'set-null' },
            fk_user_businesses_user_id: { orphans: 'delete' },
            contact_forms_email_pf_not_null: { nulls: { fill: 'unknown@example.invalid' } },
          },
        })
      ).result();
      expect(r.applied.filter((a) => !a.skipped)).toHaveLength(12);
      expect(r.applied.find((a) => a.name === 'fk_user_businesses_user_id')!.rowsRepaired).toBe(3);
    });
    const v = await seed.pool.query(
      `SELECT count(*) FILTER (WHERE convalidated)::int AS ok, count(*)::int AS n FROM pg_constraint WHERE contype = 'f' AND conname LIKE 'fk\\_%'`,
    );
    expect(v.rows[0]).toEqual({ ok: 10, n: 10 });
    const nn = await seed.pool.query(
      `SELECT count(*)::int AS n FROM pg_attribute WHERE attnotnull AND ((attrelid = 'contact_forms'::regclass AND attname = 'email') OR (attrelid = 'user_addresses'::regclass AND attname = 'user_id'))`,
    );
    expect(nn.rows[0].n).toBe(2);
  } finally {
    await seedPool.end();
    await seed.drop();
  }
});

test('an undo restores only its own run and table, only values still as repaired, and rows with GENERATED and identity ALWAYS columns', async () => {
  // run 1 repairs c_reused's orphans and completes: its repairs are kept
  await childTable('c_reused', 300, 4);
  const wf = `fix-reused-${Date.now()}`;
  const first = await env.client.workflow.start('fixConstraints', {
    taskQueue: TQ,
    workflowId: wf,
    args: [{ fixes: [fk('c_reused', 'set-null')] }],
  });
  expect((await first.result()).status).toBe('done');
  const kept = async () =>
    (await db.pool.query(`SELECT count(*)::int AS n FROM c_reused WHERE payload = 'orphan' AND user_id IS NULL`))
      .rows[0].n;
  expect(await kept()).toBe(4);
  // run 2 reuses the workflow id on the same table (fix number 0 again), then fails: its undo must not touch run 1's repairs
  await db.pool.query(
    `UPDATE c_reused SET payload = NULL WHERE id IN (SELECT id FROM c_reused WHERE payload <> 'orphan' LIMIT 3)`,
  );
  await db.pool.query(
    `CREATE TABLE IF NOT EXISTS contacts2 (id int PRIMARY KEY, email text CHECK (email IS NULL OR email <> 'bad'))`,
  );
  await db.pool.query(`INSERT INTO contacts2 VALUES (1, NULL)`);
  const second = await env.client.workflow.start('fixConstraints', {
    taskQueue: TQ,
    workflowId: wf,
    args: [
      {
        fixes: [
          { kind: 'notNull', table: 'c_reused', column: 'payload', nulls: { fill: 'filled' } },
          { kind: 'notNull', table: 'contacts2', column: 'email', nulls: { fill: 'bad' } },
        ],
      },
    ],
  });
  expect(await failure(second.result())).toMatch(/violates check constraint/);
  expect(await kept()).toBe(4); // run 1's set-null repairs stay
  expect((await db.pool.query(`SELECT count(*)::int AS n FROM c_reused WHERE payload IS NULL`)).rows[0].n).toBe(3); // run 2's fill undone

  // activity level: a repaired row the application changed since keeps the application's value; deleted rows of a
  // table with GENERATED and identity ALWAYS columns come back with their ids
  await db.pool.query(
    `CREATE TABLE c_gen (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, user_id uuid, payload text, len int GENERATED ALWAYS AS (length(payload)) STORED)`,
  );
  await db.pool.query(
    `INSERT INTO c_gen (user_id, payload) SELECT (SELECT id FROM users ORDER BY id LIMIT 1), 'ok' || g FROM generate_series(1, 20) g`,
  );
  await db.pool.query(
    `INSERT INTO c_gen (user_id, payload) SELECT gen_random_uuid(), 'orphan-' || g FROM generate_series(1, 3) g`,
  );
  await childTable('c_app', 100, 3);
  const genBefore = (await db.pool.query(`SELECT md5(string_agg(c::text, ',' ORDER BY id)) AS h FROM c_gen c`)).rows[0]
    .h;
  const acts = createActivities({ pool: db.pool, log: createLogger({ test: 'undo' }).child({}, { level: 'fatal' }) });
  const { validateFixInput } = await import('../../src/constraints');
  const opts = validateFixInput({ fixes: [fk('c_gen', 'delete'), fk('c_app', 'set-null')] });
  const audits = await acts.auditFixes(opts);
  for (const a of audits) await acts.repair(a.fixNo, a.fix, a.info, 100, 500);
  expect((await db.pool.query(`SELECT count(*)::int AS n FROM c_gen`)).rows[0].n).toBe(20);
  // the application fixes one repaired row itself
  const fixed = (
    await db.pool.query(
      `UPDATE c_app SET user_id = (SELECT id FROM users ORDER BY id LIMIT 1) WHERE id = (SELECT min(id) FROM c_app WHERE payload = 'orphan') RETURNING id, user_id`,
    )
  ).rows[0];
  for (const a of audits) await acts.restoreRepairs(a.fixNo, a.fix, a.info, 500);
  expect((await db.pool.query(`SELECT md5(string_agg(c::text, ',' ORDER BY id)) AS h FROM c_gen c`)).rows[0].h).toBe(
    genBefore,
  );
  const app = await db.pool.query(`SELECT id, user_id FROM c_app WHERE payload = 'orphan' ORDER BY id`);
  expect(app.rows[0]).toEqual(fixed); // kept the application's value
  expect(app.rows.slice(1).every((r) => r.user_id !== null)).toBe(true); // the others have their old (orphan) values back
  // a second undo (a retry) finds everything restored and changes nothing
  for (const a of audits) expect((await acts.restoreRepairs(a.fixNo, a.fix, a.info, 500)).rows).toBe(0);
});

test('cancelled while adding the constraint waits on a lock: the undo waits for the step to stop, nothing is left', async () => {
  const spec = await childTable('c_cancel', 500, 0);
  await db.pool.query(`CREATE INDEX ON c_cancel (user_id)`);
  const before = await catalogSnapshot(db.pool, ['public']);
  const w = writer(spec);
  await w.start();
  // an application's open write, invisible to the look-ahead: ROW EXCLUSIVE held by a prepared transaction
  const c = new Client(db.conn);
  await c.connect();
  await c.query('BEGIN');
  await c.query('LOCK TABLE c_cancel IN ROW EXCLUSIVE MODE');
  await c.query(`PREPARE TRANSACTION 'pf_fix_cancel'`);
  await c.end();
  const h = await run({ fixes: [fk('c_cancel')], lockTimeoutMs: 100 });
  await sleep(2000); // ADD CONSTRAINT ... NOT VALID retries its lock meanwhile
  await h.cancel();
  await sleep(1000);
  await db.pool.query(`COMMIT PREPARED 'pf_fix_cancel'`); // a step that had not stopped would now add the constraint
  await expect(h.result()).rejects.toThrow(WorkflowFailedError);
  const { forwardClosed, undoScheduled } = await forwardThenUndo(h, 'addConstraintNotValid', ['dropConstraint']);
  expect(forwardClosed).toBeLessThan(undoScheduled);
  expect(undoScheduled).toBeLessThan(Infinity);
  await sleep(300);
  const stats = await w.stop();
  expect({ errors: stats.errors, samples: stats.errorSamples }).toEqual({ errors: 0, samples: [] });
  expect(await constraintState('c_cancel')).toEqual([]);
  expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);
  // the run's fence went from active to undoing to rolled-back: no forward step of it can commit any more
  expect(
    (await db.pool.query(`SELECT state FROM partflow.fix_runs WHERE workflow_id = $1`, [h.workflowId])).rows,
  ).toEqual([{ state: 'rolled-back' }]);
});

describe('issue 28 item 4: a finished run undone from its workflow id', () => {
  const undo = (input: Record<string, unknown>, id = `undo-${++n}-${Date.now()}`) =>
    env.client.workflow.start('undoFixConstraints', { taskQueue: TQ, workflowId: id, args: [input] });
  const data = async () =>
    (
      await db.pool.query(
        `SELECT (SELECT md5(string_agg(c::text, ',' ORDER BY id)) FROM c_late c) AS a,
                (SELECT string_agg(id || '=' || coalesce(email, '-'), ',' ORDER BY id) FROM late_forms) AS b`,
      )
    ).rows[0];

  test('by the client: the catalog as before the run, deleted orphans back, filled NULLs back unless the application changed them since', async () => {
    await childTable('c_late', 600, 7);
    await db.pool.query(`CREATE TABLE late_forms (id int PRIMARY KEY, email text)`);
    await db.pool.query(
      `INSERT INTO late_forms SELECT g, CASE WHEN g % 5 = 0 THEN NULL ELSE 'f' || g END FROM generate_series(1, 50) g`,
    );
    const before = await catalogSnapshot(db.pool, ['public']);
    const dataBefore = await data();
    const h = await run({
      fixes: [
        fk('c_late', 'delete'),
        { kind: 'notNull', table: 'late_forms', column: 'email', nulls: { fill: 'x@invalid' } },
      ],
    });
    const done: FixResult = await h.result();
    expect(done.applied.map((a) => a.rowsRepaired)).toEqual([7, 10]);
    expect(await catalogSnapshot(db.pool, ['public'])).not.toEqual(before);
    // the application writes over one filled NULL after the run: the undo leaves that row as the application left it
    await db.pool.query(`UPDATE late_forms SET email = 'mine@app' WHERE id = 10`);
    const u = await undo({ workflowId: h.workflowId });
    const res = await u.result();
    expect(res.status).toBe('undone');
    expect(res.undone.map((s: { step: string }) => s.step)).toEqual([
      'validate',
      'repair',
      'constraint',
      'validate',
      'repair',
      'constraint',
      'index',
    ]);
    expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);
    const now = await data();
    expect(now.a).toBe(dataBefore.a);
    expect(now.b).toBe(dataBefore.b.replace(',10=-,', ',10=mine@app,'));
    // the Web UI's history reads as the steps (issue 28 item 1): each activity's summary
    const summaries = async (w: { fetchHistory(): Promise<{ events?: any[] | null }> }) =>
      ((await w.fetchHistory()).events ?? [])
        .filter((e) => e.activityTaskScheduledEventAttributes && e.userMetadata?.summary?.data)
        .map((e) => JSON.parse(Buffer.from(e.userMetadata.summary.data).toString()));
    expect((await summaries(h)).slice(0, 3)).toEqual([
      'audit every fix (reads only)',
      'build the supporting index of public.c_late(user_id) → public.users(id)',
      'add public.c_late(user_id) → public.users(id) NOT VALID',
    ]);
    expect(await summaries(u)).toEqual(
      expect.arrayContaining([`open the undo of ${h.workflowId}`, expect.stringMatching(/^undo repair: /)]),
    );
    // twice: refused, nothing changed
    expect(await failure(undo({ workflowId: h.workflowId }).then((x) => x.result()))).toMatch(
      new RegExp(`fixConstraints run ${h.workflowId} was undone already`),
    );
    expect(await failure(undo({ workflowId: 'no-such-run' }).then((x) => x.result()))).toMatch(
      /fixConstraints run no-such-run is not recorded in this database/,
    );
    expect(
      await failure(undo({ workflowId: "x'; DROP TABLE users; --", lockTimeoutMs: 'soon' }).then((x) => x.result())),
    ).toMatch(/"lockTimeoutMs" must be 1 to 60000/);
  });

  test('by the Temporal CLI, as the README shows it; a run that still runs is refused (signal rollback instead)', async () => {
    await db.pool.query(`CREATE TABLE cli_forms (id int PRIMARY KEY, email text)`);
    await db.pool.query(
      `INSERT INTO cli_forms SELECT g, CASE WHEN g % 4 = 0 THEN NULL ELSE 'e' || g END FROM generate_series(1, 40) g`,
    );
    const before = await catalogSnapshot(db.pool, ['public']);
    const h = await run({ fixes: [{ kind: 'notNull', table: 'cli_forms', column: 'email', nulls: { fill: 'none' } }] });
    await h.result();
    const { execFile } = await import('child_process');
    const out = await new Promise<{ code: number; out: string; err: string }>((resolve) =>
      execFile(
        process.env.TEMPORAL_BIN ?? 'temporal',
        [
          'workflow',
          'execute',
          '--address',
          env.address,
          '--task-queue',
          TQ,
          '--type',
          'undoFixConstraints',
          '--workflow-id',
          `undo-cli-${Date.now()}`,
          '--input',
          JSON.stringify({ workflowId: h.workflowId }),
        ],
        { timeout: 120_000 },
        (e, o, er) => resolve({ code: e ? Number(e.code ?? 1) : 0, out: o, err: er }),
      ),
    );
    expect(out.err).toBe('');
    expect(out.code).toBe(0);
    expect(out.out).toMatch(/"status":\s*"undone"/);
    expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);
    expect((await db.pool.query(`SELECT count(*)::int AS n FROM cli_forms WHERE email IS NULL`)).rows[0].n).toBe(10);
    // a run in progress: its own rollback signal undoes it, not this
    const holder = new Client(db.conn);
    holder.on('error', () => undefined);
    await holder.connect();
    // SHARE: the audit reads, the constraint's ALTER TABLE waits
    await holder.query(`BEGIN; LOCK TABLE cli_forms IN SHARE MODE`);
    const live = await run({
      fixes: [{ kind: 'notNull', table: 'cli_forms', column: 'email', nulls: { fill: 'none' } }],
    });
    await sleep(1500);
    expect(await failure(undo({ workflowId: live.workflowId }).then((x) => x.result()))).toMatch(
      /still runs: send it the rollback signal instead/,
    );
    await holder.query(`ROLLBACK`);
    await holder.end();
    await live.result();
  });

  test('by our CLI: partflow undo-fix <workflowId>', async () => {
    await db.pool.query(`CREATE TABLE own_forms (id int PRIMARY KEY, email text)`);
    await db.pool.query(
      `INSERT INTO own_forms SELECT g, CASE WHEN g % 4 = 0 THEN NULL ELSE 'e' || g END FROM generate_series(1, 40) g`,
    );
    const before = await catalogSnapshot(db.pool, ['public']);
    const h = await run({ fixes: [{ kind: 'notNull', table: 'own_forms', column: 'email', nulls: { fill: 'none' } }] });
    await h.result();
    const { execFile } = await import('child_process');
    const path = await import('path');
    const out = await new Promise<{ code: number; out: string; err: string }>((resolve) =>
      execFile(
        process.execPath,
        [path.join(__dirname, '..', '..', 'bin', 'partflow.js'), 'undo-fix', h.workflowId],
        { env: { ...process.env, TEMPORAL_ADDRESS: env.address, PARTFLOW_TASK_QUEUE: TQ }, timeout: 120_000 },
        (e, o, er) => resolve({ code: e ? Number(e.code ?? 1) : 0, out: o, err: er }),
      ),
    );
    expect(out.err).toBe('');
    expect(out.code).toBe(0);
    expect(out.out).toMatch(
      new RegExp(`undone ${h.workflowId} \\(run .*\\):\\n  validate .*\\n  repair .*\\n  constraint `),
    );
    expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);
    expect((await db.pool.query(`SELECT count(*)::int AS n FROM own_forms WHERE email IS NULL`)).rows[0].n).toBe(10);
  });

  test('attack (helper-10): two undos at once, one owns it; refused while a partitionTable run holds the table', async () => {
    await childTable('c_held', 400, 4);
    const h = await run({ fixes: [fk('c_held', 'delete')] });
    await h.result();
    // a partitionTable run holds the table: its copy has the constraint too and would refuse the restored rows
    const p = await env.client.workflow.start('partitionTable', {
      taskQueue: TQ,
      workflowId: `held-${Date.now()}`,
      args: [{ table: 'c_held', approval: 'signal', batchSize: 200 }],
    });
    const { waitFor } = await import('../helpers/workflow');
    await waitFor(p, (x) => x.phase === 'awaiting-approval', 'approval', 120_000);
    expect(await failure(undo({ workflowId: h.workflowId }).then((x) => x.result()))).toMatch(
      new RegExp(`changed public\\.c_held, which run ${p.workflowId} holds now`),
    );
    await p.signal('rollback');
    await p.result();
    // two undos started together: one undoes, the other is refused (it never runs a step)
    const [a, b] = await Promise.all([undo({ workflowId: h.workflowId }), undo({ workflowId: h.workflowId })]);
    const results = await Promise.allSettled([a.result(), b.result()]);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    const refused = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    expect((refused.reason as WorkflowFailedError).cause?.message).toMatch(
      /is being undone by workflow|was undone already/,
    );
    expect((await db.pool.query(`SELECT count(*)::int AS n FROM c_held WHERE payload = 'orphan'`)).rows[0].n).toBe(4);
  });

  test('fixConstraints and createIndexes are refused while partitionTable converts the table (it would lose or refuse the change)', async () => {
    await childTable('c_conv', 300, 2);
    const p = await env.client.workflow.start('partitionTable', {
      taskQueue: TQ,
      workflowId: `conv-${Date.now()}`,
      args: [{ table: 'c_conv', approval: 'auto', rollbackWindow: '1h', batchSize: 200 }],
    });
    const { waitFor } = await import('../helpers/workflow');
    await waitFor(p, (x) => x.phase === 'rollback-window', 'cut-over', 120_000);
    const before = await catalogSnapshot(db.pool, ['public']);
    expect(await failure(run({ fixes: [fk('c_conv', 'delete')] }).then((x) => x.result()))).toMatch(
      new RegExp(`Table public\\.c_conv is being partitioned by run ${p.workflowId}`),
    );
    const idx = await env.client.workflow.start('createIndexes', {
      taskQueue: TQ,
      workflowId: `conv-idx-${Date.now()}`,
      args: [{ indexes: [{ table: 'c_conv', columns: ['payload'] }] }],
    });
    expect(await failure(idx.result())).toMatch(/is being partitioned by run/);
    expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);
    await p.signal('finalize');
    await p.result();
    // finished: allowed again
    expect((await (await run({ fixes: [fk('c_conv', 'delete')] })).result()).status).toBe('done');
  });

  test('a foreign key to a table partitionTable converts is refused too: it would be left on <table>_old', async () => {
    await db.pool.query(`CREATE TABLE c_parents (id uuid PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now())`);
    await db.pool.query(
      `INSERT INTO c_parents SELECT gen_random_uuid(), now() - g * interval '1 day' FROM generate_series(1, 50) g`,
    );
    await db.pool.query(`CREATE TABLE c_kids (id bigserial PRIMARY KEY, parent_id uuid)`);
    await db.pool.query(`INSERT INTO c_kids (parent_id) SELECT id FROM c_parents`);
    const p = await env.client.workflow.start('partitionTable', {
      taskQueue: TQ,
      workflowId: `conv-parents-${Date.now()}`,
      args: [{ table: 'c_parents', approval: 'signal', rollbackWindow: '1h' }],
    });
    const { waitFor } = await import('../helpers/workflow');
    await waitFor(p, (x) => x.awaitingApproval === true, 'approval gate', 120_000);
    const before = await catalogSnapshot(db.pool, ['public']);
    const kidsFk: ForeignKeyFixInput = {
      kind: 'foreignKey',
      table: 'c_kids',
      columns: ['parent_id'],
      references: { table: 'c_parents', columns: ['id'] },
    };
    expect(await failure(run({ fixes: [kidsFk] }).then((x) => x.result()))).toMatch(
      new RegExp(`Table public\\.c_parents is being partitioned by run ${p.workflowId}`),
    );
    expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);
    await p.signal('rollback');
    await p.result().catch(() => undefined);
  });
});
