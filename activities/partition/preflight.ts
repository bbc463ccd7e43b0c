/** The read-only first step: the input checked against the catalog, and the whole plan built from it. */
import { PartitionOptions, validatePartitionInput } from '../../src/input';
import { buildPlan, Plan } from '../../src/plan';
import { classify, currentWorkflowId, inTransaction, withHeartbeat } from '../runtime/db';
import { readTableInfo } from '../runtime/inspect';
import { readTriggers } from './triggers';
import { readViews } from './views';
import { readAttachFacts } from './attach';
import { readPolicies } from './policies';
import { readFunctions, readStatements } from './statements';
import { CARRIED_SQL } from '../../src/plan/carried';
import { Deps, stepLog } from '../runtime/deps';

export interface PreflightResult {
  plan: Plan;
  summary: string[];
}

/**
 * The options the workflow validated where the input entered (validateStart), or a raw input from a script, a
 * benchmark or a run scheduled before the workflow handed its options over, validated here. A raw input names
 * its table as text, validated options as a TableRef.
 */
function optionsOf(input: PartitionOptions | unknown): PartitionOptions {
  const given = input as Partial<PartitionOptions> | null;
  if (given && typeof given.table === 'object' && given.table !== null) return given as PartitionOptions;
  return validatePartitionInput(input);
}

/** Read-only: checks the options against the catalog and returns the full plan. */
export async function preflight({ pool, log }: Deps, input: PartitionOptions | unknown): Promise<PreflightResult> {
  try {
    const opts = optionsOf(input);
    // reading the partition column's months may scan the table: heartbeat meanwhile
    const info = await withHeartbeat(
      () => ({ step: 'preflight' }),
      () => inTransaction(pool, (c) => readTableInfo(c, opts, currentWorkflowId()), { readOnly: true }),
    );
    if (info.userTriggers.length) info.triggers = await readTriggers(pool, info.oid, opts.column);
    if (info.dependentViews.length) info.views = await readViews(pool, info.oid);
    info.policies = await readPolicies(pool, info.oid);
    const names = [info.table.name, ...(info.views ?? []).map((v) => v.name)];
    const seen = await readStatements(pool, names);
    info.appFunctions = await readFunctions(pool, names);
    info.appStatements = seen?.statements ?? null;
    info.appStatementsHidden = seen?.hidden ?? 0;
    info.carried = (await pool.query(CARRIED_SQL, [info.oid])).rows.map((r) => r.x as string);
    const noInherit = await pool.query(
      `SELECT conname FROM pg_constraint WHERE conrelid = $1 AND contype = 'c' AND connoinherit ORDER BY 1`,
      [info.oid],
    );
    info.noInheritChecks = noInherit.rows.map((r) => r.conname as string);
    if (opts.method === 'attach') info.attach = await readAttachFacts(pool, info, opts);
    const plan = buildPlan(info, opts);
    stepLog(log, 'preflight', opts.table).info(
      { partitions: plan.partitions.length, estimatedRows: plan.estimatedRows, warnings: plan.warnings },
      'preflight passed',
    );
    return { plan, summary: plan.warnings };
  } catch (err) {
    classify(err, 'preflight');
  }
}
