/**
 * Step "verify": statistics for the copy, then row counts and content checksums per month, source and copy
 * compared chunk by chunk of the key, each chunk's two sides read in one short snapshot (the sync trigger
 * writes the copy in the application's own transaction, so in any snapshot the two sides hold the same rows).
 * Read-only apart from ANALYZE; no undo.
 */
import { qualified, quoteLiteral, TableRef } from '../ident';
import { keyTuple } from './backfill';
import { PlanContext, positional } from './context';
import type { PlanSql, VerifyChunkSql } from './types';

function monthBucket(ctx: PlanContext, value: string): string {
  return ctx.type === 'timestamptz'
    ? `to_char(${value} AT TIME ZONE ${quoteLiteral(ctx.opts.timeZone)}, 'YYYY-MM')`
    : `to_char(${value}, 'YYYY-MM')`;
}

function checksumQuery(ctx: PlanContext, rel: TableRef, where = ''): string {
  const { sourceColumns } = ctx;
  const a = (c: string) => `s.a${sourceColumns.indexOf(c) + 1}`;
  const row = `ROW(${ctx.columns.map(a).join(', ')})::text`;
  return (
    `SELECT ${monthBucket(ctx, a(ctx.column))} AS bucket, count(*)::bigint AS n, ` +
    `coalesce(sum(hashtextextended(${row}, 0)), 0)::text AS checksum ` +
    `FROM ${positional(rel, sourceColumns, where)} GROUP BY 1`
  );
}

/**
 * One chunk of the key on both sides: up to the first bound (`first`: `$1..$n` inclusive), between two
 * (`between`: above `$1..$n`, up to `$n+1..$2n`), or everything above the last bound (`after`).
 */
function chunkSql(ctx: PlanContext): VerifyChunkSql {
  const { tuple, params, n } = keyTuple(ctx);
  const where = {
    first: ` WHERE ${tuple} <= ${params(1)}`,
    between: ` WHERE ${tuple} > ${params(1)} AND ${tuple} <= ${params(n + 1)}`,
    after: ` WHERE ${tuple} > ${params(1)}`,
  };
  const side = (rel: TableRef) => ({
    first: checksumQuery(ctx, rel, where.first),
    between: checksumQuery(ctx, rel, where.between),
    after: checksumQuery(ctx, rel, where.after),
  });
  return { source: side(ctx.table), shadow: side(ctx.shadow) };
}

export function verifyStep(
  ctx: PlanContext,
): Pick<PlanSql, 'analyze' | 'verifySource' | 'verifyShadow' | 'verifyChunk'> {
  return {
    verifyChunk: chunkSql(ctx),
    // the planner must not meet empty-looking partitions right after the cut-over (SHARE UPDATE EXCLUSIVE:
    // writes go on)
    analyze: `ANALYZE ${qualified(ctx.shadow)}`,
    verifySource: checksumQuery(ctx, ctx.table),
    verifyShadow: checksumQuery(ctx, ctx.shadow),
  };
}
