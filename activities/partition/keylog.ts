/**
 * Working step 1 of docs/sync-design.md: applying the key log (src/plan/keylog.ts). Not wired into
 * partitionTable yet.
 */
import type { Pool } from 'pg';
import { KeyLogSpec, keyLogApplySql } from '../../src/plan/keylog';
import { inTransaction } from '../db';

/**
 * One round: up to `limit` log entries re-copied by key, in one transaction under the exclusive advisory lock
 * (a batch of the copy in flight finishes first). Returns how many distinct keys it re-copied; 0 when the log
 * had nothing committed. Idempotent: a round that dies rolls back, its entries stay in the log.
 */
export async function applyKeyLog(pool: Pool, spec: KeyLogSpec, limit = 1000): Promise<number> {
  const sql = keyLogApplySql(spec);
  return inTransaction(pool, async (c) => {
    await c.query(sql.lock);
    const r = await c.query(sql.take, [limit]);
    const n: number = r.rows[0].n;
    if (!n) return 0;
    const arrays = spec.key.map((_, i) => r.rows[0][`a${i + 1}`]);
    await c.query(sql.clear, arrays);
    await c.query(sql.copy, arrays);
    return n;
  });
}

/** Rounds until a round finds the log empty. */
export async function drainKeyLog(pool: Pool, spec: KeyLogSpec, limit = 1000): Promise<number> {
  let total = 0;
  for (;;) {
    const n = await applyKeyLog(pool, spec, limit);
    if (!n) return total;
    total += n;
  }
}
