/**
 * The concurrent index builder that createIndexes and fixConstraints share: CREATE INDEX CONCURRENTLY on one
 * table (a partition, or a plain table), fenced by the run (partflow.fix_runs), an orphaned build of an earlier
 * attempt cancelled first, progress from pg_stat_progress_create_index in the heartbeats; then ATTACH PARTITION
 * of the index to the partitioned table's.
 */
import { createHash } from 'crypto';
import { CancelledFailure } from '@temporalio/common';
import type { Pool, PoolClient } from 'pg';
import { displayName, qualified, TableRef } from '../../src/ident';
import type { IndexBuild } from '../../src/indexes';
import type { Logger } from '../../src/logger';
import { activityContext, inTransaction, sleep, withLockRetry } from './db';
import { fixFence } from './fixRuns';

type BuildEntry = IndexBuild['each'][number];

/** What pg_stat_progress_create_index says of one backend's build, for heartbeats and the log. */
async function buildProgress(pool: Pool, pid: number): Promise<Record<string, unknown> | null> {
  const r = await pool
    .query(
      `SELECT phase, blocks_done, blocks_total, tuples_done, tuples_total FROM pg_stat_progress_create_index
        WHERE pid = $1`,
      [pid],
    )
    .catch(() => ({ rows: [] }));
  const x = r.rows[0];
  return x
    ? {
        phase: x.phase,
        blocks: `${x.blocks_done}/${x.blocks_total}`,
        tuples: `${x.tuples_done}/${x.tuples_total}`,
      }
    : null;
}

/**
 * Backends of partflow's own (application_name) building `index` now: a build whose attempt died (worker gone,
 * heartbeat timed out) goes on in PostgreSQL until its statement ends, however long it waits for old snapshots.
 */
async function orphanBuilds(pool: Pool, index: string): Promise<number[]> {
  const r = await pool.query(
    `SELECT p.pid FROM pg_stat_progress_create_index p JOIN pg_stat_activity a ON a.pid = p.pid
      WHERE p.index_relid = to_regclass($1) AND p.pid <> pg_backend_pid() AND a.application_name = $2`,
    [index, buildName()],
  );
  return r.rows.map((x) => x.pid as number);
}

/**
 * The application_name a build's backend carries: partflow's and this workflow's. Only a build of the same
 * workflow (an earlier attempt of this very step) is an orphan to cancel; another run's build of the same
 * index is not, even with partflow's name.
 */
function buildName(): string {
  const wf = activityContext()?.info.workflowExecution?.workflowId ?? '';
  return `partflow build ${createHash('sha256').update(wf).digest('hex').slice(0, 16)}`;
}

/**
 * CREATE INDEX CONCURRENTLY (it cannot run in a transaction: fenced just before), an INVALID leftover of an
 * interrupted build dropped first. The heartbeat runs from the start: a leftover whose build still runs in an
 * orphaned backend of partflow's (a dead attempt) is cancelled before the DROP, which would otherwise wait for it
 * silently. A cancelled or timed-out attempt cancels its own build (pg_cancel_backend) instead of waiting for
 * it to end. Heartbeats carry the build's phase and blocks from pg_stat_progress_create_index, visible in the Web
 * UI's pending activity.
 */
