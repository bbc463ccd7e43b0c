/**
 * `createIndexes`: every index checked first (a refusal changes nothing); then per index the parent index
 * ON ONLY (partitioned table), and one activity per partition: CREATE INDEX CONCURRENTLY, then ATTACH. On a
 * plain table one CONCURRENTLY build. Each step is recorded before it runs; a failure, a `rollback` signal or
 * a cancellation drops what this run built (never an index that was there before).
 */
import {
  ActivityCancellationType,
  CancellationScope,
  defineQuery,
  isCancellation,
  patched,
  proxyActivities,
  RetryPolicy,
  setCurrentDetails,
  setHandler,
} from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { IndexPlan } from '../activities/indexes';
import { CreateIndexesInput, IndexOptions, validateIndexInput } from '../src/indexes';
import { rollbackSignal } from './definitions';
import { rootFailure, validInput } from './failure';
import { failure } from '../src/failures';

export interface IndexProgress {
  phase: 'checks' | 'building' | 'rolling-back' | 'rolled-back' | 'done' | 'failed';
  /** 1-based number of the index being built, of `indexes` */
  index: number;
  indexes: number;
  current: string | null;
  /** the table (a partition, or the plain table) whose index is being built now */
  partition: string | null;
  partitionsDone: number;
  partitions: number;
  lastError: string | null;
}

export interface IndexesResult {
  status: 'done' | 'dry-run' | 'rolled-back';
  indexes: { index: string; name: string; existed: boolean; built: number; notes: string[]; sql?: string[] }[];
}

export const indexProgressQuery = defineQuery<IndexProgress>('progress');

