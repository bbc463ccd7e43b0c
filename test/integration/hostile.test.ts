/**
 * Inputs are hostile (issue 23): every text field of every workflow input, started through Temporal against a
 * real PostgreSQL with SQL in it. A table `public.canary` with one row must outlive them all; each run must fail
 * naming the field, or, where PostgreSQL may legitimately take the text (a quoted identifier that names nothing,
 * a constraint or index name, a fill value, a predicate that is one comparison), it must name the object and
 * change nothing, or hold exactly that text as a name or a value.
 */
import { WorkflowFailedError } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { migrate } from '../../activities/runtime/migrate';
import type { CleanupReport } from '../../activities/cleanup';
import { displayName } from '../../src/ident';
import type { FixResult } from '../../workflows/fixConstraints';
import type { IndexesResult } from '../../workflows/createIndexes';
import type { MaintainResult } from '../../workflows/maintainPartitions';
import { catalogSnapshot, TestDb } from '../helpers/pg';
import { startStack, Stack } from '../helpers/stack';

const TQ = 'partflow-hostile';
let stack: Stack;
let env: TestWorkflowEnvironment;
let db: TestDb;
let n = 0;

/** What every text field gets: quotes, E'' and dollar quotes, statement separators, both kinds of comment. */
const QUOTED = '"x\'; DROP TABLE public.canary; --"';
const PAYLOADS = [
  "x'y",
  "'; DROP TABLE public.canary; --",
  String.raw`E'\\''; DROP TABLE public.canary; --`,
  '$$; DROP TABLE public.canary; $$',
  '$x$; DROP TABLE public.canary; $x$',
  'x; DROP TABLE public.canary',
  'x -- DROP TABLE public.canary',
  'x /* */; DROP TABLE public.canary; /* */',
  // a quoted identifier: legitimate text for an identifier field, that names no table or column
  QUOTED,
];
/** The predicate of the issue, verbatim. */
const ISSUE_WHERE = String.raw`t <> E'\\''; COMMIT; DROP TABLE public.victim; -- '`;

const inner = (quoted: string) => quoted.slice(1, -1).replace(/""/g, '"');
const pub = (name: string) => displayName({ schema: 'public', name });

type Outcome = { failed: true; message: string } | { failed: false; result: unknown };

async function outcome(workflow: string, input: unknown): Promise<Outcome> {
  const h = await env.client.workflow.start(workflow, {
    taskQueue: TQ,
    workflowId: `hostile-${++n}`,
    args: [input],
  });
  try {
    const result = await h.result();
    // maintainPartitions reports a table it could not maintain in its result, and goes on with the others
    const m = result as MaintainResult;
    if (workflow === 'maintainPartitions' && !m.ok) return { failed: true, message: m.failures[0].error };
    return { failed: false, result };
  } catch (err) {
    if (!(err instanceof WorkflowFailedError)) throw err;
    // the ApplicationFailure at the root (cleanupTable rethrows an activity's failure as it is)
    let e = err.cause as (Error & { cause?: Error }) | undefined;
    while (e?.cause && e.name !== 'ApplicationFailure') e = e.cause as typeof e;
    return { failed: true, message: e?.message ?? err.message };
  }
}

/** Each text field of each workflow input: how a payload goes in, and what the refusal must name. */
interface Field {
  workflow: 'partitionTable' | 'fixConstraints' | 'createIndexes' | 'maintainPartitions' | 'cleanupTable';
  field: string;
  input: (p: string) => unknown;
  /** every refusal contains this */
  names: string;
  /**
   * An identifier: the quoted payload is a valid name that names nothing; the run must fail with `missing`
   * (naming the object), or for `cleanupTable`, report that nothing is there.
   */
  missing?: (name: string) => string | null;
  /** payloads beyond PAYLOADS that get past the input's own check and must be refused by PostgreSQL's */
  extra?: string[];
}

