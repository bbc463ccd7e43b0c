/**
 * The backfill: one loop that copies batches until the walk is done or the chunk's time is up, over one of
 * two walkers. The page walker copies TID ranges (PostgreSQL 14+); the key walker copies primary-key ranges
 * (PostgreSQL 13, or copyMode "keys"). Each batch commits together with its checkpoint in partflow.runs,
 * guarded by the checkpoint it started from: a retried or duplicated attempt copies nothing twice and skips
 * nothing.
 */
import type { Pool, PoolClient } from 'pg';
import { failure } from '../../src/failures';
import { displayName, qualified, TableRef } from '../../src/ident';
import type { Logger } from '../../src/logger';
import { BackfillSql, nextBatchSize, pagesPerBatch, Plan, STATE_SCHEMA } from '../../src/plan';
import { DEFAULT_REPLICA_BOUNDS, ReplicaBounds } from '../../src/replicas';
import { activityContext, classify, inTransaction, isTransient, sleep } from '../runtime/db';
import { faultPoint } from '../runtime/faults';
import { metrics } from '../runtime/metrics';
import type { KeyLogApplySql } from '../../src/plan/keylog';
import { drainKeyLog } from './keylog';
import { nextPace, Pace, Sample } from '../../src/pacer';
import {
  capWalRate,
  CommitProber,
  Lag,
  runStandbys,
  Throttled,
  waitForAppLatency,
  waitForReplicas,
  walPosition,
} from '../runtime/replicas';
import { Deps, stepLog } from '../runtime/deps';
import { ownPlan, rowMoves, RunRow, RUNS, runState } from './run';

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
  /** the worst standby lag seen last */
  replicaLag?: Lag;
  /** parallel copy: the streams not done when the chunk ended (a rewrite starts finished ones again) */
  streamsLeft?: number[];
}

/** Longest wait of a backfill batch for a lock (the key log's, a row's); below deadlock_timeout (1 s by default). */
const BATCH_LOCK_TIMEOUT_MS = 200;
const BATCH_LOCK_ATTEMPTS = 30;
const MERGE_BATCHES = 20;

/**
 * What the backfill learns per table, in memory (another worker starts afresh and adapts within a batch or
 * two): `size`, the batch size (pages, or keys in key mode) under the time budget — a batch that took
 * longer shrinks the next one in proportion, a quick one lets it grow back towards the operator's batchSize;
 * `mergeLeft`, how many more batches use ON CONFLICT because a recent one met rows the applier had written.
 */
interface Tuning {
  size?: number;
  mergeLeft: number;
  /**
   * the WAL of the last batches (with what else wrote meanwhile): the replica check keeps the largest as
   * headroom (a batch after a checkpoint writes full-page images, more than the one before it)
   */
  batchWal?: number[];
  /** the commit prober's samples (src/pacer.ts), the pause after each batch, and the hold when pausing was
   *  not enough: the copy waits from `after` until the application's latency is back under the bound */
  samples: Sample[];
  pace: Pace;
  holding?: { after: number; held: Throttled };
}
const tuning = new Map<string, Tuning>();
function tuningOf(key: string): Tuning {
  let t = tuning.get(key);
  if (!t) tuning.set(key, (t = { mergeLeft: 0, samples: [], pace: { pauseMs: 0, since: 0 } }));
  return t;
}

/** One batch as a walker plans it: its size, its copy, and the checkpoint update that commits with it. */
interface Batch {
  units: number;
  /**
   * moves the checkpoint past the batch, in the batch's transaction, guarded by the checkpoint it started
   * from; false when that checkpoint is gone (or the run is being undone)
   */
  commit: (c: PoolClient, read: number) => Promise<boolean>;
  copy: (c: PoolClient) => Promise<number>;
  /** the same copy without ON CONFLICT, when the plan has one: fails with 23505 on a row the applier wrote */
  fastCopy?: (c: PoolClient) => Promise<number>;
}

interface Walker {
  /** rows copied so far, as the checkpoint row says when the walker was made */
  rowsCopied: number;
  /** the tuning key and the largest batch */
  tuneKey: string;
  cap: number;
  done(): boolean;
  next(size: number, batchNo: number): Promise<Batch>;
  /** the batch committed: move past it */
  advance(): void;
  /** another attempt moved the checkpoint: read it again; the rows copied it records */
  reload(st: RunRow): Promise<number>;
  heartbeat(rowsCopied: number): Record<string, number>;
  result(
    rowsCopied: number,
  ): Promise<
    Pick<BackfillChunkResult, 'nextPage' | 'totalPages' | 'percent' | 'checkpoint' | 'rowsCopied' | 'streamsLeft'>
  >;
}

