/**
 * Attack review (helper-24, 2026-12-06, own cluster) of c81fcd9 (recheck of up to 200,000 parked keys outside the
 * table's lock): every attack held.
 * Modelled on attackHeld.test.ts.
 */
import type { WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { PartitionTableInput } from '../../src/input';
import type { TestDb } from '../helpers/pg';
import { startStack, Stack } from '../helpers/stack';
import { sleep, waitFor } from '../helpers/workflow';
import { emailsInWindow, ended, outcome, reverseLogDrained, rollbackRecord, rowsDiffering } from '../helpers/attack';

const TQ = 'partflow-attack-26';
let stack: Stack;
let env: TestWorkflowEnvironment;
let db: TestDb;
let seq = 0;

beforeAll(async () => {
  stack = await startStack('atk26', TQ);
  ({ env, db } = stack);
});
afterAll(async () => {
  await stack?.teardown();
});

const diff = (t: string, ctl?: string) => rowsDiffering(db.pool, t, ctl);
const recordOf = (t: string) => rollbackRecord(db.pool, t);
const drained = (t: string) => reverseLogDrained(db.pool, t, 300_000);

function start(input: PartitionTableInput): Promise<WorkflowHandle> {
  return env.client.workflow.start('partitionTable', {
    taskQueue: TQ,
    workflowId: `atk26-${++seq}-${Date.now()}`,
    args: [input],
  });
}
async function answered(h: WorkflowHandle, ms = 240_000) {
  return waitFor(
    h,
    (x) => (x.lastError ?? '').startsWith('Rolling back') || x.phase !== 'rollback-window',
    'the rollback answered',
    ms,
  );
}
/** activity attempts and timeouts of rollbackBlocker / swapBack in the history */
async function attempts(h: WorkflowHandle): Promise<Record<string, unknown>> {
  const history = await h.fetchHistory();
  const sched = new Map<string, string>();
  const out: Record<string, unknown> = {};
  for (const e of history.events ?? []) {
    const s = e.activityTaskScheduledEventAttributes;
    if (s) sched.set(String(e.eventId), s.activityType?.name ?? '?');
    const st = e.activityTaskStartedEventAttributes;
    if (st) {
      const n = sched.get(String(st.scheduledEventId));
      if (n === 'rollbackBlocker' || n === 'swapBack') out[`${n}.attempt`] = st.attempt;
      if ((st.lastFailure?.message ?? '') && (n === 'rollbackBlocker' || n === 'swapBack'))
        out[`${n}.lastFailure`] = st.lastFailure?.message;
    }
    const to = e.activityTaskTimedOutEventAttributes;
    if (to) out[`timedOut.${sched.get(String(to.scheduledEventId))}`] = to.failure?.message ?? 'timeout';
    const f = e.activityTaskFailedEventAttributes;
    if (f) out[`failed.${sched.get(String(f.scheduledEventId))}`] = f.failure?.message ?? 'failed';
  }
  return out;
}

/** t with n unique emails in its rollback window, uniqueness given up */
const emailsInWindowOf = (t: string, rows: number) =>
  emailsInWindow(db.pool, start, t, { rows, batchSize: 5000, timeoutMs: 600_000, analyze: true });

/** one transaction rotating n emails, on t and its control */
async function rotate(t: string, n: number): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const tt of [t, `${t}_ctl`]) {
    const c = await db.pool.connect();
    try {
      await c.query('BEGIN');
      await c.query(`UPDATE ${tt} SET email = 'tmp' || id WHERE id <= $1`, [n]);
      await c.query(`UPDATE ${tt} SET email = 'e' || (id % $1 + 1) WHERE id <= $1`, [n]);
      out[tt] = await outcome(c, 'COMMIT');
    } finally {
      await c.query('ROLLBACK').catch(() => undefined);
      c.release();
    }
  }
  return out;
}

/** the application writing single rows on t and its control until stopped: its slowest statement on t */
function writer(t: string, from: number) {
  let stop = false;
  let max = 0;
  let n = 0;
  const errors: string[] = [];
  const done = (async () => {
    for (let i = 0; !stop; i++) {
      const id = from + (i % 500);
      for (const tt of [t, `${t}_ctl`]) {
        const t0 = Date.now();
        try {
          await db.pool.query(`UPDATE ${tt} SET payload = $2 WHERE id = $1`, [id, `w${i}`]);
        } catch (e) {
          errors.push(`${tt}: ${(e as Error).message}`);
        }
        if (tt === t) max = Math.max(max, Date.now() - t0);
      }
      n++;
      await sleep(20);
    }
  })();
  return {
    end: async () => {
      stop = true;
      await done;
      return { max, n, errors: errors.slice(0, 3) };
    },
  };
}

