/**
 * Row-level security carried to the new table (issue 29, item 3). The copy is written and read by partflow's
 * role, which must see every row: a role that the table's policies apply to (neither superuser nor BYPASSRLS,
 * and the owner only while the table does not FORCE row-level security) would copy and verify only the rows
 * the policies let it see, so such a run is refused. Every policy (command, roles, USING, WITH CHECK,
 * permissive or restrictive) is created on the new table in the cut-over's transaction, read under
 * search_path = pg_catalog so that every name in its expressions is schema-qualified, and the table's ENABLE and
 * FORCE are set the same: under the cut-over's lock no query sees the new table without them. PostgreSQL applies
 * the policies of the table a query names: through the parent, these; a partition named directly would apply
 * its own (none), and partflow grants no other role anything on the partitions, so such a query is refused
 * (permission denied). The old table keeps its own through the rollback window; the swap back needs nothing.
 */
import type { TableInfo } from '../catalog';
import { qualified, quoteLiteral, TableRef } from '../ident';
import { q, refuse } from './context';

/** The policies of table $1, run under search_path = pg_catalog, pg_temp. */
export const POLICIES_SQL = `
SELECT p.polname AS name, p.polcmd::text AS cmd, p.polpermissive AS permissive,
       ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r)) END
               FROM unnest(p.polroles) r ORDER BY 1) AS roles,
       pg_get_expr(p.polqual, p.polrelid) AS using, pg_get_expr(p.polwithcheck, p.polrelid) AS "withCheck",
       obj_description(p.oid, 'pg_policy') AS comment
  FROM pg_policy p WHERE p.polrelid = $1 ORDER BY p.polname`;

const COMMANDS: Record<string, string> = { r: 'SELECT', a: 'INSERT', w: 'UPDATE', d: 'DELETE', '*': 'ALL' };

/** The new table's policies and its ENABLE / FORCE, as the source has them. */
export function carriedPoliciesSql(info: TableInfo, table: TableRef): string[] {
  const t = qualified(table);
  const sql = (info.policies ?? []).flatMap((p) => [
    `CREATE POLICY ${q(p.name)} ON ${t} AS ${p.permissive ? 'PERMISSIVE' : 'RESTRICTIVE'} ` +
      `FOR ${COMMANDS[p.cmd]} TO ${p.roles.join(', ')}` +
      (p.using !== null ? ` USING (${p.using})` : '') +
      (p.withCheck !== null ? ` WITH CHECK (${p.withCheck})` : ''),
    ...(p.comment ? [`COMMENT ON POLICY ${q(p.name)} ON ${t} IS ${quoteLiteral(p.comment)}`] : []),
  ]);
  if (info.rowSecurity) sql.push(`ALTER TABLE ${t} ENABLE ROW LEVEL SECURITY`);
  if (info.forceRowSecurity) sql.push(`ALTER TABLE ${t} FORCE ROW LEVEL SECURITY`);
  return sql;
}

/**
 * Refused before anything changes: partflow's role subject to the table's policies (it would copy and compare
 * only what they let it see), or policies that were not read (a caller without the preflight activity).
 */
export function checkRowSecurity(info: TableInfo, t: string): void {
  if (!info.rowSecurity && !(info.policies ?? []).length) return;
  if (info.rowSecurity && !info.policies) refuse(`Table ${t} has row-level security whose policies were not read.`);
  const owner = info.currentUser === info.owner;
  const exempt = info.isSuperuser || info.bypassRls || (owner && !info.forceRowSecurity);
  if (info.rowSecurity && !exempt) {
    refuse(
      `Table ${t} has row-level security ${info.forceRowSecurity ? 'forced on its owner ' : ''}and partflow runs ` +
        `as ${info.currentUser}, whom its policies apply to: the copy and its verification would see only the rows ` +
        `they allow; run partflow as a role with BYPASSRLS (ALTER ROLE ${q(info.currentUser)} BYPASSRLS) or a ` +
        'superuser.',
    );
  }
}