/** The checkpoint in partflow.runs: `set` and the guard `where` take `params` as $4.. */
function runsCheckpoint(table: TableRef, set: string, where: string, params: unknown[]): Batch['commit'] {
  return async (c, read) => {
    const u = await c.query(
      `UPDATE ${RUNS} SET ${set}, rows_copied = rows_copied + $3, updated_at = now()
        WHERE table_schema = $1 AND table_name = $2 AND run_state = 'active' AND ${where}`,
      [table.schema, table.name, read, ...params],
    );
    return u.rowCount === 1;
  };
}

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
  keyLog?: KeyLogApplySql,
): Promise<number | 'moved'> {
  const batch = async (c: PoolClient) => {
    // the key log's lock, shared, in a statement of its own before the copy's: the copy's snapshot is taken
    // after it, and the applier (exclusive) applies a change only after this batch commits
    if (keyLog) await c.query(keyLog.batchLock);
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
      if ((code === '55P03' || code === '40P01') && attempt < BATCH_LOCK_ATTEMPTS) {
        metrics.lockWaitRetry('backfill');
        await sleep(20 + Math.random() * 80 * Math.min(attempt, 5));
        continue;
      }
      throw err;
    }
  }
}

/**
 * The fast copy unless a recent batch of this table met rows the applier had written; a fast copy that
 * meets one is copied again with ON CONFLICT, and so are the next MERGE_BATCHES batches.
 */
async function copyBatch(
  pool: Pool,
  b: Batch,
  tune: Tuning,
  keyLog?: KeyLogApplySql,
): Promise<[number | 'moved', boolean]> {
  const fast = !!b.fastCopy && tune.mergeLeft === 0;
  if (tune.mergeLeft > 0) tune.mergeLeft--;
  if (!fast) return [await guardedBatch(pool, b, b.copy, keyLog), false];
  try {
    return [await guardedBatch(pool, b, b.fastCopy!, keyLog), false];
  } catch (err) {
    if ((err as { code?: string }).code !== '23505') throw err;
    tune.mergeLeft = MERGE_BATCHES;
    return [await guardedBatch(pool, b, b.copy, keyLog), true];
  }
}

/** The checkpoint guard of a page batch: the checkpoint it started from, and the same table file. */
const SAME_FILE_AT = (param: string) =>
  `next_page = ${param} AND (filenode IS NULL OR ` +
  `filenode = pg_relation_filenode(to_regclass(format('%I.%I', table_schema, table_name))))`;

export const STREAMS = `${STATE_SCHEMA}.backfill_streams`;

/**
 * Parallel copy: splits pages [0, total_pages) of the file recorded in partflow.runs into `n` ranges, one
 * per stream (in the sync trigger's transaction, so that they exist before any stream runs); on a rewrite,
 * splits the new file the same way. A split made already stays.
 */
export async function splitStreams(c: PoolClient | Pool, table: TableRef, n: number): Promise<void> {
  await c.query(
    `INSERT INTO ${STREAMS} AS s (table_schema, table_name, stream, start_page, next_page, end_page, filenode)
     SELECT $1, $2, k, k * r.total_pages / $3, k * r.total_pages / $3, (k + 1) * r.total_pages / $3, r.filenode
       FROM ${RUNS} r, generate_series(0, $3 - 1) k
      WHERE r.table_schema = $1 AND r.table_name = $2
     ON CONFLICT (table_schema, table_name, stream) DO UPDATE
        SET start_page = EXCLUDED.start_page, next_page = EXCLUDED.next_page, end_page = EXCLUDED.end_page,
            filenode = EXCLUDED.filenode
      WHERE s.filenode IS DISTINCT FROM EXCLUDED.filenode`,
    [table.schema, table.name, n],
  );
}

/**
 * A VACUUM FULL, CLUSTER, pg_repack or TRUNCATE gives the table a new file in which rows sit on other
 * pages: the page checkpoint means nothing there, and rows moved below it would never be copied. When the
 * file changed since the sync trigger was installed, the walk starts again from page 0 over the new file
 * (every row in it existed then or was written by the trigger since; rows copied already are skipped); a
 * parallel copy splits the new file again, in the same transaction.
 */
