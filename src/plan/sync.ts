/**
 * Step "sync": the key logs (keylog.ts) whose triggers record every changed key of the table (forward, into
 * the copy until the cut-over; reverse, into the old table through the rollback window), their TRUNCATE
 * companions, the guard view that blocks dropping or retyping a column while the run needs it, and the run's
 * counters. Undo: drop them.
 */
import { displayName, dollarQuote, qualified, quoteLiteral, TableRef } from '../ident';
import { PlanContext, q, sibling } from './context';
import {
  KeyLogApplySql,
  keyLogApplySql,
  keyLogFunctionSql,
  keyLogHandoverFunctionSql,
  keyLogLockKey,
  keyLogMarkSql,
  keyLogSeenTableSql,
  KeyLogSpec,
  keyLogTableSql,
  parkedTableSql,
} from './keylog';
import {
  FORWARD_TRIGGER,
  FORWARD_TRUNCATE_TRIGGER,
  notPartflowTrigger,
  HandoverSql,
  PlanSql,
  REVERSE_TRIGGER,
  REVERSE_TRUNCATE_TRIGGER,
  STATE_SCHEMA,
} from './types';

/**
 * A statement trigger's function that empties `target` when the source is truncated, counting it (a mirrored
 * TRUNCATE of the whole new table gives every partition a new file: the rollback check must know it was one).
 */
export function truncateFunctionSql(fn: TableRef, target: TableRef, counter?: TableRef): string {
  const count = counter ? `\n  PERFORM nextval(${quoteLiteral(qualified(counter))}::regclass);` : '';
  const body = `
BEGIN${count}
  TRUNCATE ${qualified(target)};
  RETURN NULL;
END
`;
  return (
    `CREATE OR REPLACE FUNCTION ${qualified(fn)}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER\n` +
    `SET search_path = pg_catalog, pg_temp AS ${dollarQuote(body)}`
  );
}

/**
 * The shape of a table that the copy was built from, one text row per fact: columns in order with type,
 * NOT NULL and generation, indexes, constraints, and triggers other than partflow's. $1 is the table's OID.
 */
export const SHAPE_SQL = `SELECT x FROM (
  SELECT 'column ' || a.attnum || ' ' || quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod)
         || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
         || CASE WHEN a.attgenerated <> '' THEN ' GENERATED' ELSE '' END AS x
    FROM pg_attribute a WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL SELECT 'index ' || pg_get_indexdef(i.indexrelid) || CASE WHEN i.indisvalid THEN '' ELSE ' INVALID' END
    FROM pg_index i WHERE i.indrelid = $1
  UNION ALL SELECT 'constraint ' || quote_ident(c.conname) || ' ' || pg_get_constraintdef(c.oid)
    FROM pg_constraint c WHERE c.conrelid = $1
  UNION ALL SELECT 'trigger ' || quote_ident(t.tgname) || ' ' || t.tgenabled::text || ' ' || t.tgtype || ' '
         || t.tgfoid::oid::text || ' ' || t.tgattr::text || ' ' || encode(t.tgargs, 'hex')
         || ' ' || t.tgdeferrable || t.tginitdeferred || ' ' || coalesce(t.tgoldtable, '') || ' '
         || coalesce(t.tgnewtable, '') || ' ' || md5(coalesce(t.tgqual::text, '')) || ' '
         || md5(coalesce(obj_description(t.oid, 'pg_trigger'), ''))
    FROM pg_trigger t WHERE t.tgrelid = $1 AND NOT t.tgisinternal AND ${notPartflowTrigger('t')}
  UNION ALL SELECT 'policy ' || quote_ident(p.polname) || ' ' || p.polcmd::text || ' ' || p.polpermissive::text
         || ' ' || p.polroles::text || ' ' || md5(coalesce(p.polqual::text, '')) || ' '
         || md5(coalesce(p.polwithcheck::text, '')) || ' ' || md5(coalesce(obj_description(p.oid, 'pg_policy'), ''))
    FROM pg_policy p WHERE p.polrelid = $1
  UNION ALL SELECT 'row security ' || c.relrowsecurity::text || ' ' || c.relforcerowsecurity::text
    FROM pg_class c WHERE c.oid = $1 AND (c.relrowsecurity OR c.relforcerowsecurity)
  UNION ALL SELECT 'publication ' || quote_ident(p.pubname) || ' ' || md5((to_jsonb(p) - 'oid')::text) || ' '
         || md5((to_jsonb(pr) - 'oid')::text) || ' ' || coalesce((SELECT string_agg(po.prrelid::text, ',' ORDER BY 1)
              FROM pg_publication_rel po JOIN pg_class o ON o.oid = po.prrelid
             WHERE po.prpubid = p.oid AND o.relkind = 'p'), '-')
    FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid WHERE pr.prrelid = $1
) s ORDER BY x`;

