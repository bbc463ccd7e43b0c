/**
 * createIndexes against a real PostgreSQL and the Temporal dev server, with writers running.
 */
import { WorkflowFailedError } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Writer, WriterSpec } from '../../demo/writer';
import type { CreateIndexesInput } from '../../src/indexes';
import type { IndexesResult } from '../../workflows/createIndexes';
import type { MaintainResult } from '../../workflows/maintainPartitions';
import { catalogSnapshot, TestDb } from '../helpers/pg';
import { startStack, Stack } from '../helpers/stack';

const TQ = 'partflow-indexes';
let stack: Stack;
let env: TestWorkflowEnvironment;
let db: TestDb;
let n = 0;
const writers: Writer[] = [];

beforeAll(async () => {
  stack = await startStack('indexes', TQ);
  ({ env, db } = stack);
  await db.pool.query(`CREATE TABLE users (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), email text)`);
  await db.pool.query(`INSERT INTO users (email) SELECT 'u' || g || '@x' FROM generate_series(1, 200) g`);
});

afterEach(async () => {
  for (const w of writers.splice(0)) await w.stop().catch(() => undefined);
});

afterAll(async () => {
  await stack?.teardown();
});

const start = (input: CreateIndexesInput) =>
  env.client.workflow.start('createIndexes', { taskQueue: TQ, workflowId: `idx-${++n}-${Date.now()}`, args: [input] });

async function failure(p: Promise<unknown>): Promise<{ message: string; type?: string }> {
  const err = await p.then(
    () => null,
    (e) => e,
  );
  expect(err).toBeInstanceOf(WorkflowFailedError);
  const cause = (err as WorkflowFailedError).cause as { message: string; type?: string };
  return { message: cause.message, type: cause.type };
}

