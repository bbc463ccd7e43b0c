/**
 * Verification before the cut-over: row counts and content checksums per partition range, source against
 * copy, chunk by chunk of the key, each chunk's two sides in one short snapshot (src/plan/verify.ts).
 */
import { failure } from '../../src/failures';
import { displayName, qualified } from '../../src/ident';
import { bucketMonth, compareMonths, parseMonth } from '../../src/partitions';
import type { Plan } from '../../src/plan';
import { CancelledFailure } from '@temporalio/common';
import { activityContext, classify, inTransaction, withHeartbeat } from '../runtime/db';
import { faultPoint } from '../runtime/faults';
import { metrics } from '../runtime/metrics';
import { drainKeyLog, resetSeen } from './keylog';
import { Deps, stepLog } from '../runtime/deps';
import { notReadCommitted, ownPlan } from './run';

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
  /** key chunks compared, each in a snapshot of its own; the longest one held (ms); when the pass ended */
  chunks?: number;
  longestSnapshotMs?: number;
  endedAt?: string;
  /** chunks that differed and were equal once their keys were copied again (plans with a key log) */
  repaired?: string[];
}

type Buckets = { bucket: string | null; n: string; checksum: string }[];

/** Rows per verification chunk (input verifyChunkRows): a chunk's snapshot lives as long as reading this many
 *  rows twice takes. */
export const VERIFY_CHUNK_ROWS = 50_000;

interface Pass {
  src: Buckets;
  dst: Buckets;
  chunks: number;
  longestSnapshotMs: number;
  /** chunks whose two sides differ: the key range and the month */
  differences: string[];
  /** chunks that differed and were equal after their keys were copied again */
  repaired: string[];
}

/**
 * The two sides of one chunk in one REPEATABLE READ snapshot; differences named by key range and month. With
 * `requeue` (plans with a key log), a chunk that differs has its keys logged, the log applied and the chunk
 * compared once more: a difference gone then is reported as repaired, one that stays as a difference.
 */
async function compareChunk(
  deps: Deps,
  plan: Plan,
  q: [string, string],
  params: unknown[],
  what: string,
  pass: Pass,
  requeue?: string,
): Promise<void> {
  const differencesBefore = pass.differences.length;
  const trial: Pass = { ...pass, src: [], dst: [], differences: [] };
  await compareOnce(deps, plan, q, params, what, trial);
  pass.chunks = trial.chunks;
  pass.longestSnapshotMs = trial.longestSnapshotMs;
  if (!trial.differences.length || !requeue || !plan.sql.keyLog) {
    pass.src.push(...trial.src);
    pass.dst.push(...trial.dst);
    pass.differences.push(...trial.differences.slice(0, Math.max(0, 5 - differencesBefore)));
    return;
  }
  await deps.pool.query(requeue, params);
  await drainKeyLog(deps.pool, plan.sql.keyLog);
  const again: Pass = { ...pass, src: [], dst: [], differences: [] };
  await compareOnce(deps, plan, q, params, what, again);
  pass.chunks = again.chunks;
  pass.longestSnapshotMs = again.longestSnapshotMs;
  pass.src.push(...again.src);
  pass.dst.push(...again.dst);
  pass.differences.push(...again.differences.slice(0, Math.max(0, 5 - differencesBefore)));
  if (!again.differences.length) pass.repaired.push(...trial.differences);
}

async function compareOnce(deps: Deps, plan: Plan, q: [string, string], params: unknown[], what: string, pass: Pass) {
  const logger = stepLog(deps.log, 'verify', plan.table);
  const started = Date.now();
  const [a, b] = await inTransaction(
    deps.pool,
    async (c) => {
      const x = (await c.query(q[0], params)).rows as Buckets;
      await faultPoint('verify', logger);
      return [x, (await c.query(q[1], params)).rows as Buckets];
    },
    { isolation: 'REPEATABLE READ', readOnly: true },
  );
  pass.longestSnapshotMs = Math.max(pass.longestSnapshotMs, Date.now() - started);
  pass.chunks++;
  pass.src.push(...a);
  pass.dst.push(...b);
  const side = (rows: Buckets) => new Map(rows.map((r) => [r.bucket ?? 'none', `${r.n}/${r.checksum}`]));
  const [x, y] = [side(a), side(b)];
  for (const m of new Set([...x.keys(), ...y.keys()])) {
    if (x.get(m) === y.get(m) || pass.differences.length >= 5) continue;
    const [n1, n2] = [x.get(m)?.split('/')[0] ?? '0', y.get(m)?.split('/')[0] ?? '0'];
    pass.differences.push(`keys ${what}, month ${m}: source ${n1} rows, copy ${n2}`);
  }
}