const fk = (o: object) => ({
  fixes: [
    {
      kind: 'foreignKey',
      table: 'hx_child',
      columns: ['parent_id'],
      references: { table: 'hx_parent', columns: ['id'] },
      ...o,
    },
  ],
});
const nn = (o: object) => ({ fixes: [{ kind: 'notNull', table: 'hx_fill', column: 'n', ...o }] });
const ix = (o: object) => ({ indexes: [{ table: 'hx_child', columns: ['t'], ...o }] });
const mt = (o: object) => ({ tables: [{ table: 'hx_parted', archive: 'none', ...o }] });
const pt = (o: object) => ({ table: 'hx_child', dryRun: true, ...o });
const preset = (overrides: object) => ({ preset: 'seed-critical-fixes', overrides });

const FIELDS: Field[] = [
  // partitionTable
  {
    workflow: 'partitionTable',
    field: 'table',
    input: (p) => pt({ table: p }),
    names: 'Field "table"',
    missing: (x) => `Table ${pub(x)} does not exist`,
  },
  {
    workflow: 'partitionTable',
    field: 'column',
    input: (p) => pt({ column: p }),
    names: '"column"',
    missing: (x) => `Table public.hx_child has no column ${JSON.stringify(x)}; set "column"`,
  },
  { workflow: 'partitionTable', field: 'interval', input: (p) => pt({ interval: p }), names: 'Field "interval"' },
  { workflow: 'partitionTable', field: 'approval', input: (p) => pt({ approval: p }), names: 'Field "approval"' },
  {
    workflow: 'partitionTable',
    field: 'rollbackWindow',
    input: (p) => pt({ rollbackWindow: p }),
    names: 'Field "rollbackWindow"',
  },
  {
    workflow: 'partitionTable',
    field: 'reverifyEvery',
    input: (p) => pt({ reverifyEvery: p }),
    names: 'Field "reverifyEvery"',
  },
  {
    workflow: 'partitionTable',
    field: 'inboundForeignKeys',
    input: (p) => pt({ inboundForeignKeys: p }),
    names: 'Field "inboundForeignKeys"',
  },
  {
    workflow: 'partitionTable',
    field: 'timeZone',
    input: (p) => pt({ timeZone: p }),
    names: 'Field "timeZone"',
    extra: ['--', 'Mars/Olympus_Mons'],
  },
  { workflow: 'partitionTable', field: 'copyMode', input: (p) => pt({ copyMode: p }), names: 'Field "copyMode"' },
  { workflow: 'partitionTable', field: 'startMonth', input: (p) => pt({ startMonth: p }), names: 'Field "startMonth"' },
  {
    // names compared with the catalog's, never written into SQL: each names nothing on hx_child
    workflow: 'partitionTable',
    field: 'acceptLostConstraints[0]',
    input: (p) => pt({ acceptLostConstraints: [p] }),
    names: '"acceptLostConstraints" names',
  },
  {
    // trigger names, compared with the catalog's the same way
    workflow: 'partitionTable',
    field: 'acceptTriggerChanges[0]',
    input: (p) => pt({ acceptTriggerChanges: [p] }),
    names: '"acceptTriggerChanges" names',
  },
  // fixConstraints: a foreign key
  { workflow: 'fixConstraints', field: 'fixes[0].kind', input: (p) => fk({ kind: p }), names: 'fixes[0].kind' },
  {
    workflow: 'fixConstraints',
    field: 'fixes[0].table',
    input: (p) => fk({ table: p }),
    names: 'fixes[0].table',
    missing: (x) => `fixes[0]: table ${pub(x)} does not exist`,
  },
  {
    workflow: 'fixConstraints',
    field: 'fixes[0].columns[0]',
    input: (p) => fk({ columns: [p] }),
    names: 'fixes[0].columns[0]',
    missing: (x) => `fixes[0]: table public.hx_child has no column ${JSON.stringify(x)}`,
  },
  {
    workflow: 'fixConstraints',
    field: 'fixes[0].references.table',
    input: (p) => fk({ references: { table: p, columns: ['id'] } }),
    names: 'fixes[0].references.table',
    missing: (x) => `fixes[0]: referenced table ${pub(x)} does not exist`,
  },
  {
    workflow: 'fixConstraints',
    field: 'fixes[0].references.columns[0]',
    input: (p) => fk({ references: { table: 'hx_parent', columns: [p] } }),
    names: 'fixes[0].references.columns[0]',
    missing: (x) => `fixes[0]: referenced table public.hx_parent has no column ${JSON.stringify(x)}`,
  },
  {
    workflow: 'fixConstraints',
    field: 'fixes[0].onDelete',
    input: (p) => fk({ onDelete: p }),
    names: 'fixes[0].onDelete',
  },
  {
    workflow: 'fixConstraints',
    field: 'fixes[0].onUpdate',
    input: (p) => fk({ onUpdate: p }),
    names: 'fixes[0].onUpdate',
  },
  {
    workflow: 'fixConstraints',
    field: 'fixes[0].orphans',
    input: (p) => fk({ orphans: p }),
    names: 'fixes[0].orphans',
  },
  // fixConstraints: NOT NULL (fixes[i].name of both kinds: the test "names" below)
  {
    workflow: 'fixConstraints',
    field: 'fixes[0].column',
    input: (p) => nn({ column: p }),
    names: 'fixes[0].column',
    missing: (x) => `fixes[0]: table public.hx_fill has no column ${JSON.stringify(x)}`,
  },
  {
    workflow: 'fixConstraints',
    field: 'fixes[0].nulls',
    input: (p) => nn({ nulls: p }),
    names: 'fixes[0].nulls must be',
  },
  {
    // a value: PostgreSQL casts it to the column's type (integer here) as a parameter, and refuses it
    workflow: 'fixConstraints',
    field: 'fixes[0].nulls.fill',
    input: (p) => nn({ nulls: { fill: p } }),
    names: 'fixes[0].nulls.fill',
  },
  { workflow: 'fixConstraints', field: 'preset', input: (p) => ({ preset: p }), names: 'Field "preset"' },
  {
    workflow: 'fixConstraints',
    field: 'overrides (a name)',
    input: (p) => preset({ [p]: { orphans: 'delete' } }),
    names: 'overrides: the preset has no fix named',
  },
  {
    workflow: 'fixConstraints',
    field: 'overrides[…].orphans',
    input: (p) => preset({ fk_generated_images_user_id: { orphans: p } }),
    names: 'overrides["fk_generated_images_user_id"].orphans',
  },
  {
    workflow: 'fixConstraints',
    field: 'overrides[…].nulls',
    input: (p) => preset({ contact_forms_email_pf_not_null: { nulls: p } }),
    names: 'overrides["contact_forms_email_pf_not_null"].nulls',
  },
  {
    workflow: 'fixConstraints',
    field: 'overrides[…].<other field>',
    input: (p) => preset({ fk_generated_images_user_id: { table: p } }),
    names: 'overrides["fk_generated_images_user_id"]: unknown field "table"',
  },
  // createIndexes (indexes[i].name: the test "names" below; the issue's predicate: its own test)
  {
    workflow: 'createIndexes',
    field: 'indexes[0].table',
    input: (p) => ix({ table: p }),
    names: 'indexes[0].table',
    missing: (x) => `indexes[0]: table ${pub(x)} does not exist`,
  },
  {
    workflow: 'createIndexes',
    field: 'indexes[0].columns[0]',
    input: (p) => ix({ columns: [p] }),
    names: 'indexes[0].columns[0]',
    missing: (x) => `column ${JSON.stringify(x)} does not exist`,
  },
  {
    // PostgreSQL parses the predicate as one statement of the extended protocol, on an empty copy of the table
    workflow: 'createIndexes',
    field: 'indexes[0].where',
    input: (p) => ix({ where: p }),
    names: 'indexes[0]',
  },
  { workflow: 'createIndexes', field: 'preset', input: (p) => ({ preset: p }), names: 'Field "preset"' },
  // maintainPartitions
  {
    workflow: 'maintainPartitions',
    field: 'tables[0].table',
    input: (p) => mt({ table: p }),
    names: 'tables[0].table',
    missing: (x) => `Table ${pub(x)} does not exist`,
  },
  {
    workflow: 'maintainPartitions',
    field: 'tables[0].retention',
    input: (p) => mt({ retention: p }),
    names: 'tables[0].retention',
  },
  {
    workflow: 'maintainPartitions',
    field: 'tables[0].archive',
    input: (p) => mt({ archive: p }),
    names: 'tables[0].archive',
  },
  {
    workflow: 'maintainPartitions',
    field: 'tables[0].timeZone',
    input: (p) => mt({ timeZone: p }),
    names: 'tables[0].timeZone',
    // the characters of a zone name, but no zone PostgreSQL knows (or a POSIX offset whose sign it reads two ways)
    extra: ['--', '+05', 'UTC+5', 'Mars/Olympus_Mons'],
  },
  // cleanupTable
  {
    workflow: 'cleanupTable',
    field: 'table',
    input: (p) => ({ table: p }),
    names: 'Field "table"',
    missing: () => null,
  },
  {
    // with `remove`: Temporal is asked about the workflow, partflow.runs is read with it as a parameter
    workflow: 'cleanupTable',
    field: 'workflowId',
    input: (p) => ({ table: 'hx_child', remove: true, workflowId: p }),
    names: 'workflow ',
  },
];

