/**
 * The table's own triggers for the plan (src/plan/triggers.ts): their definitions read under
 * search_path = pg_catalog (every function and operator schema-qualified, whatever the cut-over session's
 * search_path), and each created on a temporary partitioned table with the table's columns, in a transaction
 * that is rolled back: what PostgreSQL refuses there is refused in preflight with its own words.
 */
import type { Pool } from 'pg';
import type { TriggerInfo } from '../../src/catalog';
import { q } from '../../src/plan/context';
import { notPartflowTrigger } from '../../src/plan/types';
import { retargetTriggerDef } from '../../src/plan/triggers';

const TRIGGERS_SQL = `
SELECT t.tgname AS name, pg_get_triggerdef(t.oid) AS def, t.tgenabled AS enabled,
       quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS on,
       (t.tgtype & 2) <> 0 AS before, (t.tgtype & 1) <> 0 AS row,
       (t.tgtype & 4) <> 0 AS on_insert, (t.tgtype & 16) <> 0 AS on_update,
       CASE WHEN l.lanname IN ('c', 'internal') THEN NULL ELSE p.prosrc END AS source,
       obj_description(t.oid, 'pg_trigger') AS comment
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_language l ON l.oid = p.prolang
 WHERE t.tgrelid = $1 AND NOT t.tgisinternal AND ${notPartflowTrigger('t')}
 ORDER BY t.tgname`;

/** The arguments in a definition: what follows the function's name in `EXECUTE FUNCTION f(...)`. */
function argsOf(def: string): string {
  const i = def.lastIndexOf(' EXECUTE FUNCTION ');
  const open = i < 0 ? -1 : def.indexOf('(', i);
  return open < 0 ? '' : def.slice(open + 1, -1);
}

export async function readTriggers(pool: Pool, oid: number, column: string): Promise<TriggerInfo[]> {
  const c = await pool.connect();
  try {
    await c.query('BEGIN; SET LOCAL search_path = pg_catalog, pg_temp');
    const rows = (await c.query(TRIGGERS_SQL, [oid])).rows;
    if (!rows.length) return [];
    const trial = 'pg_temp.partflow_trigger_trial';
    // regclass as text under this search_path: schema-qualified, quoted where needed
    const source = (await c.query(`SELECT $1::oid::regclass::text AS t`, [oid])).rows[0].t as string;
    const why = (err: unknown) => {
      const e = err as { message: string; detail?: string };
      return e.detail ? `${e.message} (${e.detail})` : e.message;
    };
    // no trial table (a partition column the plan refuses anyway, no TEMP privilege): every trigger refused
    // with the reason, never carried untried
    let noTrial: string | null = null;
    try {
      await c.query('SAVEPOINT setup');
      await c.query(`CREATE TEMP TABLE partflow_trigger_trial (LIKE ${source}) PARTITION BY RANGE (${q(column)})`);
      await c.query('CREATE TEMP TABLE partflow_trigger_trial_d PARTITION OF partflow_trigger_trial DEFAULT');
    } catch (err) {
      noTrial = `it could not be tried on a partitioned table: ${why(err)}`;
      await c.query('ROLLBACK TO SAVEPOINT setup');
    }
    const out: TriggerInfo[] = [];
    for (const r of rows) {
      let partitionedError: string | null = noTrial;
      if (!noTrial) {
        await c.query('SAVEPOINT trial');
        try {
          await c.query(retargetTriggerDef(r.def, r.on, trial));
        } catch (err) {
          partitionedError = why(err);
        }
        await c.query('ROLLBACK TO SAVEPOINT trial');
      }
      out.push({
        name: r.name,
        def: r.def,
        on: r.on,
        enabled: r.enabled,
        before: r.before,
        row: r.row,
        onInsert: r.on_insert,
        onUpdate: r.on_update,
        args: argsOf(r.def),
        source: r.source,
        comment: r.comment,
        partitionedError,
      });
    }
    return out;
  } finally {
    await c.query('ROLLBACK').catch(() => undefined);
    c.release();
  }
}