/** partflow's triggers on $1 (an OID) with the version of their catalog rows: any ENABLE / DISABLE changes it. */
export const TRIGGER_FENCE_SQL = `SELECT coalesce(
         string_agg(tgname::text || ':' || xmin::text || ':' || tgenabled::text, ',' ORDER BY tgname), '') AS fence
  FROM pg_trigger WHERE tgrelid = $1 AND tgname LIKE 'partflow\\_%'`;

/** Differences between two shapes, for the cut-over's refusal. */
export function shapeDifferences(planned: string[], now: string[]): string[] {
  const gone = planned.filter((x) => !now.includes(x)).map((x) => `${x} is gone`);
  const added = now.filter((x) => !planned.includes(x)).map((x) => `${x} is new`);
  return [...gone, ...added];
}

/** The functions, triggers and guard view of one direction of the sync (forward now, reverse at cut-over). */
export interface SyncMachinery {
  row: string;
  fn: TableRef;
  truncate: string;
  truncateFn: TableRef;
}

/** Names of partflow's objects for the table with OID `oid`, in partflow's schema. */
export function syncObjects(oid: number): {
  forward: SyncMachinery;
  reverse: SyncMachinery;
  guard: TableRef;
  snapshotGuard: TableRef;
} {
  const fn = (name: string) => ({ schema: STATE_SCHEMA, name: `${name}_${oid}` });
  return {
    snapshotGuard: fn('snap'),
    forward: {
      row: FORWARD_TRIGGER,
      fn: fn('fwd'),
      truncate: FORWARD_TRUNCATE_TRIGGER,
      truncateFn: fn('fwd_truncate'),
    },
    reverse: {
      row: REVERSE_TRIGGER,
      fn: fn('rev'),
      truncate: REVERSE_TRUNCATE_TRIGGER,
      truncateFn: fn('rev_truncate'),
    },
    guard: fn('guard'),
  };
}

/**
 * Run as the table's owner where partflow may hand the function over (as a superuser); otherwise as
 * partflow's role, which owns the table or is a member of its owner role.
 */
function ownedSql(ctx: PlanContext, fn: TableRef): string[] {
  const { info } = ctx;
  return [
    `REVOKE ALL ON FUNCTION ${qualified(fn)}() FROM PUBLIC`,
    ...(info.owner !== info.currentUser && info.isSuperuser
      ? [`ALTER FUNCTION ${qualified(fn)}() OWNER TO ${q(info.owner)}`]
      : []),
  ];
}

/** Row and TRUNCATE triggers that fire in every session_replication_role (ENABLE ALWAYS). */
export function triggersSql(on: string, m: SyncMachinery): string[] {
  return [
    `CREATE TRIGGER ${q(m.row)} AFTER INSERT OR UPDATE OR DELETE ON ${on} FOR EACH ROW ` +
      `EXECUTE FUNCTION ${qualified(m.fn)}()`,
    `ALTER TABLE ${on} ENABLE ALWAYS TRIGGER ${q(m.row)}`,
    `CREATE TRIGGER ${q(m.truncate)} AFTER TRUNCATE ON ${on} FOR EACH STATEMENT ` +
      `EXECUTE FUNCTION ${qualified(m.truncateFn)}()`,
    `ALTER TABLE ${on} ENABLE ALWAYS TRIGGER ${q(m.truncate)}`,
  ];
}

/** A view over every column: PostgreSQL refuses to drop or retype a column a view uses. */
export function guardViewSql(ctx: PlanContext, guard: TableRef): string[] {
  const on = qualified(ctx.table);
  const why =
    `partflow is partitioning ${displayName(ctx.table)}: ` +
    'its columns cannot be dropped or retyped until the run ends or is rolled back';
  return [
    `CREATE VIEW ${qualified(guard)} AS SELECT ${ctx.sourceColumns.map(q).join(', ')} FROM ${on}`,
    `COMMENT ON VIEW ${qualified(guard)} IS ${quoteLiteral(why)}`,
  ];
}