async function canaryAlive(): Promise<void> {
  const r = await db.pool.query(
    `SELECT (SELECT json_agg(c) FROM public.canary c) AS canary, (SELECT json_agg(v) FROM public.victim v) AS victim`,
  );
  expect(r.rows[0]).toEqual({ canary: [{ id: 1, note: 'alive' }], victim: [{ id: 1 }] });
}

/** `fn` over `items`, at most `limit` at once (2 cores: the worker, the server and PostgreSQL share them). */
async function each<T, R>(items: T[], limit: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return out;
}

/** What is wrong with one run of `f` with payload `p`, or null. */
function problem(f: Field, p: string, o: Outcome): string | null {
  const at = `${f.workflow} ${f.field} ${JSON.stringify(p)}`;
  const legit = f.missing && p === QUOTED;
  if (legit && f.missing!(inner(p)) === null) {
    const r = (o as { result?: CleanupReport }).result;
    return !o.failed && r?.run === null && r.phase === 'none' && r.leftovers.length === 0
      ? null
      : `${at}: expected a report of nothing, got ${JSON.stringify(o)}`;
  }
  if (!o.failed) return `${at}: the run did not fail: ${JSON.stringify(o.result).slice(0, 300)}`;
  const want = legit ? f.missing!(inner(p))! : f.names;
  if (!o.message.includes(want)) return `${at}: ${JSON.stringify(o.message)} does not name ${JSON.stringify(want)}`;
  if (f.field === 'workflowId' && !o.message.includes(p))
    return `${at}: ${JSON.stringify(o.message)} does not name the workflow`;
  return null;
}

