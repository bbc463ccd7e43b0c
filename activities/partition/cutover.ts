/**
 * The cut-over and what follows it: the swap (one short transaction under lock_timeout, retried with
 * backoff), its compensation while the rollback window is open, and the finalize that ends the window.
 */
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import type { OlderSnapshots } from '../../src/input';
import { HEARTBEAT_THROTTLE_MS } from '../../src/config';
import type { Pool, PoolClient } from 'pg';
import { monitorEventLoopDelay } from 'perf_hooks';
import type { Logger } from '../../src/logger';
import { failure } from '../../src/failures';
import { displayName, qualified, quoteIdent } from '../../src/ident';
import { Plan, shapeDifferences, splitLock } from '../../src/plan';
import type { KeyLogApplySql } from '../../src/plan/keylog';
import { refuseChangedViews } from './views';
import {
  applyRound,
  drainKeyLog,
  drainToEmpty,
  keyLogBacklog,
  LastCheck,
  lastCheckBeforeLock,
  lastCheckUnderLock,
  recheckParked,
  recheckParkedWithin,
} from './keylog';
import { activityContext, classify, lockUpFront, runAll, sleep, withHeartbeat, withLockRetry } from '../runtime/db';
import { snapshotsOlderThan, waitForOlderSnapshots, waitForSessions } from './snapshotGuard';
import { appliedXid, Direction, handBack, handOver, HandoverResult } from './handover';
import { faultPoint } from '../runtime/faults';
import { Deps, relOid, stepLog } from '../runtime/deps';
import { newTableColumns, newTablePartitions, rollbackLoss } from './rollbackLoss';
import { acrossPartitions, fence, notReadCommitted, ownPlan, rowMoves, runState, undoFence } from './run';
import { recordCutover, recordedTriggerFence } from '../runtime/copyState';

export interface CutoverResult {
  alreadyDone: boolean;
  attempts: number;
  lockWaitRetries: number;
  /** how long the cut-over transaction held its locks, ms */
  lockHoldMs: number;
  /**
   * where that time went: ms from the lock's grant to the end of each part (`checked`: the table unchanged;
   * `drained`: the key log's remainder; `lastCheck`; `swapped`: the renames; `recorded`), and `workerStallMs`, the
   * worker's longest event-loop stall meanwhile (the rest up to `lockHoldMs` is the commit)
   */
  lockPhases?: Record<string, number>;
  rowMoves?: number;
  /** keys of the key log applied under the cut-over's lock (plans with a key log) */
  keysAppliedUnderLock?: number;
  /** the attach path: PostgreSQL confirmed the ATTACH skipped its scan (it refuses the cut-over otherwise) */
  scanSkipped?: boolean;
  /**
   * the handover (newer plans): quiet, the swap needed no snapshot guard; otherwise `heldBy` names the
   * transactions older than the last apply at the deadline, and the guard was installed
   */
  handover?: HandoverResult & { guarded: boolean };
  /** the last check: keys copied since the last verification pass, compared before the swap (newer plans) */
  lastCheck?: { keys: number; repaired: string[] };
  /** the table's foreign keys on itself the new table kept (plans with keptKeys): validated, or why not */
  keptKeys?: KeptKeysResult;
}

export interface KeptKeysResult {
  kept: string[];
  /** a key whose validation found rows it refuses: it stays NOT VALID (new writes still checked), with why */
  notValidated: string[];
}

/**
 * After the cut-over committed (the cut-over added them NOT VALID): each kept key validated with writes going on
 * (SHARE UPDATE EXCLUSIVE), no statement_timeout, heartbeating. Idempotent: a valid key validates at once. Rows
 * that violate one can only come from the source's key having been NOT VALID: the key stays NOT VALID and the
 * result says which rows to fix; the run goes on.
 */
