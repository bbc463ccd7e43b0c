/**
 * The run store (activities/runtime/runStore.ts, issue 27 item 1) against a real PostgreSQL: one registry of
 * every run whatever its kind, seen by partitionTable's preflight and claim as by a fix's claim; claims of the
 * two kinds serialized; the fence and the undo marker the same for both kinds.
 */
import { MockActivityEnvironment } from '@temporalio/testing';
import { Client } from 'pg';
import { createActivities } from '../../activities';
import { migrate } from '../../activities/runtime/migrate';
import {
  fixRun,
  isActive,
  markEnded,
  markUndoing,
  runsHolding,
  tableRun,
  type RunKey,
} from '../../activities/runtime/runStore';
import type { PreflightResult } from '../../activities/partition';
import { createLogger } from '../../src/logger';
import { createTestDb, TestDb } from '../helpers/pg';

let db: TestDb;
let acts: ReturnType<typeof createActivities>;
const log = createLogger({ component: 'test' }).child({}, { level: 'fatal' });
const as = (wf: string) => new MockActivityEnvironment({ workflowExecution: { workflowId: wf, runId: `${wf}-r` } });
const ref = (name: string) => ({ schema: 'public', name });
const outcome = (p: Promise<unknown>): Promise<string> =>
  p.then(
    () => 'ok',
    (e: Error) => `refused: ${e.message}`,
  );

async function table(name: string): Promise<void> {
  await db.pool.query(
    `CREATE TABLE ${name} (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now(), note text)`,
  );
  await db.pool.query(
    `INSERT INTO ${name} (created_at) SELECT now() - g * interval '1 day' FROM generate_series(1, 60) g`,
  );
}

beforeAll(async () => {
  db = await createTestDb('runstore');
  await migrate(db.pool);
  acts = createActivities({ pool: db.pool, log });
});
afterAll(async () => {
  await db?.drop();
});

