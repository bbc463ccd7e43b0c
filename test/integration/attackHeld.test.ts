/**
 * Attack review (helper atk19, 2026-12-06, own cluster) of two changes: the rollback window's record of rows the
 * old table cannot hold (8d4cbc0) and olderSnapshots "wait" (9df0f05, e43712e). Modelled on attackHandover.test.
 * C1c, C2i (rollback) and C2k failed on the code reviewed and were mended (the rollback check applies the reverse
 * log first; a rollback or the operator's "guard" cancels a held cut-over's waiting attempt). C1a and C1e (a
 * refusal where nothing would be lost) were mended at the next stop (the keys a round could not apply are parked
 * and applied again, in one round, when a rollback is asked); C1b (a run failed where it should stay in its
 * window) too: the swap back's refusal under its lock returns the run to its window. The others held. C3 (P1, P2):
 * the attack review of that mend (helper atk20), both failing on 7e8ac98 and mended.
 */
import type { WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { PoolClient } from 'pg';
import { Client } from 'pg';
import type { PartitionTableInput } from '../../src/input';
import type { TestDb } from '../helpers/pg';
import { handoverWait, startStack, Stack } from '../helpers/stack';
import { progress, sleep, waitFor } from '../helpers/workflow';
import {
  activityResults,
  emailsInWindow,
  ended,
  outcome,
  reverseHandingOver,
  reverseLogDrained,
  rollbackRecord,
  rowsDiffering,
  sessionAt,
  tableWithControl,
} from '../helpers/attack';

const TQ = 'partflow-attack-held';
let stack: Stack;
let env: TestWorkflowEnvironment;
let db: TestDb;
let seq = 0;

beforeAll(async () => {
  stack = await startStack('atkheld', TQ);
  ({ env, db } = stack);
});

afterAll(async () => {
  await stack?.teardown();
});

const rrSession = () => sessionAt(db.pool);
const diff = (t: string, ctl?: string) => rowsDiffering(db.pool, t, ctl);
const recordOf = (t: string) => rollbackRecord(db.pool, t);

function start(input: PartitionTableInput): Promise<WorkflowHandle> {
  return env.client.workflow.start('partitionTable', {
    taskQueue: TQ,
    workflowId: `atkheld-${++seq}-${Date.now()}`,
    args: [input],
  });
}

async function rlogCount(t: string): Promise<number> {
  return (await db.pool.query(`SELECT count(*)::int AS n FROM ${t}_pf_rlog`)).rows[0].n;
}
const drained = (t: string) => reverseLogDrained(db.pool, t);

async function ready(t: string, input: Partial<PartitionTableInput> = {}, extra = '') {
  await tableWithControl(db.pool, t, extra);
  const h = await start({ table: t, batchSize: 500, approval: 'signal', rollbackWindow: '1h', ...input });
  await waitFor(h, (p) => p.phase === 'awaiting-approval', 'verified', 120_000);
  return h;
}

async function answered(h: WorkflowHandle) {
  return waitFor(
    h,
    (x) => (x.lastError ?? '').startsWith('Rolling back') || x.phase !== 'rollback-window',
    'the rollback answered',
    60_000,
  );
}

describe('C1. rollback window: rows the old table cannot hold', () => {
  // MENDED (pinned as a limit at first): the log's seq order is not commit order. A DELETE of id 5 left open, an
  // INSERT of id 5 in another month committed meanwhile (on the old table it would wait for the DELETE and then
  // succeed): a round between the two commits counts id 5 twice, and a rollback was refused for good, although
  // the table never held id 5 twice once both committed. Now that round parks id 5's keys and the rollback
  // applies them again first: nothing is held twice then, and the rollback goes ahead, exact.
  it('C1a. delete of id 5 open while id 5 is inserted in another month, committed in that order: the rollback goes ahead and equals the record', async () => {
    const t = 'c1a';
    const h = await inWindow(t);
    const out: Record<string, string> = {};
    const a = await db.pool.connect();
    try {
      await a.query('BEGIN');
      out.del = await outcome(a, `DELETE FROM ${t} WHERE id = 5`);
      out.ins = await outcome(db.pool, `INSERT INTO ${t} VALUES (5, 'moved', '2026-03-15')`);
      await drained(t);
      await sleep(500);
      await a.query('COMMIT');
    } finally {
      await a.query('ROLLBACK').catch(() => undefined);
      a.release();
    }
    // the control: on a table with PRIMARY KEY (id) the insert waits for the delete, then succeeds
    const ca = await db.pool.connect();
    await ca.query('BEGIN');
    await ca.query(`DELETE FROM ${t}_ctl WHERE id = 5`);
    const ctlIns = outcome(db.pool, `INSERT INTO ${t}_ctl VALUES (5, 'moved', '2026-03-15')`);
    await sleep(300);
    await ca.query('COMMIT');
    ca.release();
    out.ctlIns = await ctlIns;
    await drained(t);
    out.ids = String((await db.pool.query(`SELECT count(*) - count(DISTINCT id) AS d FROM ${t}`)).rows[0].d);
    out.recorded = (await recordOf(t)) ?? 'none';
    const { p, r, d } = await rollBack(h, t);
    out.phase = p.phase;
    console.log(JSON.stringify({ out, lastError: p.lastError, r, diff: d }));
    expect(out).toMatchObject({ del: '1 rows', ins: '1 rows', ctlIns: '1 rows', ids: '0' });
    expect(out.recorded).toMatch(/id \(5\) in more than one row/);
    // the round saw id 5 twice (its record), and the rollback applied id 5 again before it decided
    expect(p.lastError ?? '').not.toMatch(/^Rolling back/);
    expect(r).toBe('ok rolled-back');
    expect(d).toBe(0);
  });

  // MENDED (pinned as a limit at first): a duplicate written while the swap back hands over is found under its
  // lock only, and that refusal failed the run ("stays undoing", partflow cleanup --remove kept the new table).
  // Now the run goes back to its rollback window with the refusal in lastError, active again; here the
  // application then removes the duplicate, and the rollback asked again goes ahead, exact.
  it('C1b. a duplicate id written while the swap back hands over (an old snapshot keeps it waiting): refused, the window goes on; the duplicate removed, the rollback goes ahead', async () => {
    const t = 'c1b';
    const h = await inWindow(t);
    const restore = handoverWait(8000);
    const out: Record<string, string> = {};
    const old = await rrSession();
    try {
      await h.signal('rollback');
      await sleep(2500); // the swap back's handover waits for `old`
      out.dup = await outcome(db.pool, `INSERT INTO ${t} VALUES (7, 'dup', '2026-03-20')`);
      out.upd = await outcome(db.pool, `UPDATE ${t} SET payload = 'during' WHERE id = 9`);
      await db.pool.query(`UPDATE ${t}_ctl SET payload = 'during' WHERE id = 9`);
    } finally {
      await old.query('ROLLBACK').catch(() => undefined);
      old.release();
      restore();
    }
    const back = await swapBackAnswered(h);
    out.phase = back.phase;
    const state = (
      await db.pool.query(`SELECT run_state FROM partflow.runs WHERE table_schema = 'public' AND table_name = $1`, [t])
    ).rows[0]?.run_state;
    console.log(JSON.stringify({ out, state, lastError: back.lastError }));
    // the application meanwhile: an update, and the duplicate removed
    out.after = await outcome(db.pool, `UPDATE ${t} SET payload = 'after' WHERE id = 10`);
    await db.pool.query(`UPDATE ${t}_ctl SET payload = 'after' WHERE id = 10`);
    out.undup = await outcome(db.pool, `DELETE FROM ${t} WHERE id = 7 AND created_at = '2026-03-20'`);
    await drained(t);
    await h.signal('rollback');
    const r = await ended(h);
    const d = await diff(t);
    console.log(JSON.stringify({ r, diff: d }));
    expect(out).toMatchObject({
      dup: '1 rows',
      upd: '1 rows',
      phase: 'rollback-window',
      after: '1 rows',
      undup: '1 rows',
    });
    expect(state).toBe('active');
    expect(back.lastError).toMatch(/^Rolling back public\.c1b now would lose rows: .*id \(7\) in more than one row/);
    expect(r).toBe('ok rolled-back');
    expect(d).toBe(0);
  });

  // The recheck applies again every row of a key held twice, not only the round's: here the round that saw id 5
  // twice copied the March row over the old table's id 5, and the round of its later DELETE took id 5 out of the
  // old table; the January row, never logged again, is back only because its key was parked with the duplicate.
  it('C1g. id 5 written twice, then the second row deleted: the rollback goes ahead, id 5 back as it was', async () => {
    const t = 'c1g';
    const h = await inWindow(t);
    const out: Record<string, string> = {};
    out.ins = await outcome(db.pool, `INSERT INTO ${t} VALUES (5, 'dup', '2026-03-15')`);
    await drained(t);
    out.oldAfterDup = (await db.pool.query(`SELECT payload FROM ${t}_old WHERE id = 5`)).rows[0]?.payload ?? 'none';
    out.del = await outcome(db.pool, `DELETE FROM ${t} WHERE id = 5 AND created_at = '2026-03-15'`);
    await drained(t);
    out.oldAfterDel = (await db.pool.query(`SELECT payload FROM ${t}_old WHERE id = 5`)).rows[0]?.payload ?? 'none';
    const { p, r, d } = await rollBack(h, t);
    out.phase = p.phase;
    console.log(JSON.stringify({ out, lastError: p.lastError, r, diff: d }));
    // what the rounds did to the old table before the rollback: the case the recheck has to put right
    expect(out).toMatchObject({ ins: '1 rows', oldAfterDup: 'dup', del: '1 rows', oldAfterDel: 'none' });
    expect(p.lastError ?? '').not.toMatch(/^Rolling back/);
    expect(r).toBe('ok rolled-back');
    expect(d).toBe(0);
  });

  // MENDED: a duplicate committed after the applier's last round and before the rollback signal was found only by
  // swapBack under its lock, and the run FAILED ("stays undoing"); the rollback check now applies the reverse log
  // first, so the refusal comes at the signal and the window goes on (attackHandover R1).
  it('C1c. a duplicate inserted and the rollback signalled at once (before any round): refused, the window goes on', async () => {
    const t = 'c1c';
    const h = await inWindow(t);
    const out: Record<string, string> = {};
    out.dup = await outcome(db.pool, `INSERT INTO ${t} VALUES (11, 'dup', '2026-03-21')`);
    await h.signal('rollback');
    const p = await answered(h);
    out.phase = p.phase;
    console.log(JSON.stringify({ out, lastError: p.lastError }));
    if (p.phase === 'rollback-window') await h.signal('finalize');
    const r = await ended(h);
    const rows = (await db.pool.query(`SELECT count(*)::int AS n, count(DISTINCT id)::int AS ids FROM ${t}`)).rows[0];
    // what the application is left with when the run failed
    const state = (
      await db.pool.query(`SELECT run_state FROM partflow.runs WHERE table_schema = 'public' AND table_name = $1`, [t])
    ).rows[0]?.run_state;
    const kind = (await db.pool.query(`SELECT relkind FROM pg_class WHERE oid = $1::regclass`, [t])).rows[0].relkind;
    await db.pool.query(`UPDATE ${t} SET payload = 'after' WHERE id = 12`);
    const rlog = await db.pool.query(`SELECT count(*)::int AS n FROM ${t}_pf_rlog`).then(
      (x) => String(x.rows[0].n),
      (e) => (e as Error).message,
    );
    console.log(JSON.stringify({ r, rows, state, kind, rlog }));
    expect(rows).toEqual({ n: 2001, ids: 2000 });
    expect(out.phase).toBe('rollback-window');
    expect(r).toBe('ok done');
  });

  it('C1d. legitimate writes: 1,500 rows moved a month in one UPDATE, ids changed, delete + re-insert in another month (one tx and two): no flag, rollback equals the record', async () => {
    const t = 'c1d';
    const h = await inWindow(t);
    const both = async (sql: string, ctlSql = sql) => {
      const a = await outcome(db.pool, sql.replace(/\bTT\b/g, t));
      const b = await outcome(db.pool, ctlSql.replace(/\bTT\b/g, `${t}_ctl`));
      return a === b ? a : `${a} / ctl ${b}`;
    };
    const out: Record<string, string> = {};
    out.move = await both(`UPDATE TT SET created_at = created_at + interval '1 month' WHERE id <= 1500`);
    out.rekey = await both(`UPDATE TT SET id = id + 100000 WHERE id BETWEEN 1501 AND 1700`);
    // two ids swapped in one statement (the new table's key has created_at, so it takes it; the control's PK (id)
    // does not, so the control reaches the same rows through a spare id)
    out.swap = await outcome(
      db.pool,
      `UPDATE ${t} SET id = CASE id WHEN 1701 THEN 1702 ELSE 1701 END, created_at = created_at + interval '2 months' WHERE id IN (1701, 1702)`,
    );
    await db.pool.query(
      `UPDATE ${t}_ctl SET id = -1701, created_at = created_at + interval '2 months' WHERE id = 1701`,
    );
    await db.pool.query(`UPDATE ${t}_ctl SET id = 1701, created_at = created_at + interval '2 months' WHERE id = 1702`);
    await db.pool.query(`UPDATE ${t}_ctl SET id = 1702 WHERE id = -1701`);
    out.tx = await both(
      `WITH d AS (DELETE FROM TT WHERE id = 1800 RETURNING id) INSERT INTO TT SELECT id, 'again', '2026-04-01' FROM d`,
    );
    out.del = await both(`DELETE FROM TT WHERE id = 1801`);
    out.reins = await both(`INSERT INTO TT VALUES (1801, 'back', '2026-05-01')`);
    out.copySelect = await both(
      `INSERT INTO TT SELECT id + 500000, payload, created_at FROM TT WHERE id BETWEEN 1900 AND 1950`,
    );
    await drained(t);
    const { p, r, d } = await rollBack(h, t);
    console.log(JSON.stringify({ out, phase: p.phase, lastError: p.lastError, r, diff: d }));
    expect(r).toBe('ok rolled-back');
    expect(d).toBe(0);
  });
});

describe('C1f. duplicates written in other ways', () => {
  it('UPDATE to an id another month holds, INSERT ... SELECT, ON CONFLICT (id, created_at): each recorded, rollback refused, finalize keeps every row', async () => {
    const t = 'c1f';
    const h = await inWindow(t);
    const out: Record<string, string> = {};
    // row 40 lives on 2026-01-11, row 41 on 2026-01-12: id 41 takes 40's place in its month
    out.updateId = await outcome(db.pool, `UPDATE ${t} SET id = 41 WHERE id = 40`);
    out.insertSelect = await outcome(
      db.pool,
      `INSERT INTO ${t} SELECT id, 'copy', created_at + interval '2 months' FROM ${t} WHERE id IN (50, 51)`,
    );
    out.onConflict = await outcome(
      db.pool,
      `INSERT INTO ${t} VALUES (60, 'oc', '2026-04-01') ON CONFLICT (id, created_at) DO NOTHING`,
    );
    await drained(t);
    out.rlog = String(await rlogCount(t));
    await h.signal('rollback');
    const p = await answered(h);
    out.phase = p.phase;
    console.log(JSON.stringify({ out, lastError: p.lastError }));
    if (p.phase === 'rollback-window') await h.signal('finalize');
    const r = await ended(h);
    const rows = (await db.pool.query(`SELECT count(*)::int AS n, count(DISTINCT id)::int AS ids FROM ${t}`)).rows[0];
    console.log(JSON.stringify({ r, rows }));
    expect(out).toEqual({
      updateId: '1 rows',
      insertSelect: '2 rows',
      onConflict: '1 rows',
      rlog: '0',
      phase: 'rollback-window',
    });
    for (const id of [41, 50, 51, 60]) expect(p.lastError).toContain(`id (${id}) in more than one row`);
    expect(r).toBe('ok done');
    expect(rows).toEqual({ n: 2003, ids: 1999 });
  });
});

/** t with UNIQUE (email) given up, 2,000 rows by default, its control (the constraint kept), in its rollback window */
const emailsInWindowOf = (t: string, rows = 2000) =>
  emailsInWindow(db.pool, start, t, { rows, batchSize: 500, timeoutMs: 120_000 });

describe('C1e. a uniqueness given up: one legitimate transaction of more than 1,000 changes', () => {
  // MENDED (pinned as a limit at first): a transaction that first renames 1,500 emails and then gives them back
  // rotated never breaks UNIQUE (email) (the control, with the constraint, commits it); its 3,000 log entries
  // are applied 1,000 a round, and a round copies a row whose new email another row of the old table still holds
  // (its change is in a later round): 23505, recorded, and a rollback was refused for good. Now the round parks
  // its keys and the rollback applies every parked key again in one round: the emails fit, the rollback goes on.
  it('rotating emails in one transaction: the rollback goes ahead and equals the record', async () => {
    const t = 'c1e';
    const h = await emailsInWindowOf(t);
    const out: Record<string, string> = {};
    for (const tt of [t, `${t}_ctl`]) {
      const c = await db.pool.connect();
      try {
        await c.query('BEGIN');
        await c.query(`UPDATE ${tt} SET email = 'tmp' || id WHERE id <= 1500`);
        await c.query(`UPDATE ${tt} SET email = 'e' || (id % 1500 + 1) WHERE id <= 1500`);
        out[tt] = await outcome(c, 'COMMIT');
      } finally {
        await c.query('ROLLBACK').catch(() => undefined);
        c.release();
      }
    }
    await drained(t);
    const oldRows = (await db.pool.query(`SELECT count(*)::int AS n FROM ${t}_old`)).rows[0].n;
    const recorded = await recordOf(t);
    const { p, r, d } = await rollBack(h, t);
    console.log(JSON.stringify({ out, oldRows, recorded, phase: p.phase, lastError: p.lastError, r, diff: d }));
    expect(out).toEqual({ [t]: 'null rows', [`${t}_ctl`]: 'null rows' });
    // a round did meet the email another row still held (what the rollback then applied again)
    expect(recorded ?? '').toMatch(/c1e_email_key|c1e_pfo_\d+/);
    expect(p.lastError ?? '').not.toMatch(/^Rolling back/);
    expect(r).toBe('ok rolled-back');
    expect(d).toBe(0);
  });
});

describe('C3. attack review of the parked keys (helper atk20): P1, the 10,000 cap counted parked entries, not keys', () => {
  // MENDED (failed on 7e8ac98). Each round that meets a 23505 parks ALL its keys (up to 1,000), again and again
  // for the same rows: nothing deduplicated the parked table. Eleven ordinary transactions (1,000 payload updates,
  // then two rows' unique emails swapped through a temporary value; the control, with UNIQUE (email), commits
  // each) parked 11,000 entries of 1,000 distinct keys. recheckParked counted entries (> RECHECK_MAX): it did
  // nothing, the record stood and the rollback was refused for good, although the old table can hold every row.
  // Now each key is parked once (a unique index on the key).
  it('eleven legitimate swaps of a unique value across a round boundary: the rollback goes ahead and equals the record', async () => {
    const t = 'p1';
    const h = await emailsInWindowOf(t);
    const out: Record<string, string> = {};
    for (let i = 1; i <= 11; i++) {
      // row 1 and row 1001 swap emails; the first 1,000 log entries (row 1's among them) are one round, which
      // copies row 1's new email while the old table's row 1001 still holds it (its change is the next round's)
      const [a, b] = i % 2 ? ['e1001', 'e1'] : ['e1', 'e1001'];
      for (const tt of [t, `${t}_ctl`]) {
        const c = await db.pool.connect();
        try {
          await c.query('BEGIN');
          await c.query(`UPDATE ${tt} SET payload = 'r${i}' WHERE id <= 1000`);
          await c.query(`UPDATE ${tt} SET email = 'tmp' WHERE id = 1001`);
          await c.query(`UPDATE ${tt} SET email = '${a}' WHERE id = 1`);
          await c.query(`UPDATE ${tt} SET email = '${b}' WHERE id = 1001`);
          const r = await outcome(c, 'COMMIT');
          if (r !== 'null rows') out[`${tt}#${i}`] = r;
        } finally {
          await c.query('ROLLBACK').catch(() => undefined);
          c.release();
        }
      }
      await drained(t);
    }
    const parked = (
      await db.pool.query(`SELECT count(*)::int AS n, count(DISTINCT (id, created_at))::int AS keys FROM ${t}_pf_rlost`)
    ).rows[0];
    const recorded = await recordOf(t);
    const { p, r, d } = await rollBack(h, t);
    console.log(JSON.stringify({ out, parked, recorded, phase: p.phase, lastError: p.lastError, r, diff: d }));
    expect(out).toEqual({});
    expect(recorded ?? '').toMatch(/p1_email_key|p1_pfo_\d+/);
    expect(parked.keys).toBeLessThanOrEqual(1001);
    expect(p.lastError ?? '').not.toMatch(/^Rolling back/);
    expect(r).toBe('ok rolled-back');
    expect(d).toBe(0);
  });
});

describe("C3b. more than 10,000 keys parked (the recheck under the swap back's lock takes 10,000 at most)", () => {
  // MENDED 2026-12-06 (fifth session; pinned as a limit before): one legitimate transaction rotating 12,000 unique
  // emails parks nearly every key (its 24,000 entries are applied 1,000 a round); more than RECHECK_MAX parked
  // keys were not applied again at all, so the record stood and the rollback was refused for good. The rollback's
  // check and the swap back's drain (outside the table's lock) now apply up to RECHECK_OUTSIDE_MAX parked keys.
  it('rotating 12,000 emails in one transaction: the rollback goes ahead and equals the record', async () => {
    const t = 'c3b';
    const h = await emailsInWindowOf(t, 12_000);
    const out: Record<string, string> = {};
    for (const tt of [t, `${t}_ctl`]) {
      const c = await db.pool.connect();
      try {
        await c.query('BEGIN');
        await c.query(`UPDATE ${tt} SET email = 'tmp' || id`);
        await c.query(`UPDATE ${tt} SET email = 'e' || (id % 12000 + 1)`);
        out[tt] = await outcome(c, 'COMMIT');
      } finally {
        await c.query('ROLLBACK').catch(() => undefined);
        c.release();
      }
    }
    await drained(t);
    const parked = (await db.pool.query(`SELECT count(*)::int AS n FROM ${t}_pf_rlost`)).rows[0].n;
    const recorded = await recordOf(t);
    const { p, r, d } = await rollBack(h, t);
    console.log(JSON.stringify({ out, parked, recorded, phase: p.phase, lastError: p.lastError, r, diff: d }));
    expect(out).toEqual({ [t]: 'null rows', [`${t}_ctl`]: 'null rows' });
    expect(parked).toBeGreaterThan(10_000);
    expect(recorded ?? '').toMatch(/c3b_email_key|c3b_pfo_\d+/);
    expect(p.lastError ?? '').not.toMatch(/^Rolling back/);
    expect(r).toBe('ok rolled-back');
    expect(d).toBe(0);
  });
});

describe('C3. P2, a duplicate committed before the rollback signal, behind a long transaction', () => {
  // MENDED (failed on 7e8ac98, and before it). rollbackBlocker's drain (drainKeyLog) stopped at the first round
  // of fewer than 1,000 DISTINCT keys; a transaction that changes each row ten times fills 1,000 entries with 100
  // keys, so one round was all the check applied (the reverse applier beside the window does one round a second),
  // and the duplicate committed before the signal was still in the log: the check answered null, the swap back
  // met id 1900 twice under its lock and the run FAILED ("stays undoing") instead of refusing with the window
  // going on (the refusal C1c expects for the same duplicate without the long transaction before it). Now the
  // check drains until the log has nothing committed left (5 s at most; the swap back's refusal under its lock
  // also returns the run to its window since C1b's mend).
  it('15,000 entries of 1,500 keys then id 1900 again in March, the rollback signalled at once: refused, the window goes on', async () => {
    const t = 'p2';
    const h = await inWindow(t);
    await drained(t);
    const out: Record<string, string> = {};
    out.long = await outcome(
      db.pool,
      `DO $$ BEGIN FOR i IN 1..1500 LOOP FOR j IN 1..10 LOOP
         UPDATE ${t} SET payload = 'v' || j WHERE id = i;
       END LOOP; END LOOP; END $$`,
    );
    out.dup = await outcome(db.pool, `INSERT INTO ${t} VALUES (1900, 'dup', '2026-03-20')`);
    out.rlogAtSignal = String(await rlogCount(t));
    await h.signal('rollback');
    const p = await answered(h);
    out.phase = p.phase;
    out.rlogAtAnswer = String(await rlogCount(t));
    console.log(JSON.stringify({ out, lastError: p.lastError }));
    if (p.phase === 'rollback-window') await h.signal('finalize');
    const r = await ended(h);
    const rows = (await db.pool.query(`SELECT count(*)::int AS n, count(DISTINCT id)::int AS ids FROM ${t}`)).rows[0];
    const state = (
      await db.pool.query(`SELECT run_state FROM partflow.runs WHERE table_schema = 'public' AND table_name = $1`, [t])
    ).rows[0]?.run_state;
    console.log(JSON.stringify({ r, rows, state }));
    expect(rows).toEqual({ n: 2001, ids: 2000 });
    expect(p.lastError ?? '').toMatch(
      /^Rolling back public\.p2 now would lose rows: .*id \(1900\) in more than one row/,
    );
    expect(out.phase).toBe('rollback-window');
    expect(r).toBe('ok done');
  });
});

/**
 * The rollback signalled: its answer `p` (a refusal, or the undo begun), then the run's end `r` (finalized when
 * refused) and the rows `d` that differ from the control.
 */
async function rollBack(h: WorkflowHandle, t: string) {
  await h.signal('rollback');
  const p = await answered(h);
  if (p.phase === 'rollback-window') await h.signal('finalize');
  const r = await ended(h);
  return { p, r, d: await diff(t) };
}

const kindOf = async (t: string) =>
  (await db.pool.query(`SELECT relkind FROM pg_class WHERE oid = $1::regclass`, [t])).rows[0].relkind as string;
const guardOn = async (t: string) =>
  (
    await db.pool.query(
      `SELECT count(*)::int AS n FROM pg_trigger WHERE tgrelid = $1::regclass AND tgname = 'partflow_snapshot_guard'`,
      [t],
    )
  ).rows[0].n as number;

/** ready(), then cut over: the run in its rollback window */
async function inWindow(t: string, input: Partial<PartitionTableInput> = {}, extra = '') {
  const h = await ready(t, input, extra);
  await h.signal('approveCutover');
  await waitFor(h, (p) => p.phase === 'rollback-window', 'cut over', 120_000);
  return h;
}

/** The swap back's answer after it was held: back in the window with a refusal, or the run's end. */
const swapBackAnswered = (h: WorkflowHandle) =>
  waitFor(
    h,
    (x) =>
      (x.phase === 'rollback-window' && (x.lastError ?? '').startsWith('Rolling back')) ||
      ['failed', 'rolled-back', 'done'].includes(x.phase),
    'the swap back answered',
    90_000,
  );

// The attack review of the held swap back and the return to the window (helper atk21, on 49d65de): C4a and C4d
// failed there (a stale swapBackHeld in the window; a finalize sent while held finalized the run at once after
// the refusal) and were mended; C4b and C4c held.
describe('C4. the held swap back (olderSnapshots wait at a rollback)', () => {
  it('C4a. held, a duplicate written meanwhile, the holder ends: back to the window with no stale swapBackHeld; the duplicate removed, the rollback goes ahead exact', async () => {
    const t = 'c4a';
    const h = await inWindow(t);
    const restore = handoverWait(1500);
    const out: Record<string, unknown> = {};
    const old = await rrSession();
    try {
      await h.signal('rollback');
      const held = await waitFor(h, (p) => (p.swapBackHeld?.attempts ?? 0) >= 1, 'swap back held', 60_000);
      out.heldPhase = held.phase;
      out.dup = await outcome(db.pool, `INSERT INTO ${t} VALUES (7, 'dup', '2026-03-20')`);
      out.upd = await outcome(db.pool, `UPDATE ${t} SET payload = 'during' WHERE id = 9`);
      await db.pool.query(`UPDATE ${t}_ctl SET payload = 'during' WHERE id = 9`);
    } finally {
      await old.query('ROLLBACK').catch(() => undefined);
      old.release();
      restore();
    }
    out.phase = (await swapBackAnswered(h)).phase;
    await sleep(3000);
    out.swapBackHeld = (await progress(h)).swapBackHeld;
    out.undup = await outcome(db.pool, `DELETE FROM ${t} WHERE id = 7 AND created_at = '2026-03-20'`);
    await drained(t);
    await h.signal('rollback');
    out.r = await ended(h);
    out.diff = await diff(t);
    out.kind = await kindOf(t);
    console.log(JSON.stringify(out));
    expect(out).toEqual({
      heldPhase: 'rolling-back',
      dup: '1 rows',
      upd: '1 rows',
      phase: 'rollback-window',
      swapBackHeld: null,
      undup: '1 rows',
      r: 'ok rolled-back',
      diff: 0,
      kind: 'r',
    });
  });

  it('C4b. approveCutover {olderSnapshots: guard} while the next attempt waits for the holder (junk arguments ignored): swapped back with the guard; the holder then gets 40001 on a row written in the window', async () => {
    const t = 'c4b';
    const h = await inWindow(t);
    await db.pool.query(`UPDATE ${t} SET payload = 'window' WHERE id = 11`);
    await db.pool.query(`UPDATE ${t}_ctl SET payload = 'window' WHERE id = 11`);
    await drained(t);
    const restore = handoverWait(1500);
    const out: Record<string, unknown> = {};
    const old = await rrSession();
    try {
      await h.signal('rollback');
      await waitFor(h, (p) => (p.swapBackHeld?.attempts ?? 0) >= 1, 'swap back held', 60_000);
      await sleep(4000); // the next attempt waits for the holder
      await h.signal('approveCutover', { olderSnapshots: 'junk' } as never);
      await h.signal('approveCutover', 'guard' as never);
      await sleep(3000);
      out.afterJunk = `${(await progress(h)).phase} ${await kindOf(t)}`;
      await h.signal('approveCutover', { olderSnapshots: 'guard' });
      // well before the waiting attempt's own 2 minutes: the signal cancels it
      for (let i = 0; i < 300 && (await kindOf(t)) !== 'r'; i++) await sleep(100);
      out.kind = await kindOf(t);
      out.guard = await guardOn(t);
      out.oldUpdate = (await outcome(old, `UPDATE ${t} SET payload = 'old' WHERE id = 11`)).slice(0, 5);
    } finally {
      await old.query('ROLLBACK').catch(() => undefined);
      old.release();
      restore();
    }
    out.r = await ended(h);
    out.diff = await diff(t);
    console.log(JSON.stringify(out));
    expect(out).toEqual({
      afterJunk: 'rolling-back p',
      kind: 'r',
      guard: 1,
      oldUpdate: '40001',
      r: 'ok rolled-back',
      diff: 0,
    });
  });

  it('C4c. acceptLostConstraints (a reverse handover since 2026-12-06): an RR writer reusing an email others inserted and deleted after its snapshot gets no error; the swap back quiet, no guard, rows exact', async () => {
    const t = 'c4c';
    const h = await inWindow(t, { acceptLostConstraints: ['c4c_email_key'] }, ', email text UNIQUE');
    const out: Record<string, unknown> = {};
    const ctl: Record<string, unknown> = {};
    const sessions: PoolClient[] = [];
    try {
      // the writer's snapshot, then others insert an email (applied to the old table) and delete it by a
      // transaction whose snapshot is older than that round (logged, not yet applied when the writer writes)
      const w = await rrSession();
      sessions.push(w);
      await db.pool.query(`INSERT INTO ${t} VALUES (9100, 'x', '2026-01-05', 'zz')`);
      const y = await rrSession();
      sessions.push(y);
      await drained(t);
      await h.signal('rollback');
      out.handingOver = await reverseHandingOver(db.pool, t);
      await sleep(300);
      out.yDelete = await outcome(y, `DELETE FROM ${t} WHERE id = 9100`);
      await y.query('COMMIT');
      out.insert = await outcome(w, `INSERT INTO ${t} VALUES (9101, 'w', '2026-01-05', 'zz')`);
      out.insertCommit = await outcome(w, 'COMMIT');
      // the control, UNIQUE (email) kept: the same order
      const wc = await rrSession();
      sessions.push(wc);
      await db.pool.query(`INSERT INTO ${t}_ctl VALUES (9100, 'x', '2026-01-05', 'zz')`);
      ctl.yDelete = await outcome(db.pool, `DELETE FROM ${t}_ctl WHERE id = 9100`);
      ctl.insert = await outcome(wc, `INSERT INTO ${t}_ctl VALUES (9101, 'w', '2026-01-05', 'zz')`);
      ctl.insertCommit = await outcome(wc, 'COMMIT');
    } finally {
      for (const c of sessions) {
        await c.query('ROLLBACK').catch(() => undefined);
        c.release();
      }
    }
    out.r = await ended(h);
    out.diff = await diff(t);
    out.kind = await kindOf(t);
    const back = (await activityResults(h)).find((r) => 'swapped' in r) as { handover?: { guarded: boolean } };
    out.guarded = back?.handover?.guarded ?? 'no handover';
    console.log(JSON.stringify({ out, ctl }));
    expect(ctl).toMatchObject({ insert: '1 rows' });
    expect(out).toEqual({
      handingOver: true,
      yDelete: '1 rows',
      insert: ctl.insert,
      insertCommit: ctl.insertCommit,
      r: 'ok rolled-back',
      diff: 0,
      kind: 'r',
      guarded: false,
    });
  });

  it('C4d. finalize signalled while the swap back is held, then the swap back refuses (a duplicate): the window goes on, not finalized by the earlier signal', async () => {
    const t = 'c4d';
    const h = await inWindow(t);
    const restore = handoverWait(1500);
    const out: Record<string, unknown> = {};
    const old = await rrSession();
    try {
      await h.signal('rollback');
      await waitFor(h, (p) => (p.swapBackHeld?.attempts ?? 0) >= 1, 'swap back held', 60_000);
      out.dup = await outcome(db.pool, `INSERT INTO ${t} VALUES (7, 'dup', '2026-03-20')`);
      await h.signal('finalize');
      await sleep(1000);
      out.heldPhase = (await progress(h)).phase;
    } finally {
      await old.query('ROLLBACK').catch(() => undefined);
      old.release();
      restore();
    }
    out.phase = (await swapBackAnswered(h)).phase;
    await sleep(3000);
    out.later = (await progress(h)).phase;
    await h.signal('finalize');
    out.r = await ended(h);
    console.log(JSON.stringify(out));
    expect(out).toEqual({
      dup: '1 rows',
      heldPhase: 'rolling-back',
      phase: 'rollback-window',
      later: 'rollback-window',
      r: 'ok done',
    });
  });
});

async function heldSince(h: WorkflowHandle, attempts = 1) {
  return waitFor(h, (p) => (p.cutoverHeld?.attempts ?? 0) >= attempts, `held ${attempts}`, 90_000);
}

describe('C2. olderSnapshots wait: the held cut-over', () => {
  it('C2a. held by an RR session; hostile approveCutover arguments ignored; writers of every level meanwhile as on the control; the holder ends: quiet swap, rows exact', async () => {
    const t = 'c2a';
    const h = await ready(t);
    const old = await rrSession();
    const out: Record<string, unknown> = {};
    let n = 0;
    try {
      await h.signal('approveCutover');
      await heldSince(h, 1);
      for (const junk of [
        'guard',
        null,
        ['guard'],
        { olderSnapshots: 'GUARD' },
        { olderSnapshots: { v: 'guard' } },
        { x: { olderSnapshots: 'guard' } },
        42,
      ])
        await h.signal('approveCutover', junk as never);
      await sleep(500);
      out.mode = (await progress(h)).olderSnapshots;
      // writers at each level while held and across the retries
      for (const level of ['READ COMMITTED', 'REPEATABLE READ', 'SERIALIZABLE']) {
        for (const tt of [t, `${t}_ctl`]) {
          const c = await db.pool.connect();
          const k = 100 + n;
          const res: string[] = [];
          try {
            await c.query(`BEGIN ISOLATION LEVEL ${level}`);
            res.push(await outcome(c, `INSERT INTO ${tt} VALUES (${9000 + n}, 'ins', '2026-02-03')`));
            res.push(await outcome(c, `UPDATE ${tt} SET payload = 'u' WHERE id = ${k}`));
            res.push(
              await outcome(c, `UPDATE ${tt} SET created_at = created_at + interval '1 month' WHERE id = ${k + 1}`),
            );
            res.push(await outcome(c, `UPDATE ${tt} SET id = ${20000 + n} WHERE id = ${k + 2}`));
            res.push(await outcome(c, `DELETE FROM ${tt} WHERE id = ${k + 3}`));
            await sleep(2500); // spans a retry
            res.push(await outcome(c, `UPDATE ${tt} SET payload = 'late' WHERE id = ${k + 4}`));
            res.push(await outcome(c, 'COMMIT'));
          } finally {
            await c.query('ROLLBACK').catch(() => undefined);
            c.release();
          }
          out[`${level}:${tt === t ? 't' : 'ctl'}`] = res.join(',');
        }
        n += 10;
      }
      const p = await progress(h);
      out.attempts = p.cutoverHeld?.attempts;
      out.stillHeld = p.phase;
    } finally {
      await old.query('ROLLBACK').catch(() => undefined);
      old.release();
    }
    const cut = await waitFor(h, (p) => p.phase === 'rollback-window', 'cut over', 180_000);
    out.guarded = cut.cutover?.handover?.guarded;
    const d = await diff(t);
    console.log(JSON.stringify({ out, d, heldAfter: cut.cutoverHeld }));
    await h.signal('finalize');
    await h.result();
    expect(out.mode).toBe('wait');
    for (const level of ['READ COMMITTED', 'REPEATABLE READ', 'SERIALIZABLE'])
      expect(out[`${level}:t`]).toBe(out[`${level}:ctl`]);
    expect(out.guarded).toBe(false);
    expect(d).toBe(0);
  });

  it('C2b. cancelled while held: rolled back, the plain table with every row and no partflow function left', async () => {
    const t = 'c2b';
    const h = await ready(t);
    const old = await rrSession();
    try {
      await h.signal('approveCutover');
      await heldSince(h, 1);
      await db.pool.query(`UPDATE ${t} SET payload = 'while held' WHERE id = 3`);
      await db.pool.query(`UPDATE ${t}_ctl SET payload = 'while held' WHERE id = 3`);
      await h.cancel();
      const r = await ended(h);
      console.log(JSON.stringify({ r }));
    } finally {
      await old.query('ROLLBACK').catch(() => undefined);
      old.release();
    }
    const kind = (await db.pool.query(`SELECT relkind FROM pg_class WHERE oid = $1::regclass`, [t])).rows[0].relkind;
    const left = (
      await db.pool.query(
        `SELECT count(*)::int AS n FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal`,
        [t],
      )
    ).rows[0].n;
    const d = await diff(t);
    console.log(JSON.stringify({ kind, left, d }));
    expect(kind).toBe('r');
    expect(left).toBe(0);
    expect(d).toBe(0);
  });

  it('C2c. a rollback signal while held: rolled back cleanly', async () => {
    const t = 'c2c';
    const h = await ready(t);
    const old = await rrSession();
    let r: string;
    try {
      await h.signal('approveCutover');
      await heldSince(h, 1);
      await db.pool.query(`DELETE FROM ${t} WHERE id = 4`);
      await db.pool.query(`DELETE FROM ${t}_ctl WHERE id = 4`);
      await h.signal('rollback');
      r = await ended(h);
    } finally {
      await old.query('ROLLBACK').catch(() => undefined);
      old.release();
    }
    const kind = (await db.pool.query(`SELECT relkind FROM pg_class WHERE oid = $1::regclass`, [t])).rows[0].relkind;
    const d = await diff(t);
    console.log(JSON.stringify({ r, kind, d }));
    expect(r).toBe('ok rolled-back');
    expect(kind).toBe('r');
    expect(d).toBe(0);
  });

  /** a session of short REPEATABLE READ transactions on t, with gaps (the cut-over's lock gets in between) */
  function shortReaders(
    t: string,
    seen: string[],
    opts: { sessions?: number; table?: string; txMs?: number; gapMs?: number } = {},
  ) {
    let stop = false;
    const { sessions = 1, table = t, txMs = 300, gapMs = 300 } = opts;
    const one = async (k: number) => {
      const c = await db.pool.connect();
      try {
        await sleep((k * (txMs + gapMs)) / sessions);
        while (!stop) {
          await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
          await c.query(`SELECT count(*) FROM ${table} WHERE id < 10`);
          // does this snapshot see partflow's latest apply into the copy? (the handover's mark)
          const v = await c
            .query(
              `SELECT pg_visible_in_snapshot(pg_sequence_last_value('${t}_pf_applied')::text::xid8, pg_current_snapshot()) AS v,
                      (SELECT backend_xmin::text FROM pg_stat_activity WHERE pid = pg_backend_pid()) AS xmin`,
            )
            .then(
              (r) => `${r.rows[0].v}@${r.rows[0].xmin}`,
              (e) => `err ${(e as { code?: string }).code}`,
            );
          if (!seen.includes(v)) seen.push(v);
          await sleep(txMs);
          await c.query('COMMIT');
          await sleep(gapMs);
        }
      } finally {
        await c.query('ROLLBACK').catch(() => undefined);
        c.release();
      }
    };
    const done = Promise.all(Array.from({ length: sessions }, (_, k) => one(k)));
    return async () => {
      stop = true;
      await done.catch(() => undefined);
    };
  }

  it('C2d. what holds no snapshot of this database does not hold it: idle-in-transaction RC without a write, an RR snapshot in another database, short RR transactions', async () => {
    const t = 'c2d';
    const h = await ready(t);
    const other = new Client({ ...db.conn, database: 'postgres' });
    await other.connect();
    const idle = await db.pool.connect();
    const seen: string[] = [];
    const stopReaders = shortReaders(t, seen);
    const started = Date.now();
    let cut;
    try {
      await other.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      await other.query('SELECT count(*) FROM pg_class');
      await idle.query('BEGIN');
      await idle.query(`SELECT count(*) FROM ${t}_ctl`); // not the table: its ACCESS SHARE would hold any DDL
      await h.signal('approveCutover');
      cut = await waitFor(
        h,
        (p) => p.phase === 'rollback-window' || (p.cutoverHeld?.attempts ?? 0) > 0,
        'cut or held',
        120_000,
      );
    } finally {
      await stopReaders();
      await other.query('ROLLBACK').catch(() => undefined);
      await other.end();
      await idle.query('ROLLBACK').catch(() => undefined);
      idle.release();
    }
    console.log(
      JSON.stringify({
        ms: Date.now() - started,
        phase: cut.phase,
        held: cut.cutoverHeld,
        handover: cut.cutover?.handover,
        seen,
      }),
    );
    if (cut.phase !== 'rollback-window') await waitFor(h, (p) => p.phase === 'rollback-window', 'cut over', 180_000);
    await h.signal('finalize');
    await h.result();
    expect(cut.phase).toBe('rollback-window');
    expect(cut.cutoverHeld).toBeFalsy();
  });

  // held: the handover lists the sessions once and waits for those transactions only; later ones (whose xmin an
  // open xid elsewhere pins below the mark) are not listed, so neither an idle writer elsewhere nor a prepared
  // transaction holds the cut-over
  for (const holder of ['none (control)', 'idle writer of another table', 'prepared transaction'] as const) {
    it(`C2e. an open xid elsewhere (${holder}) and overlapping short RR readers of another table whose snapshots see the last apply: the cut-over is not held`, async () => {
      const t = { 'none (control)': 'c2g', 'idle writer of another table': 'c2e', 'prepared transaction': 'c2f' }[
        holder
      ];
      const h = await ready(t);
      const w = await db.pool.connect();
      const seen: string[] = [];
      let stopReaders = async () => undefined as void;
      let cut;
      const mpx = Number((await db.pool.query(`SHOW max_prepared_transactions`)).rows[0].max_prepared_transactions);
      if (holder === 'prepared transaction' && mpx === 0) return;
      try {
        await w.query('BEGIN');
        if (holder !== 'none (control)') await w.query(`UPDATE ${t}_ctl SET payload = 'open' WHERE id = 1`);
        if (holder === 'prepared transaction') await w.query(`PREPARE TRANSACTION 'atk19_${t}'`);
        // the application writes the table now and then (its keys logged and applied: the applier's mark is set)
        for (let i = 0; i < 20; i++) await db.pool.query(`UPDATE ${t} SET payload = 'w' || $1 WHERE id = $1`, [i + 1]);
        await sleep(1500);
        // readers of another table (no lock on t), two sessions, always one in a transaction; some RC writes too
        stopReaders = shortReaders(t, seen, { sessions: 2, table: `${t}_ctl`, txMs: 600, gapMs: 100 });
        await sleep(700);
        await h.signal('approveCutover');
        cut = await waitFor(h, (p) => p.phase === 'rollback-window', 'cut over', 45_000).catch(() => progress(h));
      } finally {
        await stopReaders();
        if (holder === 'prepared transaction')
          await db.pool.query(`ROLLBACK PREPARED 'atk19_${t}'`).catch(() => undefined);
        await w.query('ROLLBACK').catch(() => undefined);
        w.release();
      }
      console.log(
        JSON.stringify({
          holder,
          phase: cut.phase,
          held: cut.cutoverHeld,
          lastError: cut.lastError?.slice(0, 400),
          seen,
        }),
      );
      const after = await waitFor(h, (p) => p.phase === 'rollback-window', 'cut over once the xid ended', 180_000);
      console.log(JSON.stringify({ afterHandover: after.cutover?.handover }));
      await h.signal('finalize');
      await h.result();
      expect(seen.length).toBeGreaterThan(0);
      expect(seen.every((x) => x.startsWith('true'))).toBe(true);
      expect(cut.cutoverHeld).toBeFalsy();
      expect(cut.phase).toBe('rollback-window');
    });
  }

  it('C2h. RR and SERIALIZABLE writers spanning the held handover and its hand back (and the next attempt): same outcomes as the control, rows exact', async () => {
    const t = 'c2h';
    const h = await ready(t);
    const oid = Number((await db.pool.query(`SELECT $1::regclass::oid AS o`, [t])).rows[0].o);
    const handingOver = async () =>
      (
        await db.pool.query(
          `SELECT prosrc LIKE '%pg_try_advisory_xact_lock_shared%' AS on FROM pg_proc WHERE oid = to_regproc($1)`,
          [`partflow.fwd_${oid}`],
        )
      ).rows[0]?.on === true;
    const restore = handoverWait(8000);
    const old = await rrSession();
    const out: Record<string, string> = {};
    const levels = ['REPEATABLE READ', 'SERIALIZABLE', 'READ COMMITTED'];
    const cs: PoolClient[] = [];
    try {
      await db.pool.query(`UPDATE ${t} SET payload = 'logged' WHERE id BETWEEN 1 AND 30`);
      await db.pool.query(`UPDATE ${t}_ctl SET payload = 'logged' WHERE id BETWEEN 1 AND 30`);
      await h.signal('approveCutover');
      for (let i = 0; i < 100 && !(await handingOver()); i++) await sleep(50);
      out.on = String(await handingOver());
      // phase 1, during the handover: each writer (table and control) begins and writes
      for (const [li, level] of levels.entries()) {
        for (const tt of [t, `${t}_ctl`]) {
          const c = await db.pool.connect();
          cs.push(c);
          const k = 200 + li * 20;
          const r: string[] = [];
          await c.query(`BEGIN ISOLATION LEVEL ${level}`);
          r.push(await outcome(c, `UPDATE ${tt} SET payload = 'h1' WHERE id = ${k}`));
          r.push(await outcome(c, `INSERT INTO ${tt} VALUES (${7000 + li}, 'h1', '2026-02-10')`));
          r.push(await outcome(c, `UPDATE ${tt} SET created_at = created_at + interval '1 month' WHERE id = ${k + 1}`));
          r.push(await outcome(c, `UPDATE ${tt} SET payload = payload || '+h1' WHERE id = ${1 + li}`)); // a logged row
          out[`${level}:${tt === t ? 't' : 'ctl'}`] = r.join(',');
        }
      }
      // the handover's deadline passes: held, the function handed back
      const p = await waitFor(h, (x) => (x.cutoverHeld?.attempts ?? 0) >= 1, 'held', 60_000);
      out.heldOn = String(await handingOver());
      out.attempts = String(p.cutoverHeld?.attempts);
      // phase 2, after the hand back: the same transactions go on (the same rows again, an id change, a delete)
      let n = 0;
      for (const [li, level] of levels.entries()) {
        for (const tt of [t, `${t}_ctl`]) {
          const c = cs[n++];
          const k = 200 + li * 20;
          const r: string[] = [];
          r.push(await outcome(c, `UPDATE ${tt} SET payload = payload || '+h2' WHERE id = ${k}`));
          r.push(await outcome(c, `UPDATE ${tt} SET payload = 'h2' WHERE id = ${7000 + li}`));
          r.push(await outcome(c, `UPDATE ${tt} SET id = ${30000 + li} WHERE id = ${k + 1}`));
          r.push(await outcome(c, `DELETE FROM ${tt} WHERE id = ${k + 2}`));
          r.push(await outcome(c, `UPDATE ${tt} SET payload = payload || '+h2' WHERE id = ${1 + li}`));
          r.push(await outcome(c, 'COMMIT'));
          out[`${level}:${tt === t ? 't' : 'ctl'}`] += ' | ' + r.join(',');
        }
      }
    } finally {
      for (const c of cs) {
        await c.query('ROLLBACK').catch(() => undefined);
        c.release();
      }
      await old.query('ROLLBACK').catch(() => undefined);
      old.release();
      restore();
    }
    const cut = await waitFor(h, (p) => p.phase === 'rollback-window', 'cut over', 180_000);
    const d = await diff(t);
    console.log(JSON.stringify({ out, d, handover: cut.cutover?.handover }));
    await h.signal('finalize');
    await h.result();
    expect(out.on).toBe('true');
    expect(out.heldOn).toBe('false');
    for (const level of levels) expect(out[`${level}:t`]).toBe(out[`${level}:ctl`]);
    expect(d).toBe(0);
  });

  // 'cancel' held; 'rollback' was a defect, MENDED (see C2k): the rollback waited for the holder (observed 60 s, the time
  // this test kept it open; up to HELD_WAIT_MS, 2 min)
  for (const how of ['rollback', 'cancel'] as const) {
    it(`C2i. ${how} while the next attempt waits for the holder (stillHeld, up to 2 min): undone promptly`, async () => {
      const t = how === 'rollback' ? 'c2i' : 'c2j';
      const h = await ready(t);
      const old = await rrSession();
      const res = { r: '', ms: 0 };
      let attempts: number | undefined;
      try {
        await h.signal('approveCutover');
        await heldSince(h, 1);
        await sleep(4000); // the workflow's 2 s pause has passed: attempt 2 waits in stillHeld
        attempts = (await progress(h)).cutoverHeld?.attempts;
        const t0 = Date.now();
        if (how === 'rollback') await h.signal('rollback');
        else await h.cancel();
        res.r = await Promise.race([ended(h), sleep(60_000).then(() => 'not ended within 60 s')]);
        res.ms = Date.now() - t0;
      } finally {
        await old.query('ROLLBACK').catch(() => undefined);
        old.release();
      }
      if (res.r === 'not ended within 60 s') res.r += ` then ${await ended(h)}`;
      const { r, ms } = res;
      const kind = (await db.pool.query(`SELECT relkind FROM pg_class WHERE oid = $1::regclass`, [t])).rows[0].relkind;
      const d = await diff(t);
      console.log(JSON.stringify({ how, attempts, r, ms, kind, d }));
      expect(kind).toBe('r');
      expect(d).toBe(0);
      expect(ms).toBeLessThan(15_000);
    });
  }

  // MENDED (C2i rollback above, C2k): a rollback signal did not stop the attempt that waits in stillHeld: the
  // workflow acts on it only when that activity returns (up to 2 minutes while the holder stays); if the holder
  // ends meanwhile, the attempt hands over and SWAPS after the rollback was asked for, and the undo swaps back.
  it('C2k. rollback while the next attempt waits in stillHeld, then the holder ends: no cut-over after the rollback request', async () => {
    const t = 'c2k';
    const h = await ready(t);
    const old = await rrSession();
    try {
      await h.signal('approveCutover');
      await heldSince(h, 1);
      await sleep(4000);
      await h.signal('rollback');
      await sleep(2000);
    } finally {
      await old.query('ROLLBACK').catch(() => undefined);
      old.release();
    }
    const r = await ended(h);
    const events = (await h.fetchHistory()).events ?? [];
    const sched = new Map<string, string>();
    const trail: string[] = [];
    for (const e of events) {
      const s0 = e.activityTaskScheduledEventAttributes;
      if (s0) sched.set(String(e.eventId), s0.activityType?.name ?? '');
      if (e.workflowExecutionSignaledEventAttributes)
        trail.push(`signal ${e.workflowExecutionSignaledEventAttributes.signalName}`);
      const c = e.activityTaskCompletedEventAttributes;
      if (c) trail.push(`done ${sched.get(String(c.scheduledEventId))}`);
      const f = e.activityTaskFailedEventAttributes;
      if (f) trail.push(`failed ${sched.get(String(f.scheduledEventId))}`);
    }
    const tail = trail.slice(trail.findIndex((x) => x === 'signal approveCutover'));
    const kind = (await db.pool.query(`SELECT relkind FROM pg_class WHERE oid = $1::regclass`, [t])).rows[0].relkind;
    const d = await diff(t);
    console.log(JSON.stringify({ r, tail, kind, d }));
    expect(r).toBe('ok rolled-back');
    expect(kind).toBe('r');
    expect(d).toBe(0);
    const afterRollback = tail.slice(tail.indexOf('signal rollback'));
    expect(afterRollback).not.toContain('done cutover');
  });
});