export async function validateKeptKeys(
  { pool, log }: Deps,
  plan: Plan,
  lockTimeoutMs: number,
): Promise<KeptKeysResult | undefined> {
  const kept = plan.sql.keptKeys;
  if (!kept) return undefined;
  const logger = stepLog(log, 'cutover', plan.table);
  const notValidated: string[] = [];
  for (const sql of kept.validate) {
    const validate = async (c: PoolClient) => {
      await c.query('SET LOCAL statement_timeout = 0');
      await c.query(sql);
    };
    try {
      await withHeartbeat(
        () => ({ step: 'validate kept foreign keys' }),
        () => withLockRetry(pool, logger, 'validate kept foreign key', lockTimeoutMs, validate),
      );
    } catch (err) {
      if (!(err instanceof ApplicationFailure && err.type === 'DatabaseError')) throw err;
      notValidated.push(`${sql}: ${err.message}; the key stays NOT VALID (new writes are checked)`);
    }
  }
  logger.info({ kept: kept.names, notValidated }, 'kept foreign keys validated');
  return { kept: kept.names, notValidated };
}

/**
 * Under the cut-over's lock: the source still has the shape the copy was built from, and partflow's
 * triggers were never disabled (a disabled trigger, even one enabled again, changes its catalog row: the
 * copy may have missed writes). Either difference refuses the cut-over with the reason; nothing is swapped.
 */
async function checkUnchanged(c: PoolClient, plan: Plan): Promise<void> {
  const t = displayName(plan.table);
  const src = await relOid(c, plan.table);
  if (!src || src.oid !== plan.tableOid) {
    throw failure(`Table ${t} changed since preflight; not cutting over.`, 'TableChanged');
  }
  if (plan.sourceShape) {
    const now = (await c.query(plan.sql.shape, [plan.tableOid])).rows.map((r) => r.x as string);
    const diff = shapeDifferences(plan.sourceShape, now);
    if (diff.length) {
      throw failure(
        `Table ${t} changed after the plan was made (${diff.join('; ')}), so the copy does not match it; ` +
          'not cutting over: the run rolls back, start it again after the change.',
        'TableChanged',
      );
    }
  }
  await refuseChangedViews(c, plan, ': the run rolls back, start it again after the change.');
  const iso = await notReadCommitted(c, plan);
  if (iso) throw failure(`${iso}: not cutting over; the run rolls back.`, 'WritersNotReadCommitted');
  const recorded = await recordedTriggerFence(c, plan.table);
  if (recorded === null) return;
  const now = (await c.query(plan.sql.triggerFence, [plan.tableOid])).rows[0].fence;
  if (now !== recorded) {
    throw failure(
      `partflow's sync triggers on ${t} were disabled, dropped or altered during the run ` +
        `(${recorded} then, ${now || 'none'} now), so writes may have bypassed the copy; ` +
        'not cutting over: the run rolls back, start it again.',
      'CopyDiverged',
    );
  }
}

const HANDOVER_DRAIN_LOCK_WAIT_MS = 200;