async function runFields(workflows: Field['workflow'][]): Promise<void> {
  const before = await catalogSnapshot(db.pool, ['public']);
  const runs = FIELDS.filter((f) => workflows.includes(f.workflow)).flatMap((f) =>
    [...PAYLOADS, ...(f.extra ?? [])].map((p) => ({ f, p })),
  );
  const problems = (
    await each(runs, 6, async ({ f, p }) => problem(f, p, await outcome(f.workflow, f.input(p))))
  ).filter((x): x is string => x !== null);
  expect(problems).toEqual([]);
  await canaryAlive();
  expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);
}

beforeAll(async () => {
  stack = await startStack('hostile', TQ);
  ({ env, db } = stack);
  await migrate(db.pool); // partflow's own tables, as any earlier run would have left them
  await db.pool.query(`
    CREATE TABLE public.canary (id int PRIMARY KEY, note text);
    INSERT INTO public.canary VALUES (1, 'alive');
    CREATE TABLE public.victim (id int PRIMARY KEY);
    INSERT INTO public.victim VALUES (1);
    CREATE TABLE hx_parent (id int PRIMARY KEY);
    INSERT INTO hx_parent SELECT generate_series(1, 3);
    CREATE TABLE hx_child (id int PRIMARY KEY, parent_id int, t text, n int,
                           created_at timestamptz NOT NULL DEFAULT now());
    CREATE INDEX hx_child_parent ON hx_child (parent_id);
    INSERT INTO hx_child (id, parent_id, t, n) SELECT g, g, 'v' || g, g FROM generate_series(1, 3) g;
    CREATE TABLE hx_nocol (id int PRIMARY KEY, s text);
    CREATE TABLE hx_fill (id int PRIMARY KEY, n int, ${PAYLOADS.map((_, i) => `t${i} text`).join(', ')});
    INSERT INTO hx_fill (id) VALUES (1);
    INSERT INTO hx_fill VALUES (2, 2, ${PAYLOADS.map(() => `'set'`).join(', ')});
    CREATE TABLE hx_parted (id bigint, created_at timestamptz NOT NULL, PRIMARY KEY (id, created_at))
      PARTITION BY RANGE (created_at);
    CREATE TABLE hx_parted_default PARTITION OF hx_parted DEFAULT;
    ANALYZE;
  `);
});