async function restartIfRewritten(pool: Pool, table: TableRef, l: Logger, tuneKey: string): Promise<void> {
  const file = `to_regclass(format('%I.%I', $1::text, $2::text))`;
  const restarted = await inTransaction(pool, async (c) => {
    const r = await c.query(
      `UPDATE ${RUNS} SET next_page = 0, rewrites = rewrites + 1, updated_at = now(),
              total_pages = pg_relation_size(${file}) / current_setting('block_size')::int,
              filenode = pg_relation_filenode(${file})
        WHERE table_schema = $1 AND table_name = $2 AND filenode IS NOT NULL
          AND filenode IS DISTINCT FROM pg_relation_filenode(${file})
       RETURNING total_pages`,
      [table.schema, table.name],
    );
    if (!r.rowCount) return null;
    const n = await c.query(`SELECT count(*)::int AS n FROM ${STREAMS} WHERE table_schema = $1 AND table_name = $2`, [
      table.schema,
      table.name,
    ]);
    if (n.rows[0].n > 0) await splitStreams(c, table, n.rows[0].n);
    return Number(r.rows[0].total_pages);
  });
  if (restarted !== null) {
    tuningOf(tuneKey).mergeLeft = 1_000_000; // every later batch may meet rows copied already
    l.warn(
      { totalPages: restarted },
      'the table was rewritten (VACUUM FULL, CLUSTER or TRUNCATE): the backfill walks its new file from page 0',
    );
  }
}

/** A batch of pages [from, to): the plan's TID range copy, and its fast form. */
function pageCopies(input: BackfillChunkInput, l: Logger, from: number, to: number, batchNo: number) {
  const copyWith =
    (sql: string) =>
    (c: PoolClient): Promise<number> =>
      c.query(sql, [`(${from},0)`, `(${to},0)`]).then(async (r) => {
        if (batchNo === 2) await faultPoint('backfill', l); // mid-batch: copied, not committed
        // plans made before the fast form counted rows read in a CTE (`read`); now the INSERT's row count
        return r.rows[0]?.read !== undefined ? Number(r.rows[0].read) : (r.rowCount ?? 0);
      });
  const fast = input.sql.backfillBatchFast;
  return { copy: copyWith(input.sql.backfillBatch), fastCopy: fast ? copyWith(fast) : undefined };
}

/** The largest batch in pages, from the operator's batchSize in rows and the table's density. */
async function pageCap(pool: Pool, input: BackfillChunkInput): Promise<number> {
  const dens = await pool.query(
    `SELECT reltuples::bigint AS t, relpages::bigint AS p FROM pg_class WHERE oid = to_regclass($1)`,
    [qualified(input.table)],
  );
  return pagesPerBatch(input.batchSize, Number(dens.rows[0]?.t ?? -1), Number(dens.rows[0]?.p ?? 0));
}

/** Page walk: TID ranges [next, next + size) of the file recorded with the sync trigger. */
async function pageWalker(pool: Pool, input: BackfillChunkInput, l: Logger): Promise<Walker> {
  const t = input.table;
  const tuneKey = `pages:${qualified(t)}`;
  await restartIfRewritten(pool, t, l, tuneKey);
  const st = await runState(pool, t);
  if (!st || st.total_pages === null) {
    throw failure(`No backfill checkpoint for ${displayName(t)}: the sync step did not run.`, 'StateMissing');
  }
  let next = Number(st.next_page);
  let total = Number(st.total_pages);
  let to = next;
  return {
    rowsCopied: Number(st.rows_copied),
    tuneKey,
    cap: await pageCap(pool, input),
    done: () => next >= total,
    next: async (size, batchNo) => {
      to = Math.min(total, next + size);
      return {
        units: to - next,
        commit: runsCheckpoint(t, 'next_page = $5', SAME_FILE_AT('$4'), [next, to]),
        ...pageCopies(input, l, next, to, batchNo),
      };
    },
    advance: () => {
      next = to;
    },
    reload: async (again) => {
      next = Number(again.next_page);
      total = Number(again.total_pages);
      return Number(again.rows_copied);
    },
    heartbeat: (rowsCopied) => ({ checkpointPage: next, totalPages: total, rowsCopied }),
    result: async (rowsCopied) => ({
      rowsCopied,
      nextPage: next,
      totalPages: total,
      percent: total > 0 ? Math.min(100, (next / total) * 100) : 100,
      checkpoint: `page ${next} of ${total}`,
    }),
  };
}