describe('the run store', () => {
  it("partitionTable's preflight and claim refuse a table a createIndexes run holds, naming the run", async () => {
    await table('rs_ix');
    await as('ix-1').run(acts.claimFix, [ref('rs_ix')], 'createIndexes');
    const refusal = await outcome(as('pt-1').run(acts.preflight, { table: 'rs_ix' }));
    expect(refusal).toMatch(/already has a partflow run in progress \(createIndexes workflow ix-1\)/);

    // a plan made before the createIndexes run claimed the table: the claim refuses it
    await table('rs_ix2');
    const pre = (await as('pt-2').run(acts.preflight, { table: 'rs_ix2' })) as PreflightResult;
    await as('ix-2').run(acts.claimFix, [ref('rs_ix2')], 'createIndexes');
    expect(await outcome(as('pt-2').run(acts.claimRun, ref('rs_ix2'), pre.plan))).toMatch(
      /Table public\.rs_ix2 is held by createIndexes run ix-2/,
    );
    expect(
      (await db.pool.query(`SELECT count(*)::int AS n FROM partflow.runs WHERE table_name = 'rs_ix2'`)).rows,
    ).toEqual([{ n: 0 }]);

    // released, the table is free again
    await as('ix-2').run(acts.releaseFix, 'done' as const);
    expect(await outcome(as('pt-2').run(acts.claimRun, ref('rs_ix2'), pre.plan))).toBe('ok');
    expect((await runsHolding(db.pool, [ref('rs_ix2')])).map((h) => `${h.kind} ${h.workflowId} ${h.state}`)).toEqual([
      'partitionTable pt-2 active',
    ]);
  });

  it('the registry lists every run that holds a table, partitionTable first, and leaves out the asker', async () => {
    await table('rs_a');
    await table('rs_b');
    await as('fx-a').run(acts.claimFix, [ref('rs_a'), ref('rs_b')], 'fixConstraints');
    const pre = (await as('pt-b')
      .run(acts.preflight, { table: 'rs_b' })
      .catch((e: Error) => e)) as Error;
    expect(pre.message).toMatch(/\(fixConstraints workflow fx-a\)/);
    const holders = await runsHolding(db.pool, [ref('rs_a'), ref('rs_b'), ref('rs_none')]);
    expect(holders.map((h) => [h.kind, h.workflowId, h.runId, h.table, h.state])).toEqual([
      ['fixConstraints', 'fx-a', 'fx-a-r', 'public.rs_a', 'active'],
      ['fixConstraints', 'fx-a', 'fx-a-r', 'public.rs_b', 'active'],
    ]);
    expect(await runsHolding(db.pool, [ref('rs_a')], { workflowId: 'fx-a' })).toEqual([]);
    expect(await runsHolding(db.pool, [ref('rs_a')], { workflowId: 'fx-a', runId: 'fx-a-r' })).toEqual([]);
    expect(await runsHolding(db.pool, [ref('rs_a')], { workflowId: 'fx-a', runId: 'other' })).toHaveLength(1);
    // being undone, it still holds its tables; undone, it holds none
    await as('fx-a').run(acts.beginFixUndo);
    expect((await runsHolding(db.pool, [ref('rs_a')])).map((h) => h.state)).toEqual(['undoing']);
    await as('fx-a').run(acts.releaseFix, 'rolled-back' as const);
    expect(await runsHolding(db.pool, [ref('rs_a'), ref('rs_b')])).toEqual([]);
  });

  it('a fix claim and a partitionTable claim of the same table at once: exactly one wins', async () => {
    await table('rs_race');
    const pre = (await as('pt-race').run(acts.preflight, { table: 'rs_race' })) as PreflightResult;
    // both claims wait behind the registry's lock, then run one after the other
    const holder = new Client({ connectionString: db.url });
    await holder.connect();
    try {
      await holder.query('BEGIN');
      await holder.query(`SELECT pg_advisory_xact_lock(hashtext('partflow.run_store'))`);
      const fix = outcome(as('ix-race').run(acts.claimFix, [ref('rs_race')], 'createIndexes'));
      const part = outcome(as('pt-race').run(acts.claimRun, ref('rs_race'), pre.plan));
      const waiting = async () =>
        Number(
          (
            await db.pool.query(
              `SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database =
                 (SELECT oid FROM pg_database WHERE datname = current_database())`,
            )
          ).rows[0].n,
        );
      for (let i = 0; i < 100 && (await waiting()) < 2; i++) await new Promise((r) => setTimeout(r, 50));
      expect(await waiting()).toBe(2);
      await holder.query('COMMIT');
      const results = [await fix, await part];
      expect(results.filter((r) => r === 'ok')).toHaveLength(1);
      expect(results.filter((r) => /refused: .*(is held by|is being partitioned by)/.test(r))).toHaveLength(1);
    } finally {
      await holder.end();
    }
    expect(await runsHolding(db.pool, [ref('rs_race')])).toHaveLength(1);
  });

  it.each([
    ['partitionTable', () => tableRun(ref('rs_fence'), 'pt-fence')],
    ['fixConstraints', () => fixRun('fx-fence', 'fx-fence-r')],
  ])('%s: the fence holds the undo marker back until the step commits, and fails after it', async (kind, key) => {
    if (kind === 'partitionTable') {
      await db.pool.query(
        `INSERT INTO partflow.runs (table_schema, table_name, workflow_id, run_state) VALUES ('public', 'rs_fence', 'pt-fence', 'active')`,
      );
    } else {
      await db.pool.query(
        `INSERT INTO partflow.fix_runs (workflow_id, run_id, state) VALUES ('fx-fence', 'fx-fence-r', 'active')`,
      );
    }
    const run: RunKey = key();
    const step = await db.pool.connect();
    try {
      await step.query('BEGIN');
      expect(await isActive(step, run)).toBe(true);
      let marked = false;
      const undo = markUndoing(db.pool, run).then((s) => {
        marked = true;
        return s;
      });
      await new Promise((r) => setTimeout(r, 300));
      expect(marked).toBe(false);
      await step.query('COMMIT');
      expect(await undo).toBe('undoing');
      await step.query('BEGIN');
      expect(await isActive(step, run)).toBe(false);
      await step.query('COMMIT');
    } finally {
      step.release();
    }
    // a second marker finds its own state; the release ends it
    expect(await markUndoing(db.pool, run)).toBe('undoing');
    await markEnded(db.pool, run, 'rolled-back');
    expect(await markUndoing(db.pool, run)).toBe('rolled-back');
  });
});

