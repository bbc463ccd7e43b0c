/** Reads the catalog facts a plan needs. Read-only. */
import type { PoolClient } from 'pg';
import type { TableInfo } from '../src/catalog';
import { displayName, InputError, qualified } from '../src/ident';
import type { PartitionOptions } from '../src/input';
import { monthlyPartitions, parseMonth } from '../src/partitions';
import { plannedNames, STATE_SCHEMA } from '../src/plan';

export async function readTableInfo(c: PoolClient, opts: PartitionOptions, workflowId: string | null): Promise<TableInfo> {
  const t = opts.table;
  const head = await c.query(
    `SELECT current_setting('server_version_num')::int AS v, current_user AS me,
            c.oid::int AS oid, c.relkind, pg_get_userbyid(c.relowner) AS owner, c.relrowsecurity,
            obj_description(c.oid, 'pg_class') AS comment, c.reltuples::bigint AS reltuples,
            (pg_relation_size(c.oid) / current_setting('block_size')::int)::bigint AS pages, n.oid::int AS nsp
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relname = $2`,
    [t.schema, t.name],
  );
  if (head.rowCount === 0) {
    throw new InputError(`Table ${displayName(t)} does not exist; check the name (unquoted names fold to lower case, quote mixed case like app."CreditTransactions").`);
  }
  const h = head.rows[0];
  const oid: number = h.oid;

  const cols = await c.query(
    `SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS "notNull",
            a.attgenerated <> '' AS generated, a.attidentity AS identity,
            CASE a.atttypid WHEN 'timestamptz'::regtype THEN 'timestamptz' WHEN 'timestamp'::regtype THEN 'timestamp'
                            WHEN 'date'::regtype THEN 'date' ELSE format_type(a.atttypid, a.atttypmod) END AS kind
       FROM pg_attribute a WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`,
    [oid],
  );
  const pcRow = cols.rows.find((r) => r.name === opts.column);

  const pk = await c.query(
    `SELECT con.conname, array_agg(a.attname::text ORDER BY k.ord) AS cols
       FROM pg_constraint con, unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
       JOIN pg_attribute a ON a.attrelid = $1 AND a.attnum = k.attnum
      WHERE con.conrelid = $1 AND con.contype = 'p' GROUP BY con.conname`,
    [oid],
  );

  const idx = await c.query(
    `SELECT ic.relname AS name, pg_get_indexdef(i.indexrelid) AS def, i.indisprimary AS "isPrimary",
            i.indisunique AS "isUnique", i.indpred IS NOT NULL AS "hasPredicate",
            (SELECT array_agg(a.attname::text ORDER BY k.ord) FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
               LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum) AS columns,
            con.conname AS "constraintName",
            CASE WHEN starts_with(pg_get_indexdef(i.indexrelid),
                   format('CREATE %sINDEX %s ON %s.%s ', CASE WHEN i.indisunique THEN 'UNIQUE ' ELSE '' END,
                          quote_ident(ic.relname), quote_ident($2), quote_ident($3)))
                 THEN substr(pg_get_indexdef(i.indexrelid),
                   length(format('CREATE %sINDEX %s ON %s.%s ', CASE WHEN i.indisunique THEN 'UNIQUE ' ELSE '' END,
                          quote_ident(ic.relname), quote_ident($2), quote_ident($3))) + 1) END AS tail
       FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
       LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
      WHERE i.indrelid = $1 ORDER BY ic.relname`,
    [oid, t.schema, t.name],
  );

  const fks = await c.query(
    `SELECT con.conname AS name, pg_get_constraintdef(con.oid) AS def, n.nspname AS schema, cl.relname AS rel,
            con.conrelid = $1 AND con.confrelid <> $1 AS outbound, con.confrelid = $1 AS inbound
       FROM pg_constraint con JOIN pg_class cl ON cl.oid = con.conrelid JOIN pg_namespace n ON n.oid = cl.relnamespace
      WHERE con.contype = 'f' AND con.conparentid = 0 AND (con.conrelid = $1 OR con.confrelid = $1)
      ORDER BY con.conname`,
    [oid],
  );

  const seqs = await c.query(
    `SELECT a.attname AS column, s.seq, a.attidentity <> '' AS identity, sn.nspname AS seq_schema, sc.relname AS seq_name
       FROM pg_attribute a
       CROSS JOIN LATERAL (SELECT pg_get_serial_sequence($2, a.attname)::regclass::oid AS seq) s
       JOIN pg_class sc ON sc.oid = s.seq JOIN pg_namespace sn ON sn.oid = sc.relnamespace
      WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped`,
    [oid, qualified(t)],
  );

  const deps = await c.query(
    `SELECT DISTINCT v.oid::regclass::text AS name FROM pg_depend d
       JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class
      WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = $1 AND v.oid <> $1`,
    [oid],
  );
  const rules = await c.query(`SELECT rulename FROM pg_rewrite WHERE ev_class = $1 AND rulename <> '_RETURN'`, [oid]);
  const pubs = await c.query(`SELECT p.pubname FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid WHERE pr.prrelid = $1`, [oid]);
  const trg = await c.query(
    `SELECT tgname FROM pg_trigger WHERE tgrelid = $1 AND NOT tgisinternal AND tgname NOT LIKE 'partflow\\_%'`,
    [oid],
  );
  const grants = await c.query(
    `SELECT coalesce(r.rolname, 'PUBLIC') AS grantee, a.privilege_type AS privilege, a.is_grantable AS grantable
       FROM pg_class c, aclexplode(c.relacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee WHERE c.oid = $1`,
    [oid],
  );

  let oldestMonth: string | null = null;
  let currentMonth: string;
  let nullKeyRows = 0;
  const tz = opts.timeZone;
  if (pcRow && ['timestamptz', 'timestamp', 'date'].includes(pcRow.kind)) {
    const col = `"${opts.column.replace(/"/g, '""')}"`;
    const expr = pcRow.kind === 'timestamptz' ? `min(${col}) AT TIME ZONE $1` : `min(${col})`;
    try {
      const r = await c.query(
        `SELECT to_char(${expr}, 'YYYY-MM') AS oldest, to_char(now() AT TIME ZONE $1, 'YYYY-MM') AS current FROM ${qualified(t)}`,
        [tz],
      );
      oldestMonth = r.rows[0].oldest;
      currentMonth = r.rows[0].current;
    } catch (err) {
      if ((err as { code?: string }).code === '22023') throw new InputError(`Field "timeZone": PostgreSQL does not know the time zone ${JSON.stringify(tz)}.`);
      throw err;
    }
    if (!pcRow.notNull) {
      nullKeyRows = Number((await c.query(`SELECT count(*) AS n FROM ${qualified(t)} WHERE ${col} IS NULL`)).rows[0].n);
    }
  } else {
    currentMonth = (await c.query(`SELECT to_char(now(), 'YYYY-MM') AS m`)).rows[0].m;
  }

  let activeRun: TableInfo['activeRun'] = null;
  const hasState = (await c.query(`SELECT to_regclass($1) IS NOT NULL AS ok`, [`${STATE_SCHEMA}.runs`])).rows[0].ok;
  if (hasState) {
    const r = await c.query(
      `SELECT workflow_id, run_state FROM ${STATE_SCHEMA}.runs WHERE table_schema = $1 AND table_name = $2 AND run_state = 'active'`,
      [t.schema, t.name],
    );
    if (r.rowCount && r.rows[0].workflow_id !== workflowId) activeRun = { workflowId: r.rows[0].workflow_id, state: r.rows[0].run_state };
  }

  const info: TableInfo = {
    table: t,
    oid,
    relkind: h.relkind,
    serverVersionNum: h.v,
    owner: h.owner,
    currentUser: h.me,
    columns: cols.rows.map((r) => ({ name: r.name, type: r.type, notNull: r.notNull, generated: r.generated, identity: r.identity })),
    partitionColumn: pcRow ? { name: pcRow.name, type: pcRow.kind, notNull: pcRow.notNull } : null,
    primaryKey: pk.rowCount ? { name: pk.rows[0].conname, columns: pk.rows[0].cols } : null,
    indexes: idx.rows.map((r) => ({ ...r, columns: r.columns ?? [] })),
    outboundForeignKeys: fks.rows.filter((r) => r.outbound).map((r) => ({ name: r.name, def: r.def, table: { schema: r.schema, name: r.rel } })),
    inboundForeignKeys: fks.rows
      .filter((r) => r.inbound)
      .map((r) => ({ name: r.name, def: r.def, table: { schema: r.schema, name: r.rel } })),
    sequences: seqs.rows.map((r) => ({ column: r.column, sequence: { schema: r.seq_schema, name: r.seq_name }, kind: r.identity ? 'identity' : 'serial' })),
    dependentViews: deps.rows.map((r) => r.name),
    publications: pubs.rows.map((r) => r.pubname),
    userTriggers: trg.rows.map((r) => r.tgname),
    rules: rules.rows.map((r) => r.rulename),
    rowSecurity: h.relrowsecurity,
    grants: grants.rows,
    comment: h.comment,
    estimatedRows: Number(h.reltuples),
    pages: Number(h.pages),
    oldestMonth,
    currentMonth,
    nullKeyRows,
    takenNames: [],
    activeRun,
  };

  // Which of the names the plan would create are taken already?
  const months = monthlyPartitions(t.name, oldestMonth ? parseMonth(oldestMonth) : null, parseMonth(currentMonth), opts.premake);
  const wanted = plannedNames(t, months.map((m) => ({ name: m.name, from: '', to: '' })), info.indexes.length + 1);
  const taken = await c.query(`SELECT relname FROM pg_class WHERE relnamespace = $1 AND relname = ANY($2::text[])`, [h.nsp, wanted]);
  info.takenNames = taken.rows.map((r) => r.relname);
  return info;
}
