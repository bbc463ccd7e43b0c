/**
 * Views that read the table, carried across the swap (issue 29, item 2). A view binds to the table's OID, so
 * after the renames it would go on reading the old table. In the cut-over's transaction each view that reads
 * the table directly is redefined with CREATE OR REPLACE VIEW from its own definition (pg_get_viewdef, read
 * under search_path = pg_catalog, so that every name in it is schema-qualified): the same text now names the
 * new table. The view keeps its OID, owner, grants and comment, and the views built on it follow; its options
 * (`security_barrier`, `security_invoker`, `check_option`) are given again. The swap back runs the same
 * statements after its renames: the text names the old table again. No query sees a missing view: both happen
 * under the cut-over's ACCESS EXCLUSIVE lock. Materialized views are refused (their rows are a copy that only a
 * REFRESH under an exclusive lock would rebuild from the new table).
 */
import type { TableInfo, ViewInfo } from '../catalog';
import { displayName, qualified, quoteLiteral } from '../ident';
import { q, refuse } from './context';

/**
 * The views that read table $1 directly (not partflow's own, in schema $2), with their definitions. Run under
 * search_path = pg_catalog, pg_temp: preflight reads them with it, and the cut-over compares them again.
 */
export const VIEWS_SQL = `
SELECT DISTINCT n.nspname AS schema, v.relname AS name, v.relkind::text AS kind,
       rtrim(pg_get_viewdef(v.oid), ';') AS def, coalesce(v.reloptions, '{}') AS options,
       strpos(pg_get_viewdef(v.oid), 'ONLY ' || quote_ident(tn.nspname) || '.' || quote_ident(t.relname)) > 0
         AS "readsOnly",
       pg_has_role(v.relowner, 'USAGE') AND has_schema_privilege(v.relnamespace, 'CREATE') AS replaceable
  FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class
  JOIN pg_namespace n ON n.oid = v.relnamespace
  JOIN pg_class t ON t.oid = $1 JOIN pg_namespace tn ON tn.oid = t.relnamespace
 WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = $1 AND v.oid <> $1
   AND r.rulename = '_RETURN' AND v.relkind IN ('v', 'm')
   AND v.relnamespace IS DISTINCT FROM to_regnamespace($2)::oid
 ORDER BY 1, 2`;

/** A reloption `key=value` as a WITH clause item, the value a literal. */
function option(o: string): string {
  const i = o.indexOf('=');
  return i < 0 ? q(o) : `${q(o.slice(0, i))} = ${quoteLiteral(o.slice(i + 1))}`;
}

/** The statements that bind the views to whatever table has the name now: run after a swap's renames. */
export function carriedViewsSql(views: ViewInfo[]): string[] {
  return views.map((v) => {
    const opts = v.options.length ? ` WITH (${v.options.map(option).join(', ')})` : '';
    return `CREATE OR REPLACE VIEW ${qualified(v)}${opts} AS ${v.def}`;
  });
}

/** Materialized views are refused; views not read (a caller without the preflight activity) are refused. */
export function checkViews(info: TableInfo, t: string): void {
  if (!info.dependentViews.length) return;
  if (!info.views) {
    refuse(`Views depend on ${t} (${info.dependentViews.join(', ')}) and were not read.`);
  }
  const only = info.views.filter((v) => v.readsOnly);
  if (only.length) {
    refuse(
      `View(s) ${only.map((v) => displayName(v)).join(', ')} read ${t} with ONLY, which on a partitioned table ` +
        'reads no rows (they live in the partitions); drop the ONLY from the view first (on a table without ' +
        'inheritance children it changes nothing).',
    );
  }
  const locked = info.views.filter((v) => v.replaceable === false);
  if (locked.length) {
    refuse(
      `partflow's role cannot redefine view(s) ${locked.map((v) => displayName(v)).join(', ')} of ${t} at the ` +
        "cut-over (it needs membership in the view's owner role and CREATE on its schema); run partflow as " +
        'that owner or a superuser, or grant them.',
    );
  }
  const mat = info.views.filter((v) => v.kind === 'm');
  if (mat.length) {
    refuse(
      `Materialized view(s) ${mat.map((v) => displayName(v)).join(', ')} read ${t}: after the swap a REFRESH would ` +
        'read the old table, and rebuilding the rows from the new one takes an exclusive lock for as long as the ' +
        'query runs; partflow does not carry them yet: drop and recreate them after the cut-over, or make them views.',
    );
  }
}

/** Differences between the views planned and the views now (names, definitions, options). */
export function viewDifferences(planned: ViewInfo[], now: ViewInfo[]): string[] {
  const key = (v: ViewInfo) => `${displayName(v)} ${v.kind} ${JSON.stringify(v.options)} ${v.def}`;
  const a = planned.map(key);
  const b = now.map(key);
  return [
    ...planned.filter((_, i) => !b.includes(a[i])).map((v) => `view ${displayName(v)} changed or is gone`),
    ...now.filter((_, i) => !a.includes(b[i])).map((v) => `view ${displayName(v)} is new or changed`),
  ];
}
