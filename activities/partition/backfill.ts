/**
 * The backfill: one loop that copies batches until the walk is done or the chunk's time is up, over one of
 * the walkers (walkers.ts: TID ranges on PostgreSQL 14+, key ranges on 13 or with copyMode "keys"), paced by
 * the replica and application-latency bounds, the key log applied between batches. Each batch commits
 * together with its checkpoint in partflow.runs, guarded by the checkpoint it started from: a retried or
 * duplicated attempt copies nothing twice and skips nothing.
 */
import type { Pool, PoolClient } from 'pg';
import { failure } from '../../src/failures';
import { displayName, qualified, TableRef } from '../../src/ident';
import type { Logger } from '../../src/logger';
import { BackfillSql, backfillSql, nextBatchSize, Plan } from '../../src/plan';
import { DEFAULT_REPLICA_BOUNDS, ReplicaBounds } from '../../src/replicas';
import { activityContext, classify, currentWorkflowId, inTransaction, isTransient, sleep } from '../runtime/db';
import { metrics } from '../runtime/metrics';
import type { KeyLogApplySql } from '../../src/plan/keylog';
import { drainKeyLog } from './keylog';
import { LEGACY_PACE, nextPace, PACE, startPace } from '../../src/pacer';
import {
  capWalRate,
  CommitProber,
  Lag,
  probeBaseline,
  runStandbys,
  Throttled,
  waitForAppLatency,
  waitForReplicas,
  walPosition,
} from '../runtime/replicas';
import { Deps, stepLog } from '../runtime/deps';
import { ownPlan, planOf, rowMoves, runState } from './run';
import { Tuning, tuningOf } from './tuning';
import { Batch, restartIfRewritten, Walker, walkerFor } from './walkers';

export interface BackfillChunkInput {
  table: TableRef;
  copyMode: Plan['copyMode'];
  sql: BackfillSql;
  batchSize: number;
  sleepMs: number;
  /** stop after this long so the workflow can react to pause/throttle/rollback */
  maxMs: number;
  /** longest a batch may take (the key log is applied between batches); batches shrink below batchSize */
  maxBatchMs?: number;
  /** the replica bounds now (DEFAULT_REPLICA_BOUNDS for runs started before they existed) */
  replica?: ReplicaBounds;
  /** the commit probe with the copy idle, ms (installSyncTrigger measures it); absent: no latency bound */
  appBaselineMs?: number;
  /** parallel copy: the stream (0..streams-1) this chunk walks, of `streams` split with the sync trigger */
  stream?: number;
  streams?: number;
}

/**
 * What the workflow hands the activity: the chunk's settings without the statements, which the activity takes
 * from the stored plan. `sql` is still accepted (chunks scheduled by runs before, scripts, benchmarks), and
 * then checked against the stored plan.
 */
export type BackfillChunkArgs = Omit<BackfillChunkInput, 'sql'> & { sql?: BackfillSql };

/** The chunk's input with its statements, from the stored plan when none were handed. */
export async function withBackfillSql(pool: Pool, input: BackfillChunkArgs): Promise<BackfillChunkInput> {
  if (input.sql) return input as BackfillChunkInput;
  return { ...input, sql: backfillSql(await planOf(pool, { planOf: input.table })) };
}

export interface BackfillChunkResult {
  nextPage: number;
  totalPages: number;
  rowsCopied: number;
  rowsThisChunk: number;
  pagesThisChunk: number;
  batches: number;
  /** batches that met rows the key log's applier had written and were copied again with ON CONFLICT */
  mergedBatches?: number;
  /** keys of the key log re-copied during the chunk */
  keysApplied?: number;
  elapsedMs: number;
  done: boolean;
  /** share of the walk done, 0..100 */
  percent: number;
  /** the checkpoint, readable: a page number or the last key */
  checkpoint: string;
  /** updates that moved a row to another month since the sync trigger was installed */
  rowMoves?: number;
  /** the replica bound holding the copy back when the chunk ended, or null */
  throttledBy?: Throttled | null;
  /** the pause after each batch the application-latency bound asked for when the chunk ended, ms */
  appPauseMs?: number;
  /** the idle figure the bound paces against now: installSyncTrigger's, or the one measured again since */
  appBaselineMs?: number;
  /** the worst standby lag seen last */
  replicaLag?: Lag;
  /** parallel copy: the streams not done when the chunk ended (a rewrite starts finished ones again) */
  streamsLeft?: number[];
}

