/**
 * What the cut-over carries onto the new table beside its rows (the table's triggers with their states and
 * comments, its policies, its row-level security flags), as lines that read the same on the source and on the
 * new table: names, states, roles and comments, never OIDs or column numbers. Preflight reads them on the source
 * into the plan; through the rollback window a rollback compares the new table's against them and refuses when
 * they changed, since the swap back would silently undo the change (a restrictive policy added, a trigger
 * disabled). $1 is the table's OID.
 */
import { notPartflowTrigger } from './types';

export const CARRIED_SQL = `SELECT x FROM (
  SELECT 'trigger ' || quote_ident(t.tgname) || ' ' || t.tgenabled::text || ' '
         || coalesce(obj_description(t.oid, 'pg_trigger'), '-') AS x
    FROM pg_trigger t WHERE t.tgrelid = $1 AND NOT t.tgisinternal AND ${notPartflowTrigger('t')}
  UNION ALL SELECT 'policy ' || quote_ident(p.polname) || ' ' || p.polcmd::text || ' ' || p.polpermissive::text || ' '
         || array_to_string(ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r)) END
                                    FROM unnest(p.polroles) r ORDER BY 1), ',') || ' '
         || coalesce(obj_description(p.oid, 'pg_policy'), '-')
    FROM pg_policy p WHERE p.polrelid = $1
  UNION ALL SELECT 'row security ' || c.relrowsecurity::text || ' ' || c.relforcerowsecurity::text
    FROM pg_class c WHERE c.oid = $1
  UNION ALL SELECT 'publication ' || quote_ident(p.pubname)
    FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid WHERE pr.prrelid = $1
) s ORDER BY x`;
