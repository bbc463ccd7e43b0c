/**
 * The key log (docs/sync-design.md): the application's row trigger only appends the changed row's key (old and
 * new on a key change) to an append-only table beside the source, which never conflicts with anything, so it
 * raises no serialization failure under any isolation level; partflow applies the log from its own READ
 * COMMITTED transactions by re-copying each logged key's current row. Batches of the copy hold an advisory lock
 * shared and the applier holds it exclusively, so an entry is applied only after every batch that could have
 * read the row's older state has committed.
 */
import { dollarQuote, qualified, quoteIdent as q, quoteLiteral, TableRef } from '../ident';
import type { PartitionColumnType } from '../partitions';

export interface KeyLogSpec {
  source: TableRef;
  target: TableRef;
  log: TableRef;
  fn: TableRef;
  /** the target's unique key (the source's primary key and the partition column), with format_type() types */
  key: { name: string; type: string }[];
  /** the columns copied, in the target's order */
  columns: string[];
  /**
   * the source's columns in attnum order (generated ones too): the trigger and the applier read the source by
   * position, so a column renamed or added during the run breaks neither; absent: `columns`
   */
  sourceColumns?: string[];
  /** inserts need OVERRIDING SYSTEM VALUE (an identity column); these are never updated */
  overriding?: boolean;
  identityAlways?: string[];
  /** counts updates that move a row to another month, with nextval (no row lock) */
  moves?: { column: string; type: PartitionColumnType; timeZone: string; counter: TableRef };
  /** advisory lock key: batches of the copy hold it shared, the applier exclusively */
  lockKey: number;
  /** some key column's `=` is not identity (ColumnInfo.equalIsIdentical false): the copy de-duplicates */
  looseKeys?: boolean;
  /** the target's unique key for ON CONFLICT when it is not `key` (the old table's primary key) */
  conflictKey?: string[];
  /**
   * the keys applied since the last verification pass (forward log only): `take` records them, and the
   * cut-over compares their rows on both sides before it swaps (keyLogSeenSql)
   */
  seen?: TableRef;
  /**
   * a sequence whose value is the transaction id of the applier's latest round (forward log only): each round
   * sets it before it writes the copy (`mark`), and the handover's trigger (keyLogHandoverFunctionSql) writes
   * into the copy itself only when its snapshot sees that round. Plans made before it have no handover.
   */
  applied?: TableRef;
  /**
   * the table whose run records what the target cannot hold (reverse log only: the old table enforces its primary
   * key, and any uniqueness given up, which the new table does not): `duplicates`, `lost` and `copyKept`
   */
  lostOf?: TableRef;
  /**
   * with `lostOf`: where a round parks the keys whose rows the target could not take (its key held twice, a
   * 23505), to be applied again in one round when a rollback is asked (`recheck`): a transient duplicate or a
   * transaction split over rounds then refuses nothing (plans made before it have none: the record stands)
   */
  parked?: TableRef;
}

/** The parked keys applied again (KeyLogApplySql `recheck`). */
export interface KeyLogRecheckSql {
  /** rounds over the parked keys instead of the log (their `take` empties it; their failures park again) */
  sql: KeyLogApplySql;
  /** one row (`n`): parked keys, up to RECHECK_MAX + 1 */
  count: string;
  /** one row (`n`): parked keys, up to $1 (plans made before 2026-12-06's fifth session lack it) */
  countUpTo?: string;
  /** the run's record of what the target cannot hold emptied: the round that follows records it again */
  forget: string;
}

/** At most this many parked keys are applied again in one round under the swap back's lock. */
export const RECHECK_MAX = 10_000;

/**
 * ... and outside it (the rollback's check, the swap back's drain before its handover: under the applier's lock
 * only, the application writing on): one legitimate transaction rotating a unique value over more rows than
 * RECHECK_MAX parks more keys than that (attackHeld "C3b.")
 */
export const RECHECK_OUTSIDE_MAX = 200_000;