export const SNAPSHOT_GUARD_TRIGGER = 'partflow_snapshot_guard';

/**
 * The snapshot guard, installed on the table that takes the name in a swap (the cut-over, the swap back):
 * a REPEATABLE READ or SERIALIZABLE transaction whose snapshot is older than the swap sees that table only
 * as far as the key log had been applied when the snapshot was taken, so its UPDATE or DELETE of a row
 * changed just before the swap would match 0 rows and say nothing. The guard, a statement trigger, fails
 * such a statement with 40001 instead, which these applications retry with a new snapshot. A statement
 * whose snapshot sees the swap (every READ COMMITTED statement: it takes its snapshot after the lock) passes.
 * The swap's transaction id is the trigger's argument, written by the swap's own transaction (a DO block
 * that reads the table's name from a setting, so no name is spliced into its body). Dropped with the sync
 * it belongs to, once no snapshot older than the swap is left (activities/partition/snapshotGuard.ts).
 */
export function snapshotGuardSql(on: TableRef, fn: TableRef): string[] {
  const f = qualified(fn);
  return [
    `CREATE OR REPLACE FUNCTION ${f}() RETURNS trigger LANGUAGE plpgsql AS $partflow$
BEGIN
  IF NOT pg_catalog.pg_visible_in_snapshot(TG_ARGV[0]::pg_catalog.xid8, pg_catalog.pg_current_snapshot()) THEN
    RAISE EXCEPTION USING ERRCODE = 'serialization_failure',
      MESSAGE = pg_catalog.format('could not serialize access: the snapshot of this transaction is older than ' ||
        'partflow''s swap of %I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME),
      DETAIL = 'Rows changed just before the swap are not visible to this snapshot in the table that has the name now.',
      HINT = 'Retry the transaction: a new snapshot sees the whole table.';
  END IF;
  RETURN NULL;
END
$partflow$`,
    `REVOKE ALL ON FUNCTION ${f}() FROM PUBLIC`,
    `SET LOCAL partflow.snapshot_guard_on = ${quoteLiteral(qualified(on))}`,
    // ENABLE ALWAYS: a session with session_replication_role = replica meets it too, as it meets the sync
    // on each partition too: a statement that names a partition fires that partition's statement triggers only
    // (the swap holds them all already: LOCK TABLE of a partitioned table locks its partitions)
    `DO $partflow$ DECLARE t regclass := pg_catalog.current_setting('partflow.snapshot_guard_on'); p regclass; ` +
      `BEGIN FOR p IN SELECT t UNION ALL SELECT r.relid FROM pg_catalog.pg_partition_tree(t) r ` +
      `WHERE r.relid OPERATOR(pg_catalog.<>) t LOOP ` +
      `EXECUTE pg_catalog.format('CREATE TRIGGER ${SNAPSHOT_GUARD_TRIGGER} BEFORE UPDATE OR DELETE ON %s ` +
      `FOR EACH STATEMENT EXECUTE FUNCTION ${f}(%L)', p, pg_catalog.pg_current_xact_id()); ` +
      `EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ALWAYS TRIGGER ${SNAPSHOT_GUARD_TRIGGER}', p); ` +
      `END LOOP; END $partflow$`,
  ];
}

/** The guard's triggers on the table and, through the function's dependents, on its partitions. */
export function dropSnapshotGuardSql(on: string, fn: TableRef): string[] {
  return [
    `DROP TRIGGER IF EXISTS ${SNAPSHOT_GUARD_TRIGGER} ON ${on}`,
    `DROP FUNCTION IF EXISTS ${qualified(fn)}() CASCADE`,
  ];
}

/** The undo of `triggersSql` and `guardViewSql`. */
export function dropTriggersSql(on: string, m: SyncMachinery, guard: TableRef): string[] {
  return [
    `DROP TRIGGER IF EXISTS ${q(m.row)} ON ${on}`,
    `DROP TRIGGER IF EXISTS ${q(m.truncate)} ON ${on}`,
    `DROP FUNCTION IF EXISTS ${qualified(m.fn)}()`,
    `DROP FUNCTION IF EXISTS ${qualified(m.truncateFn)}()`,
    `DROP VIEW IF EXISTS ${qualified(guard)}`,
  ];
}