/** Longest wait of a backfill batch for a lock (the key log's, a row's); below deadlock_timeout (1 s by default). */
const BATCH_LOCK_TIMEOUT_MS = 200;
const BATCH_LOCK_ATTEMPTS = 30;
const MERGE_BATCHES = 20;

/** Thrown inside a batch's transaction when the checkpoint it started from is gone: nothing of it is kept. */
class CheckpointMoved extends Error {}

/**
 * One backfill batch: `copy` runs in a transaction that also advances the checkpoint in partflow.runs,
 * guarded by the checkpoint the batch started from. Returns the rows read, or `moved` when another attempt
 * of the activity moved the checkpoint first (then nothing of this batch is kept).
 *
 * The batch waits at most BATCH_LOCK_TIMEOUT_MS for a lock (the key log's, held by an apply round; a row's in
 * plans made before the key log), well under PostgreSQL's default deadlock_timeout (1 s): when another
 * transaction and a batch wait for each other, the batch gives up and is retried, so the application's
 * transaction is not the one the deadlock detector kills.
 * synchronous_commit is off for the batch: a batch lost in a crash loses its checkpoint with it and is
 * simply copied again.
 */
async function guardedBatch(
  pool: Pool,
  b: Batch,
  copy: (c: PoolClient) => Promise<number>,
  keyLog: KeyLogApplySql | undefined,
  timing: BatchTiming,
): Promise<number | 'moved'> {
  const batch = async (c: PoolClient) => {
    // the key log's lock, shared, in a statement of its own before the copy's: the copy's snapshot is taken
    // after it, and the applier (exclusive) applies a change only after this batch commits
    if (keyLog) {
      timing.askedAt = Date.now();
      await c.query(keyLog.batchLock);
      timing.waitedMs += Date.now() - timing.askedAt;
      timing.askedAt = undefined;
    }
    const read = await copy(c);
    if (!(await b.commit(c, read))) throw new CheckpointMoved();
    return read;
  };
  for (let attempt = 1; ; attempt++) {
    try {
      return await inTransaction(pool, batch, { lockTimeoutMs: BATCH_LOCK_TIMEOUT_MS, asyncCommit: true });
    } catch (err) {
      if (err instanceof CheckpointMoved) return 'moved';
      const code = (err as { code?: string }).code;
      // an attempt that gave up waiting for the key log's lock: that wait and the sleep after it are not the batch's
      const forLock = timing.askedAt !== undefined;
      if (forLock) timing.waitedMs += Date.now() - timing.askedAt!;
      timing.askedAt = undefined;
      if ((code === '55P03' || code === '40P01') && attempt < BATCH_LOCK_ATTEMPTS) {
        metrics.lockWaitRetry('backfill');
        const nap = 20 + Math.random() * 80 * Math.min(attempt, 5);
        await sleep(nap);
        if (forLock) timing.waitedMs += nap;
        continue;
      }
      throw err;
    }
  }
}

/**
 * A batch's time without its waits for the key log's lock, which the applier of another stream (up to
 * APPLY_BETWEEN_MS) or an idle measurement (about 4 s) may hold. The batch's size follows it; with the waits
 * counted, one wait for an idle measurement shrank the next batches to a page. Its transaction's round trips
 * count, as before: timed from the copy alone, the workflow's batches grew (bench:impact, 3x the rows at 1.9x).
 */
interface BatchTiming {
  started: number;
  /** the attempts' waits for the key log's lock (and the sleeps after those that gave up), ms */
  waitedMs: number;
  /** when the attempt in flight asked for the lock, while it waits */
  askedAt?: number;
}