/** A table (partitioned by month: 4 months and a default, or plain) with `rows` rows, and its writer's spec. */
async function table(name: string, rows: number, partitioned: boolean): Promise<WriterSpec> {
  const part = partitioned ? ' PARTITION BY RANGE (created_at)' : '';
  await db.pool.query(
    `CREATE TABLE ${name} (id bigserial, user_id uuid, kind text NOT NULL DEFAULT 'a', payload text,
       created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (id, created_at))${part}`,
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
    `INSERT INTO ${name} (user_id, kind, payload, created_at)
     SELECT CASE WHEN g % 9 = 0 THEN NULL ELSE (SELECT id FROM users ORDER BY id OFFSET g % 200 LIMIT 1) END,
            (ARRAY['a','b','c'])[1 + g % 3], md5(g::text), now() - (g % 80) * interval '1 day'
       FROM generate_series(1, $1::int) g`,
    [rows],
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
  const w = new Writer(spec, db.conn, { lanes: 3, opsPerSecondPerLane: 40, snapshot: false, insertDays: [-60, 20] });
  writers.push(w);
  return w;
}

/** Each index of `table` (a partitioned one's too) with its validity and how many partition indexes it has. */
async function indexes(table: string): Promise<{ name: string; valid: boolean; children: number }[]> {
  const r = await db.pool.query(
    `SELECT c.relname AS name, i.indisvalid AS valid,
            (SELECT count(*)::int FROM pg_inherits h WHERE h.inhparent = c.oid) AS children
       FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
      WHERE i.indrelid = $1::regclass AND NOT i.indisprimary ORDER BY 1`,
    [table],
  );
  return r.rows;
}

test('partitioned table under writers: ON ONLY, CONCURRENTLY per partition, ATTACH; valid; later partitions get it', async () => {
  const spec = await table('ix_part', 20_000, true);
  const w = writer(spec);
  await w.start();
  const result: IndexesResult = await (
    await start({
      indexes: [
        { table: 'ix_part', columns: ['user_id', 'kind'], where: 'user_id IS NOT NULL', name: 'ix_part_user_kind' },
        { table: 'ix_part', columns: ['created_at DESC'] },
      ],
    })
  ).result();
  const stats = await w.stop();
  expect(result.status).toBe('done');
  expect(result.indexes.map((x) => [x.name, x.existed, x.built])).toEqual([
    ['ix_part_user_kind', false, 5],
    ['idx_ix_part_created_at_pf', false, 5],
  ]);
  expect(await indexes('ix_part')).toEqual([
    { name: 'idx_ix_part_created_at_pf', valid: true, children: 5 },
    { name: 'ix_part_user_kind', valid: true, children: 5 },
  ]);
  const def = await db.pool.query(`SELECT pg_get_indexdef('ix_part_user_kind'::regclass) AS d`);
  expect(def.rows[0].d).toBe(
    'CREATE INDEX ix_part_user_kind ON ONLY public.ix_part USING btree (user_id, kind) WHERE (user_id IS NOT NULL)',
  );
  expect({ errors: stats.errors, samples: stats.errorSamples }).toEqual({ errors: 0, samples: [] });
  console.log(
    `[measure] createIndexes on a partitioned table under writers: longest writer wait ${stats.maxLatencyMs} ms`,
  );

  // a second run finds both there and changes nothing
  const again: IndexesResult = await (
    await start({ indexes: [{ table: 'ix_part', columns: ['user_id', 'kind'], name: 'ix_part_user_kind' }] })
  ).result();
  expect(again.indexes[0]).toMatchObject({ existed: true, built: 0 });

  // maintenance adds partitions ahead: PostgreSQL gives each the parent's indexes, attached
  const maint: MaintainResult = await env.client.workflow.execute('maintainPartitions', {
    taskQueue: TQ,
    workflowId: `idx-maint-${Date.now()}`,
    args: [{ tables: [{ table: 'public.ix_part', premake: 4, archive: 'none' }] }],
  });
  expect(maint.ok).toBe(true);
  const after = await indexes('ix_part');
  const parts = Number(
    (await db.pool.query(`SELECT count(*) AS n FROM pg_inherits WHERE inhparent = 'ix_part'::regclass`)).rows[0].n,
  );
  expect(parts).toBeGreaterThan(5);
  expect(after).toEqual([
    { name: 'idx_ix_part_created_at_pf', valid: true, children: parts },
    { name: 'ix_part_user_kind', valid: true, children: parts },
  ]);
});

test('plain table under writers: CREATE INDEX CONCURRENTLY; an INVALID leftover is dropped and rebuilt', async () => {
  const spec = await table('ix_plain', 20_000, false);
  // an interrupted build: a unique index over duplicates fails and leaves an INVALID index of that name
  await db.pool.query(`CREATE UNIQUE INDEX CONCURRENTLY ix_plain_kind ON ix_plain (kind)`).catch(() => undefined);
  expect(await indexes('ix_plain')).toEqual([{ name: 'ix_plain_kind', valid: false, children: 0 }]);
  const w = writer(spec);
  await w.start();
  const dry: IndexesResult = await (
    await start({ indexes: [{ table: 'ix_plain', columns: ['kind'], name: 'ix_plain_kind' }], dryRun: true })
  ).result();
  expect(dry.indexes[0].notes).toEqual([
    expect.stringMatching(/unfinished build of ix_plain_kind is there \(INVALID\)/),
  ]);
  expect(dry.indexes[0].sql).toEqual([
    'CREATE INDEX CONCURRENTLY IF NOT EXISTS "ix_plain_kind" ON "public"."ix_plain" ("kind")',
  ]);
  const result: IndexesResult = await (
    await start({ indexes: [{ table: 'ix_plain', columns: ['kind'], name: 'ix_plain_kind' }] })
  ).result();
  const stats = await w.stop();
  expect(result.indexes[0]).toMatchObject({ existed: false, built: 1 });
  expect(await indexes('ix_plain')).toEqual([{ name: 'ix_plain_kind', valid: true, children: 0 }]);
  const def = await db.pool.query(`SELECT pg_get_indexdef('ix_plain_kind'::regclass) AS d`);
  expect(def.rows[0].d).toBe('CREATE INDEX ix_plain_kind ON public.ix_plain USING btree (kind)');
  expect(stats.errors).toBe(0);
  console.log(`[measure] createIndexes on a plain table under writers: longest writer wait ${stats.maxLatencyMs} ms`);
});

test("the seed's WHERE expires_at < NOW() is refused with the reason and the alternatives; nothing changes", async () => {
  await db.pool.query(`CREATE TABLE ix_seed (id bigint PRIMARY KEY, expires_at timestamptz)`);
  const before = await catalogSnapshot(db.pool, ['public']);
  const f = await failure(
    (
      await start({
        indexes: [
          { table: 'ix_seed', columns: ['id'], name: 'ix_seed_ok' }, // checked, never built: one refusal stops all
          { table: 'ix_seed', columns: ['expires_at'], where: 'expires_at < NOW()', name: 'idx_expires' },
        ],
      })
    ).result(),
  );
  expect(f.type).toBe('InvalidInput');
  expect(f.message).toMatch(
    /^indexes\[1\]: the predicate "expires_at < NOW\(\)" of idx_expires calls a function that is not IMMUTABLE .*use a plain index on the column instead \(expires_at\).*or a predicate on a fixed date/,
  );
  expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);
});

