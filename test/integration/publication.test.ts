/**
 * Issue 29 item 5: a table in a publication with an explicit table list keeps being published through the
 * cut-over, the rollback window, a rollback and a second cut-over, to a real subscriber (a second cluster,
 * scripts/subscriber.sh) that keeps applying without an error; its content equals the writers' record.
 * What cannot be carried is refused with the exact steps, before anything changes.
 */
import { WorkflowFailedError, WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { execFile } from 'child_process';
import * as path from 'path';
import { Client } from 'pg';
import { compareWithRecord, Writer } from '../../demo/writer';
import type { PartitionTableInput } from '../../src/input';
import { catalogSnapshot, TestDb, withClient } from '../helpers/pg';
import { startStack, Stack } from '../helpers/stack';
import { createTable } from '../helpers/tables';
import { sleep, waitFor } from '../helpers/workflow';

const TQ = 'partflow-publication';
const SUB_PORT = Number(process.env.PARTFLOW_SUBSCRIBER_PORT ?? 54369);
let stack: Stack;
let env: TestWorkflowEnvironment;
let db: TestDb;
let sub: Client | undefined;
let seq = 0;
const writers: Writer[] = [];

const subscriber = (verb: string) =>
  new Promise<void>((resolve, reject) =>
    execFile(
      'bash',
      [path.join(__dirname, '..', '..', 'scripts', 'subscriber.sh'), verb, String(SUB_PORT)],
      { timeout: 120_000 },
      (err, _o, e) => (err ? reject(new Error(`subscriber.sh ${verb}: ${e || err.message}`)) : resolve()),
    ),
  );

beforeAll(async () => {
  stack = await startStack('publication', TQ);
  ({ env, db } = stack);
  await subscriber('create');
  sub = new Client({ host: '127.0.0.1', port: SUB_PORT, user: 'postgres', database: 'postgres' });
  await sub.connect();
});

afterAll(async () => {
  for (const w of writers.splice(0)) await w.stop().catch(() => undefined);
  // the subscription's slot on the publisher goes with it; a slot left behind would hold WAL and the database
  await sub?.query(`DROP SUBSCRIPTION IF EXISTS pub_s`).catch(() => undefined);
  await sub?.end().catch(() => undefined);
  await subscriber('remove').catch(() => undefined);
  await db?.pool
    .query(
      `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = current_database() AND active_pid IS NOT NULL`,
    )
    .catch(() => undefined);
  await sleep(200);
  await db?.pool
    .query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = current_database()`)
    .catch(() => undefined);
  await stack?.teardown();
});

function start(input: PartitionTableInput): Promise<WorkflowHandle> {
  const workflowId = `publication-${++seq}-${Date.now()}`;
  return env.client.workflow.start('partitionTable', { taskQueue: TQ, workflowId, args: [input] });
}

/** What the publication publishes for the table: its kind and the publication's partition-root setting. */
async function published(prefix = 'pub_'): Promise<string[]> {
  const r = await db.pool.query(
    `SELECT p.pubname || ' ' || c.relname || ' ' || c.relkind::text || ' via_root=' || p.pubviaroot::text AS x
       FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid JOIN pg_class c ON c.oid = pr.prrelid
      WHERE starts_with(p.pubname, $1) ORDER BY 1`,
    [prefix],
  );
  return r.rows.map((x) => x.x);
}

test('the subscriber keeps receiving every change through the cut-over, a rollback, an attach and its rollback, and a second cut-over', async () => {
  const t = await createTable(db.pool, { schema: 'public', name: 'pub' }, 20_000, 'uuid');
  await db.pool.query(`CREATE PUBLICATION pub_p FOR TABLE public.pub`);
  await sub!.query(`CREATE TABLE public.pub (id uuid PRIMARY KEY, user_id uuid, status text NOT NULL, payload text,
                      n integer NOT NULL, created_at timestamptz NOT NULL)`);
  await sub!.query(
    `CREATE SUBSCRIPTION pub_s CONNECTION 'host=127.0.0.1 port=${process.env.PGPORT ?? 54329} user=postgres dbname=${db.name}'
       PUBLICATION pub_p`,
  );
  const w = new Writer(t.spec, db.conn, { lanes: 3, opsPerSecondPerLane: 40, snapshot: true, seed: 7 });
  writers.push(w);
  await w.start();
  const h = await start({ table: 'public.pub', approval: 'auto', rollbackWindow: '1h', batchSize: 2000 });
  const p = await waitFor(h, (x) => x.phase === 'rollback-window', 'cut-over', 120_000);
  expect(p.warnings.join(' ')).toMatch(/Publication pub_p: public\.pub leaves it and the new table joins it/);
  expect(await published()).toEqual(['pub_p pub p via_root=true']);

  await sleep(1500);
  await h.signal('rollback');
  const back = await h.result();
  expect(back.status).toBe('rolled-back');
  expect(back.undoProblems).toEqual([]);
  expect(await published()).toEqual(['pub_p pub r via_root=false']);
  await sleep(1000);
  // the attach path: the table itself becomes the history partition; published by the new parent, then back
  const ahead = new Date();
  ahead.setUTCMonth(ahead.getUTCMonth() + 12, 1);
  const cutoffMonth = ahead.toISOString().slice(0, 7);
  const a = await start({ table: 'public.pub', method: 'attach', cutoffMonth, approval: 'auto', rollbackWindow: '1h' });
  await waitFor(a, (x) => x.phase === 'rollback-window', 'attach cut-over', 120_000);
  expect(await published()).toEqual(['pub_p pub p via_root=true']);
  await sleep(1500);
  await a.signal('rollback');
  expect((await a.result()).undoProblems).toEqual([]);
  expect(await published()).toEqual(['pub_p pub r via_root=false']);
  await sleep(1000);
  const again = await start({ table: 'public.pub', approval: 'auto', rollbackWindow: '0s', batchSize: 2000 });
  expect((await again.result()).status).toBe('done');
  expect(await published()).toEqual(['pub_p pub p via_root=true']);

  await sleep(1500);
  const stats = await w.stop();
  expect({ errors: stats.errors, samples: stats.errorSamples }).toEqual({ errors: 0, samples: [] });
  expect(stats.inserts + stats.updates + stats.deletes).toBeGreaterThan(100);
  const onPublisher = await withClient(db.conn, (c) => compareWithRecord(c, t.spec, w.record));
  expect(onPublisher.tableChecksum).toBe(onPublisher.recordChecksum);
  // the subscriber catches up: every committed change, nothing twice, never an apply error
  let cmp = await compareWithRecord(sub!, t.spec, w.record);
  for (let i = 0; i < 60 && cmp.tableChecksum !== cmp.recordChecksum; i++) {
    await sleep(500);
    cmp = await compareWithRecord(sub!, t.spec, w.record);
  }
  expect({ missing: cmp.missing, extra: cmp.extra, different: cmp.different }).toEqual({
    missing: 0,
    extra: 0,
    different: 0,
  });
  expect(cmp.tableChecksum).toBe(cmp.recordChecksum);
  const errors = await sub!.query(`SELECT apply_error_count + sync_error_count AS n FROM pg_stat_subscription_stats`);
  expect(errors.rows).toEqual([{ n: '0' }]);
});

test('what a publication cannot carry is refused with the steps, before anything changes', async () => {
  await createTable(db.pool, { schema: 'public', name: 'pubr' }, 500, 'uuid');
  await db.pool.query(
    `CREATE TABLE public.parted (id int, created_at timestamptz NOT NULL, PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)`,
  );
  await db.pool.query(`CREATE PUBLICATION pubr_p FOR TABLE public.pubr, public.parted`);
  const before = await catalogSnapshot(db.pool, ['public']);
  const first = await (await start({ table: 'public.pubr' })).result().catch((e: unknown) => e);
  expect((first as WorkflowFailedError).cause?.message).toMatch(
    /Publication pubr_p publishes partitioned table\(s\) public\.parted by their partitions/,
  );
  expect((first as WorkflowFailedError).cause?.message).toMatch(/publish_via_partition_root/);
  await db.pool.query(`ALTER PUBLICATION pubr_p DROP TABLE public.parted`);
  await db.pool.query(`ALTER PUBLICATION pubr_p SET TABLE public.pubr (id, payload)`);
  const second = await (await start({ table: 'public.pubr' })).result().catch((e: unknown) => e);
  expect((second as WorkflowFailedError).cause?.message).toMatch(
    /Publication pubr_p publishes only columns id, payload of public\.pubr; .*created_at/,
  );
  await db.pool.query(`ALTER PUBLICATION pubr_p SET TABLE public.pubr`);
  expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);
});

describe('the attack on the publications (helper-10)', () => {
  const md5 = async (c: { query: Client['query'] }, table: string) =>
    (
      await c.query(
        `SELECT count(*)::int AS n, md5(coalesce(string_agg(id::text || status || n || created_at::text, ',' ORDER BY id), '')) AS h FROM ${table}`,
      )
    ).rows[0];

  test('a column list and a row filter are carried (publish_via_partition_root on before the ADD); a change of them during the run refuses the cut-over', async () => {
    const t = await createTable(db.pool, { schema: 'public', name: 'pubf' }, 3_000, 'uuid');
    await db.pool.query(`CREATE PUBLICATION pubf_cols FOR TABLE public.pubf (id, status, n, created_at)`);
    await db.pool.query(
      `CREATE PUBLICATION pubf_ins FOR TABLE public.pubf WHERE (status = 'done') WITH (publish = 'insert')`,
    );
    await sub!.query(`CREATE TABLE public.pubf (id uuid PRIMARY KEY, status text NOT NULL, n integer NOT NULL,
                        created_at timestamptz NOT NULL)`);
    await sub!.query(
      `CREATE SUBSCRIPTION pubf_s CONNECTION 'host=127.0.0.1 port=${process.env.PGPORT ?? 54329} user=postgres dbname=${db.name}'
         PUBLICATION pubf_cols`,
    );
    try {
      const w = new Writer(t.spec, db.conn, { lanes: 2, opsPerSecondPerLane: 40, snapshot: true, seed: 11 });
      writers.push(w);
      await w.start();
      // changed while the run waits for approval: the cut-over refuses, nothing is moved
      const h = await start({ table: 'public.pubf', approval: 'signal', rollbackWindow: '1h', batchSize: 1000 });
      await waitFor(h, (x) => x.phase === 'awaiting-approval', 'approval', 120_000);
      await db.pool.query(`ALTER PUBLICATION pubf_ins SET TABLE public.pubf WHERE (status = 'new')`);
      await h.signal('approveCutover');
      const refused = await h.result().catch((e: unknown) => e);
      expect((refused as WorkflowFailedError).cause?.message).toMatch(/publication pubf_ins/);
      expect(await published('pubf_')).toEqual(['pubf_cols pubf r via_root=false', 'pubf_ins pubf r via_root=false']);
      // carried: both publications move with their column list and row filter, and back
      const a = await start({ table: 'public.pubf', approval: 'auto', rollbackWindow: '1h', batchSize: 1000 });
      await waitFor(a, (x) => x.phase === 'rollback-window', 'cut-over', 120_000);
      expect(await published('pubf_')).toEqual(['pubf_cols pubf p via_root=true', 'pubf_ins pubf p via_root=true']);
      const filter = await db.pool.query(
        `SELECT pg_get_expr(prqual, prrelid) AS f, prattrs::text AS cols FROM pg_publication_rel pr
          JOIN pg_publication p ON p.oid = pr.prpubid WHERE starts_with(p.pubname, 'pubf_') ORDER BY p.pubname`,
      );
      expect(filter.rows).toEqual([
        { f: null, cols: expect.stringMatching(/^\d+ \d+ \d+ \d+$/) },
        { f: "(status = 'new'::text)", cols: null },
      ]);
      // changed in the rollback window: the rollback refuses until it is undone
      await db.pool.query(`ALTER PUBLICATION pubf_ins SET TABLE public.pubf WHERE (status = 'failed')`);
      await a.signal('rollback');
      await waitFor(a, (x) => /would undo a change of its publications/.test(x.lastError ?? ''), 'refusal', 60_000);
      await db.pool.query(`ALTER PUBLICATION pubf_ins SET TABLE public.pubf WHERE (status = 'new')`);
      await a.signal('rollback');
      expect((await a.result()).status).toBe('rolled-back');
      expect(await published('pubf_')).toEqual(['pubf_cols pubf r via_root=false', 'pubf_ins pubf r via_root=false']);
      const stats = await w.stop();
      expect(stats.errors).toBe(0);
      let mine = await md5(db.pool, 'public.pubf');
      let theirs = await md5(sub!, 'public.pubf');
      for (let i = 0; i < 60 && JSON.stringify(mine) !== JSON.stringify(theirs); i++) {
        await sleep(500);
        [mine, theirs] = [await md5(db.pool, 'public.pubf'), await md5(sub!, 'public.pubf')];
      }
      expect(theirs).toEqual(mine);
      const errors = await sub!.query(
        `SELECT apply_error_count + sync_error_count AS n FROM pg_stat_subscription_stats WHERE subname = 'pubf_s'`,
      );
      expect(errors.rows).toEqual([{ n: '0' }]);
    } finally {
      await sub!.query(`DROP SUBSCRIPTION IF EXISTS pubf_s`);
    }
  });

  test('a replica identity FULL with a row-filtered publication: partitions that maintenance makes keep it', async () => {
    await db.pool.query(
      `CREATE TABLE public.pubm (id bigserial PRIMARY KEY, status text, created_at timestamptz NOT NULL)`,
    );
    await db.pool.query(
      `INSERT INTO public.pubm (status, created_at) SELECT 'new', now() - g * interval '1 day' FROM generate_series(1, 200) g`,
    );
    await db.pool.query(`ALTER TABLE public.pubm REPLICA IDENTITY FULL`);
    await db.pool.query(
      `CREATE PUBLICATION pubm_p FOR TABLE public.pubm WHERE (status = 'done') WITH (publish_via_partition_root = true)`,
    );
    const h = await start({ table: 'public.pubm', approval: 'auto', rollbackWindow: '0s', premake: 1 });
    expect((await h.result()).status).toBe('done');
    const m = await env.client.workflow.start('maintainPartitions', {
      taskQueue: TQ,
      workflowId: `publication-maint-${Date.now()}`,
      args: [{ tables: [{ table: 'public.pubm', premake: 3 }] }],
    });
    expect((await m.result()).ok).toBe(true);
    const kinds = await db.pool.query(
      `SELECT DISTINCT c.relreplident::text AS ri FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'public.pubm'::regclass`,
    );
    expect(kinds.rows).toEqual([{ ri: 'f' }]);
    // an UPDATE visits every partition (no partition column in its WHERE): each must allow it
    expect((await db.pool.query(`UPDATE public.pubm SET status = 'x' WHERE id = 2`)).rowCount).toBe(1);
  });
});
