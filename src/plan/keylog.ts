/**
 * Working step 1 of docs/sync-design.md: the key log. The application's row trigger only appends the changed
 * row's key (old and new on a key change) to an append-only table, which never conflicts with anything, so it
 * raises no serialization failure under any isolation level; partflow applies the log from its own READ
 * COMMITTED transactions by re-copying each logged key's current row. Not wired into partitionTable yet.
 */
import { qualified, quoteIdent as q, TableRef } from '../ident';

export interface KeyLogSpec {
  source: TableRef;
  target: TableRef;
  log: TableRef;
  fn: TableRef;
  /** the target's unique key (the source's primary key and the partition column), with format_type() types */
  key: { name: string; type: string }[];
  /** the columns copied, in the target's order */
  columns: string[];
  /** advisory lock key: batches of the copy hold it shared, the applier exclusively */
  lockKey: number;
}

export const KEYLOG_TRIGGER = 'partflow_keylog';

/** The log table, its trigger function and the trigger: one transaction. */
export function keyLogInstallSql(s: KeyLogSpec): string[] {
  const cols = s.key.map((k) => `${q(k.name)} ${k.type}`).join(', ');
  const names = s.key.map((k) => q(k.name)).join(', ');
  const row = (r: string) => s.key.map((k) => `${r}.${q(k.name)}`).join(', ');
  // the key changed by = or by its text (a case-only change under a nondeterministic collation)
  const changed = s.key
    .map(
      (k) =>
        `OLD.${q(k.name)} IS DISTINCT FROM NEW.${q(k.name)} ` +
        `OR (OLD.${q(k.name)})::text COLLATE "C" IS DISTINCT FROM (NEW.${q(k.name)})::text COLLATE "C"`,
    )
    .join(' OR ');
  const log = qualified(s.log);
  return [
    `CREATE TABLE IF NOT EXISTS ${log} (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, ${cols})`,
    `CREATE OR REPLACE FUNCTION ${qualified(s.fn)}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $partflow$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    INSERT INTO ${log} (${names}) VALUES (${row('OLD')});
  END IF;
  IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND (${changed})) THEN
    INSERT INTO ${log} (${names}) VALUES (${row('NEW')});
  END IF;
  RETURN NULL;
END
$partflow$`,
    `CREATE TRIGGER ${q(KEYLOG_TRIGGER)} AFTER INSERT OR UPDATE OR DELETE ON ${qualified(s.source)}
       FOR EACH ROW EXECUTE FUNCTION ${qualified(s.fn)}()`,
  ];
}

export function keyLogDropSql(s: KeyLogSpec): string[] {
  return [
    `DROP TRIGGER IF EXISTS ${q(KEYLOG_TRIGGER)} ON ${qualified(s.source)}`,
    `DROP FUNCTION IF EXISTS ${qualified(s.fn)}()`,
    `DROP TABLE IF EXISTS ${qualified(s.log)}`,
  ];
}

/**
 * One apply round, each statement in the same READ COMMITTED transaction after the exclusive advisory lock:
 * `take` removes up to $1 entries committed before it and returns their distinct keys as array literals (text:
 * no precision lost on the way through the client); `clear`
 * deletes those keys from the target; `copy` (a new statement: a new snapshot) inserts each key's current row
 * from the source. The key arrays are $1..$n of `clear` and `copy`.
 */
export function keyLogApplySql(s: KeyLogSpec): { lock: string; take: string; clear: string; copy: string } {
  const log = qualified(s.log);
  const names = s.key.map((k) => q(k.name));
  const arrays = s.key.map((k, i) => `$${i + 1}::${k.type}[]`).join(', ');
  const u = `unnest(${arrays}) AS u(${names.join(', ')})`;
  const match = (t: string) => names.map((n) => `${t}.${n} = u.${n}`).join(' AND ');
  const cols = s.columns.map(q).join(', ');
  const settable = s.columns.filter((c) => !s.key.some((k) => k.name === c));
  const conflict = settable.length
    ? `ON CONFLICT (${names.join(', ')}) DO UPDATE SET ${settable.map((c) => `${q(c)} = EXCLUDED.${q(c)}`).join(', ')}`
    : 'ON CONFLICT DO NOTHING';
  return {
    lock: `SELECT pg_advisory_xact_lock(${s.lockKey})`,
    take:
      `WITH d AS (DELETE FROM ${log} WHERE seq IN (SELECT seq FROM ${log} ORDER BY seq LIMIT $1) ` +
      `RETURNING ${names.join(', ')}) ` +
      `SELECT count(*)::int AS n, ${names.map((n, i) => `array_agg(${n})::text AS a${i + 1}`).join(', ')} ` +
      `FROM (SELECT DISTINCT ${names.join(', ')} FROM d) x`,
    clear: `DELETE FROM ${qualified(s.target)} t USING ${u} WHERE ${match('t')}`,
    copy:
      `INSERT INTO ${qualified(s.target)} (${cols}) SELECT ${s.columns.map((c) => `s.${q(c)}`).join(', ')} ` +
      `FROM ${qualified(s.source)} s JOIN ${u} ON ${match('s')} ${conflict}`,
  };
}

/** What a batch of the copy takes first in its transaction: the applier waits for batches in flight. */
export function keyLogBatchLockSql(s: KeyLogSpec): string {
  return `SELECT pg_advisory_xact_lock_shared(${s.lockKey})`;
}
