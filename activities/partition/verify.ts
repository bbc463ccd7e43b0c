/**
 * Verification before the cut-over: row counts and content checksums per partition range, source against
 * copy, read in one snapshot.
 */
import type { PoolClient } from 'pg';
import { failure } from '../../src/failures';
import { displayName, qualified } from '../../src/ident';
import { bucketMonth, compareMonths, parseMonth } from '../../src/partitions';
import type { Plan } from '../../src/plan';
import { classify, inTransaction, withHeartbeat } from '../db';
import { faultPoint } from '../faults';
import { metrics } from '../metrics';
import { Deps, ownPlan, stepLog } from './run';

export interface VerifyRange {
  partition: string;
  sourceRows: number;
  shadowRows: number;
  sourceChecksum: string;
  shadowChecksum: string;
  match: boolean;
}

export interface VerifyReport {
  ok: boolean;
  rows: number;
  ranges: VerifyRange[];
  mismatches: string[];
  elapsedMs: number;
}

type Buckets = { bucket: string | null; n: string; checksum: string }[];

export async function verify({ pool, log }: Deps, plan: Plan): Promise<VerifyReport> {
  await ownPlan(pool, plan.table, plan);
  const l = stepLog(log, 'verify', plan.table);
  const started = Date.now();
  try {
    // statistics for the copy before it becomes the table (idempotent on retry); plans made before 0.2 lack
    // the statement
    const analyze = plan.sql.analyze ?? `ANALYZE ${qualified(plan.shadow)}`;
    await withHeartbeat(
      () => ({ step: 'analyze' }),
      () => pool.query(analyze),
    );
    l.info({ elapsedMs: Date.now() - started }, 'copy analyzed');
    const read = async (c: PoolClient): Promise<[Buckets, Buckets]> => {
      const a = await c.query(plan.sql.verifySource);
      await faultPoint('verify', l);
      const b = await c.query(plan.sql.verifyShadow);
      return [a.rows, b.rows];
    };
    const [src, dst] = await withHeartbeat(
      () => ({ step: 'verify' }),
      () => inTransaction(pool, read, { isolation: 'REPEATABLE READ', readOnly: true }),
    );
    const report = compareChecksums(plan, src, dst, Date.now() - started);
    const { ok, rows, mismatches, elapsedMs } = report;
    l.info({ ok, rows, mismatches, elapsedMs }, 'verification finished');
    if (!report.ok) {
      metrics.verifyMismatches(displayName(plan.table), report.mismatches.length);
      throw failure(
        `Verification of ${displayName(plan.table)} failed: source and copy differ in ${mismatches.join(', ')}.`,
        'VerificationMismatch',
        report,
      );
    }
    return report;
  } catch (err) {
    classify(err, 'verify');
  }
}

/** Sums the month buckets of each side into the plan's partitions and compares them. */
export function compareChecksums(
  plan: Pick<Plan, 'partitions' | 'defaultPartition'>,
  src: Buckets,
  dst: Buckets,
  elapsedMs: number,
): VerifyReport {
  const ranges = plan.partitions.map((p) => ({ name: p.name, from: parseMonth(p.from), to: parseMonth(p.to) }));
  const partitionOf = (bucket: string | null) => {
    const m = bucketMonth(bucket); // null for infinities: the default partition
    const r = m && ranges.find((x) => compareMonths(x.from, m) <= 0 && compareMonths(m, x.to) < 0);
    return r ? r.name : plan.defaultPartition;
  };
  const agg = (rows: Buckets) => {
    const m = new Map<string, { n: bigint; sum: bigint }>();
    for (const r of rows) {
      const part = partitionOf(r.bucket);
      const cur = m.get(part) ?? { n: 0n, sum: 0n };
      m.set(part, { n: cur.n + BigInt(r.n), sum: cur.sum + BigInt(r.checksum) });
    }
    return m;
  };
  const a = agg(src);
  const b = agg(dst);
  const names = [...plan.partitions.map((p) => p.name), plan.defaultPartition];
  const report: VerifyRange[] = names.map((partition) => {
    const x = a.get(partition) ?? { n: 0n, sum: 0n };
    const y = b.get(partition) ?? { n: 0n, sum: 0n };
    return {
      partition,
      sourceRows: Number(x.n),
      shadowRows: Number(y.n),
      sourceChecksum: x.sum.toString(16),
      shadowChecksum: y.sum.toString(16),
      match: x.n === y.n && x.sum === y.sum,
    };
  });
  const mismatches = report
    .filter((r) => !r.match)
    .map((r) => `${r.partition} (source ${r.sourceRows} rows, copy ${r.shadowRows})`);
  const rows = report.reduce((s, r) => s + r.sourceRows, 0);
  return { ok: mismatches.length === 0, rows, ranges: report, mismatches, elapsedMs };
}
