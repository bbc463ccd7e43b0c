/** Reads the catalog facts a plan needs, one reader per subject. Read-only. */
import type { PoolClient } from 'pg';
import type { IndexInfo, TableInfo } from '../../src/catalog';
import { readDependents, readObjects, readReplication } from './inspectBindings';
import { displayName, InputError, qualified, quoteIdent, TableRef } from '../../src/ident';
import type { PartitionOptions } from '../../src/input';
import { boundLiteral, formatMonth, parseMonth, PartitionColumnType, partitionLayout } from '../../src/partitions';
import { plannedNames, SHAPE_SQL } from '../../src/plan';
import { explicitStatisticsTarget, provenNotNullSql } from '../../src/versions';
import { runsHolding } from './runStore';

type Row = Record<string, any>;

/** The relation itself: kind, owner, size, storage, and who partflow runs as. */
async function readHead(c: PoolClient, t: TableRef): Promise<Row> {
  const toastOptions = `(SELECT array_agg('toast.' || o) FROM pg_class tc, unnest(tc.reloptions) o
                           WHERE tc.oid = c.reltoastrelid)`;
  const head = await c.query(
    `SELECT current_setting('server_version_num')::int AS v, current_user AS me,
            c.oid::int AS oid, c.relkind, pg_get_userbyid(c.relowner) AS owner, c.relrowsecurity, c.relforcerowsecurity,
            obj_description(c.oid, 'pg_class') AS comment, c.reltuples::bigint AS reltuples,
            (pg_relation_size(c.oid) / current_setting('block_size')::int)::bigint AS pages, n.oid::int AS nsp,
            pg_total_relation_size(c.oid)::bigint AS total_bytes, pg_indexes_size(c.oid)::bigint AS index_bytes,
            c.reltype::int AS reltype, t.typarray::int AS arraytype, c.relispartition, c.relpersistence,
            c.relreplident, coalesce(c.reloptions, '{}') || coalesce(${toastOptions}, '{}') AS reloptions,
            (SELECT spcname FROM pg_tablespace WHERE oid = c.reltablespace) AS tablespace,
            (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser,
            (SELECT rolbypassrls FROM pg_roles WHERE rolname = current_user) AS bypassrls
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_type t ON t.oid = c.reltype
      WHERE n.nspname = $1 AND c.relname = $2`,
    [t.schema, t.name],
  );
  if (head.rowCount === 0) {
    throw new InputError(
      `Table ${displayName(t)} does not exist; check the name (unquoted names fold to lower case, ` +
        'quote mixed case like app."CreditTransactions").',
    );
  }
  return head.rows[0];
}

async function readColumns(c: PoolClient, oid: number): Promise<Row[]> {
  const r = await c.query(
    `SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, ${provenNotNullSql('a')} AS "notNull",
            a.attgenerated <> '' AS generated, a.attidentity AS identity, a.attstattarget AS stats,
            a.attacl::text[] AS acl,
            (a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype, 'uuid'::regtype, 'date'::regtype,
                            'timestamp'::regtype, 'timestamptz'::regtype)
             OR (a.atttypid IN ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype)
                 AND coalesce((SELECT co.collisdeterministic FROM pg_collation co WHERE co.oid = a.attcollation),
                              true)))
              AS "equalIsIdentical",
            CASE a.atttypid WHEN 'timestamptz'::regtype THEN 'timestamptz' WHEN 'timestamp'::regtype THEN 'timestamp'
                            WHEN 'date'::regtype THEN 'date' ELSE format_type(a.atttypid, a.atttypmod) END AS kind
       FROM pg_attribute a WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`,
    [oid],
  );
  return r.rows;
}

async function readPrimaryKey(c: PoolClient, oid: number): Promise<TableInfo['primaryKey']> {
  const pk = await c.query(
    `SELECT con.conname, array_agg(a.attname::text ORDER BY k.ord) AS cols
       FROM pg_constraint con, unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
       JOIN pg_attribute a ON a.attrelid = $1 AND a.attnum = k.attnum
      WHERE con.conrelid = $1 AND con.contype = 'p' GROUP BY con.conname`,
    [oid],
  );
  return pk.rowCount ? { name: pk.rows[0].conname, columns: pk.rows[0].cols } : null;
}

