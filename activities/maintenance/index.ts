/**
 * `maintainTable`: one managed table's upkeep, in one activity so that one table's failure is its own:
 * rescue rows from the default partition and premake (create.ts, month.ts), finish interrupted detaches and
 * retire expired partitions with their archive (retire.ts, archive.ts), and the health report (report.ts).
 * Every step checks the catalog first.
 */
import type { Pool } from 'pg';
import { displayName, TableRef } from '../../src/ident';
import type { MaintainTableSpec } from '../../src/maintenance';
import { classify, inTransaction, withHeartbeat } from '../runtime/db';
import { metrics } from '../runtime/metrics';
import type { Deps } from '../runtime/deps';
import { runsHolding } from '../runtime/runStore';
import { premake, rescue } from './create';
import { inspect } from './inspect';
import { emptyReport, health, TableReport } from './report';
import { finishDetaches, retire } from './retire';

export { archiveDir, archiveFileStem, archiveSchema, withoutPassword } from './archive';
export { attachLockEstimateMs } from './month';
export type { PartitionHealth, TableReport } from './report';

/**
 * The partflow run that holds the table, or null: a partitionTable run (active, being undone or cleaned up), or
 * a fixConstraints or createIndexes run that is active or being undone with the table among its tables.
 * Maintenance creates and detaches nothing on such a table: a partition that appears or goes under a build or a
 * validation leaves an index INVALID or a constraint on a table that is no longer a partition.
 */
async function runOwning(pool: Pool, t: TableRef): Promise<string | null> {
  const [h] = await runsHolding(pool, [t]);
  return h ? `${h.kind} ${h.workflowId}` : null;
}

/** Everything for one table; the workflow runs one such activity per table and reports failures per table. */
async function maintain({ pool, log }: Deps, spec: MaintainTableSpec): Promise<TableReport> {
  const logger = log.child({ step: 'maintain', table: displayName(spec.table) });
  const look = () => inTransaction(pool, (c) => inspect(c, spec), { readOnly: true });
  let p = await look();
  const report = emptyReport(displayName(spec.table), p.column);
  // A table that a partflow run owns (backfill, approval, rollback window) is left alone: a rescue's
  // DELETE from the default partition would fire the run's reverse trigger and lose rows on rollback.
  const owner = await runOwning(pool, spec.table);
  const readOnly = spec.reportOnly || owner !== null;
  if (owner) {
    report.warnings.push(
      `partflow run ${owner} holds ${displayName(spec.table)}: nothing was created, detached, moved or archived; ` +
        'the next run after it ends catches up.',
    );
  }
  if (!readOnly) {
    if (p.def) {
      await rescue(pool, log, spec, p, report);
      p = await look();
    }
    await premake(pool, log, spec, p, report);
    if (report.created.length) p = await look();
    await finishDetaches(pool, logger, spec, p, report);
    if (spec.retentionMonths !== null) {
      await retire(pool, logger, spec, p, report);
      if (report.archived.length) p = await look();
    }
  }
  await health(pool, spec, p, report);
  metrics.partitionsCreated(report.table, report.created.length);
  metrics.partitionsArchived(report.table, report.archived.length);
  if (report.defaultPartition) metrics.defaultRows(report.table, report.defaultPartition.rows);
  const { created, archived, warnings } = report;
  logger.info({ created: created.length, archived: archived.length, warnings }, 'maintained');
  return report;
}

export function createMaintenanceActivities(deps: Deps) {
  return {
    async maintainTable(spec: MaintainTableSpec): Promise<TableReport> {
      try {
        return await withHeartbeat(
          () => ({ table: displayName(spec.table) }),
          () => maintain(deps, spec),
        );
      } catch (err) {
        classify(err, `maintenance of ${displayName(spec.table)}`);
      }
    },
  };
}

export type MaintenanceActivities = ReturnType<typeof createMaintenanceActivities>;