/** The swap: one short transaction under lock_timeout, retried with backoff. */
export async function cutover(
  deps: Deps,
  plan: Plan,
  lockTimeoutMs: number,
  held?: { olderSnapshots: OlderSnapshots; lastCheck?: LastCheck; applied?: string | null },
): Promise<CutoverResult> {
  const { pool, log } = deps;
  await ownPlan(pool, plan.table, plan);
  const logger = stepLog(log, 'cutover', plan.table);
  if ((await runState(pool, plan.table))?.cutover_done) return alreadyCutOver(deps, plan, lockTimeoutMs);
  const { lock, then } = splitLock(plan.sql.cutover);
  const across = acrossPartitions(plan, lockTimeoutMs);
  const keyLog = plan.sql.keyLog;
  let underLock = 0;
  const check = lastCheckSoFar(held?.lastCheck);
  // runs from before olderSnapshots: the guard at the handover's deadline
  const wait = held?.olderSnapshots === 'wait';
  // after an attempt they held: the sessions older than its mark waited for first, with no handover (the
  // application pays nothing more meanwhile)
  if (wait && held?.applied) await stillHeld(pool, plan, logger, held.applied, check);
  // before each attempt, outside its transaction: the keys copied since the last verification pass compared
  // (each attempt goes on from where the one before stopped), then the key log drained, so that what is left
  // for under the lock is what writers commit between this drain and the lock
  let handover: HandoverResult | undefined;
  let guarded = false;
  const before = async () => {
    if (!keyLog) return;
    // with a handover, drains wait for the applier's lock briefly only (an attempt after the first one finds the
    // handover on: a writer's open transaction holds the lock shared)
    await lastCheckBeforeLock(pool, plan, keyLog, check, plan.sql.handover ? HANDOVER_DRAIN_LOCK_WAIT_MS : undefined);
    // the last changes written into the copy by their writers; the last apply older than every snapshot left
    if (plan.sql.handover) handover = await handOver(pool, plan, logger, () => ({ lastCheck: check }));
    else await drainKeyLog(pool, keyLog);
    if (wait && handover && !handover.quiet) throw heldFailure(plan, handover, check);
  };
  let phases: Record<string, number> = {};
  const swap = async (c: PoolClient) => {
    phases = await timedLock(c, [lock], across.budget, async (mark) => {
      ({ underLock, guarded } = await swapUnderLock(c, { plan, then, check, handover, wait, logger }, mark));
    });
  };
  let stats;
  try {
    ({ stats } = await withHeartbeat(
      () => ({ step: 'cutover', lastCheck: check }),
      () =>
        withLockRetry(pool, logger, 'cutover', across.ms, swap, {
          ...across.opts,
          before,
          details: () => ({ lastCheck: check }),
          watch: qualified(plan.table),
        }),
    ));
  } catch (err) {
    // the cut-over did not commit: the application's writes go back to the key log alone (also when the attempt
    // stopped inside the handover, before it returned: handBack does nothing where the function is the plain one)
    if (plan.sql.handover) await handBack(pool, plan, logger);
    throw err;
  }
  const { attempts, lockWaitRetries, holdMs: lockHoldMs, commitMs } = stats;
  const lastCheck = keyLog?.seen ? { keys: check.keys, repaired: check.repaired } : undefined;
  const handed = handover && { ...handover, guarded };
  const said = {
    lockHoldMs,
    commitMs,
    lockPhases: phases,
    attempts,
    lockWaitRetries,
    keysAppliedUnderLock: underLock,
    lastCheck,
  };
  logger.info({ ...said, handover: handed }, 'cut over');
  const keptKeys = await validateKeptKeys(deps, plan, lockTimeoutMs);
  return {
    ...(keptKeys ? { keptKeys } : {}),
    alreadyDone: false,
    attempts,
    lockWaitRetries,
    lockHoldMs,
    lockPhases: phases,
    rowMoves: await rowMoves(pool, plan.table),
    ...(keyLog ? { keysAppliedUnderLock: underLock } : {}),
    ...(lastCheck ? { lastCheck } : {}),
    ...(handed ? { handover: handed } : {}),
  };
}

/**
 * `body` once `locks` are granted (lockUpFront), timed: ms from the grant to each part's `mark`, and
 * `workerStallMs`, the worker's longest event-loop stall meanwhile (time the lock was held while this process
 * could not read a reply). The rest of the hold is the commit.
 */
async function timedLock(
  c: PoolClient,
  locks: string[],
  budgetMs: number,
  body: (mark: (part: string) => void) => Promise<void>,
): Promise<Record<string, number>> {
  await lockUpFront(c, locks, budgetMs); // each wait bounded by lock_timeout, the whole by the budget
  const granted = Date.now();
  const phases: Record<string, number> = {};
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  try {
    await body((part) => (phases[part] = Date.now() - granted));
  } finally {
    loop.disable();
  }
  return { ...phases, workerStallMs: Math.round(loop.max / 1e6) };
}

interface SwapState {
  plan: Plan;
  then: string[];
  check: LastCheck;
  handover: HandoverResult | undefined;
  wait: boolean;
  logger: Logger;
}

/** The cut-over's transaction once its lock is granted: the checks, the key log's remainder, the swap, the record. */
async function swapUnderLock(
  c: PoolClient,
  { plan, then, check, handover, wait, logger }: SwapState,
  mark: (part: string) => void,
): Promise<{ underLock: number; guarded: boolean }> {
  const keyLog = plan.sql.keyLog;
  let underLock = 0;
  await fence(c, plan.table);
  await checkUnchanged(c, plan);
  mark('checked');
  if (keyLog) {
    underLock = await drainUnderLock(c, plan, keyLog);
    mark('drained');
    await lastCheckUnderLock(c, plan, keyLog, check);
    mark('lastCheck');
  }
  // quiet: no apply since the handover's, none under the lock: every snapshot that can meet the new table sees
  // every row version partflow wrote into it, and no guard is needed (plans before the handover: always)
  const quiet = !!handover?.quiet && underLock === 0 && (await appliedXid(c, plan)) === handover.applied;
  // a writer logged after the handover went quiet: this attempt's swap would need the guard
  if (wait && handover && !quiet) throw heldFailure(plan, { ...handover, quiet: false }, check);
  const guarded = !!plan.sql.cutoverGuard && !quiet;
  // the swap, the kept keys and the guard in one round trip
  await runAll(c, [...then, ...(plan.sql.keptKeys?.add ?? []), ...(guarded ? plan.sql.cutoverGuard! : [])]);
  mark('swapped');
  await faultPoint('cutover', logger); // renamed, not committed
  // the new table's columns as of the cut-over: a rollback that would lose a later change is refused
  await recordCutover(c, plan.table, true, {
    columns: await newTableColumns(c, plan),
    partitions: await newTablePartitions(c, plan),
  });
  mark('recorded');
  return { underLock, guarded };
}