/** After a batch: its own time (without its wait for the key log's lock) timed, and the next batch's size. */
function afterBatch(
  input: BackfillChunkInput,
  logger: Logger,
  tune: Tuning,
  cap: number,
  units: number,
  timing: BatchTiming,
  merged: boolean,
): number | undefined {
  // the whole batch as before (its transaction's round trips count: maxBatchMs is the batch's, not its copy's)
  const took = Date.now() - timing.started - timing.waitedMs;
  metrics.batchDuration(displayName(input.table), took);
  if (!input.maxBatchMs) return undefined;
  if (took > 4 * input.maxBatchMs) {
    const { waitedMs } = timing;
    logger.warn({ tookMs: took, waitedMs, units, merged, maxBatchMs: input.maxBatchMs }, 'a batch took long');
  }
  return (tune.size = nextBatchSize(units, cap, took, input.maxBatchMs));
}

/**
 * The fast copy unless a recent batch of this table met rows the applier had written; a fast copy that
 * meets one is copied again with ON CONFLICT, and so are the next MERGE_BATCHES batches.
 */
async function copyBatch(
  pool: Pool,
  b: Batch,
  tune: Tuning,
  keyLog: KeyLogApplySql | undefined,
  timing: BatchTiming,
): Promise<[number | 'moved', boolean]> {
  const fast = !!b.fastCopy && tune.mergeLeft === 0;
  if (tune.mergeLeft > 0) tune.mergeLeft--;
  if (!fast) return [await guardedBatch(pool, b, b.copy, keyLog, timing), false];
  try {
    return [await guardedBatch(pool, b, b.fastCopy!, keyLog, timing), false];
  } catch (err) {
    if ((err as { code?: string }).code !== '23505') throw err;
    tune.mergeLeft = MERGE_BATCHES;
    return [await guardedBatch(pool, b, b.copy, keyLog, timing), true];
  }
}

/** Longest the key log is applied between two batches; what is left waits for the next gap. */
const APPLY_BETWEEN_MS = 500;

/** The key log applied (plans with one): rounds until it is short or APPLY_BETWEEN_MS have passed. */
function applyBetweenBatches(pool: Pool, input: BackfillChunkInput): Promise<number> {
  if (!input.sql.keyLog) return Promise.resolve(0);
  return drainKeyLog(pool, input.sql.keyLog, 1000, Date.now() + APPLY_BETWEEN_MS);
}

/**
 * Before a batch, under the application-latency bound: the idle figure measured again when it is due; while
 * the bound holds the copy (tune.holding), the wait, and the hold still in force.
 */
async function appLatency(
  { pool, logger }: { pool: Pool; logger: Logger },
  input: BackfillChunkInput,
  bounds: ReplicaBounds,
  tune: Tuning,
  deadline: number,
): Promise<Throttled | null> {
  if (input.appBaselineMs === undefined || !bounds.maxAppLatencyRatio) return null;
  await rebaseline(pool, input, tune, logger);
  if (!tune.holding) return null;
  const { after, held } = tune.holding;
  const still = await waitForAppLatency(
    tune.samples,
    after,
    bounds.maxAppLatencyRatio,
    baselineOf(input)!,
    deadline,
    held,
  );
  tune.holding = still ? { after, held: still } : undefined;
  return still;
}

/** After a batch: the pause the application-latency bound asks for (src/pacer.ts), ms; a hold is kept in tune. */
function appPause(input: BackfillChunkInput, bounds: ReplicaBounds, tune: Tuning, logger: Logger): number {
  if (input.appBaselineMs === undefined || !bounds.maxAppLatencyRatio) return 0;
  const now = Date.now();
  const rules = input.sql.appProbe ? PACE : LEGACY_PACE;
  const baseline = baselineOf(input)!;
  const next = nextPace(tune.pace, tune.samples, bounds.maxAppLatencyRatio, baseline, now, rules);
  if (next.pace.pauseMs !== tune.pace.pauseMs)
    logger.debug({ pauseMs: next.pace.pauseMs, seenMs: next.seen }, 'copy paced');
  tune.pace = next.pace;
  if (next.hold) tune.holding = { after: now, held: { ...next.hold, since: new Date(now).toISOString() } };
  return tune.pace.pauseMs;
}

