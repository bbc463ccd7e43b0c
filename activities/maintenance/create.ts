/**
 * Rescue and premake: months with rows waiting in the default partition get their partition (except
 * sentinels), and the current month and `premake` months ahead exist.
 */
import type { Pool } from 'pg';
import { qualified, quoteIdent as q } from '../../src/ident';
import type { Logger } from '../../src/logger';
import { MaintainTableSpec, monthCoverage, monthsToPremake } from '../../src/maintenance';
import {
  addMonths,
  boundLiteral,
  bucketMonth,
  compareMonths,
  formatMonth,
  Month,
  OUTLIER_GAP_MONTHS,
  partitionName,
} from '../../src/partitions';
import type { Parted } from './inspect';
import { ensureMonth } from './month';
import type { TableReport } from './report';

/** The month's partition, reported as created or skipped. */
async function create(pool: Pool, log: Logger, spec: MaintainTableSpec, p: Parted, m: Month, report: TableReport) {
  const name = partitionName(spec.table.name, m);
  // a dry run's rescue planned it already (the premake would find it made), or the rescue skipped it already
  if (report.planned?.some((x) => x.step === 'create partition' && x.partition === name)) return;
  if (report.skipped.some((x) => x.partition === name)) return;
  const r = await ensureMonth(pool, log, spec, p, m);
  if (r && 'skipped' in r) report.skipped.push({ partition: name, reason: r.skipped });
  else if (r && 'planned' in r) report.planned = [...(report.planned ?? []), r.planned];
  else if (r) report.created.push(r);
}

/** Months outside [first partition − OUTLIER_GAP_MONTHS, last premade + OUTLIER_GAP_MONTHS] are sentinels. */
function plausibleMonths(spec: MaintainTableSpec, p: Parted): { from: Month; to: Month } {
  const firstMonths = p.parts
    .map((x) => bucketMonth(x.lo.slice(0, 7)))
    .filter((x): x is Month => !!x && x.year > 0)
    .sort(compareMonths);
  return {
    from: addMonths(firstMonths[0] ?? p.current, -OUTLIER_GAP_MONTHS),
    to: addMonths(p.current, spec.premake + OUTLIER_GAP_MONTHS),
  };
}

/**
 * Rows waiting in the default partition get their month's partition, except sentinels: infinities and
 * months more than OUTLIER_GAP_MONTHS before the oldest partition or after the premade ones.
 */
export async function rescue(pool: Pool, log: Logger, spec: MaintainTableSpec, p: Parted, report: TableReport) {
  const def = p.def!;
  const tzExpr = p.type === 'timestamptz' ? `${q(p.column)} AT TIME ZONE $1` : `${q(p.column)}::timestamp`;
  const months = (
    await pool.query(
      `SELECT DISTINCT to_char(${tzExpr}, 'YYYY-MM') AS m FROM ${qualified(def)} ORDER BY 1`,
      p.type === 'timestamptz' ? [spec.timeZone] : [],
    )
  ).rows.map((r) => r.m as string | null);
  const { from, to } = plausibleMonths(spec, p);
  const sentinels: string[] = [];
  for (const mt of months) {
    const m = bucketMonth(mt);
    if (!m || compareMonths(m, from) < 0 || compareMonths(m, to) > 0) {
      sentinels.push(mt ?? '±infinity');
      continue;
    }
    const cov = monthCoverage(p.parts, m);
    if (cov.overlaps.length) {
      report.warnings.push(
        `Rows for ${mt} wait in ${def.name}, but ${cov.overlaps.join(', ')} partly covers that month; ` +
          'partflow cannot create a monthly partition there.',
      );
      continue;
    }
    await create(pool, log, spec, p, m, report);
  }
  if (!sentinels.length) return;
  const lo = boundLiteral(from, p.type, spec.timeZone);
  const hi = boundLiteral(addMonths(to, 1), p.type, spec.timeZone);
  const col = q(p.column);
  const n = (
    await pool.query(
      `SELECT count(*)::bigint AS n FROM ${qualified(def)} WHERE NOT (${col} >= ${lo} AND ${col} < ${hi})`,
    )
  ).rows[0].n;
  report.sentinels = { rows: Number(n), months: sentinels };
  report.warnings.push(
    `${n} row(s) in ${def.name} are dated far outside the partitions (${sentinels.join(', ')}): ` +
      'sentinels or outliers, they stay in the default partition and get no partition.',
  );
}

/** The current month and `premake` months ahead. */
export async function premake(pool: Pool, log: Logger, spec: MaintainTableSpec, p: Parted, report: TableReport) {
  for (const m of monthsToPremake(p.current, spec.premake)) {
    const cov = monthCoverage(p.parts, m);
    if (cov.covered) continue;
    if (cov.overlaps.length) {
      report.warnings.push(
        `${formatMonth(m)} is partly covered by ${cov.overlaps.join(', ')}; no monthly partition created.`,
      );
      continue;
    }
    await create(pool, log, spec, p, m, report);
  }
}
