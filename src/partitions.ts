/**
 * Partition-bound arithmetic. Pure: months are (year, month) pairs, never JS Dates, so that no host time
 * zone can shift a bound. Bounds are rendered as SQL literals in the column's own type.
 */
import { InputError, quoteLiteral } from './ident';

export type PartitionColumnType = 'timestamptz' | 'timestamp' | 'date';

export interface Month {
  year: number;
  month: number; // 1..12
}

export interface PartitionSpec {
  name: string;
  /** inclusive lower bound, e.g. 2025-01 */
  from: Month;
  /** exclusive upper bound */
  to: Month;
}

export function parseMonth(text: string): Month {
  const m = /^(\d{4})-(\d{2})$/.exec(text);
  if (!m) throw new InputError(`Not a month: ${JSON.stringify(text)}; expected YYYY-MM.`);
  const month = Number(m[2]);
  if (month < 1 || month > 12) throw new InputError(`Not a month: ${JSON.stringify(text)}.`);
  return { year: Number(m[1]), month };
}

export function addMonths(m: Month, n: number): Month {
  const idx = m.year * 12 + (m.month - 1) + n;
  return { year: Math.floor(idx / 12), month: (idx % 12) + 1 };
}

export function compareMonths(a: Month, b: Month): number {
  return a.year * 12 + a.month - (b.year * 12 + b.month);
}

export function formatMonth(m: Month, sep = '-'): string {
  return `${String(m.year).padStart(4, '0')}${sep}${String(m.month).padStart(2, '0')}`;
}

/**
 * The SQL literal of the first instant of a month, typed for the partition column.
 * For timestamptz the month starts at midnight in `timeZone` (an IANA name PostgreSQL understands).
 */
export function boundLiteral(m: Month, type: PartitionColumnType, timeZone = 'UTC'): string {
  const day = `${formatMonth(m)}-01`;
  switch (type) {
    case 'date':
      return `${quoteLiteral(day)}::date`;
    case 'timestamp':
      return `${quoteLiteral(`${day} 00:00:00`)}::timestamp`;
    case 'timestamptz':
      if (!/^[A-Za-z0-9_+\-/]+$/.test(timeZone))
        throw new InputError(`Field "timeZone" is not a time zone name: ${JSON.stringify(timeZone)}.`);
      return `${quoteLiteral(`${day} 00:00:00 ${timeZone}`)}::timestamptz`;
  }
}

export function partitionName(table: string, m: Month): string {
  return `${table}_${formatMonth(m, '_')}`;
}

/**
 * One partition per month from the month of the oldest row up to `premake` months after the current month
 * (the current month included). With no rows, start at the current month.
 */
export function monthlyPartitions(
  table: string,
  oldest: Month | null,
  current: Month,
  premake: number,
): PartitionSpec[] {
  if (!Number.isInteger(premake) || premake < 0 || premake > 120) {
    throw new InputError('Field "premake" must be a whole number of months from 0 to 120.');
  }
  const start = oldest && compareMonths(oldest, current) < 0 ? oldest : current;
  const end = addMonths(current, premake); // last partition's month
  const out: PartitionSpec[] = [];
  for (let m = start; compareMonths(m, end) <= 0; m = addMonths(m, 1)) {
    out.push({ name: partitionName(table, m), from: m, to: addMonths(m, 1) });
  }
  if (out.length > 1200)
    throw new InputError(
      `The table's rows span ${out.length} months; partflow creates at most 1200 partitions at once.`,
    );
  return out;
}

/** Empty months allowed inside the body of the data; older rows beyond a longer gap are outliers. */
export const OUTLIER_GAP_MONTHS = 12;
/** More monthly partitions than this need `startMonth` (everything older in one partition). */
export const MAX_MONTHLY_PARTITIONS = 120;

/**
 * The first month of the body of the data: from the newest populated month at or before `end`, walk back
 * while the gap to the next older populated month is at most `gap` empty months. Months before that (a
 * 1900 sentinel, a stray row from decades ago) are outliers; null when no month is at or before `end`.
 */
export function bodyStart(months: Month[], end: Month, gap = OUTLIER_GAP_MONTHS): Month | null {
  const sorted = months.filter((m) => compareMonths(m, end) <= 0).sort(compareMonths);
  if (!sorted.length) return null;
  let start = sorted[sorted.length - 1];
  for (let i = sorted.length - 2; i >= 0; i--) {
    if (compareMonths(start, sorted[i]) - 1 > gap) break;
    start = sorted[i];
  }
  return start;
}

export interface PartitionLayout {
  /** the partitions in bound order: with `startMonth`, first one `<table>_older` from the oldest month */
  partitions: PartitionSpec[];
  /** monthly partitions only */
  monthly: number;
  /** first month of the data's body, before `startMonth` is applied */
  bodyStart: Month | null;
}

/**
 * Where the rows go. Monthly partitions from the body of the data (or `startMonth`) to `premake` months
 * after the current one; with `startMonth`, one partition `<table>_older` from the oldest populated month
 * up to it. Everything else (outliers, infinities, far-future rows) goes to the default partition.
 */
export function partitionLayout(
  table: string,
  months: Month[],
  current: Month,
  premake: number,
  startMonth: Month | null,
): PartitionLayout {
  if (!Number.isInteger(premake) || premake < 0 || premake > 120) {
    throw new InputError('Field "premake" must be a whole number of months from 0 to 120.');
  }
  const end = addMonths(current, premake);
  const body = bodyStart(months, end);
  const partitions: PartitionSpec[] = [];
  let start: Month;
  if (startMonth) {
    if (compareMonths(startMonth, current) > 0)
      throw new InputError(
        `Field "startMonth" (${formatMonth(startMonth)}) must not be after the current month ${formatMonth(current)}.`,
      );
    const oldest = [...months].sort(compareMonths)[0];
    if (oldest && compareMonths(oldest, startMonth) < 0)
      partitions.push({ name: `${table}_older`, from: oldest, to: startMonth });
    start = startMonth;
  } else {
    start = body && compareMonths(body, current) < 0 ? body : current;
  }
  let monthly = 0;
  for (let m = start; compareMonths(m, end) <= 0; m = addMonths(m, 1)) {
    partitions.push({ name: partitionName(table, m), from: m, to: addMonths(m, 1) });
    if (++monthly > 1200)
      throw new InputError(`The table's rows span more than 1200 months; set "startMonth" closer to today.`);
  }
  return { partitions, monthly, bodyStart: body };
}

/** The attach path's monthly partitions: from the cut-off to the current month plus `premake` (at least one). */
export function attachLayout(table: string, cutoff: Month, current: Month, premake: number): PartitionLayout {
  if (!Number.isInteger(premake) || premake < 0 || premake > 120) {
    throw new InputError('Field "premake" must be a whole number of months from 0 to 120.');
  }
  const end = addMonths(current, premake);
  const partitions: PartitionSpec[] = [];
  for (let m = cutoff; partitions.length === 0 || compareMonths(m, end) <= 0; m = addMonths(m, 1)) {
    partitions.push({ name: partitionName(table, m), from: m, to: addMonths(m, 1) });
  }
  return { partitions, monthly: partitions.length, bodyStart: null };
}

/** A month bucket as the verification queries print it (`YYYY-MM`, years past 9999 too), or null. */
export function bucketMonth(text: string | null): Month | null {
  const m = text === null ? null : /^(\d{4,6})-(\d{2})$/.exec(text);
  return m ? { year: Number(m[1]), month: Number(m[2]) } : null;
}