/** The applier's statements (keyLogApplySql), kept in the plan. */
export interface KeyLogApplySql {
  lock: string;
  take: string;
  clear: string;
  copy: string;
  /** what a batch of the copy runs first in its transaction */
  batchLock: string;
  /**
   * the applier's lock if it is free at once (`got`): the application-latency bound's measurement of the idle
   * probe holds the copy and the applier with it (absent in plans made before it: no measurement again)
   */
  tryLock?: string;
  /**
   * after `lock`, under a short lock_timeout: the source in ACCESS SHARE before the copy is touched, the
   * order an application's TRUNCATE takes them (the table, then the copy through partflow's trigger), so the
   * two never wait for each other in a cycle (absent in plans made before it)
   */
  lockSource?: string;
  /** one row (`n`): entries waiting */
  backlog: string;
  /** the keys applied since the last verification pass and their last check (plans made before it lack it) */
  seen?: KeyLogSeenSql;
  /**
   * in a round's transaction before it writes the copy: `applied` set to this transaction's id (plans with a
   * handover; non-transactional, so a round that rolls back leaves an id that wrote nothing: harmless)
   */
  mark?: string;
  /**
   * reverse log, before `copy`, $1..$n as `copy`: one row (`fact`), null when every logged key's old-table key
   * (`conflictKey`) has one row in the source, else the ones with more (up to five): rows the old table cannot
   * hold (the application wrote one id twice once the key has the partition column)
   */
  duplicates?: string;
  /** partflow's record of the run: `fact` ($1) appended to what the old table cannot hold (rollback_lost) */
  lost?: string;
  /**
   * `copy` with ON CONFLICT DO NOTHING on every unique index: after `copy` met 23505 from a uniqueness of the old
   * table that the new one does not enforce, and `lost` recorded it
   */
  copyKept?: string;
  /** $1..$n as `copy`: the round's keys parked (after a 23505) */
  park?: string;
  /** $1..$n as `copy`: the source's keys of every old-table key the round's keys hold twice, parked */
  parkDuplicates?: string;
  recheck?: KeyLogRecheckSql;
}

/**
 * The last check before the cut-over (issue 24, item 5). Every key the applier copies again is recorded in
 * `seen` (a `seq` identity and the key); a verification pass empties it when it begins (`reset`). The check
 * compares the keys recorded in ($1, $2] of `seq`, a slice at a time, each in one read-only snapshot: `slice`
 * returns the slice's distinct keys (`n`) as array literals (`a1`..), and `sliceCompare` takes them as
 * $1..$n and reads those keys' rows on both sides, each side a set of (key, row text, row hash), and returns
 * how many keys differ (`n`) and up to five of them (`keys`), leaving out keys with an entry in the log as the
 * verification does (their change is not applied yet). The keys arrive as constants, so the planner knows how
 * many there are and reads both sides by their keys; the log is looked at for the differing keys only.
 * `requeue` logs the keys of ($1, $2] again, to be copied once more.
 */
export interface KeyLogSeenSql {
  table: string;
  reset: string;
  /** one row (`n`): the last `seq` recorded, 0 for none */
  max: string;
  /** one row (`n`): the first `seq` recorded, 0 for none (absent in plans made before it) */
  min?: string;
  slice?: string;
  sliceCompare?: string;
  /** plans made before `slice`: ($1, $2] compared in one statement, with the log's keys left out per row */
  compare?: string;
  requeue: string;
}

export const KEYLOG_TRIGGER = 'partflow_keylog';

/** partflow's advisory lock key space for key logs: 'pf' in the high bits, the table's OID below. */
export function keyLogLockKey(oid: number, direction: 'forward' | 'reverse' = 'forward'): number {
  return (direction === 'forward' ? 0x7066_0000_0000 : 0x7067_0000_0000) + oid;
}

function positions(s: KeyLogSpec): { alias: (c: string) => string; aliases: string } {
  const cols = s.sourceColumns ?? s.columns;
  const alias = (c: string) => {
    const i = cols.indexOf(c);
    if (i < 0) throw new Error(`column ${c} is not a source column`);
    return `a${i + 1}`;
  };
  return { alias, aliases: cols.map((_, i) => `a${i + 1}`).join(', ') };
}

/** The log table (an identity `seq` and the key's columns); `unique`: each key once. */
export function keyLogTableSql(s: KeyLogSpec, unique = false): string {
  const cols = s.key.map((k) => `${q(k.name)} ${k.type}`).join(', ');
  const seq = 'seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY';
  const once = unique ? `, UNIQUE (${s.key.map((k) => q(k.name)).join(', ')})` : '';
  return `CREATE TABLE IF NOT EXISTS ${qualified(s.log)} (${seq}, ${cols}${once})`;
}