/** A retried cut-over that had committed: the kept keys validated again (they may not have been). */
async function alreadyCutOver(deps: Deps, plan: Plan, lockTimeoutMs: number): Promise<CutoverResult> {
  const keptKeys = await validateKeptKeys(deps, plan, lockTimeoutMs);
  return { alreadyDone: true, attempts: 0, lockWaitRetries: 0, lockHoldMs: 0, ...(keptKeys ? { keptKeys } : {}) };
}

/**
 * Where the last check goes on from: a retried attempt from where the one before got, with what it repaired (its
 * heartbeat), and an attempt after one the handover held from where that one got (`held`).
 */
function lastCheckSoFar(held: LastCheck | undefined): LastCheck {
  const beat = activityContext()?.info.heartbeatDetails as { lastCheck?: LastCheck } | undefined;
  return beat?.lastCheck ?? held ?? { upTo: 0, keys: 0, repaired: [] };
}

/** The worker's heartbeat throttle and a margin. */
const CANCEL_NOTICE_MS = HEARTBEAT_THROTTLE_MS + 500;

/** How long an attempt after a held one waits for the sessions that held it before it says so again. */
const HELD_WAIT_MS = 120_000;

/** The sessions older than a held attempt's mark `applied`, waited for (no lock, no handover) up to HELD_WAIT_MS. */
async function stillHeld(
  pool: Pool,
  plan: Plan,
  logger: Logger,
  applied: string,
  check: LastCheck,
  direction: Direction = 'forward',
): Promise<void> {
  const what = direction === 'forward' ? 'cut-over' : 'swap back';
  const left = await waitForSessions(
    pool,
    () => snapshotsOlderThan(pool, applied),
    logger,
    `${what} held: waiting for the transactions older than the last attempt`,
    Date.now() + HELD_WAIT_MS,
    () => ({ lastCheck: check }),
    1000,
  );
  // a rollback (or the operator's guard) asked while this attempt waited reaches it only with a heartbeat's answer,
  // at most the worker's heartbeat throttle (5 s) later: one more heartbeat and that long before it goes on to swap
  const ctx = activityContext();
  if (ctx && !left.length) {
    ctx.heartbeat({ lastCheck: check });
    await sleep(CANCEL_NOTICE_MS);
  }
  if (ctx?.cancellationSignal.aborted) throw new CancelledFailure(`${what} cancelled while held`);
  if (left.length) {
    const h = { quiet: false, applied, rounds: 0, ms: 0, heldBy: left.map((w) => w.line) };
    throw heldFailure(plan, h, check, direction);
  }
}

/**
 * The cut-over held by sessions older than partflow's last write (olderSnapshots "wait"): the workflow tries it
 * again later, from the last check's `lastCheck` (the failure's details).
 */
function heldFailure(plan: Plan, h: HandoverResult, lastCheck: LastCheck, direction: Direction = 'forward') {
  const t = displayName(plan.table);
  const into = direction === 'forward' ? 'the copy' : displayName(plan.old);
  const who = h.heldBy?.length
    ? `sessions hold snapshots older than partflow's last write into ${into} (${h.heldBy.join('; ')})`
    : 'writers logged changes after the handover went quiet';
  const [what, verb] = direction === 'forward' ? ['cut-over', 'cut over'] : ['swap back (the rollback)', 'swap back'];
  return failure(
    `The ${what} of ${t} waits: ${who}; swapping now would fail their later statements on ${t} with 40001. ` +
      'It is tried again until they have ended; end them, or signal approveCutover with ' +
      `{"olderSnapshots": "guard"} to ${verb} with the snapshot guard.`,
    'HandoverHeld',
    { heldBy: h.heldBy ?? [], lastCheck, applied: h.applied },
  );
}

