/**
 * Issue 23: the entry points an adversarial operator or a careless script reaches, each reproduced against the
 * real PostgreSQL and Temporal dev server: a cleanup aimed at a live run, a claim interrupted by a killed backend,
 * createIndexes racing maintenance, fixConstraints' parent foreign key against the application's transactions.
 */
import { WorkflowFailedError, WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { createCleanupActivities } from '../../activities/cleanup';
import type { PartitionTableInput } from '../../src/input';
import { createLogger } from '../../src/logger';
import { TestDb } from '../helpers/pg';
import { createTable } from '../helpers/tables';
import { startStack, Stack } from '../helpers/stack';
import { sleep, waitFor } from '../helpers/workflow';

const TQ = 'partflow-entry';
let stack: Stack;
let env: TestWorkflowEnvironment;
let db: TestDb;
let seq = 0;

beforeAll(async () => {
  stack = await startStack('entry', TQ);
  ({ env, db } = stack);
});

afterAll(async () => {
  await stack?.teardown();
});

function start(input: PartitionTableInput, workflowId = `entry-${++seq}-${Date.now()}`): Promise<WorkflowHandle> {
  return env.client.workflow.start('partitionTable', { taskQueue: TQ, workflowId, args: [input] });
}

async function failureOf(p: Promise<unknown>): Promise<{ message: string; type?: string }> {
  let r: unknown;
  try {
    r = await p;
  } catch (err) {
    if (!(err instanceof WorkflowFailedError)) throw err;
    const c = err.cause as { message: string; type?: string; cause?: { message: string; type?: string } };
    return { message: c.message, type: c.type };
  }
  throw new Error(`the workflow did not fail: ${JSON.stringify(r)}`);
}

const count = async (sql: string): Promise<number> => Number((await db.pool.query(sql)).rows[0].n);
const relkind = async (name: string): Promise<string | undefined> =>
  (await db.pool.query(`SELECT relkind FROM pg_class WHERE oid = to_regclass($1)`, [name])).rows[0]?.relkind;

describe('2. cleanupTable against a live run', () => {
  it('is refused by the workflow itself while the run is running, whoever starts it', async () => {
    await createTable(db.pool, { schema: 'public', name: 'cl_live' }, 2_000, 'uuid');
    const h = await start({ table: 'cl_live', approval: 'auto', rollbackWindow: '1h' });
    await waitFor(h, (p) => p.phase === 'rollback-window', 'cut-over');
    const f = await failureOf(
      env.client.workflow.execute('cleanupTable', {
        taskQueue: TQ,
        workflowId: `cleanup-direct-${Date.now()}`,
        args: [{ table: 'public.cl_live', remove: true, workflowId: h.workflowId }],
      }),
    );
    expect(f.type).toBe('RunInProgress');
    expect(f.message).toMatch(
      new RegExp(`Workflow ${h.workflowId} still runs and owns public.cl_live; cleanup refuses`),
    );
    // nothing was touched: the reverse trigger is still there, the run still active
    expect(await count(`SELECT count(*) AS n FROM pg_trigger WHERE tgname LIKE 'partflow%'`)).toBeGreaterThan(0);
    expect(
      (await db.pool.query(`SELECT run_state FROM partflow.runs WHERE table_name = 'cl_live'`)).rows[0].run_state,
    ).toBe('active');
    await h.signal('finalize');
    expect((await h.result()).status).toBe('done');
  });

  it('a cleanup that got through anyway fences the run: no swap back afterwards, no committed row lost', async () => {
    await createTable(db.pool, { schema: 'public', name: 'cl_raced' }, 2_000, 'uuid');
    const h = await start({ table: 'cl_raced', approval: 'auto', rollbackWindow: '1h' });
    await waitFor(h, (p) => p.phase === 'rollback-window', 'cut-over');
    // the removal itself, as a cleanup that raced the status check would run it
    const acts = createCleanupActivities({
      pool: db.pool,
      log: createLogger({ test: 'cleanup-raced' }).child({}, { level: 'fatal' }),
    });
    const r = await acts.removeLeftovers({ schema: 'public', name: 'cl_raced' }, h.workflowId, 500);
    expect(r.removed).toBe(true);
    expect(r.phase).toBe('after-cutover');
    const before = await count(`SELECT count(*) AS n FROM public.cl_raced`);
    await db.pool.query(
      `INSERT INTO public.cl_raced (id, created_at, payload)
       SELECT gen_random_uuid(), now(), 'after cleanup ' || g FROM generate_series(1, 100) g`,
    );
    // the operator now asks the run for a rollback: it must not swap back (the old table missed 100 rows)
    await h.signal('rollback');
    const f = await failureOf(h.result());
    expect(f).toEqual({
      type: 'RunUndone',
      message: expect.stringMatching(/^nothing undone: partflow\.runs records the run as "done"/),
    });
    expect(await relkind('public.cl_raced')).toBe('p');
    expect(await count(`SELECT count(*) AS n FROM public.cl_raced`)).toBe(before + 100);
    expect(await count(`SELECT count(*) AS n FROM public.cl_raced WHERE payload LIKE 'after cleanup %'`)).toBe(100);
  });
});

describe('3. a claim interrupted by a killed backend', () => {
  it('leaves all or nothing: the retry does not inherit an earlier run’s finished streams', async () => {
    const t = await createTable(db.pool, { schema: 'public', name: 'cl_claim' }, 6_000, 'uuid');
    void t;
    // an earlier parallel run, rolled back after its copy finished: its stream rows say "finished"
    const first = await start({ table: 'cl_claim', parallelism: 2, approval: 'signal', batchSize: 500 });
    await waitFor(first, (p) => p.phase === 'awaiting-approval', 'first run copied');
    await first.signal('rollback');
    await first.result();
    expect(
      await count(`SELECT count(*) AS n FROM partflow.backfill_streams WHERE table_name = 'cl_claim'`),
    ).toBeGreaterThan(0);
    // the next run's claim hangs inside its transaction; its backend is killed there
    process.env.PARTFLOW_FAULT_POINT = 'claim';
    process.env.PARTFLOW_FAULT_SLEEP_MS = '8000';
    let h: WorkflowHandle;
    try {
      h = await start({ table: 'cl_claim', parallelism: 2, approval: 'signal', batchSize: 500 });
      let pid: number | undefined;
      for (let i = 0; i < 200 && !pid; i++) {
        await sleep(100);
        const r = await db.pool.query(
          `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction'
              AND query LIKE 'INSERT INTO partflow.runs%'`,
        );
        pid = r.rows[0]?.pid;
      }
      expect(pid).toBeDefined();
      delete process.env.PARTFLOW_FAULT_POINT;
      await db.pool.query(`SELECT pg_terminate_backend($1)`, [pid]);
    } finally {
      delete process.env.PARTFLOW_FAULT_POINT;
      delete process.env.PARTFLOW_FAULT_SLEEP_MS;
    }
    // the activity's sleep ends with an error from its dead connection; Temporal retries the claim
    const p = await waitFor(h, (x) => x.phase === 'awaiting-approval', 'second run copied', 180_000);
    const rows = await count(`SELECT count(*) AS n FROM public.cl_claim`);
    expect(p.rowsCopied).toBeGreaterThanOrEqual(rows);
    expect(await count(`SELECT count(*) AS n FROM public.cl_claim_pf_shadow`)).toBe(rows);
    await h.signal('rollback');
    await h.result();
  });
});

describe('4. createIndexes while partitions appear', () => {
  /** A partitioned table of four monthly partitions (no default), rows in each. */
  async function monthly(name: string): Promise<void> {
    await db.pool.query(
      `CREATE TABLE ${name} (id bigserial, kind text NOT NULL DEFAULT 'a', payload text,
         created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)`,
    );
    for (const m of [-2, -1, 0, 1])
      await db.pool.query(
        `CREATE TABLE ${name}_m${m + 2} PARTITION OF ${name} FOR VALUES
           FROM (date_trunc('month', now()) + interval '${m} month') TO (date_trunc('month', now()) + interval '${m + 1} month')`,
      );
    await db.pool.query(
      `INSERT INTO ${name} (kind, payload, created_at)
       SELECT (ARRAY['a','b','c'])[1 + g % 3], md5(g::text), now() - (g % 60) * interval '1 day'
         FROM generate_series(1, 2000) g`,
    );
  }
  /** A session with a snapshot: every CREATE INDEX CONCURRENTLY waits for it to end. */
  async function oldSnapshot() {
    const c = await db.pool.connect();
    await c.query(`BEGIN ISOLATION LEVEL REPEATABLE READ`);
    await c.query(`SELECT 1`);
    return {
      async end() {
        await c.query('COMMIT');
        c.release();
      },
    };
  }
  async function waitForBuildWaiting(): Promise<void> {
    for (let i = 0; i < 300; i++) {
      const r = await db.pool.query(
        `SELECT 1 FROM pg_stat_progress_create_index p JOIN pg_stat_activity a USING (pid)
          WHERE a.datname = current_database() AND p.phase LIKE 'waiting for%'`,
      );
      if (r.rowCount) return;
      await sleep(100);
    }
    throw new Error('no CREATE INDEX CONCURRENTLY waited');
  }

  it('builds and attaches on partitions that appeared during the build; done only when valid everywhere', async () => {
    await monthly('ix_gap');
    const snap = await oldSnapshot();
    const h = await env.client.workflow.start('createIndexes', {
      taskQueue: TQ,
      workflowId: `ix-gap-${Date.now()}`,
      args: [
        {
          indexes: [
            { table: 'ix_gap', columns: ['payload'] },
            { table: 'ix_gap', columns: ['kind'] },
          ],
        },
      ],
    });
    try {
      await waitForBuildWaiting();
      // three months ahead appear while the first index's build waits: one CREATE TABLE ... PARTITION OF, two
      // attached the way maintenance attaches
      await db.pool.query(
        `CREATE TABLE ix_gap_m4 PARTITION OF ix_gap FOR VALUES
           FROM (date_trunc('month', now()) + interval '2 month') TO (date_trunc('month', now()) + interval '3 month')`,
      );
      for (const m of [3, 4]) {
        await db.pool.query(`CREATE TABLE ix_gap_m${m + 2} (LIKE ix_gap INCLUDING DEFAULTS)`);
        await db.pool.query(
          `ALTER TABLE ix_gap ATTACH PARTITION ix_gap_m${m + 2} FOR VALUES
             FROM (date_trunc('month', now()) + interval '${m} month') TO (date_trunc('month', now()) + interval '${m + 1} month')`,
        );
      }
    } finally {
      await snap.end();
    }
    const r = await h.result();
    expect(r.status).toBe('done');
    const parts = await count(`SELECT count(*) AS n FROM pg_inherits WHERE inhparent = 'ix_gap'::regclass`);
    expect(parts).toBe(7);
    const ix = await db.pool.query(
      `SELECT c.relname, i.indisvalid,
              (SELECT count(*)::int FROM pg_inherits h JOIN pg_index ci ON ci.indexrelid = h.inhrelid
                WHERE h.inhparent = c.oid AND ci.indisvalid) AS attached
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = 'ix_gap'::regclass AND NOT i.indisprimary ORDER BY c.relname`,
    );
    expect(ix.rows).toEqual(
      [
        { relname: r.indexes[1].name, indisvalid: true, attached: 7 },
        { relname: r.indexes[0].name, indisvalid: true, attached: 7 },
      ].sort((a, b) => (a.relname < b.relname ? -1 : 1)),
    );
  });

  it('maintenance leaves a table alone while a createIndexes run holds it, and names the run', async () => {
    await monthly('ix_held');
    const snap = await oldSnapshot();
    const wf = `ix-held-${Date.now()}`;
    const h = await env.client.workflow.start('createIndexes', {
      taskQueue: TQ,
      workflowId: wf,
      args: [{ indexes: [{ table: 'ix_held', columns: ['payload'] }] }],
    });
    try {
      await waitForBuildWaiting();
      const m = await env.client.workflow.execute('maintainPartitions', {
        taskQueue: TQ,
        workflowId: `ix-held-maint-${Date.now()}`,
        args: [{ tables: [{ table: 'ix_held', premake: 6 }] }],
      });
      expect(m.tables[0].created).toEqual([]);
      expect(m.tables[0].warnings.join(' ')).toContain(
        `partflow run createIndexes ${wf} holds public.ix_held: nothing was created, detached, moved or archived`,
      );
    } finally {
      await snap.end();
    }
    expect((await h.result()).status).toBe('done');
    expect(await count(`SELECT count(*) AS n FROM pg_inherits WHERE inhparent = 'ix_held'::regclass`)).toBe(4);
  });
});