/** The parked keys' table (KeyLogSpec `parked`): the log's shape, each key once. */
export function parkedTableSql(s: KeyLogSpec): string {
  return keyLogTableSql({ ...s, log: s.parked! }, true);
}

/** The key log's trigger body, in parts: the log's INSERTs per operation, and the moves counter's bump. */
function logParts(s: KeyLogSpec): { insert: string; del: string; update: string; moves: string; oldRow: string } {
  const { alias, aliases } = positions(s);
  const oldRow = `(SELECT OLD.*) AS o(${aliases})`;
  const newRow = `(SELECT NEW.*) AS n(${aliases})`;
  const names = s.key.map((k) => q(k.name)).join(', ');
  const keyOf = (r: string) => s.key.map((k) => `${r}.${alias(k.name)}`).join(', ');
  // the key changed by = or by its text (a case-only change under a nondeterministic collation, 1.0 to 1.00)
  const changed = s.key
    .map((k) => {
      const [o, n] = [`o.${alias(k.name)}`, `n.${alias(k.name)}`];
      return `${o} IS DISTINCT FROM ${n} OR (${o})::text COLLATE "C" IS DISTINCT FROM (${n})::text COLLATE "C"`;
    })
    .join(' OR ');
  const log = qualified(s.log);
  let moves = '';
  if (s.moves) {
    const m = s.moves;
    const month = (r: string) =>
      m.type === 'timestamptz'
        ? `date_trunc('month', ${r}.${alias(m.column)} AT TIME ZONE ${quoteLiteral(m.timeZone)})`
        : `date_trunc('month', ${r}.${alias(m.column)}::timestamp)`;
    moves = `
    IF (SELECT ${month('o')} IS DISTINCT FROM ${month('n')} FROM ${oldRow}, ${newRow}) THEN
      PERFORM nextval(${quoteLiteral(qualified(m.counter))}::regclass);
    END IF;`;
  }
  return {
    insert: `INSERT INTO ${log} (${names}) SELECT ${keyOf('n')} FROM ${newRow};`,
    del: `INSERT INTO ${log} (${names}) SELECT ${keyOf('o')} FROM ${oldRow};`,
    update:
      `INSERT INTO ${log} (${names}) SELECT ${keyOf('o')} FROM ${oldRow}\n` +
      `      UNION ALL SELECT ${keyOf('n')} FROM ${oldRow}, ${newRow} WHERE ${changed};`,
    moves,
    oldRow,
  };
}

function triggerFunction(s: KeyLogSpec, body: string): string {
  return (
    `CREATE OR REPLACE FUNCTION ${qualified(s.fn)}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER\n` +
    `SET search_path = pg_catalog, pg_temp AS ${dollarQuote(body)}`
  );
}

/**
 * The trigger's function: one INSERT into the log per row change (two on a key change), reading OLD and NEW by
 * position. SECURITY DEFINER with a pinned search_path, as the mirror was: it runs with its owner's rights
 * whatever rights the writing role has.
 */
export function keyLogFunctionSql(s: KeyLogSpec): string {
  const p = logParts(s);
  return triggerFunction(
    s,
    `
BEGIN
  IF TG_OP = 'INSERT' THEN
    ${p.insert}
  ELSIF TG_OP = 'DELETE' THEN
    ${p.del}
  ELSE
    ${p.update}${p.moves}
  END IF;
  RETURN NULL;
END
`,
  );
}

