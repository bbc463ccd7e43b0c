/**
 * Issue 23: the entry points an adversarial operator or a careless script reaches, each reproduced against the
 * real PostgreSQL and Temporal dev server: a cleanup aimed at a live run, a claim interrupted by a killed backend,
 * createIndexes racing maintenance, fixConstraints' parent foreign key against the application's transactions.
 */
import { WorkflowFailedError, WorkflowHandle } from '@temporalio/client';
import { MockActivityEnvironment, type TestWorkflowEnvironment } from '@temporalio/testing';
import { createHash } from 'crypto';
import { Client } from 'pg';
import { buildConcurrently } from '../../activities/runtime/indexBuilder';
import { createActivities } from '../../activities';
import { validateFixInput } from '../../src/constraints';
import { fixSteps } from '../../src/fixSteps';
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

/** A session with a snapshot: every CREATE INDEX CONCURRENTLY waits for it to end; returns its end. */
async function snapshotHolder() {
  const c = await db.pool.connect();
  await c.query(`BEGIN ISOLATION LEVEL REPEATABLE READ`);
  await c.query(`SELECT 1`);
  return async () => {
    await c.query('COMMIT');
    c.release();
  };
}
const building = async (table: string): Promise<number> =>
  count(
    `SELECT count(*) AS n FROM pg_stat_progress_create_index WHERE relid = to_regclass('${table}') AND datname = current_database()`,
  );
async function until(what: string, ok: () => Promise<boolean>, tries = 200): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (await ok()) return;
    await sleep(100);
  }
  throw new Error(`timed out waiting: ${what}`);
}
const buildWaits = async (): Promise<boolean> =>
  (await count(
    `SELECT count(*) AS n FROM pg_stat_progress_create_index p JOIN pg_stat_activity a USING (pid)
      WHERE a.datname = current_database() AND p.phase LIKE 'waiting for%'`,
  )) > 0;

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
    // a truthy string is not a yes, and the lock budget is validated like every workflow's
    for (const [extra, msg] of [
      [{ remove: 'no' }, /Field "remove" must be true or false/],
      [{ remove: true, lockTimeoutMs: '50; x' }, /Field "lockTimeoutMs" must be a whole number/],
    ] as const) {
      const g = await failureOf(
        env.client.workflow.execute('cleanupTable', {
          taskQueue: TQ,
          workflowId: `cleanup-bad-${Date.now()}`,
          args: [{ table: 'public.cl_live', workflowId: h.workflowId, ...extra }],
        }),
      );
      expect(g.type).toBe('InvalidInput');
      expect(g.message).toMatch(msg);
    }
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

