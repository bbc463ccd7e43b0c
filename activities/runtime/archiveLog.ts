/**
 * partflow.archive_log: how far maintainPartitions' archive of each expired partition got (`detaching`,
 * `detached`, `dumped`, `archived`), so that an interrupted retention goes on where it stopped.
 */
import type { Pool, PoolClient } from 'pg';
import type { TableRef } from '../../src/ident';

const ARCHIVE_LOG = 'partflow.archive_log';

/** Records a partition's archive state (`extra` is merged into its detail). */
export async function archiveLog(
  c: PoolClient | Pool,
  spec: { table: TableRef; archive?: string },
  partition: string,
  state: string,
  extra: Record<string, unknown> = {},
): Promise<void> {
  await c.query(
    `INSERT INTO ${ARCHIVE_LOG} AS a (table_schema, table_name, partition, mode, state, detail)
     VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (table_schema, partition) DO UPDATE
        SET state = EXCLUDED.state, detail = a.detail || EXCLUDED.detail, updated_at = now()`,
    [spec.table.schema, spec.table.name, partition, spec.archive, state, JSON.stringify(extra)],
  );
}

/** A detach that was `detaching` and has been finished: `detached`. */
export async function markDetached(pool: Pool, schema: string, partition: string): Promise<void> {
  await pool.query(
    `UPDATE ${ARCHIVE_LOG} SET state = 'detached', updated_at = now()
      WHERE table_schema = $1 AND partition = $2 AND state = 'detaching'`,
    [schema, partition],
  );
}

/** The table's partitions detached and not archived yet; none when partflow's schema was never set up. */
export async function detachedPartitions(pool: Pool, table: TableRef): Promise<string[]> {
  const logged = (await pool.query(`SELECT to_regclass($1) IS NOT NULL AS ok`, [ARCHIVE_LOG])).rows[0].ok;
  if (!logged) return [];
  const r = await pool.query(
    `SELECT partition FROM ${ARCHIVE_LOG} WHERE table_schema = $1 AND table_name = $2 AND state = 'detached'`,
    [table.schema, table.name],
  );
  return r.rows.map((x) => x.partition as string);
}