/**
 * Under the cut-over's (or the swap back's) ACCESS EXCLUSIVE locks every writer of the table has committed or
 * rolled back and no new one can write, so the log cannot grow: its remainder is applied in the step's
 * transaction and the log must then be empty.
 */
async function drainUnderLock(c: PoolClient, plan: Plan, keyLog: KeyLogApplySql): Promise<number> {
  let total = 0;
  for (;;) {
    const n = await applyRound(c, keyLog, 10_000);
    if (!n) break;
    total += n;
  }
  const left = await keyLogBacklog(c, keyLog);
  if (left) {
    throw failure(
      `The key log of ${displayName(plan.table)} still holds ${left} entries under the lock; ` +
        'not swapping the tables.',
      'CopyDiverged',
    );
  }
  return total;
}

/**
 * After swapBack: a re-added foreign key that rows written during the window violate stays NOT VALID (it
 * still checks new rows): the undo goes on and reports it rather than stopping half way.
 */
export async function validateInbound({ pool, log }: Deps, plan: Plan, lockTimeoutMs: number): Promise<string[]> {
  const logger = stepLog(log, 'swap-back', plan.table);
  const notRestored: string[] = [];
  for (const sql of plan.sql.validateInbound) {
    try {
      await withLockRetry(pool, logger, 'validate re-added foreign key', lockTimeoutMs, (c) => c.query(sql));
    } catch (err) {
      if (!(err instanceof ApplicationFailure && err.type === 'DatabaseError')) throw err;
      // the key the statement names (newer plans list none for a key the source did not hold valid)
      const fk = plan.inboundForeignKeys.find(
        (k) => sql === `ALTER TABLE ${qualified(k.table)} VALIDATE CONSTRAINT ${quoteIdent(k.name)}`,
      )!;
      const t = displayName(fk.table);
      const name = /^[a-z_][a-z0-9_$]*$/.test(fk.name) ? fk.name : quoteIdent(fk.name);
      notRestored.push(
        `foreign key ${t}.${fk.name} is back but NOT VALID (${err.message}); ` +
          `fix the rows it names, then ALTER TABLE ${t} VALIDATE CONSTRAINT ${name}`,
      );
    }
  }
  return notRestored;
}

