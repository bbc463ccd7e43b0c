/**
 * `npm run bench:ops [-- --n 2000 --runs 5]`: what the key log's trigger costs one application statement. The
 * same single-row INSERT, UPDATE (payload), key-changing UPDATE (the id) and DELETE, each `n` times in
 * autocommit from one connection, on a table without partflow, on the same table with the sync step's key
 * log trigger (src/plan/keylog.ts, as partitionTable installs it) and with the key log and the snapshot guard
 * (src/plan/sync.ts, as the rollback window has both on the table), and with the handover's function (the
 * change written into a partitioned copy of 25 partitions by the writer's own transaction, as in the seconds
 * before a cut-over: keyLogHandoverFunctionSql); the four alternate run by run. Prints per
 * kind the mean statement time of each and the ratios, min/median/max over the runs; then the first INSERT,
 * UPDATE and DELETE of new connections under each (what a trigger costs once per backend). Never asserts on time.
 */
import { parseArgs } from 'util';
import { Client } from 'pg';
import { keyLogDropSql, keyLogHandoverFunctionSql, keyLogInstallSql, KeyLogSpec } from '../src/plan/keylog';
import { dropSnapshotGuardSql, snapshotGuardSql } from '../src/plan/sync';
import { freshDatabase, stats } from './common';

const { values: args } = parseArgs({
  options: { n: { type: 'string', default: '2000' }, runs: { type: 'string', default: '5' } },
});
const N = Number(args.n);
const RUNS = Number(args.runs);

const spec: KeyLogSpec = {
  source: { schema: 'public', name: 'ops' },
  target: { schema: 'public', name: 'ops_copy' },
  log: { schema: 'public', name: 'ops_pf_log' },
  fn: { schema: 'public', name: 'ops_keylog' },
  key: [
    { name: 'id', type: 'bigint' },
    { name: 'created_at', type: 'timestamp with time zone' },
  ],
  columns: ['id', 'created_at', 'payload'],
  moves: { column: 'created_at', type: 'timestamptz', timeZone: 'UTC', counter: { schema: 'public', name: 'ops_m' } },
  lockKey: 1,
  applied: { schema: 'public', name: 'ops_applied' },
};

type Kind = 'insert' | 'update' | 'rekey' | 'delete';
const KINDS: Kind[] = ['insert', 'update', 'rekey', 'delete'];

type Config = 'none' | 'log' | 'guard' | 'handover';
const CONFIGS: Config[] = ['none', 'log', 'guard', 'handover'];
const GUARD_FN = { schema: 'public', name: 'ops_snap' };

/** A fresh table, with the key log's trigger (`log`) and the snapshot guard too (`guard`). */
async function prepare(c: Client, config: Config): Promise<void> {
  await c.query('DROP TABLE IF EXISTS ops, ops_pf_log, ops_copy; DROP SEQUENCE IF EXISTS ops_m, ops_applied');
  await c.query(`DROP FUNCTION IF EXISTS ops_snap() CASCADE; DROP FUNCTION IF EXISTS ops_keylog() CASCADE`);
  await c.query(`CREATE TABLE ops (id bigint PRIMARY KEY, created_at timestamptz NOT NULL, payload text)`);
  await c.query(`CREATE INDEX ON ops (created_at)`);
  await c.query('CREATE SEQUENCE ops_m');
  if (config !== 'none') for (const s of keyLogInstallSql(spec)) await c.query(s);
  if (config === 'handover') {
    // the copy: monthly partitions around now and a default, keyed as partitionTable keys it
    await c.query(`CREATE TABLE ops_copy (id bigint, created_at timestamptz NOT NULL, payload text,
      PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)`);
    await c.query(`CREATE INDEX ON ops_copy (created_at)`);
    await c.query(`DO $$ DECLARE m date := date_trunc('month', now() - interval '23 months'); BEGIN
      FOR i IN 0..24 LOOP EXECUTE format('CREATE TABLE ops_copy_%s PARTITION OF ops_copy FOR VALUES FROM (%L) TO (%L)',
        i, m + make_interval(months => i), m + make_interval(months => i + 1)); END LOOP; END $$`);
    await c.query(`CREATE TABLE ops_copy_default PARTITION OF ops_copy DEFAULT`);
    await c.query('CREATE SEQUENCE ops_applied');
    await c.query(`SELECT setval('ops_applied', pg_current_xact_id()::text::bigint)`); // a round every snapshot sees
    await c.query(keyLogHandoverFunctionSql(spec));
  }
  if (config === 'guard') {
    // the cut-over's statements, in a transaction as there (a SET LOCAL names the table for the DO block)
    await c.query('BEGIN');
    for (const s of snapshotGuardSql(spec.source, GUARD_FN)) await c.query(s);
    await c.query('COMMIT');
  }
}

async function unprepare(c: Client, config: Config): Promise<void> {
  if (config === 'guard') for (const s of dropSnapshotGuardSql('public.ops', GUARD_FN)) await c.query(s);
  if (config !== 'none') for (const s of keyLogDropSql(spec)) await c.query(s);
}