interface StreamRow {
  start_page: string;
  next_page: string;
  end_page: string;
  filenode: string;
  rows_copied: string;
}

async function streamRow(pool: Pool, t: TableRef, k: number): Promise<StreamRow> {
  const r = await pool.query(`SELECT * FROM ${STREAMS} WHERE table_schema = $1 AND table_name = $2 AND stream = $3`, [
    t.schema,
    t.name,
    k,
  ]);
  if (!r.rowCount)
    throw failure(
      `No backfill stream ${k} for ${displayName(t)}: the sync step did not split the table.`,
      'StateMissing',
    );
  return r.rows[0];
}

/**
 * One stream of a parallel copy: page ranges [next, next + size) of its own range, its checkpoint in
 * partflow.backfill_streams. A batch commits only while the run is active (its row in partflow.runs held FOR
 * SHARE, as the DDL steps do: an undo waits for it) and only over the page, range and table file it started
 * from, all on the stream's row, so that a concurrent re-split after a rewrite is seen.
 */
async function streamWalker(pool: Pool, input: BackfillChunkInput, l: Logger): Promise<Walker> {
  const t = input.table;
  const k = input.stream!;
  const tuneKey = `pages:${qualified(t)}#${k}`;
  await restartIfRewritten(pool, t, l, tuneKey);
  let row = await streamRow(pool, t, k);
  let to = Number(row.next_page);
  const range = () => ({ next: Number(row.next_page), end: Number(row.end_page) });
  return {
    rowsCopied: Number(row.rows_copied),
    tuneKey,
    cap: await pageCap(pool, input),
    done: () => range().next >= range().end,
    next: async (size, batchNo) => {
      const { next, end } = range();
      to = Math.min(end, next + size);
      const commit: Batch['commit'] = async (c, read) => {
        const active = await c.query(
          `SELECT 1 FROM ${RUNS} WHERE table_schema = $1 AND table_name = $2 AND run_state = 'active' FOR SHARE`,
          [t.schema, t.name],
        );
        if (!active.rowCount) return false;
        const u = await c.query(
          `UPDATE ${STREAMS} SET next_page = $5, rows_copied = rows_copied + $8
            WHERE table_schema = $1 AND table_name = $2 AND stream = $3 AND next_page = $4 AND end_page = $6
              AND filenode = $7 AND filenode = pg_relation_filenode(to_regclass(format('%I.%I', $1::text, $2::text)))`,
          [t.schema, t.name, k, next, to, end, row.filenode, read],
        );
        return u.rowCount === 1;
      };
      return { units: to - next, commit, ...pageCopies(input, l, next, to, batchNo) };
    },
    advance: () => {
      row = { ...row, next_page: String(to) };
    },
    reload: async () => {
      row = await streamRow(pool, t, k);
      return Number(row.rows_copied);
    },
    heartbeat: (rowsCopied) => ({ stream: k, checkpointPage: range().next, endPage: range().end, rowsCopied }),
    result: async () => {
      // the whole copy, as all streams' checkpoints say now
      const all = await pool.query(
        `SELECT sum(next_page - start_page)::bigint AS done, sum(end_page - start_page)::bigint AS pages,
                sum(rows_copied)::bigint AS rows, count(*)::int AS n,
                coalesce(array_agg(stream ORDER BY stream) FILTER (WHERE next_page < end_page), '{}') AS left
           FROM ${STREAMS} WHERE table_schema = $1 AND table_name = $2`,
        [t.schema, t.name],
      );
      const a = all.rows[0];
      const [done, pages] = [Number(a.done), Number(a.pages)];
      return {
        rowsCopied: Number(a.rows),
        nextPage: done,
        totalPages: pages,
        percent: pages > 0 ? Math.min(100, (done / pages) * 100) : 100,
        checkpoint: `${done} of ${pages} pages in ${a.n} streams, ${a.left.length} still copying`,
        streamsLeft: a.left,
      };
    },
  };
}

/**
 * Key walk: find the bound `size` keys ahead without locks, then copy exactly (last, bound] (under FOR SHARE in
 * plans made before the key log, without row locks since) and commit the bound as the checkpoint.
 */
