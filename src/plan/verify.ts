/**
 * Step "verify": statistics for the copy, then row counts and content checksums per month, source and copy
 * compared chunk by chunk of the key, each chunk's two sides read in one short snapshot. In any snapshot, every
 * key without an entry in the key log is the same on both sides (the applier removes an entry in the
 * transaction that copies its key again), so those keys are compared and the logged ones left out.
 * Read-only apart from ANALYZE; no undo.
 */
import { qualified, quoteLiteral, TableRef } from '../ident';
import { keyTuple } from './backfill';
import { PlanContext, positional, q, sibling } from './context';
import { notLoggedSql } from './keylog';
import { keyLogSpec } from './sync';
import type { PlanSql, VerifyChunkSql } from './types';

function monthBucket(ctx: PlanContext, value: string): string {
  return ctx.type === 'timestamptz'
    ? `to_char(${value} AT TIME ZONE ${quoteLiteral(ctx.opts.timeZone)}, 'YYYY-MM')`
    : `to_char(${value}, 'YYYY-MM')`;
}

/** Rows with a key in the key log are left out on both sides: the applier copies them again, the cut-over drains. */
function checksumQuery(ctx: PlanContext, rel: TableRef, where = ''): string {
  const { sourceColumns } = ctx;
  const a = (c: string) => `s.a${sourceColumns.indexOf(c) + 1}`;
  const row = `ROW(${ctx.columns.map(a).join(', ')})::text`;
  return (
    `SELECT ${monthBucket(ctx, a(ctx.column))} AS bucket, count(*)::bigint AS n, ` +
    `coalesce(sum(hashtextextended(${row}, 0)), 0)::text AS checksum ` +
    `FROM ${positional(rel, sourceColumns, where)} WHERE ${notLoggedSql(keyLogSpec(ctx), sourceColumns)} GROUP BY 1`
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
  // a chunk that differs is copied again through the key log: every key of the range, on either side, logged
  const spec = keyLogSpec(ctx);
  const keys = spec.key.map((k) => q(k.name)).join(', ');
  const requeue = (w: string) =>
    `INSERT INTO ${qualified(spec.log)} (${keys}) SELECT ${keys} FROM ${qualified(ctx.table)}${w} ` +
    `UNION SELECT ${keys} FROM ${qualified(ctx.shadow)}${w}`;
  return {
    source: side(ctx.table),
    shadow: side(ctx.shadow),
    requeue: { first: requeue(where.first), between: requeue(where.between), after: requeue(where.after) },
  };
}

export function verifyStep(
  ctx: PlanContext,
): Pick<PlanSql, 'analyze' | 'analyzePartitions' | 'verifySource' | 'verifyShadow' | 'verifyChunk'> {
  return {
    verifyChunk: chunkSql(ctx),
    // one partition per statement, so no snapshot lives longer than one partition's sample (ANALYZE of the
    // parent samples every partition in one snapshot: 7.7 s at a million rows, more with cold caches); the
    // parent's own statistics (autovacuum never gathers them either) are the operator's ANALYZE after finalize
    analyzePartitions: ctx.allPartitions.map((p) => `ANALYZE ${qualified(sibling(ctx.table, p))}`),
    // the planner must not meet empty-looking partitions right after the cut-over (SHARE UPDATE EXCLUSIVE:
    // writes go on)
    analyze: `ANALYZE ${qualified(ctx.shadow)}`,
    verifySource: checksumQuery(ctx, ctx.table),
    verifyShadow: checksumQuery(ctx, ctx.shadow),
  };
}