const retry: RetryPolicy = { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s' };
const OPTIONS = {
  startToCloseTimeout: '12h',
  heartbeatTimeout: '30s',
  retry,
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
} as const;
const act = proxyActivities<Activities>(OPTIONS);
/** The activities with a one-line summary the Web UI shows on the step's events (metadata: replay ignores it). */
const acts = (summary: string) => proxyActivities<Activities>({ ...OPTIONS, summary });

class RollbackRequested extends Error {}

interface IndexRun {
  opts: IndexOptions;
  p: IndexProgress;
  rollbackRequested: boolean;
  claimed: boolean;
  /** the indexes this run began to build, in order: the undo drops them in reverse */
  begun: IndexPlan[];
  plans: IndexPlan[];
  built: number[];
}

function startRun(input: CreateIndexesInput): IndexRun {
  const opts = validInput(() => validateIndexInput(input));
  const p: IndexProgress = {
    phase: 'checks',
    index: 0,
    indexes: opts.indexes.length,
    current: null,
    partition: null,
    partitionsDone: 0,
    partitions: 0,
    lastError: null,
  };
  const run: IndexRun = { opts, p, rollbackRequested: false, claimed: false, begun: [], plans: [], built: [] };
  setHandler(indexProgressQuery, () => p);
  setHandler(rollbackSignal, () => void (run.rollbackRequested = true));
  return run;
}

function summarize(run: IndexRun, withSql: boolean): IndexesResult['indexes'] {
  return run.plans.map((x, i) => ({
    index: x.description,
    name: x.spec.name,
    existed: x.exists,
    built: run.built[i] ?? 0,
    notes: x.notes,
    ...(withSql ? { sql: x.sql } : {}),
  }));
}

async function buildOne(run: IndexRun, x: IndexPlan, i: number): Promise<void> {
  const { p, opts } = run;
  p.index = i + 1;
  p.current = x.description;
  p.partitionsDone = 0;
  p.partitions = x.build.each.length;
  run.built[i] = 0;
  if (x.exists) return;
  if (run.rollbackRequested) throw new RollbackRequested();
  run.begun.push(x);
  await acts(`${x.spec.name}: the parent index ON ONLY ${x.description}`).createParentIndex(x, opts.lockTimeoutMs);
  for (const [k, e] of x.build.each.entries()) {
    if (run.rollbackRequested) throw new RollbackRequested();
    p.partition = `${e.table.schema}.${e.table.name}`;
    // the Web UI's "Current Details" of the workflow (the heartbeat of the build has its phase and blocks)
    setCurrentDetails(
      `index ${p.index} of ${p.indexes}: **${p.current}**; ${k} of ${p.partitions} table(s) done, now ${p.partition}`,
    );
    const r = await acts(`${x.spec.name}: build CONCURRENTLY on ${x.build.each[k].table.name}`).buildIndexPart(
      x,
      k,
      opts.lockTimeoutMs,
    );
    if (r.built) run.built[i]++;
    p.partitionsDone = k + 1;
  }
  p.partition = null;
  if (patched('index-gaps')) await closeGaps(run, x, i);
}

/** How many times the partitions are read again for partitions that appeared during the build. */
const GAP_ROUNDS = 5;

/**
 * `done` only for an index PostgreSQL marks valid, attached on every partition there is now: partitions that
 * appeared during the build (their table's maintenance, the application) get theirs built and attached, read
 * again until none is missing (bounded); what partflow cannot build fails the run, named.
 */
async function closeGaps(run: IndexRun, x: IndexPlan, i: number): Promise<void> {
  const { p, opts } = run;
  for (let round = 1; ; round++) {
    const g = await act.indexGaps(x);
    if (g.valid && !g.each.length && !g.problems.length) return;
    if (g.problems.length || !g.each.length || round > GAP_ROUNDS) {
      const why = g.problems.length
        ? g.problems.join('; ')
        : g.each.length
          ? `partitions keep appearing (${g.each.map((e) => e.table.name).join(', ')} after ${GAP_ROUNDS} rounds)`
          : 'PostgreSQL marks it INVALID although every partition has its index attached';
      throw failure(
        `${x.description}: ${x.spec.name} is not valid after the build: ${why}. Nothing of it is kept; run ` +
          "createIndexes again once the table's partitions are settled.",
        'CreateIndexesFailed',
      );
    }
    for (const e of g.each) {
      if (run.rollbackRequested) throw new RollbackRequested();
      // recorded before it runs: the undo drops it like a planned one
      x.build.each.push({ table: e.table, name: e.name, sql: e.sql, attach: e.attach });
      x.build.drop.push(e.drop);
      p.partitions = x.build.each.length;
      p.partition = `${e.table.schema}.${e.table.name}`;
      setCurrentDetails(
        `index ${p.index} of ${p.indexes}: **${p.current}**; ${p.partitionsDone} of ${p.partitions} table(s) done, ` +
          `now ${p.partition} (appeared during the build)`,
      );
      const r = await act.buildIndexGap(x, e, opts.lockTimeoutMs);
      if (r.built) run.built[i]++;
      p.partitionsDone++;
    }
    p.partition = null;
  }
}

async function compensate(run: IndexRun, final: 'rolled-back' | 'failed'): Promise<void> {
  run.p.phase = 'rolling-back';
  await CancellationScope.nonCancellable(async () => {
    if (run.claimed) await act.beginFixUndo(); // the fence: no forward step of this run commits from here on
    for (const x of [...run.begun].reverse())
      await acts(`undo: drop what was built of ${x.spec.name}`).dropIndexBuild(x, run.opts.lockTimeoutMs);
    if (run.claimed) await act.releaseFix(final);
  });
  run.p.phase = final;
}

export async function createIndexes(input: CreateIndexesInput): Promise<IndexesResult> {
  const run = startRun(input);
  const { p } = run;
  try {
    run.plans = await acts('check every index (reads only)').planIndexes(run.opts);
    if (run.opts.dryRun) {
      p.phase = 'done';
      return { status: 'dry-run', indexes: summarize(run, true) };
    }
    p.phase = 'building';
    run.claimed = true;
    await act.claimFix(
      run.opts.indexes.map((x) => x.table),
      'createIndexes',
    );
    for (const [i, x] of run.plans.entries()) await buildOne(run, x, i);
    if (run.rollbackRequested) throw new RollbackRequested();
    await act.releaseFix('done');
    p.phase = 'done';
    return { status: 'done', indexes: summarize(run, false) };
  } catch (err) {
    if (err instanceof RollbackRequested) {
      await compensate(run, 'rolled-back');
      return { status: 'rolled-back', indexes: summarize(run, false) };
    }
    if (isCancellation(err)) {
      await compensate(run, 'rolled-back');
      throw err;
    }
    const root = rootFailure(err);
    p.lastError = root.message;
    await compensate(run, 'failed');
    // a refusal of the checks changed nothing: it keeps its type
    const type = !run.claimed && root.type === 'InvalidInput' ? 'InvalidInput' : 'CreateIndexesFailed';
    throw failure(root.message, type, ...root.details);
  }
}
