/**
 * The table's row-level security policies (src/plan/policies.ts), read under search_path = pg_catalog: every
 * name in their expressions schema-qualified, whatever the cut-over session's search_path.
 */
import type { Pool } from 'pg';
import type { PolicyInfo } from '../../src/catalog';
import { POLICIES_SQL } from '../../src/plan/policies';
import { inTransaction } from '../runtime/db';

export function readPolicies(pool: Pool, oid: number): Promise<PolicyInfo[]> {
  return inTransaction(
    pool,
    async (c) => {
      await c.query('SET LOCAL search_path = pg_catalog, pg_temp');
      return (await c.query(POLICIES_SQL, [oid])).rows;
    },
    { readOnly: true },
  );
}
