/**
 * Activities of `createIndexes` (the checks, nothing built before all indexes pass them, are in plan.ts):
 * the parent index,
 * one partition's index per call (built CONCURRENTLY, progress from pg_stat_progress_create_index, then
 * attached), and the undo. The run's fence is fixConstraints' (partflow.fix_runs): forward steps commit only
 * while the run is active.
 */
import { failure } from '../../src/failures';
import { displayName, qualified } from '../../src/ident';
import { IndexBuild, indexBuild, IndexOptions, indexShape, IndexSpec } from '../../src/indexes';
import type { Logger } from '../../src/logger';
import { classify, withLockRetry } from '../runtime/db';
import { buildAndAttach } from '../runtime/indexBuilder';
import { fixFence } from '../runtime/fixRuns';
import type { Deps } from '../runtime/deps';
import { workflowId } from '../runtime/deps';
import { IndexPlan, planIndexes } from './plan';

export type { IndexPlan } from './plan';

const indexLog = (log: Logger, step: string, x: IndexSpec) =>
  log.child({ step, index: x.name, table: displayName(x.table), workflowId: workflowId() });

/** The index ON ONLY the parent: instant, invalid until every partition's index is attached. */
export async function createParentIndex({ pool, log }: Deps, plan: IndexPlan, lockTimeoutMs: number): Promise<void> {
  const parent = plan.build.parent;
  if (!parent) return;
  const logger = indexLog(log, 'parent index', plan.spec);
  try {
    await withLockRetry(
      pool,
      logger,
      'parent index',
      lockTimeoutMs,
      async (c) => {
        await fixFence(c);
        await c.query(parent.sql);
      },
      { relations: [qualified(plan.spec.table)] },
    );
  } catch (err) {
    classify(err, `parent index ${plan.spec.name}`);
  }
}

type BuildEntry = IndexBuild['each'][number];

/** One table's index of the build (a partition's, or the plain table's), built and attached. */
export async function buildIndexPart(
  deps: Deps,
  plan: IndexPlan,
  k: number,
  lockTimeoutMs: number,
): Promise<{ built: boolean }> {
  return buildIndexEntry(deps, plan, plan.build.each[k], lockTimeoutMs);
}

async function buildIndexEntry(
  { pool, log }: Deps,
  plan: IndexPlan,
  e: BuildEntry,
  lockTimeoutMs: number,
): Promise<{ built: boolean }> {
  const logger = indexLog(log, 'build index', plan.spec);
  try {
    const parent = plan.build.parent ? { schema: plan.spec.table.schema, name: plan.spec.name } : null;
    const built = await buildAndAttach(pool, logger, e, parent, lockTimeoutMs);
    logger.info({ partition: displayName(e.table), built }, 'index ready');
    return { built };
  } catch (err) {
    if ((err as { code?: string }).code === '23505')
      throw failure(
        `${plan.description}: ${displayName(e.table)} has duplicate values, so the unique index cannot be built: ` +
          `${(err as Error).message}.`,
        'DatabaseError',
      );
    classify(err, `index ${e.name}`);
  }
}

/** A partition that appeared after the plan: its index, built and attached like the planned ones. */
export async function buildIndexGap(
  deps: Deps,
  plan: IndexPlan,
  e: BuildEntry,
  lockTimeoutMs: number,
): Promise<{ built: boolean }> {
  // the entry comes back from indexGaps through the workflow: it must be what indexGaps makes of the catalog
  const shape = indexShape(plan.spec);
  const again = indexBuild(shape, 'p', [e.table]).each[0];
  if (!plan.build.parent || JSON.stringify(again) !== JSON.stringify(e))
    throw failure(`index ${plan.spec.name}: the partition entry is not partflow's own; nothing done.`, 'InvalidInput');
  return buildIndexEntry(deps, plan, e, lockTimeoutMs);
}

export interface IndexGaps {
  /** the index is valid: on a partitioned table, attached on every partition that exists now */
  valid: boolean;
  /** partitions without an index attached to the parent index: to build and attach */
  each: (BuildEntry & { drop: string })[];
  /** what stops the index from being valid that partflow cannot build (named) */
  problems: string[];
}

/**
 * After the planned builds: the index as the catalog has it now. Partitions may have appeared since the plan
 * (maintenance of another tool, the application): each one without an index attached to the parent index is
 * returned to be built. `valid` is PostgreSQL's own indisvalid, so `done` is never reported for an index the
 * planner would not use.
 */