/**
 * The same trigger's function through the handover before the cut-over (docs/sync-design.md, "The handover"):
 * a row change is written into the copy by the writer's own transaction (its old key deleted, its new row
 * inserted by position, as the applier copies it), so that the copy's newest row versions are the
 * application's own, visible to exactly the snapshots that see the table's. It is when either
 * - the writer gets the applier's advisory lock shared at once (held to its transaction's end: no round writes
 *   the copy while it may) and its snapshot sees the applier's latest round (`applied`): no row version of
 *   partflow's is newer than its snapshot; or
 * - no entry for the row's old or new key is in the log as its snapshot sees it. A round writes only keys whose
 *   entries it took, and an entry committed before the snapshot stays visible to it until a round the snapshot
 *   sees has taken it (the round's DELETE is not visible before); an entry committed after the snapshot is a
 *   change of the same row (the key holds the primary key) after the snapshot, on which the writer's own
 *   statement has already failed with 40001 (REPEATABLE READ) or waited and read the row again (READ
 *   COMMITTED, whose snapshot here is taken after that wait). No other transaction commits a change of the row
 *   while the writer holds it.
 * Otherwise it logs the key as before. The new row goes in with ON CONFLICT DO NOTHING: a unique index of the
 * target may still hold a row whose change waits in the log (a REPEATABLE READ writer's logged DELETE, then
 * another writer's INSERT of the same unique value); then its key is logged instead, never an error of the
 * application's. A writer that is not READ COMMITTED writes the copy in a subtransaction (an exception block):
 * a change that writes a key (INSERT, or UPDATE setting it) whose row other transactions inserted and deleted
 * after the writer's snapshot, the insert copied and the delete not yet applied, meets in the copy a row its
 * snapshot does not see, and ON CONFLICT raises 40001 there (the same change without partflow succeeds); the
 * subtransaction is rolled back and the change logged instead, as every change is without the handover. READ
 * COMMITTED writers, whose statements' snapshots are taken after such a row committed, pay no subtransaction.
 */
export function keyLogHandoverFunctionSql(s: KeyLogSpec): string {
  if (!s.applied) throw new Error('a handover needs the applied sequence');
  const p = logParts(s);
  const { alias, aliases } = positions(s);
  const overriding = s.overriding ? ' OVERRIDING SYSTEM VALUE' : '';
  const target = qualified(s.target);
  const match = s.key.map((k) => `t.${q(k.name)} = o.${alias(k.name)}`).join(' AND ');
  const applied = `${quoteLiteral(qualified(s.applied))}::regclass`;
  const logged = (r: 'o' | 'n', row: string) =>
    `EXISTS (SELECT 1 FROM ${qualified(s.log)} l, ${row} WHERE ${s.key
      .map((k) => `l.${q(k.name)} = ${r}.${alias(k.name)}`)
      .join(' AND ')})`;
  const newRow = `(SELECT NEW.*) AS n(${aliases})`;
  const write = `IF TG_OP <> 'INSERT' THEN
      DELETE FROM ${target} t USING ${p.oldRow} WHERE ${match};
    END IF;
    IF TG_OP <> 'DELETE' THEN
      -- any unique index of the target may still hold a row whose change waits in the log: no error of the
      -- application's for it; the new key is logged and the applier copies it once that change is applied
      INSERT INTO ${target} (${s.columns.map(q).join(', ')})${overriding}
        SELECT ${s.columns.map((c) => `n.${alias(c)}`).join(', ')} FROM (SELECT NEW.*) AS n(${aliases})
        ON CONFLICT DO NOTHING;
      IF NOT FOUND THEN
        ${p.insert}
      END IF;
    END IF;`;
  return triggerFunction(
    s,
    `
DECLARE
  own boolean := false;
BEGIN
  IF pg_catalog.pg_try_advisory_xact_lock_shared(${s.lockKey}) THEN
    own := coalesce(pg_catalog.pg_visible_in_snapshot(
      pg_catalog.pg_sequence_last_value(${applied})::text::pg_catalog.xid8, pg_catalog.pg_current_snapshot()), false);
  END IF;
  IF NOT own THEN
    -- a round running, or one this snapshot does not see: it writes only keys whose entries the snapshot sees
    own := NOT (TG_OP <> 'INSERT' AND ${logged('o', p.oldRow)})
      AND NOT (TG_OP <> 'DELETE' AND ${logged('n', newRow)});
  END IF;
  IF own THEN
    IF pg_catalog.current_setting('transaction_isolation') = 'read committed' THEN
      ${write}
    ELSE
      BEGIN
        ${write}
      EXCEPTION WHEN serialization_failure OR unique_violation THEN
        -- the copy holds a row version this snapshot does not see (a key inserted and deleted by others after
        -- it, the delete not yet applied): not an error of the application's; the change is logged instead
        own := false;
      END;
    END IF;
  END IF;
  IF own THEN
    NULL;
  ELSIF TG_OP = 'INSERT' THEN
    ${p.insert}
  ELSIF TG_OP = 'DELETE' THEN
    ${p.del}
  ELSE
    ${p.update}
  END IF;
  IF TG_OP = 'UPDATE' THEN${p.moves}
  END IF;
  RETURN NULL;
END
`,
  );
}