describe('the attack review of the run store (each failed before its fix)', () => {
  /** A finished fixConstraints run that added a NOT NULL on `name`, with its undo steps recorded. */
  async function finishedFix(wf: string, name: string): Promise<void> {
    const oid = (await db.pool.query(`SELECT to_regclass($1)::oid::int AS oid`, [`public.${name}`])).rows[0].oid;
    const fix = { kind: 'notNull', table: ref(name), column: 'note', nulls: 'fail', name: 'nn' };
    const info = { tableOid: oid, relkind: 'r', partitions: [], pk: ['id'], alreadyDone: false, hasIndex: false };
    await db.pool.query(
      `INSERT INTO partflow.fix_runs (workflow_id, run_id, state, tables, kind, undo)
       VALUES ($1, $2, 'done', $3, 'fixConstraints', $4)`,
      [
        wf,
        `${wf}-r`,
        [`"public"."${name}"`],
        JSON.stringify([{ fixNo: 0, step: 'constraint', description: 'NOT NULL note', fix, info }]),
      ],
    );
  }

  it("the undo of a finished fix run is a claim: it and partitionTable's claim never both pass", async () => {
    await table('rs_undo_race');
    await finishedFix('fx-done', 'rs_undo_race');
    const pre = (await as('pt-undo').run(acts.preflight, { table: 'rs_undo_race' })) as PreflightResult;
    // a session holding the fix run's row: the undo waits at its UPDATE, after its registry check
    const locker = new Client({ connectionString: db.url });
    await locker.connect();
    try {
      await locker.query('BEGIN');
      await locker.query(`SELECT 1 FROM partflow.fix_runs WHERE workflow_id = 'fx-done' FOR UPDATE`);
      const undo = outcome(as('undo-fx').run(acts.openFixUndo, 'fx-done'));
      const waitingAtUpdate = async () =>
        (
          await db.pool.query(
            `SELECT count(*)::int AS n FROM pg_stat_activity
              WHERE wait_event_type = 'Lock' AND query LIKE '%UPDATE partflow.fix_runs SET state = ''undoing''%'`,
          )
        ).rows[0].n === 1;
      for (let i = 0; i < 100 && !(await waitingAtUpdate()); i++) await new Promise((r) => setTimeout(r, 50));
      expect(await waitingAtUpdate()).toBe(true);
      const claim = outcome(as('pt-undo').run(acts.claimRun, ref('rs_undo_race'), pre.plan));
      await new Promise((r) => setTimeout(r, 300));
      await locker.query('COMMIT');
      const results = [await undo, await claim];
      expect(results.filter((r) => r === 'ok')).toHaveLength(1);
      expect(results[1]).toMatch(/is held by fixConstraints run fx-done/);
    } finally {
      await locker.end();
    }
    expect((await runsHolding(db.pool, [ref('rs_undo_race')])).map((h) => `${h.kind} ${h.state}`)).toEqual([
      'fixConstraints undoing',
    ]);
  });

  it('a claim of a table whose run holds its row (a step in flight) is refused at once, stalling no other claim', async () => {
    await table('rs_g1');
    await table('rs_g2');
    const pre = (await as('pt-g-b').run(acts.preflight, { table: 'rs_g1' })) as PreflightResult;
    await db.pool.query(
      `INSERT INTO partflow.runs (table_schema, table_name, workflow_id, run_state) VALUES ('public', 'rs_g1', 'pt-g-a', 'active')`,
    );
    const step = new Client({ connectionString: db.url });
    await step.connect();
    try {
      // pt-g-a's forward step in flight: its fence holds the row FOR SHARE for the whole step
      await step.query('BEGIN');
      await step.query(`SELECT 1 FROM partflow.runs WHERE table_name = 'rs_g1' FOR SHARE`);
      const hung = new Promise<string>((r) => setTimeout(() => r('still waiting after 10 s'), 10_000));
      const claim = await Promise.race([outcome(as('pt-g-b').run(acts.claimRun, ref('rs_g1'), pre.plan)), hung]);
      expect(claim).toMatch(/already has a partflow run in progress \(workflow pt-g-a\)/);
      const fix = await Promise.race([outcome(as('ix-g').run(acts.claimFix, [ref('rs_g2')], 'createIndexes')), hung]);
      expect(fix).toBe('ok');
    } finally {
      await step.query('COMMIT');
      await step.end();
    }
  });

  it('a foreign-key fix holds the table it references too: partitionTable and the fix exclude each other', async () => {
    const { tablesOf } = await import('../../src/constraints');
    await table('rs_users');
    await table('rs_orders');
    const fk = {
      kind: 'foreignKey' as const,
      table: ref('rs_orders'),
      columns: ['id'],
      references: { table: ref('rs_users'), columns: ['id'] },
    };
    const tables = tablesOf(fk as Parameters<typeof tablesOf>[0]);
    expect(tables).toEqual([ref('rs_orders'), ref('rs_users')]);
    const pre = (await as('pt-users').run(acts.preflight, { table: 'rs_users' })) as PreflightResult;
    await as('pt-users').run(acts.claimRun, ref('rs_users'), pre.plan);
    expect(await outcome(as('fx-fk').run(acts.claimFix, tables, 'fixConstraints'))).toMatch(
      /Table public\.rs_users is being partitioned by run pt-users/,
    );
    await as('pt-users').run(acts.releaseRun, ref('rs_users'), 'rolled-back' as const);
    expect(await outcome(as('fx-fk').run(acts.claimFix, tables, 'fixConstraints'))).toBe('ok');
    expect(await outcome(as('pt-users2').run(acts.preflight, { table: 'rs_users' }))).toMatch(
      /\(fixConstraints workflow fx-fk\)/,
    );
  });
});

