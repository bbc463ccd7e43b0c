/** What maintenance reads about a partitioned table: its key, its ranged partitions, its default partition. */
import type { PoolClient } from 'pg';
import { displayName, InputError, TableRef } from '../../src/ident';
import type { LocalRange, MaintainTableSpec } from '../../src/maintenance';
import { Month, parseMonth, PartitionColumnType } from '../../src/partitions';
import { attachedPartitionSql } from '../../src/versions';

export interface Parted {
  oid: number;
  column: string;
  type: PartitionColumnType;
  parts: (LocalRange & { schema: string; est: number; bytes: number })[];
  def: TableRef | null;
  current: Month;
  /** server_version_num: what the detach may use (src/versions.ts) */
  serverVersionNum: number;
}

function literalInner(lit: string): string {
  const m = /^'((?:[^']|'')*)'(::.*)?$/.exec(lit.trim());
  return m ? m[1].replace(/''/g, "'") : lit.trim();
}

/** The table is range-partitioned on one timestamp, timestamptz or date column. */
async function readParent(
  c: PoolClient,
  t: TableRef,
): Promise<{ oid: number; column: string; type: PartitionColumnType }> {
  const h = await c.query(
    `SELECT c.oid::int AS oid, c.relkind, pt.partstrat, pt.partnatts, a.attname,
            CASE a.atttypid WHEN 'timestamptz'::regtype THEN 'timestamptz' WHEN 'timestamp'::regtype THEN 'timestamp'
                            WHEN 'date'::regtype THEN 'date' ELSE format_type(a.atttypid, a.atttypmod) END AS kind
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       LEFT JOIN pg_partitioned_table pt ON pt.partrelid = c.oid
       LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = pt.partattrs[0]
      WHERE n.nspname = $1 AND c.relname = $2`,
    [t.schema, t.name],
  );
  const name = displayName(t);
  if (!h.rowCount) throw new InputError(`Table ${name} does not exist.`);
  const r = h.rows[0];
  if (r.relkind !== 'p')
    throw new InputError(`Table ${name} is not partitioned; partition it with partitionTable first.`);
  if (r.partstrat !== 'r' || r.partnatts !== 1) {
    throw new InputError(`Table ${name} must be range-partitioned on one column to be maintained.`);
  }
  if (!['timestamptz', 'timestamp', 'date'].includes(r.kind)) {
    throw new InputError(
      `Table ${name} is partitioned by ${r.attname} (${r.kind}); ` +
        'only timestamp, timestamptz or date columns are maintained.',
    );
  }
  return { oid: r.oid, column: r.attname, type: r.kind as PartitionColumnType };
}

/** The bounds of ranged partitions as local timestamps (YYYY-MM-DD HH24:MI:SS) in the run's time zone. */
async function localBounds(
  c: PoolClient,
  type: PartitionColumnType,
  timeZone: string,
  ranged: { lo: string; hi: string }[],
): Promise<{ lo: string; hi: string }[]> {
  if (!ranged.length) return [];
  const local = (x: string) =>
    type === 'timestamptz' ? `(${x}::timestamptz AT TIME ZONE $1)` : `(${x}::${type})::timestamp`;
  const r = await c.query(
    `SELECT i,
            CASE WHEN lo = 'MINVALUE' THEN '0000-01-01 00:00:00'
                 ELSE to_char(${local('lo')}, 'YYYY-MM-DD HH24:MI:SS') END AS lo,
            CASE WHEN hi = 'MAXVALUE' THEN '9999-12-31 23:59:59'
                 ELSE to_char(${local('hi')}, 'YYYY-MM-DD HH24:MI:SS') END AS hi
       FROM unnest($2::text[], $3::text[]) WITH ORDINALITY u(lo, hi, i) WHERE $1::text IS NOT NULL`,
    [
      timeZone,
      ranged.map((p) => (p.lo === 'MINVALUE' ? p.lo : literalInner(p.lo))),
      ranged.map((p) => (p.hi === 'MAXVALUE' ? p.hi : literalInner(p.hi))),
    ],
  );
  return r.rows;
}

/** zones found in pg_timezone_names already (reading it takes tens of ms; the names do not change) */
const knownZones = new Set<string>();

/**
 * The run's time zone is a name PostgreSQL knows: one of pg_timezone_names or pg_timezone_abbrevs. A POSIX
 * offset such as "+05" or "UTC+5" is refused: PostgreSQL reads its sign one way in AT TIME ZONE and the other
 * way in a timestamptz literal, so month bounds and month buckets would disagree. The name is only ever a
 * parameter here; elsewhere it is a quoted literal of a name checked here.
 */
export async function checkTimeZone(c: PoolClient, timeZone: string, field: string): Promise<void> {
  if (timeZone === 'UTC' || knownZones.has(timeZone)) return;
  const r = await c.query(
    `SELECT EXISTS (SELECT FROM pg_timezone_names WHERE lower(name) = lower($1))
         OR EXISTS (SELECT FROM pg_timezone_abbrevs WHERE lower(abbrev) = lower($1)) AS known`,
    [timeZone],
  );
  if (!r.rows[0].known) {
    throw new InputError(
      `${field}: PostgreSQL knows no time zone named ${JSON.stringify(timeZone)}; ` +
        'use a name from pg_timezone_names such as "UTC" or "Europe/Berlin".',
    );
  }
  knownZones.add(timeZone);
}

export async function inspect(c: PoolClient, spec: MaintainTableSpec): Promise<Parted> {
  const t = spec.table;
  await checkTimeZone(c, spec.timeZone, spec.at ? `${spec.at}.timeZone` : 'Field "timeZone"');
  const { oid, column, type } = await readParent(c, t);
  const serverVersionNum = Number((await c.query(`SELECT current_setting('server_version_num') AS v`)).rows[0].v);
  const rows = (
    await c.query(
      `SELECT n.nspname AS schema, c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound,
              c.reltuples::bigint AS est, pg_total_relation_size(c.oid) AS bytes
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE i.inhparent = $1 AND ${attachedPartitionSql(serverVersionNum)} ORDER BY c.relname`,
      [oid],
    )
  ).rows;
  const ranged = rows
    .filter((p) => p.bound !== 'DEFAULT')
    .map((p) => {
      const m = /^FOR VALUES FROM \((.+)\) TO \((.+)\)$/.exec(p.bound);
      if (!m) {
        throw new InputError(`Partition ${p.name} of ${displayName(t)} has a bound partflow cannot read: ${p.bound}.`);
      }
      return { ...p, lo: m[1], hi: m[2] };
    });
  const texts = await localBounds(c, type, spec.timeZone, ranged);
  const parts = ranged.map((p, i) => ({
    name: p.name,
    schema: p.schema,
    lo: texts[i].lo,
    hi: texts[i].hi,
    est: Number(p.est),
    bytes: Number(p.bytes),
  }));
  const d = rows.find((p) => p.bound === 'DEFAULT');
  const now = await c.query(`SELECT to_char(now() AT TIME ZONE $1, 'YYYY-MM') AS m`, [spec.timeZone]);
  return {
    oid,
    column,
    type,
    parts,
    def: d ? { schema: d.schema, name: d.name } : null,
    current: parseMonth(now.rows[0].m),
    serverVersionNum,
  };
}