/** Indexes with the constraints they back; `tail` is the definition after `ON <table> `. */
async function readIndexes(c: PoolClient, oid: number, t: TableRef): Promise<(IndexInfo & Row)[]> {
  const columns = (where: string) =>
    `(SELECT array_agg(a.attname::text ORDER BY k.ord) FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
        LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum${where})`;
  const prefix = `format('CREATE %sINDEX %s ON %s.%s ', CASE WHEN i.indisunique THEN 'UNIQUE ' ELSE '' END,
                          quote_ident(ic.relname), quote_ident($2), quote_ident($3))`;
  const r = await c.query(
    `SELECT ic.relname AS name, pg_get_indexdef(i.indexrelid) AS def, i.indisprimary AS "isPrimary",
            i.indisunique AS "isUnique", i.indpred IS NOT NULL AS "hasPredicate", i.indisvalid AS "isValid",
            i.indisreplident AS "isReplicaIdentity",
            ${columns('')} AS columns,
            ${columns(' WHERE k.ord <= i.indnkeyatts')} AS "keyColumns",
            con.conname AS "constraintName", pg_get_constraintdef(con.oid) AS "constraintDef",
            coalesce(con.condeferrable, false) AS deferrable,
            obj_description(i.indexrelid, 'pg_class') AS comment,
            obj_description(con.oid, 'pg_constraint') AS "constraintComment",
            CASE WHEN starts_with(pg_get_indexdef(i.indexrelid), ${prefix})
                 THEN substr(pg_get_indexdef(i.indexrelid), length(${prefix}) + 1) END AS tail
       FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
       -- the constraint the index backs: not a foreign key of the table on itself, which names it too
       LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
                                  AND con.contype IN ('p', 'u', 'x')
      WHERE i.indrelid = $1 ORDER BY ic.relname`,
    [oid, t.schema, t.name],
  );
  return r.rows;
}

async function readForeignKeys(c: PoolClient, oid: number): Promise<Row[]> {
  const r = await c.query(
    `SELECT con.conname AS name, pg_get_constraintdef(con.oid) AS def, n.nspname AS schema, cl.relname AS rel,
            obj_description(con.oid, 'pg_constraint') AS comment,
            con.conrelid = $1 AND con.confrelid <> $1 AS outbound, con.confrelid = $1 AS inbound
       FROM pg_constraint con JOIN pg_class cl ON cl.oid = con.conrelid JOIN pg_namespace n ON n.oid = cl.relnamespace
      WHERE con.contype = 'f' AND con.conparentid = 0 AND (con.conrelid = $1 OR con.confrelid = $1)
      ORDER BY con.conname`,
    [oid],
  );
  return r.rows;
}

async function readSequences(c: PoolClient, oid: number, t: TableRef): Promise<TableInfo['sequences']> {
  const r = await c.query(
    `SELECT a.attname AS column, s.seq, a.attidentity <> '' AS identity, sn.nspname AS seq_schema,
            sc.relname AS seq_name
       FROM pg_attribute a
       CROSS JOIN LATERAL (SELECT pg_get_serial_sequence($2, a.attname)::regclass::oid AS seq) s
       JOIN pg_class sc ON sc.oid = s.seq JOIN pg_namespace sn ON sn.oid = sc.relnamespace
      WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped`,
    [oid, qualified(t)],
  );
  return r.rows.map((x) => ({
    column: x.column,
    sequence: { schema: x.seq_schema, name: x.seq_name },
    kind: x.identity ? 'identity' : 'serial',
  }));
}

/** The current month in the run's time zone; an unknown zone is bad input. */
async function readCurrentMonth(c: PoolClient, tz: string): Promise<string> {
  try {
    return (await c.query(`SELECT to_char(now() AT TIME ZONE $1, 'YYYY-MM') AS m`, [tz])).rows[0].m;
  } catch (err) {
    if ((err as { code?: string }).code === '22023') {
      throw new InputError(`Field "timeZone": PostgreSQL does not know the time zone ${JSON.stringify(tz)}.`);
    }
    throw err;
  }
}

type KeyFacts = Pick<TableInfo, 'keyRange' | 'oldestMonth' | 'currentMonth' | 'nullKeyRows'> & {
  layout: ReturnType<typeof partitionLayout>;
};

