/**
 * Not a test: the recorder of the histories that test/workflow/replay.test.ts replays. Run it when a workflow
 * changes on purpose (a new history for the new code, the old ones kept for the runs in flight):
 * `PARTFLOW_RECORD_HISTORIES=1 npx jest --runInBand --selectProjects integration -t '' test/integration/record-histories.test.ts`.
 * It drives each workflow through its usual path against a real PostgreSQL and Temporal and writes the history.
 */
import * as fs from 'fs';
import * as path from 'path';
import type { WorkflowHandle } from '@temporalio/client';
import { execFileSync } from 'child_process';
import { temporalBin } from '../helpers/temporal';
import { createTable } from '../helpers/tables';
import { startStack, Stack } from '../helpers/stack';
import { waitFor } from '../helpers/workflow';

const TQ = 'partflow-record';
const RECORD = !!process.env.PARTFLOW_RECORD_HISTORIES;
const OUT = path.join(__dirname, '..', 'workflow', 'histories');
let stack: Stack;

/** The history as `temporal workflow show --output json` writes it (the format replays read). */
async function save(name: string, h: WorkflowHandle): Promise<void> {
  const address = (stack.env.connection as unknown as { options: { address: string } }).options.address;
  const json = execFileSync(temporalBin(), [
    'workflow',
    'show',
    '--address',
    address,
    '-w',
    h.workflowId,
    '-o',
    'json',
  ]);
  fs.writeFileSync(path.join(OUT, `${name}.json`), json);
}

(RECORD ? describe : describe.skip)('recording workflow histories for the replay test', () => {
  beforeAll(async () => {
    stack = await startStack('record', TQ);
  });
  afterAll(async () => {
    await stack?.teardown();
  });
  const start = (type: string, id: string, input: unknown) =>
    stack.env.client.workflow.start(type, { taskQueue: TQ, workflowId: `${id}-${Date.now()}`, args: [input] });

  it('partitionTable: approval, cut-over, finalize; and a rollback; then maintainPartitions', async () => {
    const { db } = stack;
    await createTable(db.pool, { schema: 'public', name: 'rec_a' }, 2_000, 'uuid');
    const a = await start('partitionTable', 'partitionTable-finalize', {
      table: 'rec_a',
      approval: 'signal',
      rollbackWindow: '1h',
      batchSize: 200,
    });
    await waitFor(a, (p) => p.phase === 'awaiting-approval', 'approval', 120_000);
    await a.executeUpdate('throttle', { args: [{ sleepMs: 0 }] });
    await a.signal('approveCutover');
    await waitFor(a, (p) => p.phase === 'rollback-window', 'cut-over', 120_000);
    await a.signal('finalize');
    await a.result();
    await save('partitionTable-finalize', a);

    await createTable(db.pool, { schema: 'public', name: 'rec_b' }, 2_000, 'bigserial');
    const b = await start('partitionTable', 'partitionTable-rollback', {
      table: 'rec_b',
      approval: 'auto',
      rollbackWindow: '1h',
    });
    await waitFor(b, (p) => p.phase === 'rollback-window', 'cut-over', 120_000);
    await b.signal('rollback');
    await b.result();
    await save('partitionTable-rollback', b);

    const m = await start('maintainPartitions', 'maintainPartitions', { tables: [{ table: 'rec_a', premake: 4 }] });
    await m.result();
    await save('maintainPartitions', m);
  });

  it('fixConstraints recording its steps, then undoFixConstraints', async () => {
    const { db } = stack;
    await db.pool.query(`CREATE TABLE rec_forms (id int PRIMARY KEY, email text)`);
    await db.pool.query(
      `INSERT INTO rec_forms SELECT g, CASE WHEN g % 5 = 0 THEN NULL ELSE 'e' || g END FROM generate_series(1, 50) g`,
    );
    const f = await start('fixConstraints', 'fixConstraints-steps', {
      fixes: [{ kind: 'notNull', table: 'rec_forms', column: 'email', nulls: { fill: 'none' } }],
    });
    await f.result();
    await save('fixConstraints-steps', f);
    const u = await start('undoFixConstraints', 'undoFixConstraints', { workflowId: f.workflowId });
    await u.result();
    await save('undoFixConstraints', u);
  });

  it('fixConstraints, createIndexes, cleanupTable', async () => {
    const { db } = stack;
    await db.pool.query(`CREATE TABLE rec_users (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), email text)`);
    await db.pool.query(`INSERT INTO rec_users (email) SELECT 'u' || g FROM generate_series(1, 50) g`);
    await db.pool.query(`CREATE TABLE rec_orders (id bigserial PRIMARY KEY, user_id uuid, note text)`);
    await db.pool.query(
      `INSERT INTO rec_orders (user_id, note) SELECT CASE WHEN g % 10 = 0 THEN gen_random_uuid() ELSE
         (SELECT id FROM rec_users ORDER BY id OFFSET g % 50 LIMIT 1) END, 'n' || g FROM generate_series(1, 500) g`,
    );
    const f = await start('fixConstraints', 'fixConstraints', {
      fixes: [
        {
          kind: 'foreignKey',
          table: 'rec_orders',
          columns: ['user_id'],
          references: { table: 'rec_users', columns: ['id'] },
          onDelete: 'SET NULL',
          orphans: 'set-null',
        },
      ],
    });
    await f.result();
    await save('fixConstraints', f);

    const i = await start('createIndexes', 'createIndexes', { indexes: [{ table: 'rec_orders', columns: ['note'] }] });
    await i.result();
    await save('createIndexes', i);

    await createTable(db.pool, { schema: 'public', name: 'rec_c' }, 1_000, 'uuid');
    const c = await start('partitionTable', 'partitionTable-terminated', { table: 'rec_c', approval: 'signal' });
    await waitFor(c, (p) => p.phase === 'awaiting-approval', 'approval', 120_000);
    await c.terminate('recording cleanupTable');
    const cl = await start('cleanupTable', 'cleanupTable', {
      table: 'public.rec_c',
      remove: true,
      workflowId: c.workflowId,
    });
    await cl.result();
    await save('cleanupTable', cl);
  });
});