describe('2b. the hold of a terminated createIndexes run (issue 27: the run store)', () => {
  it('refuses partitionTable, naming the run, until cleanup releases it; a live one is not released', async () => {
    await createTable(db.pool, { schema: 'public', name: 'cl_fixheld' }, 2_000, 'uuid');
    const look = () =>
      env.client.workflow.execute('cleanupTable', {
        taskQueue: TQ,
        workflowId: `cleanup-look-${Date.now()}`,
        args: [{ table: 'public.cl_fixheld' }],
      });
    const release = (workflowId: string) =>
      env.client.workflow.execute('cleanupTable', {
        taskQueue: TQ,
        workflowId: `cleanup-release-${Date.now()}`,
        args: [{ table: 'public.cl_fixheld', remove: true, workflowId }],
      });
    const endSnapshot = await snapshotHolder();
    let ix: WorkflowHandle | undefined;
    try {
      ix = await env.client.workflow.start('createIndexes', {
        taskQueue: TQ,
        workflowId: `ix-held-${Date.now()}`,
        args: [{ indexes: [{ table: 'cl_fixheld', columns: ['payload'] }] }],
      });
      await until('the build waits', async () => (await building('public.cl_fixheld')) === 1);
      // live: cleanup refuses to release it
      const live = await failureOf(release(ix.workflowId));
      expect(live.type).toBe('RunInProgress');
      expect(live.message).toMatch(new RegExp(`Workflow ${ix.workflowId} still runs`));
      await ix.terminate('the operator killed it: no undo runs');
      // its activity learns it at its next heartbeat and cancels the build, which leaves the index INVALID
      await until("the dead run's build is cancelled", async () => (await building('public.cl_fixheld')) === 0, 300);
    } finally {
      await endSnapshot();
    }
    // the dead run still holds the table: partitionTable refuses before anything changes, naming it
    const refused = await failureOf((await start({ table: 'cl_fixheld', dryRun: true })).result());
    expect(refused.message).toMatch(
      new RegExp(`already has a partflow run in progress \\(createIndexes workflow ${ix!.workflowId}\\)`),
    );
    const seen = await look();
    expect(seen.heldBy).toEqual([
      { kind: 'createIndexes', workflowId: ix!.workflowId, state: 'active', left: [expect.stringMatching(/INVALID/)] },
    ]);
    // our CLI's path (partflow cleanup --yes): it asks Temporal, sees the run terminated, releases its hold
    const { cleanupLeftovers } = await import('../../operator/client');
    const released = await cleanupLeftovers(env.client, 'public.cl_fixheld', TQ, true);
    expect(released.refused).toBeUndefined();
    expect(released.report.removed).toBe(true);
    expect(released.report.heldBy?.[0]?.workflowId).toBe(ix!.workflowId);
    expect((await look()).heldBy).toBeUndefined();
    // again, as the Temporal CLI would start it: nothing more to do, no error
    expect((await release(ix!.workflowId)).removed).toBe(false);
    // no longer held; what the dead run built is still there for the operator to decide: its INVALID index
    const next = await failureOf((await start({ table: 'cl_fixheld', dryRun: true })).result());
    expect(next.message).toMatch(/idx_cl_fixheld_payload_pf of public\.cl_fixheld are INVALID/);
    await db.pool.query(`DROP INDEX public.idx_cl_fixheld_payload_pf`);
    const plan = await (await start({ table: 'cl_fixheld', dryRun: true })).result();
    expect(plan.status).toBe('dry-run');
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

  it('builds and attaches on partitions that appeared during the build; done only when valid everywhere', async () => {
    await monthly('ix_gap');
    const endSnapshot = await snapshotHolder();
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
      await until('a build waits for the snapshot', buildWaits, 300);
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
      await endSnapshot();
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
    const endSnapshot = await snapshotHolder();
    const wf = `ix-held-${Date.now()}`;
    const h = await env.client.workflow.start('createIndexes', {
      taskQueue: TQ,
      workflowId: wf,
      args: [{ indexes: [{ table: 'ix_held', columns: ['payload'] }] }],
    });
    try {
      await until('a build waits for the snapshot', buildWaits, 300);
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
      await endSnapshot();
    }
    expect((await h.result()).status).toBe('done');
    expect(await count(`SELECT count(*) AS n FROM pg_inherits WHERE inhparent = 'ix_held'::regclass`)).toBe(4);
  });
});

describe('5. index builds: orphans, cancellation, the fix fence and budget', () => {
  async function plain(name: string): Promise<void> {
    await db.pool.query(`CREATE TABLE ${name} (id bigserial PRIMARY KEY, payload text)`);
    await db.pool.query(`INSERT INTO ${name} (payload) SELECT md5(g::text) FROM generate_series(1, 2000) g`);
  }

  it('a build left running by a dead attempt is cancelled before its INVALID leftover is dropped', async () => {
    await plain('ix_orphan');
    const endSnapshot = await snapshotHolder();
    // the dead attempt's backend: partflow's application_name, its CREATE INDEX CONCURRENTLY waiting for the snapshot
    const wf = `ix-orphan-${Date.now()}`;
    // the name a build of this workflow's carries (activities/indexes.ts buildName)
    const name = `partflow build ${createHash('sha256').update(wf).digest('hex').slice(0, 16)}`;
    const orphan = new Client({ connectionString: db.url, application_name: name });
    await orphan.connect();
    const orphanDone = orphan
      .query(`CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_orphan_payload ON ix_orphan (payload)`)
      .then(
        () => 'finished',
        (e: { code?: string }) => `failed ${e.code}`,
      );
    let h: WorkflowHandle | undefined;
    try {
      await until('the orphan waits', async () => (await building('ix_orphan')) === 1);
      h = await env.client.workflow.start('createIndexes', {
        taskQueue: TQ,
        workflowId: wf,
        args: [{ indexes: [{ table: 'ix_orphan', columns: ['payload'], name: 'ix_orphan_payload' }] }],
      });
      const first = await Promise.race([orphanDone, sleep(30_000).then(() => 'still running after 30 s')]);
      expect(first).toBe('failed 57014');
    } finally {
      await endSnapshot();
      await orphanDone;
      await orphan.end();
    }
    expect((await h!.result()).status).toBe('done');
    expect(
      (await db.pool.query(`SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_orphan_payload'::regclass`)).rows,
    ).toEqual([{ indisvalid: true }]);
  });

  it("another run's live build of the same index is waited for, not cancelled", async () => {
    await plain('ix_two');
    const endSnapshot = await snapshotHolder();
    const sql = `CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_two_payload ON public.ix_two (payload)`;
    const fence = async () => undefined;
    const as = (wf: string) => new MockActivityEnvironment({ workflowExecution: { workflowId: wf, runId: `${wf}-r` } });
    const build = (wf: string) =>
      as(wf)
        .run(buildConcurrently, db.pool, { schema: 'public', name: 'ix_two' }, 'ix_two_payload', sql, fence)
        .then(
          () => 'done',
          (e: { code?: string; message?: string }) => `failed ${e.code} ${e.message}`,
        );
    let a: Promise<string> | undefined;
    let b: Promise<string> | undefined;
    try {
      a = build('run-a');
      await until('run A builds', async () => (await building('public.ix_two')) === 1);
      b = build('run-b');
      await sleep(1500);
    } finally {
      await endSnapshot();
    }
    expect(await a).toBe('done');
    expect(await b).toBe('done');
    expect(
      (await db.pool.query(`SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_two_payload'::regclass`)).rows,
    ).toEqual([{ indisvalid: true }]);
  });

  it('cancelling createIndexes cancels the CREATE INDEX CONCURRENTLY in flight instead of waiting for it', async () => {
    await plain('ix_cancel');
    const endSnapshot = await snapshotHolder();
    let h: WorkflowHandle | undefined;
    try {
      h = await env.client.workflow.start('createIndexes', {
        taskQueue: TQ,
        workflowId: `ix-cancel-${Date.now()}`,
        args: [{ indexes: [{ table: 'ix_cancel', columns: ['payload'] }] }],
      });
      await until('the build waits', async () => (await building('ix_cancel')) === 1);
      await h.cancel();
      // the snapshot is still held: only a cancelled statement ends the build now
      await until('the build is cancelled', async () => (await building('ix_cancel')) === 0, 150);
      await expect(h.result()).rejects.toThrow(WorkflowFailedError);
    } finally {
      await endSnapshot();
    }
    // the undo dropped what the run began
    expect(await count(`SELECT count(*) AS n FROM pg_index WHERE indrelid = 'ix_cancel'::regclass`)).toBe(1);
  });

  describe('fixConstraints supporting index', () => {
    const fkFix = (table: string) => ({
      kind: 'foreignKey' as const,
      table,
      columns: ['user_id'],
      references: { table: 'fx_users', columns: ['id'] },
    });
    let acts: ReturnType<typeof createActivities>;
    beforeAll(async () => {
      acts = createActivities({ pool: db.pool, log: createLogger({ test: 'fx' }).child({}, { level: 'fatal' }) });
      await db.pool.query(`CREATE TABLE fx_users (id bigint PRIMARY KEY)`);
      await db.pool.query(`INSERT INTO fx_users SELECT g FROM generate_series(1, 50) g`);
    });
    async function partitioned(name: string): Promise<void> {
      await db.pool.query(
        `CREATE TABLE ${name} (id bigserial, user_id bigint, created_at timestamptz NOT NULL DEFAULT now(),
           PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)`,
      );
      await db.pool.query(`CREATE TABLE ${name}_all PARTITION OF ${name} DEFAULT`);
      await db.pool.query(`INSERT INTO ${name} (user_id) SELECT 1 + g % 50 FROM generate_series(1, 500) g`);
    }
    const mock = (wf: string) =>
      new MockActivityEnvironment({ workflowExecution: { workflowId: wf, runId: `${wf}-r` } });

    it('does nothing once the run is being undone: not even the parent index', async () => {
      await partitioned('fx_fenced');
      const m = mock('fx-fenced');
      const opts = validateFixInput({ fixes: [fkFix('fx_fenced')] });
      const [audit] = (await m.run(acts.auditFixes, opts)) as Awaited<ReturnType<typeof acts.auditFixes>>;
      await m.run(acts.claimFix, [opts.fixes[0].table], 'fixConstraints');
      await m.run(acts.beginFixUndo);
      const f = await m.run(acts.createSupportingIndex, audit.fix as never, audit.info, 50).then(
        () => null,
        (e: { type?: string }) => e.type,
      );
      expect(f).toBe('RunUndone');
      expect(await count(`SELECT count(*) AS n FROM pg_index WHERE indrelid = 'fx_fenced'::regclass`)).toBe(1);
    });

    it("waits for its lock with the run's lockTimeoutMs, not the default", async () => {
      await partitioned('fx_budget');
      const m = mock('fx-budget');
      const beats: { step?: string; attempt?: number; lockWaitRetries?: number }[] = [];
      m.on('heartbeat', (d) => beats.push(d));
      const opts = validateFixInput({ fixes: [fkFix('fx_budget')] });
      const [audit] = (await m.run(acts.auditFixes, opts)) as Awaited<ReturnType<typeof acts.auditFixes>>;
      await m.run(acts.claimFix, [opts.fixes[0].table], 'fixConstraints');
      // a writer in a transaction of 400 ms: the parent index's ShareLock waits for its RowExclusiveLock
      const writer = new Client({ connectionString: db.url });
      await writer.connect();
      const w = writer.query(`BEGIN; INSERT INTO fx_budget (user_id) VALUES (1); SELECT pg_sleep(0.4); COMMIT`);
      await until(
        'the writer holds its lock',
        async () =>
          (await count(
            `SELECT count(*) AS n FROM pg_locks WHERE relation = 'fx_budget'::regclass AND mode = 'RowExclusiveLock' AND granted`,
          )) > 0,
      );
      await m.run(acts.createSupportingIndex, audit.fix as never, audit.info, 5000);
      await w;
      await writer.end();
      const parent = beats.filter((b) => b.step === 'index parent');
      expect(parent.length).toBeGreaterThan(0);
      // one attempt that waited out the writer: with the default 50 ms it would have timed out and retried
      expect(parent.every((b) => b.attempt === 1 && b.lockWaitRetries === 0)).toBe(true);
      expect(
        (
          await db.pool.query(`SELECT indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
            WHERE i.indrelid = 'fx_budget'::regclass AND NOT i.indisprimary`)
        ).rows,
      ).toEqual([{ indisvalid: true }]);
    });
  });
});

describe('6. no deadlock with the application', () => {
  /** Lock modes by the modes they conflict with (PostgreSQL's table of conflicting lock modes). */
  const CONFLICTS: Record<string, string[]> = {
    AccessShareLock: ['AccessExclusiveLock'],
    RowShareLock: ['ExclusiveLock', 'AccessExclusiveLock'],
    RowExclusiveLock: ['ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock'],
    ShareUpdateExclusiveLock: [
      'ShareUpdateExclusiveLock',
      'ShareLock',
      'ShareRowExclusiveLock',
      'ExclusiveLock',
      'AccessExclusiveLock',
    ],
    ShareLock: [
      'RowExclusiveLock',
      'ShareUpdateExclusiveLock',
      'ShareRowExclusiveLock',
      'ExclusiveLock',
      'AccessExclusiveLock',
    ],
    ShareRowExclusiveLock: [
      'RowExclusiveLock',
      'ShareUpdateExclusiveLock',
      'ShareLock',
      'ShareRowExclusiveLock',
      'ExclusiveLock',
      'AccessExclusiveLock',
    ],
    ExclusiveLock: [
      'RowShareLock',
      'RowExclusiveLock',
      'ShareUpdateExclusiveLock',
      'ShareLock',
      'ShareRowExclusiveLock',
      'ExclusiveLock',
      'AccessExclusiveLock',
    ],
  };
  const ALL = [...CONFLICTS.ExclusiveLock, 'AccessShareLock'];
  const conflictsOf = (mode: string) => (mode === 'AccessExclusiveLock' ? ALL : CONFLICTS[mode]);

  async function tableLocks(c: Client): Promise<Map<string, string[]>> {
    const r = await c.query(
      `SELECT c.relname, l.mode FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
        WHERE l.pid = pg_backend_pid() AND l.granted AND c.relkind IN ('r', 'p')
          AND c.relnamespace = 'public'::regnamespace`,
    );
    const m = new Map<string, string[]>();
    for (const x of r.rows) m.set(x.relname, [...(m.get(x.relname) ?? []), x.mode]);
    return m;
  }
  /** What the statement took beyond the LOCK prefix: a mode on a table that conflicts with more than any held. */
  function upgrades(before: Map<string, string[]>, after: Map<string, string[]>): string[] {
    const out: string[] = [];
    for (const [rel, modes] of after) {
      const held = before.get(rel) ?? [];
      for (const mode of modes) {
        const covered = held.some((h) => conflictsOf(mode).every((x) => conflictsOf(h).includes(x)));
        if (!covered) out.push(`${rel} ${mode}`);
      }
    }
    return out;
  }

  it('every fix statement takes no lock its LOCK prefix did not take first (pg_locks before and after)', async () => {
    await db.pool.query(`CREATE TABLE u_lk (id bigint PRIMARY KEY)`);
    await db.pool.query(
      `CREATE TABLE g_lk (id bigserial, user_id bigint, note text, created_at timestamptz NOT NULL DEFAULT now(),
         PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)`,
    );
    await db.pool.query(`CREATE TABLE g_lk_a PARTITION OF g_lk FOR VALUES FROM ('2020-01-01') TO ('2030-01-01')`);
    await db.pool.query(`CREATE TABLE g_lk_b PARTITION OF g_lk DEFAULT`);
    const acts = createActivities({ pool: db.pool, log: createLogger({ test: 'lk' }).child({}, { level: 'fatal' }) });
    const m = new MockActivityEnvironment({ workflowExecution: { workflowId: 'lk', runId: 'lk-r' } });
    const opts = validateFixInput({
      fixes: [
        { kind: 'foreignKey', table: 'g_lk', columns: ['user_id'], references: { table: 'u_lk', columns: ['id'] } },
        { kind: 'notNull', table: 'g_lk', column: 'note', nulls: 'fail' },
      ],
    });
    const audits = (await m.run(acts.auditFixes, opts)) as Awaited<ReturnType<typeof acts.auditFixes>>;
    const c = new Client({ connectionString: db.url });
    await c.connect();
    const found: string[] = [];
    const statements: string[] = [];
    const check = async (s: { sql: string; locks: string[] }, keep: boolean) => {
      await c.query('BEGIN');
      for (const l of s.locks) await c.query(l);
      const before = await tableLocks(c);
      await c.query(s.sql);
      found.push(...upgrades(before, await tableLocks(c)).map((u) => `${s.sql}: ${u}`));
      statements.push(s.sql);
      await c.query(keep ? 'COMMIT' : 'ROLLBACK');
    };
    try {
      for (const a of audits) {
        const steps = fixSteps(a.fix, a.info);
        for (const s of steps.addNotValid) await check(s, true);
        for (const s of steps.validate) await check(s, true);
        // as the undo runs them, each committed: the parent's drop takes the partitions' with it
        for (const s of steps.dropConstraint) await check(s, true);
      }
    } finally {
      await c.end();
    }
    // the parent foreign key, the partitions' NOT VALID and VALIDATE, the drops, the NOT NULL steps
    expect(statements.length).toBeGreaterThanOrEqual(10);
    expect(found).toEqual([]);
  });

  it("the parent foreign key meets the application's SELECT ... FOR UPDATE then UPDATE of a user: no 40P01", async () => {
    await db.pool.query(`CREATE TABLE u_dl (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0)`);
    await db.pool.query(`INSERT INTO u_dl (id) SELECT g FROM generate_series(1, 20) g`);
    const errors: string[] = [];
    let stop = false;
    // the application: per user, lock the user, then change it and write a row of theirs; its own deadlock
    // check runs after 20 ms of waiting (the server default is 1 s): any wait cycle with partflow is found on
    // the application's side first unless partflow never waits while holding a lock
    const lane = async (id: number, table: string) => {
      const c = new Client({ connectionString: db.url });
      await c.connect();
      try {
        while (!stop) {
          try {
            await c.query(`BEGIN; SET LOCAL deadlock_timeout = '20ms'`);
            await c.query(`SELECT id FROM u_dl WHERE id = $1 FOR UPDATE`, [id]);
            await c.query(`SELECT pg_sleep(0.005)`);
            await c.query(`UPDATE u_dl SET n = n + 1 WHERE id = $1`, [id]);
            await c.query(`INSERT INTO ${table} (user_id) VALUES ($1)`, [id]);
            await c.query('COMMIT');
          } catch (e) {
            errors.push(`${(e as { code?: string }).code}: ${(e as Error).message}`);
            await c.query('ROLLBACK').catch(() => undefined);
          }
        }
      } finally {
        await c.end();
      }
    };
    for (const round of [1, 2, 3]) {
      const t = `g_dl${round}`;
      await db.pool.query(
        `CREATE TABLE ${t} (id bigserial, user_id bigint, created_at timestamptz NOT NULL DEFAULT now(),
           PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)`,
      );
      await db.pool.query(`CREATE TABLE ${t}_a PARTITION OF ${t} FOR VALUES FROM ('2020-01-01') TO ('2030-01-01')`);
      await db.pool.query(`CREATE TABLE ${t}_b PARTITION OF ${t} DEFAULT`);
      await db.pool.query(`CREATE INDEX ON ${t} (user_id)`);
      stop = false;
      const lanes = [1, 2, 3, 4].map((i) => lane(round * 4 + i, t));
      try {
        await sleep(200);
        const r = await env.client.workflow.execute('fixConstraints', {
          taskQueue: TQ,
          workflowId: `dl-${round}-${Date.now()}`,
          args: [
            {
              fixes: [
                { kind: 'foreignKey', table: t, columns: ['user_id'], references: { table: 'u_dl', columns: ['id'] } },
              ],
            },
          ],
        });
        expect((r as { status: string }).status).toBe('done');
        await sleep(200);
      } finally {
        stop = true;
        await Promise.all(lanes);
      }
    }
    expect(errors).toEqual([]);
  });
});