/** Chunk by chunk of the key: bounds read outside any snapshot, each chunk compared in its own. */
async function chunkedPass(
  deps: Deps,
  plan: Plan,
  ctx: ReturnType<typeof activityContext>,
  chunkRows: number,
): Promise<Pass> {
  const pass: Pass = { src: [], dst: [], chunks: 0, longestSnapshotMs: 0, differences: [], repaired: [] };
  const ch = plan.sql.verifyChunk!;
  const max = (await deps.pool.query(plan.sql.maxKey)).rows[0]?.k as string[] | undefined;
  const whole: [string, string] = [plan.sql.verifySource, plan.sql.verifyShadow];
  if (!max) {
    await compareChunk(deps, plan, whole, [], 'all', pass); // empty table
    return pass;
  }
  let last: string[] | null = null;
  for (;;) {
    if (ctx?.cancellationSignal.aborted) throw new CancelledFailure('verification cancelled');
    // the key log between chunks: the keys left out of the next one stay few
    if (plan.sql.keyLog) await drainKeyLog(deps.pool, plan.sql.keyLog, 1000, Date.now() + 500);
    const bound = last
      ? await deps.pool.query(plan.sql.keyBound, [...last, ...max, chunkRows])
      : await deps.pool.query(plan.sql.keyBoundFirst, [...max, chunkRows]);
    const next = bound.rows[0]?.k as string[] | undefined;
    const shown = (k: string[] | null) => (k ? `(${k.join(', ')})` : '');
    if (!next) {
      // the rest, also rows written above the largest key since the pass began
      if (last) {
        const q: [string, string] = [ch.source.after, ch.shadow.after];
        await compareChunk(deps, plan, q, last, `above ${shown(last)}`, pass, ch.requeue?.after);
      } else await compareChunk(deps, plan, whole, [], 'all', pass);
      return pass;
    }
    const [q, params]: [[string, string], unknown[]] = last
      ? [
          [ch.source.between, ch.shadow.between],
          [...last, ...next],
        ]
      : [[ch.source.first, ch.shadow.first], next];
    const requeue = last ? ch.requeue?.between : ch.requeue?.first;
    await compareChunk(deps, plan, q, params, `${shown(last) || 'from the first'} to ${shown(next)}`, pass, requeue);
    ctx?.heartbeat({ step: 'verify', chunk: pass.chunks, rows: pass.src.reduce((n, r) => n + Number(r.n), 0) });
    last = next;
  }
}

/** Plans made before chunked verification: both sides in one snapshot. */
async function onePass(deps: Deps, plan: Plan): Promise<Pass> {
  const pass: Pass = { src: [], dst: [], chunks: 0, longestSnapshotMs: 0, differences: [], repaired: [] };
  await compareChunk(deps, plan, [plan.sql.verifySource, plan.sql.verifyShadow], [], 'all', pass);
  return pass;
}

export async function verify(
  deps: Deps,
  plan: Plan,
  opts: { analyze?: boolean; chunkRows?: number } = {},
): Promise<VerifyReport> {
  const { pool, log } = deps;
  await ownPlan(pool, plan.table, plan);
  const logger = stepLog(log, 'verify', plan.table);
  const started = Date.now();
  try {
    // statistics for the copy before it becomes the table (idempotent on retry); plans made before 0.2 lack
    // the statement; a re-verification while the run waits for approval skips it
    let longestAnalyzeMs = 0;
    if (opts.analyze !== false) {
      const statements = plan.sql.analyzePartitions ?? [plan.sql.analyze ?? `ANALYZE ${qualified(plan.shadow)}`];
      for (const [i, sql] of statements.entries()) {
        const t0 = Date.now();
        await withHeartbeat(
          () => ({ step: 'analyze', partition: i + 1, of: statements.length }),
          () => pool.query(sql),
        );
        longestAnalyzeMs = Math.max(longestAnalyzeMs, Date.now() - t0);
      }
      logger.info(
        { elapsedMs: Date.now() - started, statements: statements.length, longestAnalyzeMs },
        'copy analyzed',
      );
    }
    const ctx = activityContext();
    // the cut-over compares what the applier copies from here on (the last check)
    await resetSeen(pool, plan.sql.keyLog);
    if (plan.sql.keyLog) {
      const keys = await withHeartbeat(
        () => ({ step: 'apply key log' }),
        () => drainKeyLog(pool, plan.sql.keyLog!),
      );
      logger.info({ keys }, 'key log applied');
    }
    const pass = await withHeartbeat(
      () => ({ step: 'verify' }),
      () =>
        plan.sql.verifyChunk ? chunkedPass(deps, plan, ctx, opts.chunkRows ?? VERIFY_CHUNK_ROWS) : onePass(deps, plan),
    );
    const report: VerifyReport = {
      ...compareChecksums(plan, pass.src, pass.dst, Date.now() - started),
      chunks: pass.chunks,
      longestSnapshotMs: Math.max(pass.longestSnapshotMs, longestAnalyzeMs),
      repaired: pass.repaired,
      endedAt: new Date().toISOString(),
    };
    if (pass.differences.length && report.ok) {
      report.ok = false;
      report.mismatches = pass.differences;
    }
    const iso = await notReadCommitted(pool, plan);
    if (iso) {
      throw failure(
        `${iso}: the run rolls back; run it again while the writers use READ COMMITTED.`,
        'WritersNotReadCommitted',
      );
    }
    const { ok, rows, mismatches, elapsedMs, chunks, longestSnapshotMs, repaired } = report;
    if (repaired?.length) logger.warn({ repaired }, 'chunks that differed were copied again and are equal now');
    logger.info({ ok, rows, mismatches, elapsedMs, chunks, longestSnapshotMs }, 'verification finished');
    if (!report.ok) {
      metrics.verifyMismatches(displayName(plan.table), report.mismatches.length);
      const detail = pass.differences.length ? ` (${pass.differences.join('; ')})` : '';
      throw failure(
        `Verification of ${displayName(plan.table)} failed: source and copy differ in ${mismatches.join(', ')}${
          report.mismatches === pass.differences ? '' : detail
        }.`,
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
