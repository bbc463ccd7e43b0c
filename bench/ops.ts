/**
 * `npm run bench:ops [-- --n 2000 --runs 5]`: what the key log's trigger costs one application statement. The
 * same single-row INSERT, UPDATE (payload), key-changing UPDATE (the id) and DELETE, each `n` times in
 * autocommit from one connection, on a table without partflow and on the same table with the sync step's key
 * log trigger (src/plan/keylog.ts, as partitionTable installs it); the two alternate run by run. Prints per kind
 * the mean statement time of both and their ratio, min/median/max over the runs. Never asserts on time.
 */
import { parseArgs } from 'util';
import { Client } from 'pg';
import { keyLogDropSql, keyLogInstallSql, KeyLogSpec } from '../src/plan/keylog';
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
};

type Kind = 'insert' | 'update' | 'rekey' | 'delete';
const KINDS: Kind[] = ['insert', 'update', 'rekey', 'delete'];

/** Mean ms per statement of each kind, on a fresh table of N rows. */
async function round(c: Client, withLog: boolean): Promise<Record<Kind, number>> {
  await c.query('DROP TABLE IF EXISTS ops, ops_pf_log; DROP SEQUENCE IF EXISTS ops_m');
  await c.query(`CREATE TABLE ops (id bigint PRIMARY KEY, created_at timestamptz NOT NULL, payload text)`);
  await c.query(`CREATE INDEX ON ops (created_at)`);
  await c.query('CREATE SEQUENCE ops_m');
  if (withLog) for (const s of keyLogInstallSql(spec)) await c.query(s);
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
  if (withLog) for (const s of keyLogDropSql(spec)) await c.query(s);
  return out;
}

async function main(): Promise<void> {
  const { conn, pool } = await freshDatabase('partflow_bench_ops');
  await pool.end();
  const c = new Client(conn);
  await c.connect();
  const without: Record<Kind, number[]> = { insert: [], update: [], rekey: [], delete: [] };
  const withLog: Record<Kind, number[]> = { insert: [], update: [], rekey: [], delete: [] };
  const ratios: Record<Kind, number[]> = { insert: [], update: [], rekey: [], delete: [] };
  await round(c, false); // warm-up
  for (let r = 0; r < RUNS; r++) {
    const a = await round(c, false);
    const b = await round(c, true);
    for (const k of KINDS) {
      without[k].push(a[k]);
      withLog[k].push(b[k]);
      ratios[k].push(b[k] / a[k]);
    }
  }
  await c.end();
  const mmm = (xs: number[], f: (x: number) => string) => {
    const s = stats(xs);
    return `${f(s.min)}/${f(s.median)}/${f(s.max)}`;
  };
  const ms = (x: number) => x.toFixed(3);
  console.log(`one statement, autocommit, ${N} per kind, ${RUNS} runs; min/median/max`);
  console.log(`${'statement'.padEnd(22)} ${'no migration ms'.padEnd(22)} ${'key log ms'.padEnd(22)} ratio`);
  const names: Record<Kind, string> = {
    insert: 'insert',
    update: 'update',
    rekey: 'key-changing update',
    delete: 'delete',
  };
  for (const k of KINDS) {
    console.log(
      `${names[k].padEnd(22)} ${mmm(without[k], ms).padEnd(22)} ${mmm(withLog[k], ms).padEnd(22)} ` +
        mmm(ratios[k], (x) => x.toFixed(2)),
    );
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