/** The months the partition column holds, the layout they give, and the rows outside it or NULL. */
async function readKeyRange(
  c: PoolClient,
  opts: PartitionOptions,
  pcRow: Row | undefined,
  idx: Row[],
): Promise<KeyFacts> {
  const t = opts.table;
  const tz = opts.timeZone;
  const currentMonth = await readCurrentMonth(c, tz);
  const timeKey = pcRow && ['timestamptz', 'timestamp', 'date'].includes(pcRow.kind) ? pcRow : null;
  const indexed = idx.some((r) => r.isValid && r.keyColumns?.[0] === timeKey?.name && /USING btree/.test(r.def));
  // the attach path reads no months (its layout starts at the cut-off; attach.ts counts the rows past it)
  const attach = opts.method === 'attach';
  const months = timeKey && !attach ? await populatedMonths(c, t, timeKey.name, timeKey.kind, tz, indexed) : [];
  const start = opts.startMonth ? parseMonth(opts.startMonth) : null;
  const layout = partitionLayout(t.name, months.map(parseMonth), parseMonth(currentMonth), opts.premake, start);
  const facts: KeyFacts = { keyRange: null, oldestMonth: null, currentMonth, nullKeyRows: 0, layout };
  if (!timeKey || attach) return facts;
  facts.oldestMonth = months[0] ?? null;
  const first = layout.partitions[0];
  const last = layout.partitions[layout.partitions.length - 1];
  const col = quoteIdent(timeKey.name);
  const type = timeKey.kind as PartitionColumnType;
  const outside = `${col} < ${boundLiteral(first.from, type, tz)} OR ${col} >= ${boundLiteral(last.to, type, tz)}`;
  const out = await c.query(`SELECT count(*)::bigint AS n FROM ${qualified(t)} WHERE ${outside}`);
  const bodyStart = layout.bodyStart && formatMonth(layout.bodyStart);
  facts.keyRange = { months, bodyStart, outsideRows: Number(out.rows[0].n) };
  if (!timeKey.notNull) {
    const n = await c.query(`SELECT count(*) AS n FROM ${qualified(t)} WHERE ${col} IS NULL`);
    facts.nullKeyRows = Number(n.rows[0].n);
  }
  return facts;
}

/** Another workflow's run that holds the table (the run store's registry: partitionTable, fixConstraints, …). */
async function readActiveRun(c: PoolClient, t: TableRef, workflowId: string | null): Promise<TableInfo['activeRun']> {
  const [h] = await runsHolding(c, [t], { workflowId });
  return h ? { workflowId: h.workflowId, state: h.state, kind: h.kind } : null;
}

function storageOf(h: Row, cols: Row[], idx: Row[]): TableInfo['storage'] {
  return {
    reloptions: h.reloptions ?? [],
    tablespace: h.tablespace,
    replicaIdentity: h.relreplident,
    replicaIdentityIndex: idx.find((r) => r.isReplicaIdentity)?.name ?? null,
    unlogged: h.relpersistence === 'u',
    statisticsTargets: cols
      .filter((r) => explicitStatisticsTarget(r.stats) !== null)
      .map((r) => ({ column: r.name, target: explicitStatisticsTarget(r.stats)! })),
  };
}

/** Which of the names the plan would create are taken already? */
async function readTakenNames(
  c: PoolClient,
  nsp: number,
  t: TableRef,
  layout: ReturnType<typeof partitionLayout>,
  indexes: number,
): Promise<string[]> {
  const partitions = layout.partitions.map((m) => ({ name: m.name, from: '', to: '' }));
  const wanted = plannedNames(t, partitions, indexes + 1);
  const taken = await c.query(`SELECT relname FROM pg_class WHERE relnamespace = $1 AND relname = ANY($2::text[])`, [
    nsp,
    wanted,
  ]);
  return taken.rows.map((r) => r.relname);
}