/** The run's counters: sequences next to the table that the sync triggers bump with nextval (no row lock). */
export type Counter = 'moves' | 'iso' | 'trunc' | 'applied' | 'rapplied';

/** `<table>_pf_<kind>`: updates moving a row to another month, rows from writers not READ COMMITTED, TRUNCATEs. */
export function counterOf(table: TableRef, kind: Counter): TableRef {
  return sibling(table, `${table.name}_pf_${kind}`);
}

export function movesCounter(ctx: PlanContext): TableRef {
  return counterOf(ctx.table, 'moves');
}

/** `<table>_pf_log` (forward) and `<table>_pf_rlog` (the rollback window): key logs beside the table. */
export function keyLogOf(table: TableRef, direction: 'forward' | 'reverse' = 'forward'): TableRef {
  return sibling(table, `${table.name}_pf_${direction === 'forward' ? 'log' : 'rlog'}`);
}

/** `<table>_pf_rlost`: the reverse log's keys whose rows the old table could not take (KeyLogSpec `parked`). */
export function parkedOf(table: TableRef): TableRef {
  return sibling(table, `${table.name}_pf_rlost`);
}

/** `<table>_pf_seen`: the keys the forward log's applier copied since the last verification pass. */
export function seenOf(table: TableRef): TableRef {
  return sibling(table, `${table.name}_pf_seen`);
}

/**
 * A key log of the table (keylog.ts): forward, from the table into the copy until the cut-over; reverse, from
 * the new table (which has the table's name then) into the old one through the rollback window, upserting by
 * the old table's primary key.
 */
export function keyLogSpec(ctx: PlanContext, direction: 'forward' | 'reverse' = 'forward'): KeyLogSpec {
  const sync = syncObjects(ctx.info.oid)[direction];
  const typeOf = (k: string) => ctx.info.columns.find((c) => c.name === k)!.type;
  return {
    source: ctx.table,
    target: direction === 'forward' ? ctx.shadow : ctx.old,
    log: keyLogOf(ctx.table, direction),
    fn: sync.fn,
    key: ctx.shadowKey.map((name) => ({ name, type: typeOf(name) })),
    // the rollback window: upserting by the old table's primary key, recording what the old table cannot hold
    ...(direction === 'reverse' ? { conflictKey: ctx.sourceKey, lostOf: ctx.table, parked: parkedOf(ctx.table) } : {}),
    columns: ctx.columns,
    sourceColumns: ctx.sourceColumns,
    overriding: ctx.overriding,
    identityAlways: ctx.identityAlways,
    moves: { column: ctx.column, type: ctx.type, timeZone: ctx.opts.timeZone, counter: movesCounter(ctx) },
    lockKey: keyLogLockKey(ctx.info.oid, direction),
    ...(direction === 'forward' ? { seen: seenOf(ctx.table), applied: counterOf(ctx.table, 'applied') } : {}),
    // the swap back's handover: also where the old table enforces a uniqueness the run gave up
    // ("acceptLostConstraints"); a row it cannot take there goes in with ON CONFLICT DO NOTHING and its key is
    // logged (a REPEATABLE READ writer's 40001 there too), so the application's statement never fails for it
    // (plans made before 2026-12-06's fifth session gave those runs no reverse handover and the guard)
    ...(direction === 'reverse' ? { applied: counterOf(ctx.table, 'rapplied') } : {}),
    looseKeys: ctx.shadowKey.some((k) => ctx.info.columns.find((c) => c.name === k)?.equalIsIdentical === false),
  };
}

/**
 * One direction's key log with its TRUNCATE companion (which empties the target), the objects the trigger
 * writes owned by the table's owner where its function runs as the owner (ownedSql), and the triggers.
 */