test('a unique index without the partition key is refused; SQL in a predicate is refused before any query', async () => {
  await table('ix_uniq', 100, true);
  const before = await catalogSnapshot(db.pool, ['public']);
  const f = await failure((await start({ indexes: [{ table: 'ix_uniq', columns: ['id'], unique: true }] })).result());
  expect(f.message).toMatch(
    /^indexes\[0\]: a unique index on public\.ix_uniq must include its partition key \(created_at\): PostgreSQL enforces uniqueness within each partition only/,
  );
  const refusal = async (where: string) =>
    failure((await start({ indexes: [{ table: 'ix_uniq', columns: ['id'], where }] })).result());
  for (const where of ['true); DROP TABLE users; --', 'true; DROP TABLE users']) {
    const f = await refusal(where);
    expect(f.type).toBe('InvalidInput');
    expect(f.message).toMatch(/^indexes\[0\]\.where must be one SQL condition; PostgreSQL cannot parse it as one: /);
  }
  // the temporary copy's name must not leak into what the real build runs
  const leak = await refusal('pf_index_check IS NOT NULL');
  expect(leak).toEqual({
    type: 'InvalidInput',
    message: "indexes[0].where refers to the table's whole row or row type; name its columns instead.",
  });
  expect((await refusal('id > (SELECT max(id) FROM users)')).message).toMatch(
    /^indexes\[0\]: PostgreSQL refuses the definition of idx_ix_uniq_id_pf: cannot use subquery in index predicate/,
  );
  expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);
});

test('a build that fails on one partition drops everything this run built, and nothing that was there', async () => {
  await table('ix_undo', 3000, true);
  await db.pool.query(`CREATE INDEX ix_undo_payload ON ix_undo (payload)`); // there before: must stay
  // a duplicate in this month's partition only: the unique build fails there after the partitions before it
  // (by name: default, p0, p1) are built and attached
  await db.pool.query(
    `INSERT INTO ix_undo (user_id, kind, payload, created_at)
     SELECT user_id, kind, payload, created_at FROM ix_undo WHERE created_at >= date_trunc('month', now()) LIMIT 1`,
  );
  const before = await catalogSnapshot(db.pool, ['public']);
  const f = await failure(
    (
      await start({
        indexes: [
          { table: 'ix_undo', columns: ['payload'], name: 'ix_undo_payload' },
          { table: 'ix_undo', columns: ['payload', 'created_at'], unique: true, name: 'ix_undo_unique' },
        ],
      })
    ).result(),
  );
  expect(f.type).toBe('CreateIndexesFailed');
  expect(f.message).toMatch(/has duplicate values, so the unique index cannot be built/);
  expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);
  const byPrefix = await db.pool.query(`SELECT state FROM partflow.fix_runs WHERE workflow_id LIKE $1`, [`idx-${n}-%`]);
  expect(byPrefix.rows).toEqual([{ state: 'failed' }]);
});