afterAll(async () => {
  await stack?.teardown();
});

test('the fields of partitionTable and cleanupTable: refused naming the field, or naming the missing object', async () => {
  await runFields(['partitionTable', 'cleanupTable']);
});

test('the fields of fixConstraints: refused naming the field, or naming the missing object', async () => {
  await runFields(['fixConstraints']);
});

test('the fields of createIndexes and maintainPartitions: refused naming the field, or naming the missing object', async () => {
  await runFields(['createIndexes', 'maintainPartitions']);
});

test("constraint names, index names and fill values are PostgreSQL's names and values, exactly the text given", async () => {
  const fixes = [
    ...PAYLOADS.map((p) => ({
      kind: 'foreignKey',
      table: 'hx_child',
      columns: ['parent_id'],
      references: { table: 'hx_parent', columns: ['id'] },
      name: p,
    })),
    ...PAYLOADS.map((p, i) => ({ kind: 'notNull', table: 'hx_fill', column: `t${i}`, name: p, nulls: { fill: p } })),
  ];
  const fixed = await outcome('fixConstraints', { fixes });
  expect(fixed).toMatchObject({ failed: false, result: { status: 'done' } });
  expect((fixed as { result: FixResult }).result.applied.filter((a) => !a.skipped)).toHaveLength(fixes.length);
  const fks = await db.pool.query(
    `SELECT conname FROM pg_constraint WHERE conrelid = 'hx_child'::regclass AND contype = 'f' AND convalidated`,
  );
  expect(fks.rows.map((r) => r.conname).sort()).toEqual([...PAYLOADS].sort());
  const filled = await db.pool.query(`SELECT to_jsonb(f) AS row FROM hx_fill f WHERE id = 1`);
  expect(PAYLOADS.map((_, i) => filled.rows[0].row[`t${i}`])).toEqual(PAYLOADS);
  const notNull = await db.pool.query(
    `SELECT count(*)::int AS n FROM pg_attribute WHERE attrelid = 'hx_fill'::regclass AND attnum > 0 AND attname LIKE 't%' AND attnotnull`,
  );
  expect(notNull.rows[0].n).toBe(PAYLOADS.length);
  // the helper CHECKs, named by the payloads, came and went
  const checks = await db.pool.query(
    `SELECT count(*)::int AS n FROM pg_constraint WHERE conrelid = 'hx_fill'::regclass AND contype = 'c'`,
  );
  expect(checks.rows[0].n).toBe(0);
  await canaryAlive();

  const built = await outcome('createIndexes', {
    indexes: PAYLOADS.map((p) => ({ table: 'hx_child', columns: ['n'], name: p })),
  });
  expect(built).toMatchObject({ failed: false, result: { status: 'done' } });
  const idx = await db.pool.query(
    `SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
      WHERE i.indrelid = 'hx_child'::regclass AND i.indisvalid AND pg_get_indexdef(i.indexrelid) LIKE '%(n)'`,
  );
  expect(idx.rows.map((r) => r.relname).sort()).toEqual([...PAYLOADS].sort());
  await canaryAlive();
});