describe('cleanup and a fix run', () => {
  it('does not release a run that undoFixConstraints is undoing (that undo owns it)', async () => {
    const { createCleanupActivities } = await import('../../activities/cleanup');
    const cleanup = createCleanupActivities({ pool: db.pool, log });
    await table('rs_undoing');
    await db.pool.query(
      `INSERT INTO partflow.fix_runs (workflow_id, run_id, state, tables, kind, undo_by)
       VALUES ('fx-u', 'fx-u-r', 'undoing', '{"\\"public\\".\\"rs_undoing\\""}', 'fixConstraints', 'undo-fx-u')`,
    );
    expect((await cleanup.inspectLeftovers(ref('rs_undoing'))).heldBy?.map((h) => h.workflowId)).toEqual(['fx-u']);
    await expect(cleanup.removeLeftovers(ref('rs_undoing'), 'fx-u', 500)).rejects.toThrow(
      /Run fx-u of public\.rs_undoing is being undone by workflow undo-fx-u; cleanup leaves it to that undo/,
    );
    expect((await runsHolding(db.pool, [ref('rs_undoing')])).map((h) => h.state)).toEqual(['undoing']);
    // its own compensation (no undo workflow): released
    await db.pool.query(`UPDATE partflow.fix_runs SET undo_by = NULL WHERE workflow_id = 'fx-u'`);
    expect((await cleanup.removeLeftovers(ref('rs_undoing'), 'fx-u', 500)).removed).toBe(true);
    expect(await runsHolding(db.pool, [ref('rs_undoing')])).toEqual([]);
  });
});
