/** `maintainPartitions`: input and the pure parts of partition upkeep. */
import { InputError, parseTableName, TableRef } from './ident';
import { lockTimeoutField } from './locks';
import { addMonths, compareMonths, formatMonth, Month, parseMonth } from './partitions';

export type ArchiveMode = 'detach' | 'dump' | 'drop' | 'none';

export interface MaintainTableInput {
  table: string;
  /** future months to keep, beyond the current one; default 3 */
  premake?: number;
  /** e.g. "12 months" or "1 year"; partitions entirely older are archived. Absent: keep everything */
  retention?: string;
  /** what to do with partitions past retention; default "detach" */
  archive?: ArchiveMode;
  /** count rows exactly in the health report (scans every partition) */
  exactCounts?: boolean;
  /** month edges of a timestamptz column; default UTC */
  timeZone?: string;
}

/** Input of the `maintainPartitions` workflow. */
export interface MaintainPartitionsInput {
  tables: MaintainTableInput[];
  lockTimeoutMs?: number;
  /** only the health report: create, move, detach nothing */
  reportOnly?: boolean;
  /** the health report and each step that would run, with its statements and their undo: change nothing */
  dryRun?: boolean;
}

export interface MaintainTableSpec {
  table: TableRef;
  premake: number;
  retentionMonths: number | null;
  archive: ArchiveMode;
  exactCounts: boolean;
  timeZone: string;
  lockTimeoutMs: number;
  reportOnly: boolean;
  /** report the steps (report.planned) instead of running them */
  dryRun?: boolean;
  /** where the table is in the input, e.g. `tables[0]`: refusals of the activity name the field by it */
  at?: string;
}

/** A whole number of months, parsed here: the text itself never reaches SQL. */
export function parseRetention(text: string, field: string): number {
  const m = typeof text === 'string' ? /^\s*(\d+)\s*(month|months|year|years)\s*$/i.exec(text) : null;
  if (!m) throw new InputError(`${field} must read like "12 months" or "2 years", not ${JSON.stringify(text)}.`);
  const n = Number(m[1]) * (/^year/i.test(m[2]) ? 12 : 1);
  if (n < 1 || n > 1200) throw new InputError(`${field} must be from 1 month to 100 years.`);
  return n;
}

/** The fields of maintainPartitions' input and of each table in it (docs/contract.md; a test checks). */
export const MAINTAIN_INPUT_FIELDS = ['tables', 'lockTimeoutMs', 'reportOnly', 'dryRun'];
export const MAINTAIN_TABLE_FIELDS = ['table', 'premake', 'retention', 'archive', 'exactCounts', 'timeZone'];

export function validateMaintainInput(raw: unknown): MaintainTableSpec[] {
  if (
    !raw ||
    typeof raw !== 'object' ||
    !Array.isArray((raw as MaintainPartitionsInput).tables) ||
    (raw as MaintainPartitionsInput).tables.length === 0
  ) {
    throw new InputError('The input must be {"tables": [{"table": "generated_images", ...}]} with at least one table.');
  }
  const input = raw as MaintainPartitionsInput;
  for (const k of Object.keys(input))
    if (!MAINTAIN_INPUT_FIELDS.includes(k))
      throw new InputError(`Unknown field "${k}"; known fields are ${MAINTAIN_INPUT_FIELDS.join(', ')}.`);
  for (const f of ['reportOnly', 'dryRun'] as const) {
    if (input[f] !== undefined && typeof input[f] !== 'boolean')
      throw new InputError(`Field "${f}" must be true or false.`);
  }
  const lockTimeoutMs = lockTimeoutField(input.lockTimeoutMs);
  return input.tables.map((t, i) => {
    const at = `tables[${i}]`;
    if (!t || typeof t !== 'object') throw new InputError(`${at} must be an object with "table".`);
    for (const k of Object.keys(t)) {
      if (!MAINTAIN_TABLE_FIELDS.includes(k)) throw new InputError(`${at}: unknown field "${k}".`);
    }
    const premake = t.premake ?? 3;
    if (!Number.isInteger(premake) || premake < 0 || premake > 120)
      throw new InputError(`${at}.premake must be a whole number of months from 0 to 120.`);
    const archive = t.archive ?? 'detach';
    if (!['detach', 'dump', 'drop', 'none'].includes(archive))
      throw new InputError(`${at}.archive must be "detach", "dump", "drop" or "none".`);
    // only the characters of time zone names here; that PostgreSQL knows the name is checked against
    // pg_timezone_names by the activity (activities/maintenance/inspect.ts checkTimeZone)
    const timeZone = t.timeZone ?? 'UTC';
    if (typeof timeZone !== 'string' || !/^[A-Za-z0-9_+\-/]{1,64}$/.test(timeZone))
      throw new InputError(`${at}.timeZone must be a time zone name such as "UTC" or "Europe/Berlin".`);
    return {
      table: parseTableName(t.table, `${at}.table`),
      premake,
      retentionMonths:
        t.retention === undefined || t.retention === null ? null : parseRetention(t.retention, `${at}.retention`),
      archive,
      exactCounts: t.exactCounts === true,
      timeZone,
      lockTimeoutMs,
      reportOnly: input.reportOnly === true,
      ...(input.dryRun === true ? { dryRun: true } : {}),
      at,
    };
  });
}

/** A partition's range in local wall-clock text ('YYYY-MM-DD HH24:MI:SS'), comparable as strings. */
export interface LocalRange {
  name: string;
  lo: string;
  hi: string;
}

function monthStartText(m: Month): string {
  return `${formatMonth(m)}-01 00:00:00`;
}

/** Which partition, if any, overlaps [m, m+1) without covering it (a month partflow cannot create). */
export function monthCoverage(ranges: LocalRange[], m: Month): { covered: boolean; overlaps: string[] } {
  const lo = monthStartText(m);
  const hi = monthStartText(addMonths(m, 1));
  const covered = ranges.some((r) => r.lo <= lo && r.hi >= hi);
  const overlaps = covered ? [] : ranges.filter((r) => r.lo < hi && r.hi > lo).map((r) => r.name);
  return { covered, overlaps };
}

/** Partitions entirely before the retention cutoff: the start of (current month - retention). */
export function expiredPartitions<T extends LocalRange>(ranges: T[], current: Month, retentionMonths: number): T[] {
  const cutoff = monthStartText(addMonths(current, -retentionMonths));
  return ranges.filter((r) => r.hi <= cutoff);
}

export function monthsToPremake(current: Month, premake: number): Month[] {
  const out: Month[] = [];
  for (let i = 0; i <= premake; i++) out.push(addMonths(current, i));
  return out;
}

export { compareMonths, parseMonth };