async function keyWalker(pool: Pool, input: BackfillChunkInput): Promise<Walker> {
  const t = input.table;
  const st = await runState(pool, t);
  if (!st) throw failure(`No backfill checkpoint for ${displayName(t)}: the sync step did not run.`, 'StateMissing');
  let last = st.last_key;
  const max = st.max_key;
  let hi: string[] | null = null;
  const same = (a: string[] | null, b: string[] | null) =>
    !!a && !!b && a.length === b.length && a.every((x, i) => x === b[i]);
  const done = () => !max || same(last, max);
  return {
    rowsCopied: Number(st.rows_copied),
    tuneKey: `keys:${qualified(t)}`,
    cap: input.batchSize,
    done,
    next: async (size) => {
      const b = last
        ? await pool.query(input.sql.keyBound, [...last, ...max!, size])
        : await pool.query(input.sql.keyBoundFirst, [...max!, size]);
      const from = last;
      const to: string[] = b.rows[0]?.k ?? max;
      hi = to;
      const copy = async (c: PoolClient) => {
        const r = from ? await c.query(input.sql.keyCopy, [...from, ...to]) : await c.query(input.sql.keyCopyFirst, to);
        return Number(r.rows[0].read);
      };
      return {
        units: size,
        commit: runsCheckpoint(t, 'last_key = $5::text[]', 'last_key IS NOT DISTINCT FROM $4::text[]', [from, to]),
        copy,
      };
    },
    advance: () => {
      last = hi;
    },
    reload: async (again) => {
      last = again.last_key;
      return Number(again.rows_copied);
    },
    heartbeat: (rowsCopied) => ({ rowsCopied }), // the key itself stays in partflow.runs: no row values in history
    result: async (rowsCopied) => {
      const est = await pool.query(
        `SELECT greatest(reltuples, 0)::bigint AS t FROM pg_class WHERE oid = to_regclass($1)`,
        [qualified(t)],
      );
      const rows = Number(est.rows[0]?.t ?? 0);
      return {
        rowsCopied,
        nextPage: done() ? 1 : 0,
        totalPages: 1,
        percent: done() ? 100 : rows > 0 ? Math.min(99.9, (rowsCopied / rows) * 100) : 0,
        checkpoint: last ? `key checkpoint after ${rowsCopied} rows (partflow.runs.last_key)` : 'start',
      };
    },
  };
}

/** A stream of a parallel copy, the page walk or the key walk. */
function walkerFor(pool: Pool, input: BackfillChunkInput, l: Logger): Promise<Walker> {
  if (input.stream !== undefined) return streamWalker(pool, input, l);
  return input.copyMode !== 'keys' ? pageWalker(pool, input, l) : keyWalker(pool, input);
}

/** Longest the key log is applied between two batches; what is left waits for the next gap. */
const APPLY_BETWEEN_MS = 500;

/** The key log applied (plans with one): rounds until it is short or APPLY_BETWEEN_MS have passed. */
function applyBetweenBatches(pool: Pool, input: BackfillChunkInput): Promise<number> {
  if (!input.sql.keyLog) return Promise.resolve(0);
  return drainKeyLog(pool, input.sql.keyLog, 1000, Date.now() + APPLY_BETWEEN_MS);
}

/** While the application-latency bound holds the copy (tune.holding): the wait, and the hold still in force. */
async function appLatency(
  input: BackfillChunkInput,
  bounds: ReplicaBounds,
  tune: Tuning,
  deadline: number,
): Promise<Throttled | null> {
  if (!tune.holding || input.appBaselineMs === undefined || !bounds.maxAppLatencyRatio) return null;
  const { after, held } = tune.holding;
  const still = await waitForAppLatency(
    tune.samples,
    after,
    bounds.maxAppLatencyRatio,
    input.appBaselineMs,
    deadline,
    held,
  );
  tune.holding = still ? { after, held: still } : undefined;
  return still;
}