test("createIndexes' where with the issue's payload, with and without dryRun: PostgreSQL's parse of it, one string", async () => {
  const where = (table: string, dryRun?: boolean) =>
    outcome('createIndexes', {
      indexes: [{ table, columns: ['id'], where: ISSUE_WHERE, name: 'hx_issue' }],
      ...(dryRun === undefined ? {} : { dryRun }),
    });
  const before = await catalogSnapshot(db.pool, ['public']);
  // on a table without the column `t`: refused naming the index, nothing changed
  for (const dryRun of [true, undefined]) {
    const o = await where('hx_nocol', dryRun);
    expect(o).toMatchObject({ failed: true, message: expect.stringContaining('indexes[0]') });
    expect((o as { message: string }).message).toMatch(/column "t" does not exist/);
  }
  // one backslash: the string ends at the second quote and a second statement follows; refused as not one condition
  const split = await outcome('createIndexes', {
    indexes: [{ table: 'hx_child', columns: ['id'], where: ISSUE_WHERE.replace('\\\\', '\\'), name: 'hx_issue' }],
    dryRun: true,
  });
  expect(split).toMatchObject({ failed: true, message: expect.stringContaining('indexes[0].where') });
  await canaryAlive();
  expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);

  // on hx_child it is one comparison of t with a string: the dry run shows PostgreSQL's deparsed form and builds nothing
  const parsed = String.raw`(t <> '\''; COMMIT; DROP TABLE public.victim; -- '::text)`;
  const dry = await where('hx_child', true);
  expect(dry).toMatchObject({ failed: false, result: { status: 'dry-run' } });
  expect((dry as { result: IndexesResult }).result.indexes[0].sql).toEqual([
    `CREATE INDEX CONCURRENTLY IF NOT EXISTS "hx_issue" ON "public"."hx_child" ("id") WHERE ${parsed}`,
  ]);
  expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);
  await canaryAlive();
  // and without dryRun the index is built with that predicate and nothing else runs
  const real = await where('hx_child');
  expect(real).toMatchObject({ failed: false, result: { status: 'done' } });
  const def = await db.pool.query(
    `SELECT pg_get_expr(indpred, indrelid) AS p FROM pg_index WHERE indexrelid = 'hx_issue'::regclass`,
  );
  expect(def.rows[0].p).toBe(parsed);
  await canaryAlive();
});

test('a table whose name holds the dollar tag of partflow function bodies is partitioned, and nothing else runs', async () => {
  // identifiers may contain `$`: spliced into a function body quoted $partflow$ ... $partflow$, this name ended
  // the body early, and the rest of it ran as SQL in partflow's session
  const name = 'x$partflow$; DROP TABLE public.canary; --';
  await db.pool.query(
    `CREATE TABLE public."${name}" (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL, note text);
     INSERT INTO public."${name}" (created_at, note) SELECT now() - g * interval '3 days', 'n' FROM generate_series(1, 200) g`,
  );
  const run = await outcome('partitionTable', {
    table: `public."${name.replace(/"/g, '""')}"`,
    approval: 'auto',
    rollbackWindow: '0s',
  });
  expect(run.failed ? run.message : 'done').toBe('done');
  const t = await db.pool.query(
    `SELECT relkind, (SELECT count(*)::int FROM public."${name}") AS n FROM pg_class
    WHERE oid = to_regclass($1)`,
    [`public."${name}"`],
  );
  expect(t.rows).toEqual([{ relkind: 'p', n: 200 }]);
  await canaryAlive();
});
