/** A fresh database per test file on the cluster that scripts/env.sh starts (PG* variables). */
import { Client, ClientConfig, Pool } from 'pg';

export interface TestDb {
  name: string;
  conn: ClientConfig;
  url: string;
  pool: Pool;
  drop(): Promise<void>;
}

export async function createTestDb(prefix: string): Promise<TestDb> {
  const name = `pf_${prefix}_${process.pid}_${Math.floor(Math.random() * 1e6)}`.toLowerCase();
  const admin = new Client({ database: 'postgres' });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const conn: ClientConfig = {
    host: process.env.PGHOST ?? '127.0.0.1',
    port: Number(process.env.PGPORT ?? 54329),
    user: process.env.PGUSER ?? 'postgres',
    database: name,
  };
  const pool = new Pool({ ...conn, max: 10 });
  pool.on('error', () => undefined);
  return {
    name,
    conn,
    url: `postgres://${conn.user}@${conn.host}:${conn.port}/${name}`,
    pool,
    async drop() {
      await pool.end();
      const a = new Client({ database: 'postgres' });
      await a.connect();
      await a.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await a.end();
    },
  };
}

/** Everything in the catalog a run could touch, as comparable text: relations, columns, indexes, constraints, triggers, functions. */
export async function catalogSnapshot(pool: Pool, schemas: string[]): Promise<string[]> {
  const r = await pool.query(
    `SELECT 'rel ' || n.nspname || '.' || c.relname || ' ' || c.relkind::text AS x FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY($1)
     UNION ALL SELECT 'col ' || c.oid::regclass || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull
       FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p')
     UNION ALL SELECT 'idx ' || pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY($1)
     UNION ALL SELECT 'con ' || con.conrelid::regclass || ' ' || con.conname || ' ' || pg_get_constraintdef(con.oid) || ' ' || con.convalidated FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace WHERE n.nspname = ANY($1)
     UNION ALL SELECT 'trg ' || t.tgrelid::regclass || ' ' || t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY($1) AND NOT t.tgisinternal
     UNION ALL SELECT 'fn ' || p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = ANY($1::text[] || '{partflow}'::text[])
     UNION ALL SELECT 'seq-owner ' || s.seqrelid::regclass || ' ' || coalesce((SELECT d.refobjid::regclass::text FROM pg_depend d WHERE d.objid = s.seqrelid AND d.deptype IN ('a', 'i') LIMIT 1), '-') FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY($1)
     UNION ALL SELECT 'acl ' || c.oid::regclass || ' ' || coalesce(c.relacl::text, '-') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p')`,
    [schemas],
  );
  return r.rows.map((x) => x.x).sort();
}

/** A client of its own for `fn` (a session the pool's reuse must not see), always closed. */
export async function withClient<T>(conn: ClientConfig, fn: (c: Client) => Promise<T>): Promise<T> {
  const c = new Client(conn);
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

/** The server's server_version_num, for the tests whose expectation differs by version (src/versions.ts). */
export async function serverVersionNum(pool: Pool): Promise<number> {
  return Number((await pool.query(`SELECT current_setting('server_version_num') AS v`)).rows[0].v);
}