/** After a batch: the pause the application-latency bound asks for (src/pacer.ts), ms; a hold is kept in tune. */
function appPause(input: BackfillChunkInput, bounds: ReplicaBounds, tune: Tuning, l: Logger): number {
  if (input.appBaselineMs === undefined || !bounds.maxAppLatencyRatio) return 0;
  const now = Date.now();
  const next = nextPace(tune.pace, tune.samples, bounds.maxAppLatencyRatio, input.appBaselineMs, now);
  if (next.pace.pauseMs !== tune.pace.pauseMs) l.debug({ pauseMs: next.pace.pauseMs, p90: next.p90 }, 'copy paced');
  tune.pace = next.pace;
  if (next.hold) tune.holding = { after: now, held: { ...next.hold, since: new Date(now).toISOString() } };
  return tune.pace.pauseMs;
}

/**
 * Another attempt of this activity advanced the checkpoint, or the table was rewritten: the walk goes on from
 * where the checkpoint is now. Returns the rows copied it records.
 */
async function afterMove(pool: Pool, t: TableRef, l: Logger, w: Walker, pages: boolean): Promise<number> {
  if (pages) await restartIfRewritten(pool, t, l, w.tuneKey);
  const again = await runState(pool, t);
  if (again?.run_state !== 'active') {
    throw failure(`The partflow run of ${displayName(t)} is being undone; the backfill stops.`, 'RunUndone');
  }
  return w.reload(again);
}

/** Copies batches until the walk is done or `maxMs` has passed, applying the key log between them. */
export async function backfillChunk({ pool, log }: Deps, input: BackfillChunkInput): Promise<BackfillChunkResult> {
  await ownPlan(pool, input.table, null, { ...input.sql });
  const [t, started, ctx] = [input.table, Date.now(), activityContext()];
  const l = stepLog(log, 'backfill', t);
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
    const w = await walkerFor(pool, input, l);
    // the streams of a parallel copy together: each pauses `streams` times as long, and each expects the
    // others' batches in the WAL before the replicas' bounds
    const streams = input.streams ?? 1;
    let rowsCopied = w.rowsCopied;
    const tune = tuningOf(w.tuneKey);
    if (probe) prober = new CommitProber(probe, tune.samples).start();
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
      if (held || (held = await appLatency(input, bounds, tune, started + input.maxMs))) break;
      lastWal = look.walInsert;
      const b = await w.next(size, counts.batches);
      const batchStarted = Date.now();
      const [read, merged] = await copyBatch(pool, b, tune, input.sql.keyLog);
      if (read === 'moved') {
        rowsCopied = await afterMove(pool, t, l, w, pages);
        continue;
      }
      const took = Date.now() - batchStarted;
      metrics.batchDuration(displayName(t), took);
      metrics.rowsCopied(displayName(t), read);
      if (input.maxBatchMs) tune.size = size = nextBatchSize(b.units, w.cap, took, input.maxBatchMs);
      if (input.maxBatchMs && took > 4 * input.maxBatchMs)
        l.warn({ tookMs: took, units: b.units, merged, maxBatchMs: input.maxBatchMs }, 'a batch took long');
      w.advance();
      rowsCopied += read;
      counts.rowsThisChunk += read;
      if (pages) counts.pagesThisChunk += b.units;
      if (merged) counts.mergedBatches++;
      counts.batches++;
      ctx?.heartbeat(w.heartbeat(rowsCopied));
      counts.keysApplied += await applyBetweenBatches(pool, input);
      const pause = appPause(input, bounds, tune, l);
      if (input.sleepMs > 0 || pause > 0) await sleep(input.sleepMs * streams + pause);
      await capWalRate(pool, bounds, wal);
    }
    // the log also while the copy is held back or done: the verification after it leaves logged keys out
    counts.keysApplied += await applyBetweenBatches(pool, input);
    const elapsedMs = Date.now() - started;
    l.debug({ ...counts, elapsedMs }, 'backfill chunk');
    const { mergedBatches, ...rest } = counts;
    return {
      ...(await w.result(rowsCopied)),
      ...rest,
      ...(pages ? { mergedBatches } : {}),
      elapsedMs,
      done: w.done(),
      rowMoves: await rowMoves(pool, t),
      throttledBy: held,
      ...(probe ? { appPauseMs: tune.pace.pauseMs } : {}),
      ...(lag ? { replicaLag: lag } : {}),
    };
  } catch (err) {
    if (isTransient(err)) {
      l.warn({ err: (err as Error).message }, 'transient error in backfill; Temporal will retry from the checkpoint');
    }
    return classify(err, `backfill of ${displayName(t)}`);
  } finally {
    await prober?.stop();
    probe?.release();
  }
}