/**
 * A run's first chunk in this worker starts slow (PACE.startPauseMs) and relaxes from there, on a table of
 * PACE.startSlowPages or more (a smaller one copies in seconds at full speed, about the time the pacer needs to
 * learn anything); the pace and the samples an earlier run of the same table learnt go (the key is the run's,
 * as for the idle figure).
 */
async function paceOfRun(pool: Pool, input: BackfillChunkInput, tune: Tuning): Promise<Tuning> {
  if (tune.paceOf === baselineKey(input)) return tune;
  const rules = input.sql.appProbe ? PACE : LEGACY_PACE;
  // the catalog's page counts, TOAST included (a table of wide values is big with few heap pages), and the heap's
  // pages at install: no lock on the table (pg_relation_size would wait behind a VACUUM FULL or the application's DDL)
  const { rows } = await pool.query(
    `SELECT greatest(c.relpages, 0) + coalesce(greatest(t.relpages, 0), 0) AS catalog,
            (SELECT max(r.total_pages) FROM partflow.runs r WHERE r.table_schema = $1 AND r.table_name = $2) AS install
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_class t ON t.oid = c.reltoastrelid
      WHERE n.nspname = $1 AND c.relname = $2`,
    [input.table.schema, input.table.name],
  );
  const big = Math.max(Number(rows[0]?.catalog ?? 0), Number(rows[0]?.install ?? 0)) >= rules.startSlowPages;
  tune.paceOf = baselineKey(input);
  tune.pace = big ? startPace(Date.now(), rules) : { pauseMs: 0, since: Date.now() };
  tune.samples.length = 0;
  tune.holding = undefined;
  return tune;
}

/** The idle figure measured again, per table in this worker (every stream of a parallel copy paces by it). */
const baselines = new Map<string, { ms?: number; at: number; measuring?: boolean; tries?: number }>();

/**
 * The run's key in `baselines`: the workflow, the table and the figure its sync's install measured (which the
 * workflow hands in unchanged, through continue-as-new too). A later run of the same table under the same
 * workflow id (partflow's ids are `partition-<table>`) measured its own figure at its install: without that
 * figure in the key it paced against the earlier run's (bench:impact: rounds 2 and 3 against round 1's).
 */
function baselineKey(input: BackfillChunkInput): string {
  return `${currentWorkflowId() ?? ''} ${qualified(input.table)} ${input.appBaselineMs}`;
}

/** The idle figure the bound paces against now. */
function baselineOf(input: BackfillChunkInput): number | undefined {
  return baselines.get(baselineKey(input))?.ms ?? input.appBaselineMs;
}

/**
 * The application-latency bound's idle figure measured again 5 s into the copy, then 15 s and 30 s after each
 * measurement (PACE.rebaselineEarlyMs), then every PACE.rebaselineEveryMs: the key log's lock taken exclusively
 * holds every stream's batches and the applier (the state installSyncTrigger measured in: the sync in place,
 * nothing copied) for the ~4 s of the probes. One stream of this worker
 * measures at a time, with both its connections in hand before it takes the lock, and only if the lock is free
 * at once (another worker measuring, or the cut-over): nothing waits holding what another needs. The pace
 * starts over from the samples after it. A failed measurement keeps the figure before it.
 */