export async function readTableInfo(
  c: PoolClient,
  opts: PartitionOptions,
  workflowId: string | null,
): Promise<TableInfo> {
  const t = opts.table;
  const h = await readHead(c, t);
  const oid: number = h.oid;
  const cols = await readColumns(c, oid);
  const pcRow = cols.find((r) => r.name === opts.column);
  const primaryKey = await readPrimaryKey(c, oid);
  const idx = await readIndexes(c, oid, t);
  const fks = await readForeignKeys(c, oid);
  const sequences = await readSequences(c, oid, t);
  const { parents, children, ...dependents } = await readDependents(c, oid, h);
  const replication = await readReplication(c, oid, h);
  const objects = await readObjects(c, oid);
  const { layout, ...key } = await readKeyRange(c, opts, pcRow, idx);
  const activeRun = await readActiveRun(c, t, workflowId);
  const info: TableInfo = {
    table: t,
    oid,
    relkind: h.relkind,
    serverVersionNum: h.v,
    owner: h.owner,
    currentUser: h.me,
    columns: cols.map((r) => ({
      name: r.name,
      type: r.type,
      notNull: r.notNull,
      generated: r.generated,
      identity: r.identity,
      equalIsIdentical: r.equalIsIdentical,
    })),
    columnGrants: objects.columnGrants,
    isSuperuser: h.superuser === true,
    storage: storageOf(h, cols, idx),
    inheritance: {
      parents: h.relispartition ? [] : parents,
      children,
      partitionOf: h.relispartition ? (parents[0] ?? null) : null,
    },
    ...replication,
    ...dependents,
    shape: (await c.query(SHAPE_SQL, [oid])).rows.map((r) => r.x),
    partitionColumn: pcRow ? { name: pcRow.name, type: pcRow.kind, notNull: pcRow.notNull } : null,
    primaryKey,
    indexes: idx.map(({ isReplicaIdentity: _ri, ...r }) => ({
      ...r,
      columns: r.columns ?? [],
      keyColumns: r.keyColumns ?? [],
    })),
    outboundForeignKeys: fks
      .filter((r) => r.outbound)
      .map((r) => ({ name: r.name, def: r.def, comment: r.comment, table: { schema: r.schema, name: r.rel } })),
    inboundForeignKeys: fks
      .filter((r) => r.inbound)
      .map((r) => ({ name: r.name, def: r.def, table: { schema: r.schema, name: r.rel } })),
    sequences,
    rules: objects.rules,
    userTriggers: objects.userTriggers,
    grants: objects.grants,
    rowSecurity: h.relrowsecurity,
    forceRowSecurity: h.relforcerowsecurity,
    bypassRls: h.bypassrls === true,
    comment: h.comment,
    estimatedRows: Number(h.reltuples),
    pages: Number(h.pages),
    totalBytes: Number(h.total_bytes ?? 0),
    indexBytes: Number(h.index_bytes ?? 0),
    ...key,
    takenNames: [],
    activeRun,
  };
  info.takenNames = await readTakenNames(c, h.nsp, t, layout, info.indexes.length);
  return info;
}

/**
 * The months (YYYY-MM, ascending) that hold at least one finite value of the partition column from year 1
 * on. With a btree index leading with the column: one index probe per populated month (a loose index scan);
 * without one: one scan of the table.
 */
async function populatedMonths(
  c: PoolClient,
  t: TableRef,
  column: string,
  kind: string,
  tz: string,
  indexed: boolean,
): Promise<string[]> {
  const col = quoteIdent(column);
  const tzParam = kind === 'timestamptz';
  const local = (e: string) => (tzParam ? `(${e}) AT TIME ZONE $1` : `(${e})`);
  const finite = `${col} >= '0001-01-01' AND ${col} < 'infinity'`;
  const next =
    kind === 'timestamptz'
      ? `(date_trunc('month', m.v AT TIME ZONE $1) + interval '1 month') AT TIME ZONE $1`
      : kind === 'date'
        ? `(date_trunc('month', m.v::timestamp) + interval '1 month')::date`
        : `date_trunc('month', m.v) + interval '1 month'`;
  const sql = indexed
    ? `WITH RECURSIVE m(v) AS (
         SELECT min(${col}) FROM ${qualified(t)} WHERE ${finite}
         UNION ALL
         SELECT (SELECT min(${col}) FROM ${qualified(t)} WHERE ${col} >= ${next} AND ${col} < 'infinity')
           FROM m WHERE m.v IS NOT NULL)
       SELECT to_char(${local('v')}, 'YYYY-MM') AS month FROM m WHERE v IS NOT NULL`
    : `SELECT DISTINCT to_char(${local(col)}, 'YYYY-MM') AS month FROM ${qualified(t)} WHERE ${finite}`;
  const r = await c.query(sql, tzParam ? [tz] : []);
  // years past 9999 print with more digits; they are outliers whatever the layout, so they are left out here
  return r.rows
    .map((x) => x.month as string)
    .filter((m) => /^\d{4}-\d{2}$/.test(m))
    .sort();
}
