/** The health report of a maintained table: partitions with sizes, the default partition, what looks off. */
import type { Pool } from 'pg';
import { qualified } from '../../src/ident';
import type { MaintainTableSpec } from '../../src/maintenance';
import type { MaintenanceStep } from '../../src/maintenanceSql';
import { addMonths, formatMonth } from '../../src/partitions';
import type { Parted } from './inspect';

export interface PartitionHealth {
  name: string;
  from: string;
  to: string;
  /** from the planner's statistics; null when the partition was never analyzed */
  rowsEstimated: number | null;
  rowsExact?: number;
  bytes: number;
}

export interface TableReport {
  table: string;
  column: string;
  created: { partition: string; rowsMovedFromDefault: number }[];
  archived: { partition: string; mode: string; file?: string; rows?: number; note?: string }[];
  skipped: { partition: string; reason: string }[];
  partitions: PartitionHealth[];
  defaultPartition: { name: string; rows: number } | null;
  futurePartitions: number;
  oldestPartition: string | null;
  warnings: string[];
  /** partitions whose interrupted DETACH CONCURRENTLY this run finished */
  finishedDetaches?: string[];
  /** a dry run: each step that would run, with its statements and their undo (src/maintenanceSql.ts) */
  planned?: MaintenanceStep[];
  /** rows left in the default partition because they are dated far outside the partitions */
  sentinels?: { rows: number; months: string[] };
}

export function emptyReport(table: string, column: string): TableReport {
  return {
    table,
    column,
    created: [],
    archived: [],
    skipped: [],
    partitions: [],
    defaultPartition: null,
    futurePartitions: 0,
    oldestPartition: null,
    warnings: [],
  };
}

/** Partitions far from the median size of past months. */
function sizeWarnings(report: TableReport, p: Parted): void {
  const monthStart = `${formatMonth(p.current)}-01 00:00:00`;
  const pastParts = report.partitions.filter((x) => x.to <= monthStart);
  const past = pastParts
    .filter((x) => x.bytes > 0)
    .map((x) => x.bytes)
    .sort((a, b) => a - b);
  if (past.length < 3) return;
  const median = past[Math.floor(past.length / 2)];
  for (const x of pastParts) {
    if (x.bytes > 4 * median || x.bytes < median / 4) {
      report.warnings.push(`${x.name} is ${x.bytes} bytes, far from the median ${median}.`);
    }
  }
}

export async function health(pool: Pool, spec: MaintainTableSpec, p: Parted, report: TableReport): Promise<void> {
  const nextMonth = `${formatMonth(addMonths(p.current, 1))}-01 00:00:00`;
  const count = async (rel: string) => Number((await pool.query(`SELECT count(*) AS n FROM ${rel}`)).rows[0].n);
  for (const part of [...p.parts].sort((a, b) => (a.lo < b.lo ? -1 : 1))) {
    const h: PartitionHealth = {
      name: part.name,
      from: part.lo,
      to: part.hi,
      rowsEstimated: part.est < 0 ? null : part.est,
      bytes: part.bytes,
    };
    if (spec.exactCounts) h.rowsExact = await count(qualified({ schema: part.schema, name: part.name }));
    report.partitions.push(h);
  }
  if (p.def) report.defaultPartition = { name: p.def.name, rows: await count(qualified(p.def)) };
  report.futurePartitions = p.parts.filter((x) => x.lo >= nextMonth).length;
  report.oldestPartition = report.partitions[0]?.name ?? null;
  if (report.futurePartitions < spec.premake) {
    report.warnings.push(`Only ${report.futurePartitions} future partition(s), fewer than premake ${spec.premake}.`);
  }
  const d = report.defaultPartition;
  if (d && d.rows > 0) report.warnings.push(`${d.name} holds ${d.rows} row(s) that no monthly partition covers.`);
  sizeWarnings(report, p);
}
