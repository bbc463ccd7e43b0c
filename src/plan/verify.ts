/**
 * Step "verify": statistics for the copy, then row counts and content checksums per month, source and copy
 * read in one snapshot. Read-only apart from ANALYZE; no undo.
 */
import { qualified, quoteLiteral, TableRef } from '../ident';
import { PlanContext, positional } from './context';
import type { PlanSql } from './types';

function monthBucket(ctx: PlanContext, value: string): string {
  return ctx.type === 'timestamptz'
    ? `to_char(${value} AT TIME ZONE ${quoteLiteral(ctx.opts.timeZone)}, 'YYYY-MM')`
    : `to_char(${value}, 'YYYY-MM')`;
}

function checksumQuery(ctx: PlanContext, rel: TableRef): string {
  const { sourceColumns } = ctx;
  const a = (c: string) => `s.a${sourceColumns.indexOf(c) + 1}`;
  const row = `ROW(${ctx.columns.map(a).join(', ')})::text`;
  return (
    `SELECT ${monthBucket(ctx, a(ctx.column))} AS bucket, count(*)::bigint AS n, ` +
    `coalesce(sum(hashtextextended(${row}, 0)), 0)::text AS checksum FROM ${positional(rel, sourceColumns)} GROUP BY 1`
  );
}

export function verifyStep(ctx: PlanContext): Pick<PlanSql, 'analyze' | 'verifySource' | 'verifyShadow'> {
  return {
    // the planner must not meet empty-looking partitions right after the cut-over (SHARE UPDATE EXCLUSIVE:
    // writes go on)
    analyze: `ANALYZE ${qualified(ctx.shadow)}`,
    verifySource: checksumQuery(ctx, ctx.table),
    verifyShadow: checksumQuery(ctx, ctx.shadow),
  };
}
