/**
 * What every activity of every operation is given, and the small facts each of them asks: which workflow it
 * runs for, its logger, a relation's OID.
 */
import type { Pool, PoolClient } from 'pg';
import { displayName, TableRef } from '../../src/ident';
import type { Logger } from '../../src/logger';
import { currentWorkflowId } from './db';

export interface Deps {
  pool: Pool;
  log: Logger;
}

/** The workflow the running activity belongs to; `local` outside one (scripts, tests). */
export const workflowId = (): string => currentWorkflowId() ?? 'local';

/** The step's logger, with the table and the workflow. */
export function stepLog(log: Logger, step: string, table: TableRef): Logger {
  return log.child({ step, table: displayName(table), workflowId: currentWorkflowId() });
}

/** A relation's OID and kind by schema and name, or null. */
export async function relOid(c: PoolClient | Pool, ref: TableRef): Promise<{ oid: number; relkind: string } | null> {
  const r = await c.query(
    `SELECT c.oid::int AS oid, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relname = $2`,
    [ref.schema, ref.name],
  );
  return r.rowCount ? r.rows[0] : null;
}