/** Mean ms per statement of each kind, on a fresh table of N rows. */
async function round(c: Client, config: Config): Promise<Record<Kind, number>> {
  await prepare(c, config);
  const out = {} as Record<Kind, number>;
  const time = async (kind: Kind, sql: string, param: (i: number) => unknown[]) => {
    const t0 = performance.now();
    for (let i = 1; i <= N; i++) await c.query(sql, param(i));
    out[kind] = (performance.now() - t0) / N;
  };
  await time('insert', `INSERT INTO ops VALUES ($1, now() - make_interval(mins => $2), 'p')`, (i) => [i, i]);
  await time('update', `UPDATE ops SET payload = md5(payload) WHERE id = $1`, (i) => [i]);
  await time('rekey', `UPDATE ops SET id = id + 1000000000 WHERE id = $1`, (i) => [i]);
  await time('delete', `DELETE FROM ops WHERE id = $1`, (i) => [i + 1_000_000_000]);
  await unprepare(c, config);
  return out;
}

/**
 * The first INSERT, UPDATE and DELETE of a new connection, `CONNECTIONS` connections per configuration (each
 * after one `SELECT 1`): what a trigger costs once per backend (PL/pgSQL's library loaded, the function
 * compiled, its statements planned), which an application that opens a connection per request pays each time.
 */
const CONNECTIONS = 30;
const FIRSTS = ['insert', 'update', 'delete'] as const;
async function firstStatements(
  c: Client,
  conn: ConstructorParameters<typeof Client>[0],
  config: Config,
): Promise<Record<(typeof FIRSTS)[number], number[]>> {
  await prepare(c, config);
  const out = { insert: [] as number[], update: [] as number[], delete: [] as number[] };
  for (let i = 1; i <= CONNECTIONS; i++) {
    const x = new Client(conn);
    await x.connect();
    await x.query('SELECT 1');
    const timed = async (kind: (typeof FIRSTS)[number], sql: string) => {
      const t0 = performance.now();
      await x.query(sql, [i]);
      out[kind].push(performance.now() - t0);
    };
    await timed('insert', `INSERT INTO ops VALUES ($1, now(), 'p')`);
    await timed('update', `UPDATE ops SET payload = 'q' WHERE id = $1`);
    await timed('delete', `DELETE FROM ops WHERE id = $1`);
    await x.end();
  }
  await unprepare(c, config);
  return out;
}

async function main(): Promise<void> {
  const { conn, pool } = await freshDatabase('partflow_bench_ops');
  await pool.end();
  const c = new Client(conn);
  await c.connect();
  const empty = () => ({ insert: [], update: [], rekey: [], delete: [] }) as Record<Kind, number[]>;
  const times: Record<Config, Record<Kind, number[]>> = {
    none: empty(),
    log: empty(),
    guard: empty(),
    handover: empty(),
  };
  await round(c, 'none'); // warm-up
  for (let r = 0; r < RUNS; r++) {
    for (const config of CONFIGS) {
      const t = await round(c, config);
      for (const k of KINDS) times[config][k].push(t[k]);
    }
  }
  const firsts = {} as Record<Config, Awaited<ReturnType<typeof firstStatements>>>;
  for (const config of CONFIGS) firsts[config] = await firstStatements(c, conn, config);
  await c.end();
  const mmm = (xs: number[], f: (x: number) => string) => {
    const s = stats(xs);
    return `${f(s.min)}/${f(s.median)}/${f(s.max)}`;
  };
  const ms = (x: number) => x.toFixed(3);
  const ratio = (config: Config, k: Kind) => times[config][k].map((x, i) => x / times.none[k][i]);
  console.log(`one statement, autocommit, ${N} per kind, ${RUNS} runs; min/median/max; ratios against no migration`);
  console.log(
    `${'statement'.padEnd(20)} ${'no migration ms'.padEnd(20)} ${'key log ms'.padEnd(20)} ${'ratio'.padEnd(16)} ` +
      `${'key log + guard ms'.padEnd(20)} ${'ratio'.padEnd(16)} ${'handover ms'.padEnd(20)} ratio`,
  );
  const names: Record<Kind, string> = {
    insert: 'insert',
    update: 'update',
    rekey: 'key-changing update',
    delete: 'delete',
  };
  for (const k of KINDS) {
    console.log(
      `${names[k].padEnd(20)} ${mmm(times.none[k], ms).padEnd(20)} ${mmm(times.log[k], ms).padEnd(20)} ` +
        `${mmm(ratio('log', k), (x) => x.toFixed(2)).padEnd(16)} ${mmm(times.guard[k], ms).padEnd(20)} ` +
        `${mmm(ratio('guard', k), (x) => x.toFixed(2)).padEnd(16)} ${mmm(times.handover[k], ms).padEnd(20)} ` +
        mmm(ratio('handover', k), (x) => x.toFixed(2)),
    );
  }
  console.log('');
  console.log(`the first statement of a new connection, ${CONNECTIONS} connections; min/median/max ms`);
  console.log(
    `${'statement'.padEnd(20)} ${'no migration'.padEnd(20)} ${'key log'.padEnd(20)} ${'key log + guard'.padEnd(20)} ` +
      'handover',
  );
  for (const k of FIRSTS) {
    console.log(
      `${k.padEnd(20)} ${mmm(firsts.none[k], ms).padEnd(20)} ${mmm(firsts.log[k], ms).padEnd(20)} ` +
        `${mmm(firsts.guard[k], ms).padEnd(20)} ${mmm(firsts.handover[k], ms)}`,
    );
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
