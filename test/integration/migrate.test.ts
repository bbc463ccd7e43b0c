/** partflow's own schema: versioned files applied once, adopting a database the 0.1 ad-hoc blocks set up. */
import { migrate, readMigrations } from '../../activities/runtime/migrate';
import { catalogSnapshot, createTestDb, TestDb } from '../helpers/pg';

let db: TestDb;
beforeEach(async () => {
  db = await createTestDb('migrate');
});
afterEach(async () => {
  await db.drop();
});

test('a fresh database gets every migration once; a second call writes nothing', async () => {
  const all = readMigrations();
  expect(all.map((m) => m.version)).toEqual(all.map((_m, i) => i + 1)); // 1, 2, ... without gaps
  expect(await migrate(db.pool)).toEqual(all.map((m) => m.version));
  const after = await catalogSnapshot(db.pool, ['partflow']);
  expect(after).toEqual(
    expect.arrayContaining(['rel partflow.runs r', 'rel partflow.repairs r', 'rel partflow.fix_runs r']),
  );
  expect(after).toContain('rel partflow.archive_log r');
  expect(await migrate(db.pool)).toEqual([]);
  expect(await catalogSnapshot(db.pool, ['partflow'])).toEqual(after);
  const rows = await db.pool.query(`SELECT version, name FROM partflow.migrations ORDER BY 1`);
  expect(rows.rows.map((r) => r.name)).toEqual(all.map((m) => m.name));
});

test('a database set up by the ad-hoc blocks of 0.1 (no partflow.migrations, runs without its later columns) is adopted, its rows kept', async () => {
  await db.pool.query(`CREATE SCHEMA partflow`);
  await db.pool.query(
    `CREATE TABLE partflow.runs (table_schema text NOT NULL, table_name text NOT NULL, workflow_id text NOT NULL,
       run_state text NOT NULL, next_page bigint NOT NULL DEFAULT 0, total_pages bigint,
       rows_copied bigint NOT NULL DEFAULT 0, cutover_done boolean NOT NULL DEFAULT false,
       started_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(),
       PRIMARY KEY (table_schema, table_name))`,
  );
  await db.pool.query(
    `INSERT INTO partflow.runs (table_schema, table_name, workflow_id, run_state) VALUES ('public', 'x', 'w', 'done')`,
  );
  await migrate(db.pool);
  const cols = await db.pool.query(
    `SELECT attname FROM pg_attribute WHERE attrelid = 'partflow.runs'::regclass AND attname IN ('plan', 'cutover_columns', 'filenode')`,
  );
  expect(cols.rowCount).toBe(3);
  expect((await db.pool.query(`SELECT workflow_id, run_state FROM partflow.runs`)).rows).toEqual([
    { workflow_id: 'w', run_state: 'done' },
  ]);
});

test('two workers migrating at once: one applies, the other waits and finds nothing to do', async () => {
  const [a, b] = await Promise.all([migrate(db.pool), migrate(db.pool)]);
  expect([...a, ...b].sort()).toEqual(readMigrations().map((m) => m.version));
});
