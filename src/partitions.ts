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
      if (!/^[A-Za-z0-9_+\-/]+$/.test(timeZone)) throw new InputError(`Field "timeZone" is not a time zone name: ${JSON.stringify(timeZone)}.`);
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
export function monthlyPartitions(table: string, oldest: Month | null, current: Month, premake: number): PartitionSpec[] {
  if (!Number.isInteger(premake) || premake < 0 || premake > 120) {
    throw new InputError('Field "premake" must be a whole number of months from 0 to 120.');
  }
  let start = oldest && compareMonths(oldest, current) < 0 ? oldest : current;
  const end = addMonths(current, premake); // last partition's month
  const out: PartitionSpec[] = [];
  for (let m = start; compareMonths(m, end) <= 0; m = addMonths(m, 1)) {
    out.push({ name: partitionName(table, m), from: m, to: addMonths(m, 1) });
  }
  if (out.length > 1200) throw new InputError(`The table's rows span ${out.length} months; partflow creates at most 1200 partitions at once.`);
  return out;
}