async function rebaseline(pool: Pool, input: BackfillChunkInput, tune: Tuning, logger: Logger): Promise<void> {
  const rules = input.sql.appProbe ? PACE : LEGACY_PACE;
  const first = input.appBaselineMs;
  const tryLock = input.sql.keyLog?.tryLock;
  if (!rules.rebaselineEveryMs || !tryLock || first === undefined) return;
  const b = baselines.get(baselineKey(input)) ?? { at: Date.now() }; // installSyncTrigger's is the first
  baselines.set(baselineKey(input), b);
  const tries = b.tries ?? 0;
  const wait = !tries
    ? rules.rebaselineFirstMs
    : Math.min(rules.rebaselineEarlyMs[tries - 1] ?? Infinity, rules.rebaselineEveryMs);
  if (b.measuring || Date.now() - b.at < wait) return;
  b.measuring = true;
  const c = await pool.connect();
  let probe: PoolClient | undefined = await pool.connect();
  let open = true; // until COMMIT: a failure on the way leaves no transaction open on the pooled connection
  try {
    // one round trip: the transaction, no idle-session timeout during the ~4 s, and the lock if it is free
    const r = await c.query(`BEGIN; SET LOCAL idle_in_transaction_session_timeout = 0; ${tryLock}`);
    if (!(r as unknown as { rows: { got: boolean }[] }[])[2].rows[0].got) return;
    const mine = probe;
    probe = undefined; // the probe releases it, whatever happens
    const measured = await probeBaseline(pool, input.sql.appProbe, mine);
    await c.query('COMMIT');
    open = false;
    b.ms = Math.min(measured, b.ms ?? first); // only down: see PACE.rebaselineEveryMs
    tune.samples.length = 0;
    tune.pace = { ...tune.pace, since: Date.now() };
    logger.info({ appBaselineMs: b.ms, measuredMs: measured, firstMs: first }, 'idle probe measured again');
  } catch (err) {
    logger.warn({ err: (err as Error).message }, 'the idle probe could not be measured again; the figure stays');
  } finally {
    if (open) await c.query('ROLLBACK').catch(() => undefined);
    c.release();
    probe?.release();
    b.at = Date.now();
    b.measuring = false;
    b.tries = tries + 1;
  }
}

/**
 * Another attempt of this activity advanced the checkpoint, or the table was rewritten: the walk goes on from
 * where the checkpoint is now. Returns the rows copied it records.
 */
async function afterMove(pool: Pool, t: TableRef, logger: Logger, w: Walker, pages: boolean): Promise<number> {
  if (pages) await restartIfRewritten(pool, t, logger, w.tuneKey);
  const again = await runState(pool, t);
  if (again?.run_state !== 'active') {
    throw failure(`The partflow run of ${displayName(t)} is being undone; the backfill stops.`, 'RunUndone');
  }
  return w.reload(again);
}

/**
 * The pause after a batch (sleepMs and the application-latency bound's), in slices of at most a second with a
 * heartbeat after each, so a pause of seconds neither misses the heartbeat timeout nor delays a cancellation.
 */
async function pauseBetween(ms: number, w: Walker, rowsCopied: number): Promise<void> {
  const ctx = activityContext();
  for (let until = Date.now() + ms; Date.now() < until && !ctx?.cancellationSignal.aborted;) {
    await sleep(Math.min(1000, until - Date.now()));
    ctx?.heartbeat(w.heartbeat(rowsCopied));
  }
}

