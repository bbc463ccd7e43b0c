/**
 * What the table is bound to besides its own columns and keys: dependent views and objects bound to its OID or
 * row type, inheritance, publications and subscriptions, rules, triggers, grants. Read-only; part of
 * readTableInfo (inspect.ts).
 */
import type { Pool, PoolClient } from 'pg';
import type { PublicationInfo, TableInfo } from '../../src/catalog';
import { STATE_SCHEMA } from '../../src/plan';
import { notPartflowTrigger } from '../../src/plan/types';

type Row = Record<string, any>;

/** Views on the table, objects bound to its OID or row type, and inheritance. */
export async function readDependents(
  c: PoolClient,
  oid: number,
  h: Row,
): Promise<Pick<TableInfo, 'dependentViews' | 'oidDependents'> & { parents: string[]; children: string[] }> {
  const deps = await c.query(
    `SELECT DISTINCT v.oid::regclass::text AS name FROM pg_depend d
       JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class
      WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = $1 AND v.oid <> $1
        AND r.rulename = '_RETURN' AND v.relkind IN ('v', 'm')
        AND v.relnamespace IS DISTINCT FROM to_regnamespace($2)::oid`,
    [oid, STATE_SCHEMA],
  );
  // Objects bound to the table's OID or row type: after the swap they would stay with the old table.
  const bound = await c.query(
    `SELECT DISTINCT pg_describe_object(d.classid, d.objid, d.objsubid) AS what FROM pg_depend d
      WHERE d.deptype = 'n' AND (
            (d.classid = 'pg_proc'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid = $1)
         OR (d.classid = 'pg_policy'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid = $1
             AND (SELECT polrelid FROM pg_policy WHERE oid = d.objid) <> $1)
         OR (d.classid = 'pg_class'::regclass AND d.objsubid > 0 AND d.refclassid = 'pg_type'::regclass
             AND d.refobjid IN ($2, $3))
         -- rules of other relations (not a view's SELECT) that read or write the table: bound to its OID
         OR (d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid = $1
             AND EXISTS (SELECT FROM pg_rewrite r WHERE r.oid = d.objid AND r.ev_class <> $1
                           AND r.rulename <> '_RETURN')))
      ORDER BY 1`,
    [oid, h.reltype, h.arraytype],
  );
  const inh = await c.query(
    `SELECT (SELECT coalesce(array_agg(inhparent::regclass::text), '{}') FROM pg_inherits WHERE inhrelid = $1)
              AS parents,
            (SELECT coalesce(array_agg(inhrelid::regclass::text), '{}') FROM pg_inherits WHERE inhparent = $1)
              AS children`,
    [oid],
  );
  return {
    dependentViews: deps.rows.map((r) => r.name),
    oidDependents: bound.rows.map((r) => r.what),
    parents: inh.rows[0].parents,
    children: inh.rows[0].children,
  };
}

/** Publications that name the table, publish all of its schema or database, and subscriptions into it. */
export async function readReplication(
  c: PoolClient,
  oid: number,
  h: Row,
): Promise<Pick<TableInfo, 'implicitPublications' | 'subscriptions' | 'publications' | 'publicationDetails'>> {
  const implicitPubs = await c.query(
    h.v >= 150000
      ? `SELECT pubname FROM pg_publication WHERE puballtables
         UNION SELECT p.pubname FROM pg_publication_namespace pn JOIN pg_publication p ON p.oid = pn.pnpubid
          WHERE pn.pnnspid = $1
         ORDER BY 1`
      : `SELECT pubname FROM pg_publication WHERE puballtables AND $1::int IS NOT NULL ORDER BY 1`,
    [h.nsp],
  );
  const subs = await c
    .query(
      `SELECT s.subname FROM pg_subscription_rel sr JOIN pg_subscription s ON s.oid = sr.srsubid
        WHERE sr.srrelid = $1 ORDER BY 1`,
      [oid],
    )
    .catch(() => ({ rows: [] as { subname: string }[] }));
  const pubs = await readPublications(c, oid, h.v >= 150000);
  return {
    implicitPublications: implicitPubs.rows.map((r) => r.pubname),
    subscriptions: subs.rows.map((r) => r.subname),
    publications: pubs.map((r) => r.name),
    publicationDetails: pubs,
  };
}

/** Rules, triggers other than partflow's, table and column grants. */
export async function readObjects(
  c: PoolClient,
  oid: number,
): Promise<Pick<TableInfo, 'rules' | 'userTriggers' | 'grants' | 'columnGrants'>> {
  const rules = await c.query(`SELECT rulename FROM pg_rewrite WHERE ev_class = $1 AND rulename <> '_RETURN'`, [oid]);
  const trg = await c.query(
    `SELECT t.tgname FROM pg_trigger t WHERE t.tgrelid = $1 AND NOT t.tgisinternal AND ${notPartflowTrigger('t')}`,
    [oid],
  );
  const grants = await c.query(
    `SELECT coalesce(r.rolname, 'PUBLIC') AS grantee, a.privilege_type AS privilege, a.is_grantable AS grantable
       FROM pg_class c, aclexplode(c.relacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee WHERE c.oid = $1`,
    [oid],
  );
  return {
    rules: rules.rows.map((r) => r.rulename),
    userTriggers: trg.rows.map((r) => r.tgname),
    grants: grants.rows,
    columnGrants: await columnGrants(c, oid),
  };
}

export async function columnGrants(c: PoolClient, oid: number): Promise<TableInfo['columnGrants']> {
  const r = await c.query(
    `SELECT a.attname AS column, coalesce(r.rolname, 'PUBLIC') AS grantee, x.privilege_type AS privilege,
            x.is_grantable AS grantable
       FROM pg_attribute a, aclexplode(a.attacl) x LEFT JOIN pg_roles r ON r.oid = x.grantee
      WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attacl IS NOT NULL ORDER BY a.attnum, 2, 3`,
    [oid],
  );
  return r.rows;
}

/** The publications that name table $oid in their table list, with what carrying each over needs. */
export async function readPublications(c: PoolClient | Pool, oid: number, v15: boolean): Promise<PublicationInfo[]> {
  // column lists and row filters: PostgreSQL 15 and later
  const columns = v15
    ? `(SELECT array_agg(a.attname::text ORDER BY k.n)
          FROM unnest(pr.prattrs::int2[]) WITH ORDINALITY k(attnum, n)
          JOIN pg_attribute a ON a.attrelid = pr.prrelid AND a.attnum = k.attnum)`
    : 'NULL::text[]';
  const pubs = await c.query(
    `SELECT p.pubname AS name, p.pubviaroot AS "viaRoot", pg_get_userbyid(p.pubowner) AS owner,
            pg_has_role(p.pubowner, 'USAGE') AS alterable, p.pubupdate OR p.pubdelete AS "updatesOrDeletes",
            ARRAY(SELECT quote_ident(on_.nspname) || '.' || quote_ident(o.relname) FROM pg_publication_rel po
                   JOIN pg_class o ON o.oid = po.prrelid JOIN pg_namespace on_ ON on_.oid = o.relnamespace
                   WHERE po.prpubid = p.oid AND o.relkind = 'p' ORDER BY 1) AS "partitionedTables",
            ${columns} AS columns, ${v15 ? 'pg_get_expr(pr.prqual, pr.prrelid)' : 'NULL::text'} AS "rowFilter"
       FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid WHERE pr.prrelid = $1 ORDER BY 1`,
    [oid],
  );
  return pubs.rows as PublicationInfo[];
}
