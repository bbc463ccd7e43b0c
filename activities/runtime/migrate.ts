/**
 * partflow's own schema: the ordered files sql/NNNNNN.sql, applied once each and recorded in
 * partflow.migrations (after graphile-worker's src/migrate.ts). Applied on first use by the activities that
 * need it, not at worker start: a dry run or a refused run changes nothing in the database.
 */
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Pool } from 'pg';
import { inTransaction } from './db';

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/** The sql/ directory of the package, from the source tree (ts-jest) or from dist/. */
function sqlDirectory(): string {
  for (let dir = __dirname; dir !== dirname(dir); dir = dirname(dir)) {
    if (existsSync(join(dir, 'sql', '000001.sql'))) return join(dir, 'sql');
  }
  throw new Error(`partflow's sql/ directory was not found above ${__dirname}`);
}

export function readMigrations(dir = sqlDirectory()): Migration[] {
  return readdirSync(dir)
    .filter((f) => /^\d{6}\.sql$/.test(f))
    .sort()
    .map((f) => ({ version: Number(f.slice(0, 6)), name: f, sql: readFileSync(join(dir, f), 'utf8') }));
}

/** The highest version applied, or 0 when partflow's schema has never been set up. */
async function appliedVersion(pool: Pool): Promise<number> {
  const r = await pool.query(`SELECT to_regclass('partflow.migrations') IS NOT NULL AS ok`);
  if (!r.rows[0].ok) return 0;
  return Number((await pool.query(`SELECT coalesce(max(version), 0) AS v FROM partflow.migrations`)).rows[0].v);
}

/**
 * Applies the migrations not applied yet (two cheap reads when there are none: activities call it before
 * each use, so a schema dropped by hand comes back), in one transaction under an advisory lock (two workers starting
 * at once: the second waits, then finds nothing to do). Nothing is written when the schema is current.
 */
export async function migrate(pool: Pool, migrations = readMigrations()): Promise<number[]> {
  const latest = migrations.at(-1)?.version ?? 0;
  if ((await appliedVersion(pool)) >= latest) return [];
  return inTransaction(pool, async (c) => {
    await c.query(`SELECT pg_advisory_xact_lock(hashtext('partflow.migrate'))`);
    await c.query(`CREATE SCHEMA IF NOT EXISTS partflow`);
    await c.query(
      `CREATE TABLE IF NOT EXISTS partflow.migrations (
         version int PRIMARY KEY,
         name text NOT NULL,
         applied_at timestamptz NOT NULL DEFAULT now())`,
    );
    const done = new Set((await c.query(`SELECT version FROM partflow.migrations`)).rows.map((r) => r.version));
    const applied: number[] = [];
    for (const m of migrations) {
      if (done.has(m.version)) continue;
      await c.query(m.sql);
      await c.query(`INSERT INTO partflow.migrations (version, name) VALUES ($1, $2)`, [m.version, m.name]);
      applied.push(m.version);
    }
    return applied;
  });
}