/** Copies batches until the walk is done or `maxMs` has passed, applying the key log between them. */
export async function backfillChunk({ pool, log }: Deps, input: BackfillChunkInput): Promise<BackfillChunkResult> {
  await ownPlan(pool, input.table, null, { ...input.sql });
  const [t, started, ctx] = [input.table, Date.now(), activityContext()];
  const logger = stepLog(log, 'backfill', t);
  const pages = input.copyMode !== 'keys';
  const counts = { rowsThisChunk: 0, pagesThisChunk: 0, batches: 0, mergedBatches: 0, keysApplied: 0 };
  const bounds = input.replica ?? DEFAULT_REPLICA_BOUNDS;
  let held: Throttled | null = null;
  let lag: Lag | undefined;
  let lastWal = 0;
  // the application-latency bound's probe, on a connection of its own: pool waits are not the application's
  const probe = input.appBaselineMs !== undefined && bounds.maxAppLatencyRatio ? await pool.connect() : null;
  let prober: CommitProber | null = null;
  try {
    const w = await walkerFor(pool, input, logger);
    // a parallel copy: each stream pauses `streams` times as long and expects the others' WAL at the replicas
    const streams = input.streams ?? 1;
    let rowsCopied = w.rowsCopied;
    const tune = probe ? await paceOfRun(pool, input, tuningOf(w.tuneKey)) : tuningOf(w.tuneKey);
    if (probe) prober = new CommitProber(probe, tune.samples, input.sql.appProbe).start();
    // a new table starts at an eighth of the largest batch and grows while batches stay under maxBatchMs
    let size = Math.min(w.cap, tune.size ?? Math.ceil(w.cap / 8));
    const wal = { bytes: bounds.maxWalBytesPerSecond ? await walPosition(pool) : 0, at: Date.now() };
    const replicas = { label: displayName(t), known: runStandbys(pool, t) };
    while (!w.done() && Date.now() - started < input.maxMs) {
      if (ctx?.cancellationSignal.aborted) break;
      // the replicas before every batch: a held copy waits here until the chunk's time is up; headroom: the WAL
      // of the last batch (with whatever else wrote meanwhile), expected of the next; then the application
      const headroom = Math.max(0, ...(tune.batchWal ?? [])) * streams;
      const look = await waitForReplicas(pool, replicas, bounds, started + input.maxMs, held, headroom);
      ({ held, lag } = look);
      if (lastWal) tune.batchWal = [look.walAtFirstLook - lastWal, ...(tune.batchWal ?? [])].slice(0, 8);
      if (held || (held = await appLatency({ pool, logger }, input, bounds, tune, started + input.maxMs))) break;
      lastWal = look.walInsert;
      const b = await w.next(size, counts.batches);
      const timing: BatchTiming = { started: Date.now(), waitedMs: 0 };
      const [read, merged] = await copyBatch(pool, b, tune, input.sql.keyLog, timing);
      if (read === 'moved') {
        rowsCopied = await afterMove(pool, t, logger, w, pages);
        continue;
      }
      metrics.rowsCopied(displayName(t), read);
      size = afterBatch(input, logger, tune, w.cap, b.units, timing, merged) ?? size;
      w.advance();
      rowsCopied += read;
      counts.rowsThisChunk += read;
      if (pages) counts.pagesThisChunk += b.units;
      if (merged) counts.mergedBatches++;
      counts.batches++;
      ctx?.heartbeat(w.heartbeat(rowsCopied));
      counts.keysApplied += await applyBetweenBatches(pool, input);
      prober?.markStuck();
      const pause = appPause(input, bounds, tune, logger);
      if (input.sleepMs > 0 || pause > 0) await pauseBetween(input.sleepMs * streams + pause, w, rowsCopied);
      await capWalRate(pool, bounds, wal);
    }
    // the log also while the copy is held back or done: the verification after it leaves logged keys out
    counts.keysApplied += await applyBetweenBatches(pool, input);
    const elapsedMs = Date.now() - started;
    logger.debug({ ...counts, elapsedMs }, 'backfill chunk');
    const { mergedBatches, ...rest } = counts;
    return {
      ...(await w.result(rowsCopied)),
      ...rest,
      ...(pages ? { mergedBatches } : {}),
      elapsedMs,
      done: w.done(),
      rowMoves: await rowMoves(pool, t),
      throttledBy: held,
      ...(probe ? { appPauseMs: tune.pace.pauseMs, appBaselineMs: baselineOf(input) } : {}),
      ...(lag ? { replicaLag: lag } : {}),
    };
  } catch (err) {
    if (isTransient(err)) {
      logger.warn({ err: (err as Error).message }, 'transient error in backfill: retried from the checkpoint');
    }
    return classify(err, `backfill of ${displayName(t)}`);
  } finally {
    // the prober gives its connection back; one taken before the prober started goes back as it is
    if (prober) await prober.stop();
    else probe?.release();
  }
}