export async function buildConcurrently(
  pool: Pool,
  on: TableRef,
  name: string,
  sql: string,
  fence: (c: PoolClient) => Promise<void>,
): Promise<void> {
  const ctx = activityContext();
  const index = qualified({ schema: on.schema, name });
  let detail: Record<string, unknown> = { index: name, on: displayName(on) };
  let pid: number | null = null;
  const timer = setInterval(() => {
    if (pid === null) return ctx?.heartbeat(detail);
    void buildProgress(pool, pid).then((p) => {
      detail = { index: name, on: displayName(on), ...(p ?? {}) };
      ctx?.heartbeat(detail);
    });
  }, 2000);
  // a cancellation (or a timed-out attempt told so by its heartbeat) cancels the statement in flight
  const cancelBuild = () => {
    if (pid !== null) void pool.query('SELECT pg_cancel_backend($1)', [pid]).catch(() => undefined);
  };
  const onPid = (p: number | null) => (pid = p);
  ctx?.cancellationSignal.addEventListener('abort', cancelBuild);
  try {
    ctx?.heartbeat(detail);
    await inTransaction(pool, fence);
    const ex = await pool.query(`SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass($1)`, [index]);
    if (ex.rowCount && ex.rows[0].indisvalid === false) {
      for (const orphan of await orphanBuilds(pool, index)) {
        detail = { index: name, on: displayName(on), cancelling: `the orphaned build in pid ${orphan}` };
        await pool.query('SELECT pg_cancel_backend($1)', [orphan]);
      }
      for (let i = 0; i < 100 && (await orphanBuilds(pool, index)).length; i++) await sleep(100);
      // a build of this index by someone else (another run, an operator) is not an orphan: wait for it to end
      // (heartbeating; a cancel stops the wait), then look again: what it built valid is kept
      for (;;) {
        const others = await pool.query(
          `SELECT pid FROM pg_stat_progress_create_index
            WHERE index_relid = to_regclass($1) AND pid <> pg_backend_pid()`,
          [index],
        );
        if (!others.rowCount) break;
        if (ctx?.cancellationSignal.aborted) throw new CancelledFailure(`the build of ${name} was cancelled`);
        detail = { index: name, on: displayName(on), waiting: `for the build in pid ${others.rows[0].pid}` };
        await sleep(1000);
      }
      const again = await pool.query(`SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass($1)`, [
        index,
      ]);
      if (again.rowCount && again.rows[0].indisvalid === false) {
        detail = { index: name, on: displayName(on), dropping: 'the INVALID leftover' };
        await run(pool, `DROP INDEX CONCURRENTLY IF EXISTS ${index}`, onPid, ctx);
      }
    }
    if (ctx?.cancellationSignal.aborted) throw new CancelledFailure(`the build of ${name} was cancelled`);
    detail = { index: name, on: displayName(on) };
    await run(pool, sql, onPid, ctx); // waits for older transactions; never blocks writes
  } catch (err) {
    if ((err as { code?: string }).code === '57014' && ctx?.cancellationSignal.aborted)
      throw new CancelledFailure(`the build of ${name} was cancelled`);
    throw err;
  } finally {
    clearInterval(timer);
    ctx?.cancellationSignal.removeEventListener('abort', cancelBuild);
  }
}

/**
 * One statement on a client of its own, whose backend pid is handed out while it runs (to cancel it). A client
 * that may have been sent a cancel is closed, not returned to the pool: the cancel must never reach the next
 * statement that client would run.
 */
async function run(
  pool: Pool,
  sql: string,
  onPid: (pid: number | null) => void,
  ctx: ReturnType<typeof activityContext>,
): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query(`SELECT set_config('application_name', $1, false)`, [buildName()]);
    onPid((client as unknown as { processID: number }).processID);
    await client.query(sql);
  } finally {
    onPid(null);
    // a client that may have been sent a cancel, or whose name cannot be reset, is closed, not pooled
    const reset = ctx?.cancellationSignal.aborted
      ? false
      : await client.query('RESET application_name').then(
          () => true,
          () => false,
        );
    const broken = !reset;
    client.release(broken ? true : undefined);
  }
}

/**
 * One table's index (a partition's, or a plain table's) built CONCURRENTLY unless it is there valid, then
 * attached to `parent` (the partitioned table's index) unless it is already: each step fenced by the run
 * (fix_runs: createIndexes' and fixConstraints' runs alike). Returns whether it built. Errors go to the caller.
 */
export async function buildAndAttach(
  pool: Pool,
  logger: Logger,
  e: BuildEntry,
  parent: TableRef | null,
  lockTimeoutMs: number,
): Promise<boolean> {
  const ready = await pool.query(
    `SELECT i.indisvalid AND i.indisready AS ok FROM pg_index i WHERE i.indexrelid = to_regclass($1)`,
    [qualified({ schema: e.table.schema, name: e.name })],
  );
  const built = !ready.rows[0]?.ok;
  if (built) await buildConcurrently(pool, e.table, e.name, e.sql, fixFence);
  const attach = e.attach;
  if (!attach || !parent) return built;
  const attached = await pool.query(
    `SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass($1) AND inhparent = to_regclass($2)`,
    [qualified({ schema: e.table.schema, name: e.name }), qualified(parent)],
  );
  if (!attached.rowCount) {
    const fenced = async (c: PoolClient) => {
      await fixFence(c);
      await c.query(attach);
    };
    await withLockRetry(pool, logger, 'attach index', lockTimeoutMs, fenced, { relations: [qualified(e.table)] });
  }
  return built;
}
