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
    // every ON CONFLICT statement (the ones that can fail), then the hottest of those naming the table
    const conflicts = await pool.query(
      `SELECT query, calls::bigint AS calls FROM ${view} WHERE ${db} AND query ~* '\\mon\\s+conflict\\M'
        ORDER BY calls DESC LIMIT 20000`,
    );
    const naming = await pool.query(
      `SELECT query, calls::bigint AS calls FROM ${view}
        WHERE ${db} AND query !~* '\\mon\\s+conflict\\M'
          AND EXISTS (SELECT FROM unnest($1::text[]) n WHERE strpos(lower(query), lower(n)) > 0)
        ORDER BY calls DESC LIMIT 2000`,
      [names],
    );
    const r = { rows: [...conflicts.rows, ...naming.rows] };
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

/**
 * The bodies of the application's functions and procedures that name the table (or one of its views) and say
 * ON CONFLICT: pg_stat_statements sees only the call (`SELECT bump($1)`) unless `track = all`. Judged as
 * statements, named by their signature. Dynamic SQL (EXECUTE) is not seen.
 */
export async function readFunctions(
  pool: Pool,
  names: string[],
): Promise<{ query: string; calls: number; source: string }[]> {
  const r = await pool.query(
    `SELECT p.oid::regprocedure::text AS source, p.prosrc AS query
       FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'partflow') AND p.prokind IN ('f', 'p')
        AND p.prosrc ~* '\\mon\\s+conflict\\M'
        AND EXISTS (SELECT FROM unnest($1::text[]) x WHERE strpos(lower(p.prosrc), lower(x)) > 0)
      ORDER BY 1 LIMIT 1000`,
    [names],
  );
  return r.rows.map((x) => ({ query: x.query as string, calls: 0, source: `function ${x.source}` }));
}
