/**
 * The application's statements as pg_stat_statements saw them in this database, the ON CONFLICT ones and the
 * ones that name the table or one of `names` (its views), hottest first (src/plan/statements.ts judges them),
 * or null where the extension is not installed or not readable: a missing view never fails preflight.
 */
import type { Pool } from 'pg';
import { qualified } from '../../src/ident';

export async function readStatements(
  pool: Pool,
  names: string[],
): Promise<{ statements: { query: string; calls: number }[]; hidden: number } | null> {
  const ext = await pool.query(
    `SELECT n.nspname AS schema FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
      WHERE e.extname = 'pg_stat_statements'`,
  );
  if (!ext.rowCount) return null;
  const view = qualified({ schema: ext.rows[0].schema, name: 'pg_stat_statements' });
  try {
    const db = `dbid = (SELECT oid FROM pg_database WHERE datname = current_database())`;
    const r = await pool.query(
      `SELECT query, calls::bigint AS calls FROM ${view}
        WHERE ${db} AND (query ~* '\\mon\\s+conflict\\M'
              OR EXISTS (SELECT FROM unnest($1::text[]) n WHERE strpos(lower(query), lower(n)) > 0))
        ORDER BY calls DESC LIMIT 2000`,
      [names],
    );
    // other roles' statements read '<insufficient privilege>' without pg_read_all_stats: counted, not judged
    const hidden = await pool.query(
      `SELECT count(*)::int AS n FROM ${view} WHERE ${db} AND query = '<insufficient privilege>'`,
    );
    return {
      statements: r.rows.map((x) => ({ query: x.query as string, calls: Number(x.calls) })),
      hidden: hidden.rows[0].n,
    };
  } catch {
    return null; // not loaded (shared_preload_libraries) or not readable by partflow's role
  }
}
