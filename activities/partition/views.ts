/**
 * The views that read the table (src/plan/views.ts), read under search_path = pg_catalog: every name in their
 * definitions schema-qualified, whatever the session's search_path. Preflight reads them for the plan; the
 * cut-over reads them again under its lock and refuses when they changed.
 */
import type { Pool, PoolClient } from 'pg';
import type { ViewInfo } from '../../src/catalog';
import { failure } from '../../src/failures';
import { displayName } from '../../src/ident';
import type { Plan } from '../../src/plan';
import { STATE_SCHEMA } from '../../src/plan';
import { viewDifferences, VIEWS_SQL } from '../../src/plan/views';
import { inTransaction } from '../runtime/db';

/** In `c`'s transaction, search_path set for this query only and put back. */
export async function viewsNow(c: PoolClient, oid: number): Promise<ViewInfo[]> {
  const was = (await c.query(`SELECT current_setting('search_path') AS p`)).rows[0].p as string;
  await c.query(`SELECT set_config('search_path', 'pg_catalog, pg_temp', true)`);
  try {
    return (await c.query(VIEWS_SQL, [oid, STATE_SCHEMA])).rows;
  } finally {
    await c.query(`SELECT set_config('search_path', $1, true)`, [was]);
  }
}

export function readViews(pool: Pool, oid: number): Promise<ViewInfo[]> {
  return inTransaction(pool, (c) => viewsNow(c, oid), { readOnly: true });
}

/**
 * Under a cut-over's lock: the views that read the table are still those the plan carries, or the cut-over is
 * refused (`then` ends the sentence: what happens to the run).
 */
export async function refuseChangedViews(c: PoolClient, plan: Plan, then: string): Promise<void> {
  if (!plan.views) return;
  const diff = viewDifferences(plan.views, await viewsNow(c, plan.tableOid));
  if (!diff.length) return;
  throw failure(
    `The views that read ${displayName(plan.table)} changed after the plan was made (${diff.join('; ')}); ` +
      `not cutting over${then}`,
    'TableChanged',
  );
}