export async function indexGaps({ pool }: Deps, plan: IndexPlan): Promise<IndexGaps> {
  try {
    const at = qualified({ schema: plan.spec.table.schema, name: plan.spec.name });
    const ix = await pool.query(
      `SELECT i.indisvalid AND i.indisready AS valid, c.relkind FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
        WHERE i.indexrelid = to_regclass($1)`,
      [at],
    );
    if (!ix.rowCount) return { valid: false, each: [], problems: [`${at} is gone`] };
    const valid: boolean = ix.rows[0].valid;
    if (ix.rows[0].relkind !== 'p' || !plan.build.parent)
      return { valid, each: [], problems: valid ? [] : [`${at} is INVALID`] };
    // every partition, and the index on it attached to the parent index (if any)
    const r = await pool.query(
      `SELECT n.nspname AS schema, c.relname AS name, c.relkind,
              (SELECT i.indisvalid FROM pg_inherits ii JOIN pg_index i ON i.indexrelid = ii.inhrelid
                WHERE ii.inhparent = to_regclass($2) AND i.indrelid = c.oid) AS attached_valid
         FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE h.inhparent = to_regclass($1) ORDER BY c.relname`,
      [qualified(plan.spec.table), at],
    );
    const shape = indexShape(plan.spec);
    const each: IndexGaps['each'] = [];
    const problems: string[] = [];
    for (const row of r.rows) {
      const p = { schema: row.schema as string, name: row.name as string };
      if (row.attached_valid === true) continue;
      if (row.attached_valid === false) problems.push(`the index attached on ${displayName(p)} is INVALID`);
      else if (row.relkind !== 'r') problems.push(`${displayName(p)} is partitioned itself; partflow builds on leaves`);
      else {
        const e = indexBuild(shape, 'p', [p]).each[0];
        const other = await pool.query(
          `SELECT i.indrelid::regclass::text AS on_table, i.indrelid = to_regclass($2) AS same
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_index i ON i.indexrelid = c.oid
            WHERE n.nspname = $1 AND c.relname = $3`,
          [p.schema, qualified(p), e.name],
        );
        if (other.rowCount && !other.rows[0].same)
          problems.push(
            `the partition index name ${e.name} is taken by ${other.rows[0].on_table ?? 'another relation'}`,
          );
        else
          each.push({
            ...e,
            drop: `DROP INDEX CONCURRENTLY IF EXISTS ${qualified({ schema: p.schema, name: e.name })}`,
          });
      }
    }
    return { valid, each, problems };
  } catch (err) {
    classify(err, `index ${plan.spec.name}`);
  }
}

/** Undo: the parent index (the attached partition indexes go with it), then each left, CONCURRENTLY. */
export async function dropIndexBuild({ pool, log }: Deps, plan: IndexPlan, lockTimeoutMs: number): Promise<void> {
  const logger = indexLog(log, 'drop index', plan.spec);
  try {
    const [first, ...rest] = plan.build.drop;
    if (plan.build.parent)
      await withLockRetry(pool, logger, 'drop index', lockTimeoutMs, (c) => c.query(first), {
        relations: [qualified(plan.spec.table)],
      });
    else await pool.query(first);
    for (const sql of rest) await pool.query(sql);
    logger.info({}, 'index dropped (undo)');
  } catch (err) {
    classify(err, `drop index ${plan.spec.name}`);
  }
}

export function createIndexActivities(deps: Deps) {
  return {
    planIndexes: (opts: IndexOptions) => planIndexes(deps, opts),
    createParentIndex: (plan: IndexPlan, lockTimeoutMs: number) => createParentIndex(deps, plan, lockTimeoutMs),
    buildIndexPart: (plan: IndexPlan, k: number, lockTimeoutMs: number) => buildIndexPart(deps, plan, k, lockTimeoutMs),
    indexGaps: (plan: IndexPlan) => indexGaps(deps, plan),
    buildIndexGap: (plan: IndexPlan, e: IndexGaps['each'][number], lockTimeoutMs: number) =>
      buildIndexGap(deps, plan, { table: e.table, name: e.name, sql: e.sql, attach: e.attach }, lockTimeoutMs),
    dropIndexBuild: (plan: IndexPlan, lockTimeoutMs: number) => dropIndexBuild(deps, plan, lockTimeoutMs),
  };
}