export function keyLogSyncSql(ctx: PlanContext, direction: 'forward' | 'reverse'): string[] {
  const { info } = ctx;
  const m = syncObjects(info.oid)[direction];
  const spec = keyLogSpec(ctx, direction);
  return [
    keyLogTableSql(spec),
    ...(spec.seen ? [keyLogSeenTableSql(spec)] : []),
    ...(info.owner !== info.currentUser ? [`ALTER TABLE ${qualified(spec.log)} OWNER TO ${q(info.owner)}`] : []),
    // written by partflow's rounds only
    ...(spec.parked ? [parkedTableSql(spec)] : []),
    // the swap back's handover sequence (the forward one is created with the run's counters)
    ...(direction === 'reverse' && spec.applied
      ? [
          `CREATE SEQUENCE IF NOT EXISTS ${qualified(spec.applied)}`,
          ...(info.owner !== info.currentUser
            ? [`ALTER SEQUENCE ${qualified(spec.applied)} OWNER TO ${q(info.owner)}`]
            : []),
        ]
      : []),
    keyLogFunctionSql(spec),
    ...ownedSql(ctx, m.fn),
    truncateFunctionSql(m.truncateFn, spec.target, counterOf(ctx.table, 'trunc')),
    ...ownedSql(ctx, m.truncateFn),
    ...triggersSql(qualified(ctx.table), m),
  ];
}

/** The handover's statements for one direction's key log (absent: that direction has none). */
export function handoverSql(spec: KeyLogSpec): HandoverSql | undefined {
  if (!spec.applied) return undefined;
  const applied = qualified(spec.applied);
  return {
    on: keyLogHandoverFunctionSql(spec),
    off: keyLogFunctionSql(spec),
    mark: keyLogMarkSql(spec.applied),
    applied: `SELECT pg_catalog.pg_sequence_last_value(${quoteLiteral(applied)}::regclass)::text AS x`,
  };
}

type SyncSql = Pick<
  PlanSql,
  'shape' | 'triggerFence' | 'moves' | 'dropCounters' | 'syncTrigger' | 'dropSyncTrigger' | 'keyLog' | 'handover'
>;

/**
 * The forward sync: the key log (its table, the trigger that appends keys, the applier's statements), the
 * TRUNCATE companion that empties the copy, the counters and the guard view. Undo: drop them, the log too.
 */
export function syncStep(ctx: PlanContext): SyncSql {
  const { info } = ctx;
  const { forward, guard, snapshotGuard } = syncObjects(info.oid);
  const counter = qualified(movesCounter(ctx));
  const trunc = qualified(counterOf(ctx.table, 'trunc'));
  const applied = qualified(counterOf(ctx.table, 'applied'));
  // plans made before the key log counted writers that were not READ COMMITTED in `iso`: dropped if there
  const iso = qualified(counterOf(ctx.table, 'iso'));
  const log = qualified(keyLogOf(ctx.table));
  const on = qualified(ctx.table);
  // the trigger's function may run as the table's owner (ownedSql): the owner then owns what it writes
  const owned =
    info.owner !== info.currentUser
      ? [counter, trunc, applied].map((x) => `ALTER SEQUENCE ${x} OWNER TO ${q(info.owner)}`)
      : [];
  const spec = keyLogSpec(ctx);
  const syncTrigger = [
    ...[counter, trunc, applied].map((x) => `CREATE SEQUENCE IF NOT EXISTS ${x}`),
    ...owned,
    ...keyLogSyncSql(ctx, 'forward'),
    ...guardViewSql(ctx, guard),
  ];
  return {
    shape: SHAPE_SQL,
    triggerFence: TRIGGER_FENCE_SQL,
    moves: `SELECT CASE WHEN is_called THEN last_value ELSE 0 END::bigint AS n FROM ${counter}`,
    dropCounters: [counter, iso, trunc, applied, qualified(counterOf(ctx.table, 'rapplied'))].map(
      (x) => `DROP SEQUENCE IF EXISTS ${x}`,
    ),
    syncTrigger,
    dropSyncTrigger: [
      ...dropTriggersSql(on, forward, guard),
      // the swap back's snapshot guard, on the original table (none before a cut-over)
      ...dropSnapshotGuardSql(on, snapshotGuard),
      `DROP TABLE IF EXISTS ${log}`,
      `DROP TABLE IF EXISTS ${qualified(seenOf(ctx.table))}`,
    ],
    keyLog: keyLogApplySql(spec),
    handover: handoverSql(spec),
  };
}

export type { KeyLogApplySql };