describe('A1. 100,000 keys parked: the rollback check applies them again in one round', () => {
  it('rotating 100,000 emails in one transaction, the application writing meanwhile: the rollback goes ahead, exact', async () => {
    const t = 'a1';
    const N = 100_000;
    const h = await emailsInWindowOf(t, N);
    const out = await rotate(t, N);
    const t0 = Date.now();
    await drained(t);
    const drainMs = Date.now() - t0;
    const parked = (await db.pool.query(`SELECT count(*)::int AS n FROM ${t}_pf_rlost`)).rows[0].n;
    const recorded = await recordOf(t);
    const w = writer(t, N - 1000);
    await sleep(1000);
    const t1 = Date.now();
    await h.signal('rollback');
    const p = await answered(h);
    const answerMs = Date.now() - t1;
    const wr = await w.end();
    if (p.phase === 'rollback-window') await h.signal('finalize');
    const r = await ended(h);
    const d = await diff(t);
    const a = await attempts(h);
    console.log(
      JSON.stringify({ out, drainMs, parked, recorded, answerMs, phase: p.phase, lastError: p.lastError, r, d, wr, a }),
    );
    expect(out).toEqual({ [t]: 'null rows', [`${t}_ctl`]: 'null rows' });
    expect(parked).toBeGreaterThan(10_000);
    expect(p.lastError ?? '').not.toMatch(/^Rolling back/);
    expect(r).toBe('ok rolled-back');
    expect(d).toBe(0);
  }, 1_500_000);
});

describe('A2. 50,000 rotated keys parked and one true duplicate among them', () => {
  it('the rollback is refused with the duplicate; once it is removed, the rollback goes ahead, exact', async () => {
    const t = 'a2';
    const N = 50_000;
    const h = await emailsInWindowOf(t, N);
    const out = await rotate(t, N);
    // a true duplicate: row 7's email written into row 49,990 (the control's UNIQUE refuses it)
    out.dup = await outcome(db.pool, `UPDATE ${t} SET email = 'e8' WHERE id = 49990`);
    out.dupCtl = await outcome(db.pool, `UPDATE ${t}_ctl SET email = 'e8' WHERE id = 49990`);
    await drained(t);
    const parked = (await db.pool.query(`SELECT count(*)::int AS n FROM ${t}_pf_rlost`)).rows[0].n;
    const recorded = await recordOf(t);
    await h.signal('rollback');
    const p = await answered(h);
    const recorded2 = await recordOf(t);
    const parked2 = (await db.pool.query(`SELECT count(*)::int AS n FROM ${t}_pf_rlost`)).rows[0].n;
    const a = await attempts(h);
    console.log(
      JSON.stringify({ out, parked, recorded, phase: p.phase, lastError: p.lastError, recorded2, parked2, a }),
    );
    expect(out.dup).toBe('1 rows');
    expect(out.dupCtl).toMatch(/^23505/);
    expect(p.phase).toBe('rollback-window');
    expect(p.lastError ?? '').toMatch(/^Rolling back/);
    expect(recorded2).not.toBeNull();
    // the duplicate removed as the control has it: the rollback goes ahead
    await db.pool.query(`UPDATE ${t} SET email = 'e' || (id % $1 + 1) WHERE id = 49990`, [N]);
    await drained(t);
    await h.signal('rollback');
    const p2 = await answered(h);
    if (p2.phase === 'rollback-window') await h.signal('finalize');
    const r = await ended(h);
    const d = await diff(t);
    console.log(JSON.stringify({ phase2: p2.phase, lastError2: p2.lastError, r, d, a: await attempts(h) }));
    expect(r).toBe('ok rolled-back');
    expect(d).toBe(0);
  }, 1_500_000);
});

describe('A3. a plan made before countUpTo keeps the 10,000 cap', () => {
  it('12,000 rotated keys parked, the stored plan without recheck.countUpTo: refused (the record stands); with it back: rolled back, exact', async () => {
    const t = 'a3';
    const h = await emailsInWindowOf(t, 12_000);
    const out = await rotate(t, 12_000);
    await drained(t);
    const parked = (await db.pool.query(`SELECT count(*)::int AS n FROM ${t}_pf_rlost`)).rows[0].n;
    const row = (await db.pool.query(`SELECT plan FROM partflow.runs WHERE table_name = $1`, [t])).rows[0];
    const plan = JSON.parse(row.plan);
    const had = typeof plan.sql.reverseKeyLog.recheck.countUpTo;
    const countUpTo = plan.sql.reverseKeyLog.recheck.countUpTo;
    delete plan.sql.reverseKeyLog.recheck.countUpTo;
    await db.pool.query(`UPDATE partflow.runs SET plan = $2 WHERE table_name = $1`, [t, JSON.stringify(plan)]);
    await h.signal('rollback');
    const p = await answered(h);
    const parked2 = (await db.pool.query(`SELECT count(*)::int AS n FROM ${t}_pf_rlost`)).rows[0].n;
    console.log(
      JSON.stringify({ out, parked, had, phase: p.phase, lastError: (p.lastError ?? '').slice(0, 200), parked2 }),
    );
    expect(parked).toBeGreaterThan(10_000);
    expect(p.phase).toBe('rollback-window');
    expect(p.lastError ?? '').toMatch(/^Rolling back/);
    expect(parked2).toBe(parked);
    plan.sql.reverseKeyLog.recheck.countUpTo = countUpTo;
    await db.pool.query(`UPDATE partflow.runs SET plan = $2 WHERE table_name = $1`, [t, JSON.stringify(plan)]);
    await h.signal('rollback');
    const p2 = await waitFor(h, (x) => x.phase !== 'rollback-window', 'rolled back', 120_000);
    const r = await ended(h);
    const d = await diff(t);
    console.log(JSON.stringify({ phase2: p2.phase, r, d }));
    expect(r).toBe('ok rolled-back');
    expect(d).toBe(0);
  }, 900_000);
});
