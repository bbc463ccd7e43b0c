/**
 * The table's row-level security policies (src/plan/policies.ts), read under search_path = pg_catalog: every
 * name in their expressions schema-qualified, whatever the cut-over session's search_path.
 */
import type { Pool } from 'pg';
import type { PolicyInfo } from '../../src/catalog';
import { POLICIES_SQL } from '../../src/plan/policies';

export async function readPolicies(pool: Pool, oid: number): Promise<PolicyInfo[]> {
  const c = await pool.connect();
  try {
    await c.query('BEGIN READ ONLY; SET LOCAL search_path = pg_catalog, pg_temp');
    return (await c.query(POLICIES_SQL, [oid])).rows;
  } finally {
    await c.query('ROLLBACK').catch(() => undefined);
    c.release();
  }
}