/** Compensation of cutover: the old table (kept in sync by the reverse trigger) takes the name back. */
export async function swapBack(
  deps: Deps,
  plan: Plan,
  lockTimeoutMs: number,
  held?: { olderSnapshots: OlderSnapshots; applied?: string | null },
): Promise<{
  swapped: boolean;
  lockHoldMs: number;
  notRestored?: string[];
  handover?: HandoverResult & { guarded: boolean };
}> {
  const { pool, log } = deps;
  await ownPlan(pool, plan.table, plan);
  const logger = stepLog(log, 'swap-back', plan.table);
  const st = await runState(pool, plan.table);
  const { lock, then } = splitLock(plan.sql.swapBack);
  const across = acrossPartitions(plan, lockTimeoutMs);
  const keyLog = plan.sql.reverseKeyLog;
  let underLock = 0;
  let handover: HandoverResult | undefined;
  let guarded = false;
  // olderSnapshots "wait" (runs from before it: the guard at the handover's deadline; runs that gave a uniqueness
  // up, planned before they had a reverse handover, keep the guard): a swap back that sessions with older
  // snapshots hold is handed back and tried again by the workflow, as the cut-over is
  const wait = held?.olderSnapshots === 'wait' && !!plan.sql.reverseHandover;
  const none: LastCheck = { upTo: 0, keys: 0, repaired: [] };
  const swapped = !!st?.cutover_done;
  if (swapped && wait && held?.applied) await stillHeld(pool, plan, logger, held.applied, none, 'reverse');
  const drain = async () => {
    if (!keyLog) return;
    // the keys the old table could not take applied again before the handover, so that under the lock there are
    // none left to write (a write there needs the guard) unless one failed again (then the rollback is refused)
    await recheckParkedWithin(pool, keyLog, 1000);
    // the last changes written into the old table by their writers (plans with a reverse handover)
    if (plan.sql.reverseHandover) handover = await handOver(pool, plan, logger, () => ({}), 'reverse');
    else await drainKeyLog(pool, keyLog);
    if (wait && handover && !handover.quiet) throw heldFailure(plan, handover, none, 'reverse');
  };
  const swap = async (c: PoolClient) => {
    await lockUpFront(c, [lock], across.budget);
    await undoFence(c, plan.table);
    // the old table gets the last keys the application changed, and the keys it could not take before again
    // (a duplicate ended since, a unique value handed between rows over two rounds), then takes the name back
    if (keyLog) underLock = (await drainUnderLock(c, plan, keyLog)) + (await recheckParked(c, keyLog));
    // what would be lost, as of now (a row the old table still cannot hold included): refused, nothing done
    const loss = await rollbackLoss(c, plan);
    if (loss) throw failure(loss, 'TableChanged');
    const quiet = !!handover?.quiet && underLock === 0 && (await appliedXid(c, plan, 'reverse')) === handover.applied;
    // a writer logged after the handover went quiet (or partflow wrote under the lock): this swap would need the guard
    if (wait && handover && !quiet) throw heldFailure(plan, { ...handover, quiet: false }, none, 'reverse');
    await runAll(c, then);
    guarded = !!plan.sql.swapBackGuard && !quiet;
    if (guarded) await runAll(c, plan.sql.swapBackGuard!);
    await recordCutover(c, plan.table, false);
  };
  const watch = qualified(plan.table);
  let back;
  try {
    back = swapped
      ? await withLockRetry(pool, logger, 'swap back', across.ms, swap, { ...across.opts, before: drain, watch })
      : null;
  } catch (err) {
    // the swap back did not commit: the application's writes go back to the reverse key log alone (also when it
    // stopped inside the handover)
    if (plan.sql.reverseHandover) await handBack(pool, plan, logger, 'reverse');
    throw err;
  }
  const lockHoldMs = back?.stats.holdMs ?? 0;
  const notRestored = await validateInbound(deps, plan, lockTimeoutMs);
  const handed = handover ? { ...handover, guarded } : undefined;
  logger.info(
    { swapped, lockHoldMs, notRestored, keysAppliedUnderLock: underLock, handover: handed },
    'swapped back to the original table',
  );
  return { swapped, lockHoldMs, notRestored, ...(handed ? { handover: handed } : {}) };
}

/** Read-only: why a rollback requested now would lose data, or null. */
export async function rollbackBlocker({ pool }: Deps, plan: Plan): Promise<string | null> {
  await ownPlan(pool, plan.table, plan);
  try {
    // a run a cleanup took is not this workflow's to roll back: its undo finds that out and does nothing
    const st = await runState(pool, plan.table);
    if (st?.run_state !== 'active') return null;
    // what the application committed before the signal applied first (a row the old table cannot hold is
    // recorded as its round meets it), the applier's lock waited for briefly at a time
    const rev = plan.sql.reverseKeyLog;
    if (rev?.lost && st.cutover_done) await drainToEmpty(pool, rev, Date.now() + 5_000, 500);
    // and the keys the old table could not take applied again: what it still cannot take is recorded again
    if (rev?.recheck && st.cutover_done) await recheckParkedWithin(pool, rev, 1000);
    return await rollbackLoss(pool, plan);
  } catch (err) {
    classify(err, 'rollback check');
  }
}

/** Ends the rollback window: the reverse trigger goes; the old table stays for the operator to drop. */
export async function finalize({ pool, log }: Deps, plan: Plan, lockTimeoutMs: number): Promise<{ rowMoves: number }> {
  await ownPlan(pool, plan.table, plan);
  const logger = stepLog(log, 'finalize', plan.table);
  const moves = await rowMoves(pool, plan.table);
  await waitForOlderSnapshots(pool, plan.table, logger);
  const end = async (c: PoolClient) => {
    await fence(c, plan.table);
    await runAll(c, [...plan.sql.finalize, ...(plan.sql.dropCounters ?? [])]);
    await faultPoint('finalize', logger);
  };
  const across = acrossPartitions(plan, lockTimeoutMs);
  await withLockRetry(pool, logger, 'finalize', across.ms, end, across.opts);
  logger.info({ old: displayName(plan.old), rowMoves: moves }, 'reverse trigger dropped; old table kept');
  return { rowMoves: moves };
}