/** The log table, its trigger function and the trigger: one transaction (the plan's sync step adds more). */
export function keyLogInstallSql(s: KeyLogSpec): string[] {
  return [
    keyLogTableSql(s),
    keyLogFunctionSql(s),
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
 * no precision lost on the way through the client); `clear` deletes those keys from the target; `copy` (a new
 * statement: a new snapshot) inserts each key's current row from the source, read by position. The key arrays
 * are $1..$n of `clear` and `copy`.
 */
export function keyLogApplySql(s: KeyLogSpec): KeyLogApplySql {
  const log = qualified(s.log);
  const names = s.key.map((k) => q(k.name));
  const { alias, aliases } = positions(s);
  const us = s.key.map((_, i) => `k${i + 1}`);
  const u = `unnest(${s.key.map((k, i) => `$${i + 1}::${k.type}[]`).join(', ')}) AS u(${us.join(', ')})`;
  const clearMatch = names.map((n, i) => `t.${n} = u.${us[i]}`).join(' AND ');
  const sourceKey = `(${s.key.map((k) => `s.${alias(k.name)}`).join(', ')})`;
  const unique = s.conflictKey ?? s.key.map((k) => k.name);
  const settable = s.columns.filter((c) => !unique.includes(c) && !s.identityAlways?.includes(c));
  const target = unique.map(q).join(', ');
  const conflict = settable.length
    ? `ON CONFLICT (${target}) DO UPDATE SET ${settable.map((c) => `${q(c)} = EXCLUDED.${q(c)}`).join(', ')}`
    : 'ON CONFLICT DO NOTHING';
  const overriding = s.overriding ? ' OVERRIDING SYSTEM VALUE' : '';
  const conflictTuple = `(${unique.map((c) => `s.${alias(c)}`).join(', ')})`;
  // one row per old-table key (with loose keys also one per spelling of the key): ON CONFLICT DO UPDATE meets a
  // row once (21000 otherwise); a key twice in the source is recorded by `duplicates` first
  const distinct = s.conflictKey ? `DISTINCT ON ${conflictTuple} ` : s.looseKeys ? `DISTINCT ON ${sourceKey} ` : '';
  const insert = (onConflict: string) =>
    `INSERT INTO ${qualified(s.target)} (${s.columns.map(q).join(', ')})${overriding} ` +
    `SELECT ${distinct}${s.columns.map((c) => `s.${alias(c)}`).join(', ')} ` +
    // a semi-join; with loose keys also DISTINCT ON: PostgreSQL 15 makes the logged keys unique under the
    // array's collation before joining, so 'alice' and 'ALICE' both match a case-insensitive column's row
    `FROM (SELECT * FROM ${qualified(s.source)}) AS s(${aliases}) ` +
    `WHERE ${sourceKey} IN (SELECT ${us.join(', ')} FROM ${u}) ${onConflict}`;
  const lostSql = s.lostOf && s.conflictKey ? lostStatements(s, u, us, conflictTuple, aliases, insert) : {};
  const parkSql = s.lostOf && s.conflictKey && s.parked ? parkStatements(s, u, us, conflictTuple, aliases) : {};
  return {
    lock: `SELECT pg_advisory_xact_lock(${s.lockKey})`,
    take:
      `WITH d AS (DELETE FROM ${log} WHERE seq IN (SELECT seq FROM ${log} ORDER BY seq LIMIT $1) ` +
      `RETURNING ${names.join(', ')}), x AS (SELECT DISTINCT ${names.join(', ')} FROM d)` +
      // a data-modifying WITH runs whether or not the query reads it
      (s.seen ? `, r AS (INSERT INTO ${qualified(s.seen)} (${names.join(', ')}) SELECT * FROM x) ` : ' ') +
      `SELECT count(*)::int AS n, ${names.map((n, i) => `array_agg(${n})::text AS a${i + 1}`).join(', ')} FROM x`,
    clear: `DELETE FROM ${qualified(s.target)} t USING ${u} WHERE ${clearMatch}`,
    copy: insert(conflict),
    batchLock: `SELECT pg_advisory_xact_lock_shared(${s.lockKey})`,
    tryLock: `SELECT pg_try_advisory_xact_lock(${s.lockKey}) AS got`,
    lockSource: `LOCK TABLE ${qualified(s.source)} IN ACCESS SHARE MODE`,
    backlog: `SELECT count(*)::bigint AS n FROM ${log}`,
    ...(s.seen ? { seen: seenSql(s) } : {}),
    ...(s.applied ? { mark: keyLogMarkSql(s.applied) } : {}),
    ...lostSql,
    ...parkSql,
  };
}

/**
 * Parking (KeyLogApplySql `park`, `parkDuplicates`) and the recheck: the rounds over the parked keys are this
 * spec's rounds with the parked table as their log.
 */
function parkStatements(
  s: KeyLogSpec,
  u: string,
  us: string[],
  conflictTuple: string,
  aliases: string,
): Pick<KeyLogApplySql, 'park' | 'parkDuplicates' | 'recheck'> {
  const parked = qualified(s.parked!);
  const names = s.key.map((k) => q(k.name)).join(', ');
  const { alias } = positions(s);
  const unique = s.conflictKey!;
  const logged = unique.map((c) => us[s.key.findIndex((k) => k.name === c)]);
  const src = `(SELECT * FROM ${qualified(s.source)}) AS s(${aliases})`;
  const run = s.lostOf!;
  const isRecheck = s.log.schema === s.parked!.schema && s.log.name === s.parked!.name;
  return {
    // each key once: a key met again (every round that touches an id held twice, a 23505 again) is parked already
    park: `INSERT INTO ${parked} (${names}) SELECT DISTINCT ${us.join(', ')} FROM ${u} ON CONFLICT DO NOTHING`,
    ...(unique.length < s.key.length
      ? {
          parkDuplicates:
            `INSERT INTO ${parked} (${names}) SELECT ${s.key.map((k) => `s.${alias(k.name)}`).join(', ')} ` +
            `FROM ${src} WHERE ${conflictTuple} IN (SELECT ${unique.map((c) => `s.${alias(c)}`).join(', ')} ` +
            `FROM ${src} WHERE ${conflictTuple} IN (SELECT DISTINCT ${logged.join(', ')} FROM ${u}) ` +
            `GROUP BY ${conflictTuple} HAVING count(*) > 1) ON CONFLICT DO NOTHING`,
        }
      : {}),
    ...(isRecheck
      ? {}
      : {
          recheck: {
            sql: keyLogApplySql({ ...s, log: s.parked!, seen: undefined }),
            count: `SELECT count(*)::int AS n FROM (SELECT 1 FROM ${parked} LIMIT ${RECHECK_MAX + 1}) p`,
            countUpTo: `SELECT count(*)::int AS n FROM (SELECT 1 FROM ${parked} LIMIT $1) p`,
            forget:
              `UPDATE partflow.runs SET rollback_lost = NULL ` +
              `WHERE table_schema = ${quoteLiteral(run.schema)} AND table_name = ${quoteLiteral(run.name)}`,
          },
        }),
  };
}

/**
 * The reverse log's statements for what the old table cannot hold (KeyLogApplySql `duplicates`, `lost`,
 * `copyKept`). The source's rows with a logged key's old-table key are found by that key (the new table's
 * primary key begins with it).
 */
function lostStatements(
  s: KeyLogSpec,
  u: string,
  us: string[],
  conflictTuple: string,
  aliases: string,
  insert: (onConflict: string) => string,
): Pick<KeyLogApplySql, 'duplicates' | 'lost' | 'copyKept'> {
  const unique = s.conflictKey!;
  const logged = unique.map((c) => us[s.key.findIndex((k) => k.name === c)]);
  const run = s.lostOf!;
  return {
    // the old table's key is narrower than the log's (the partition column added to the primary key)
    ...(unique.length < s.key.length
      ? {
          duplicates:
            `SELECT string_agg(${quoteLiteral(`${unique.join(', ')} `)} || k || ' in more than one row', '; ') ` +
            `AS fact FROM (SELECT ROW${conflictTuple}::text AS k ` +
            `FROM (SELECT * FROM ${qualified(s.source)}) AS s(${aliases}) ` +
            `WHERE ${conflictTuple} IN (SELECT DISTINCT ${logged.join(', ')} FROM ${u}) ` +
            `GROUP BY ${conflictTuple} HAVING count(*) > 1 LIMIT 5) d`,
        }
      : {}),
    lost:
      `UPDATE partflow.runs SET rollback_lost = CASE WHEN rollback_lost IS NULL THEN $1 ` +
      `WHEN length(rollback_lost) < 2000 THEN rollback_lost || '; ' || $1 ELSE rollback_lost END ` +
      `WHERE table_schema = ${quoteLiteral(run.schema)} AND table_name = ${quoteLiteral(run.name)}`,
    copyKept: insert('ON CONFLICT DO NOTHING'),
  };
}

/** A round's mark: `applied` set to the round's transaction id (the handover's trigger looks at it). */
export function keyLogMarkSql(applied: TableRef): string {
  return (
    `SELECT pg_catalog.setval(${quoteLiteral(qualified(applied))}::regclass, ` +
    `pg_catalog.pg_current_xact_id()::text::bigint)`
  );
}

/** The seen table (an identity `seq` and the key's columns), written by the applier only. */
export function keyLogSeenTableSql(s: KeyLogSpec): string {
  return keyLogTableSql({ ...s, log: s.seen! });
}

function seenSql(s: KeyLogSpec): KeyLogSeenSql {
  const seen = qualified(s.seen!);
  const names = s.key.map((k) => q(k.name));
  const { alias, aliases } = positions(s);
  const us = s.key.map((_, i) => `k${i + 1}`);
  const u = `unnest(${s.key.map((k, i) => `$${i + 1}::${k.type}[]`).join(', ')}) AS u(${us.join(', ')})`;
  const keyTuple = `(${s.key.map((k) => `s.${alias(k.name)}`).join(', ')})`;
  const range = `FROM ${seen} WHERE seq > $1 AND seq <= $2`;
  const row = `ROW(${s.columns.map((c) => `s.${alias(c)}`).join(', ')})`;
  // the key's columns as the table has them (its collation), its exact text and the row's hash: a set per side,
  // so that a key the join matched twice (two spellings of one key under a nondeterministic collation, both
  // recorded) is one row on either side
  const side = (rel: TableRef) =>
    `SELECT ${s.key.map((k, i) => `s.${alias(k.name)} AS c${i + 1}`).join(', ')}, ROW${keyTuple}::text AS k, ` +
    `hashtextextended(${row}::text, 0) AS h FROM (SELECT * FROM ${qualified(rel)}) AS s(${aliases}) ` +
    `WHERE ${keyTuple} IN (SELECT ${us.join(', ')} FROM ${u})`;
  const logged = `EXISTS (SELECT 1 FROM ${qualified(s.log)} l WHERE ${names
    .map((n, i) => `l.${n} = d.c${i + 1}`)
    .join(' AND ')})`;
  return {
    table: seen,
    reset: `DELETE FROM ${seen}`,
    max: `SELECT coalesce(max(seq), 0)::bigint AS n FROM ${seen}`,
    min: `SELECT coalesce(min(seq), 0)::bigint AS n FROM ${seen}`,
    slice:
      `SELECT count(*)::int AS n, ${names.map((n, i) => `array_agg(${n})::text AS a${i + 1}`).join(', ')} ` +
      `FROM (SELECT DISTINCT ${names.join(', ')} ${range}) x`,
    sliceCompare:
      `WITH a AS (${side(s.source)}), b AS (${side(s.target)}), ` +
      `d AS ((SELECT * FROM a EXCEPT SELECT * FROM b) UNION ALL (SELECT * FROM b EXCEPT SELECT * FROM a)) ` +
      `SELECT count(DISTINCT k)::int AS n, coalesce((array_agg(DISTINCT k))[1:5], '{}') AS keys ` +
      `FROM d WHERE NOT ${logged}`,
    requeue: `INSERT INTO ${qualified(s.log)} (${names.join(', ')}) SELECT DISTINCT ${names.join(', ')} ${range}`,
  };
}

/**
 * The verification's filter on the source's positional row `s`: keys with an entry in the log are left out on
 * both sides (the drain before the cut-over applies them).
 */
export function notLoggedSql(s: KeyLogSpec, sourceColumns: string[]): string {
  const alias = (c: string) => `s.a${sourceColumns.indexOf(c) + 1}`;
  const match = s.key.map((k) => `l.${q(k.name)} = ${alias(k.name)}`).join(' AND ');
  return `NOT EXISTS (SELECT 1 FROM ${qualified(s.log)} l WHERE ${match})`;
}
