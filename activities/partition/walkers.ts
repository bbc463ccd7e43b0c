/**
 * The backfill's walkers: what the next batch copies and the checkpoint that commits with it. The page walker
 * copies TID ranges of the table's file (PostgreSQL 14+), split into streams for a parallel copy; the key walker
 * copies primary-key ranges (PostgreSQL 13, or copyMode "keys").
 */
import type { Pool, PoolClient } from 'pg';
import { failure } from '../../src/failures';
import { displayName, qualified, TableRef } from '../../src/ident';
import type { Logger } from '../../src/logger';
import { pagesPerBatch } from '../../src/plan';
import { inTransaction } from '../runtime/db';
import { workflowId } from '../runtime/deps';
import { faultPoint } from '../runtime/faults';
import { isActive, tableRun } from '../runtime/runStore';
import type { BackfillChunkInput, BackfillChunkResult } from './backfill';
import {
  keyCheckpoint,
  pageCheckpoint,
  restartWalkOnNewFile,
  RunRow,
  runState,
  streamCheckpoint,
  streamRow,
  streamsTotal,
} from '../runtime/copyState';
import { tuningOf } from './tuning';

/** One batch as a walker plans it: its size, its copy, and the checkpoint update that commits with it. */
export interface Batch {
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

export interface Walker {
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

/**
 * A VACUUM FULL, CLUSTER, pg_repack or TRUNCATE gives the table a new file in which rows sit on other
 * pages: the page checkpoint means nothing there, and rows moved below it would never be copied. When the
 * file changed since the sync trigger was installed, the walk starts again from page 0 over the new file
 * (every row in it existed then or was written by the trigger since; rows copied already are skipped); a
 * parallel copy splits the new file again, in the same transaction.
 */
export async function restartIfRewritten(pool: Pool, table: TableRef, logger: Logger, tuneKey: string): Promise<void> {
  const restarted = await inTransaction(pool, (c) => restartWalkOnNewFile(c, table));
  if (restarted !== null) {
    tuningOf(tuneKey).mergeLeft = 1_000_000; // every later batch may meet rows copied already
    logger.warn(
      { totalPages: restarted },
      'the table was rewritten (VACUUM FULL, CLUSTER or TRUNCATE): the backfill walks its new file from page 0',
    );
  }
}

/** A batch of pages [from, to): the plan's TID range copy, and its fast form. */
function pageCopies(input: BackfillChunkInput, logger: Logger, from: number, to: number, batchNo: number) {
  const copyWith =
    (sql: string) =>
    (c: PoolClient): Promise<number> =>
      c.query(sql, [`(${from},0)`, `(${to},0)`]).then(async (r) => {
        if (batchNo === 2) await faultPoint('backfill', logger); // mid-batch: copied, not committed
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
async function pageWalker(pool: Pool, input: BackfillChunkInput, logger: Logger): Promise<Walker> {
  const t = input.table;
  const tuneKey = `pages:${qualified(t)}`;
  await restartIfRewritten(pool, t, logger, tuneKey);
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
        commit: pageCheckpoint(t, next, to),
        ...pageCopies(input, logger, next, to, batchNo),
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

/**
 * One stream of a parallel copy: page ranges [next, next + size) of its own range, its checkpoint in
 * partflow.backfill_streams. A batch commits only while the run is active (its row in partflow.runs held FOR
 * SHARE, as the DDL steps do: an undo waits for it) and only over the page, range and table file it started
 * from, all on the stream's row, so that a concurrent re-split after a rewrite is seen.
 */
async function streamWalker(pool: Pool, input: BackfillChunkInput, logger: Logger): Promise<Walker> {
  const t = input.table;
  const k = input.stream!;
  const tuneKey = `pages:${qualified(t)}#${k}`;
  await restartIfRewritten(pool, t, logger, tuneKey);
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
        if (!(await isActive(c, tableRun(t, workflowId())))) return false;
        return streamCheckpoint(t, k, { from: next, to, end }, row.filenode)(c, read);
      };
      return { units: to - next, commit, ...pageCopies(input, logger, next, to, batchNo) };
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
      const a = await streamsTotal(pool, t);
      const [done, pages] = [a.done, a.pages];
      return {
        rowsCopied: a.rows,
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
        commit: keyCheckpoint(t, from, to),
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
export function walkerFor(pool: Pool, input: BackfillChunkInput, logger: Logger): Promise<Walker> {
  if (input.stream !== undefined) return streamWalker(pool, input, logger);
  return input.copyMode !== 'keys' ? pageWalker(pool, input, logger) : keyWalker(pool, input);
}
