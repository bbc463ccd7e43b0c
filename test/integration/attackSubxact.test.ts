/**
 * Attack review (helper-23, 2026-12-06, own cluster) of 8aa505c (the handover's subtransaction for writers that are not READ COMMITTED)
 * and 9957b9d (acceptLostConstraints runs get the swap back's handover). Every statement also runs on a control.
 */
import type { WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { PoolClient } from 'pg';
import type { PartitionTableInput } from '../../src/input';
import type { TestDb } from '../helpers/pg';
import { handoverWait, startStack, Stack } from '../helpers/stack';
import { progress, sleep, waitFor } from '../helpers/workflow';
import {
  ended,
  handingOverWithin,
  oidOf as oidOfTable,
  outcome,
  reverseHandingOver,
  rowsDiffering,
  sessionAt,
  tableWithControl,
} from '../helpers/attack';

const TQ = 'partflow-attack-25';
let stack: Stack;
let env: TestWorkflowEnvironment;
let db: TestDb;
let seq = 0;

beforeAll(async () => {
  stack = await startStack('atk25', TQ);
  ({ env, db } = stack);
});

afterAll(async () => {
  await stack?.teardown();
});

const session = (level: string) => sessionAt(db.pool, level);
const diff = (t: string, ctl?: string) => rowsDiffering(db.pool, t, ctl);

const oidOf = (t: string) => oidOfTable(db.pool, t);
const waitHandingOver = async (oid: number) => expect(await handingOverWithin(db.pool, oid)).toBe(true);

function start(input: PartitionTableInput): Promise<WorkflowHandle> {
  return env.client.workflow.start('partitionTable', {
    taskQueue: TQ,
    workflowId: `atk25-${++seq}-${Date.now()}`,
    args: [input],
  });
}

async function count(sql: string): Promise<number> {
  return (await db.pool.query(sql)).rows[0].n;
}
async function drained(log: string): Promise<void> {
  for (let i = 0; i < 200 && (await count(`SELECT count(*)::int AS n FROM ${log}`)) > 0; i++) await sleep(100);
}
async function diffRows(t: string, ctl = `${t}_ctl`): Promise<unknown[]> {
  return (
    await db.pool.query(
      `SELECT a.*::text AS t, b.*::text AS c FROM ${t} a FULL JOIN ${ctl} b USING (id)
        WHERE (a.*)::text IS DISTINCT FROM (b.*)::text ORDER BY coalesce(a.id, b.id) LIMIT 20`,
    )
  ).rows;
}
const kindOf = async (t: string) =>
  (await db.pool.query(`SELECT relkind FROM pg_class WHERE oid = $1::regclass`, [t])).rows[0].relkind as string;

async function ready(t: string, input: Partial<PartitionTableInput> = {}, extra = '') {
  await tableWithControl(db.pool, t, extra);
  const h = await start({ table: t, batchSize: 500, approval: 'signal', rollbackWindow: '1h', ...input });
  await waitFor(h, (p) => p.phase === 'awaiting-approval', 'verified', 120_000);
  return h;
}

describe('A1. forward handover: one REPEATABLE READ / SERIALIZABLE transaction of multi-row statements, some rows own-written, some falling back to the log', () => {
  for (const level of ['REPEATABLE READ', 'SERIALIZABLE']) {
    it(`${level}: every statement as on the control, the table equal to the control after the cut-over`, async () => {
      const t = level === 'SERIALIZABLE' ? 'a1s' : 'a1r';
      const h = await ready(t);
      const oid = await oidOf(t);
      const restore = handoverWait(30_000);
      const out: string[] = [];
      const ctl: string[] = [];
      const info: Record<string, unknown> = {};
      const sessions: PoolClient[] = [];
      const stmts = (tbl: string) => [
        // own writes, moving rows across months
        `UPDATE ${tbl} SET payload = 'w1', created_at = created_at + interval '1 month' WHERE id BETWEEN 1 AND 80`,
        // multi-row insert: 4990..4999 fresh (own), 5000..5009 inserted+deleted by others after the snapshot
        `INSERT INTO ${tbl} SELECT g, 'w2', '2026-01-05'::timestamptz + (g % 3) * interval '1 month' FROM generate_series(4990, 5009) g`,
        // the same rows again (some own, some logged), moving months too
        `UPDATE ${tbl} SET payload = 'w3', created_at = created_at + interval '1 month' WHERE id BETWEEN 4985 AND 5009`,
        // key changes over own-written and logged rows
        `UPDATE ${tbl} SET id = id + 10000 WHERE id BETWEEN 4995 AND 5004`,
        // rows first written own, then deleted; rows written in statement 1 deleted
        `DELETE FROM ${tbl} WHERE id IN (4990, 4991, 5005, 5006, 10, 11, 12)`,
        // a re-insert of a key deleted in this transaction (own) and of the key change's old key
        `INSERT INTO ${tbl} VALUES (4990, 'again', '2026-02-02'), (5000, 'again', '2026-03-03'), (10, 'again', '2026-01-09')`,
        `UPDATE ${tbl} SET payload = payload || '+' WHERE id IN (4990, 5000, 10, 15000, 14995, 5007)`,
      ];
      try {
        const w = await session(level);
        sessions.push(w);
        await db.pool.query(`INSERT INTO ${t} SELECT g, 'x', '2026-01-05' FROM generate_series(5000, 5009) g`);
        const y = await session('REPEATABLE READ');
        sessions.push(y);
        await drained(`${t}_pf_log`);
        await h.signal('approveCutover');
        await waitHandingOver(oid);
        await sleep(300);
        out.push('yDelete ' + (await outcome(y, `DELETE FROM ${t} WHERE id BETWEEN 5000 AND 5009`)));
        // w's first statement writes the copy itself (holding the applier's lock shared): no round applies y's
        // delete before w's INSERT meets the rows in the copy
        const [first, ...rest] = stmts(t);
        out.push(await outcome(w, first));
        await y.query('COMMIT');
        info.logBefore = await count(`SELECT count(*)::int AS n FROM ${t}_pf_log`);
        for (const s of rest) out.push(await outcome(w, s));
        info.wSeesInLog = (await w.query(`SELECT count(*)::int AS n FROM ${t}_pf_log`)).rows[0].n;
        out.push('commit ' + (await outcome(w, 'COMMIT')));
        // the control in the same order
        const wc = await session(level);
        sessions.push(wc);
        await db.pool.query(`INSERT INTO ${t}_ctl SELECT g, 'x', '2026-01-05' FROM generate_series(5000, 5009) g`);
        ctl.push('yDelete ' + (await outcome(db.pool, `DELETE FROM ${t}_ctl WHERE id BETWEEN 5000 AND 5009`)));
        const [cf, ...cr] = stmts(`${t}_ctl`);
        ctl.push(await outcome(wc, cf));
        for (const s of cr) ctl.push(await outcome(wc, s));
        ctl.push('commit ' + (await outcome(wc, 'COMMIT')));
      } finally {
        for (const c of sessions) {
          await c.query('ROLLBACK').catch(() => undefined);
          c.release();
        }
        restore();
      }
      const cut = await waitFor(h, (p) => p.phase === 'rollback-window', 'cut over', 120_000);
      const d = await diff(t);
      const rows = d ? await diffRows(t) : [];
      console.log(JSON.stringify({ level, info, out, ctl, handover: cut.cutover?.handover, d, rows }));
      await h.signal('finalize');
      const r = await ended(h);
      expect(out).toEqual(ctl);
      // the subtransaction's fallback ran: some of w's changes were logged, not written into the copy
      expect(Number(info.wSeesInLog)).toBeGreaterThan(0);
      expect(d).toBe(0);
      expect(r).toBe('ok done');
    });
  }
});

describe('A2. acceptLostConstraints: true duplicates of the given-up UNIQUE (email) written during the swap back handover', () => {
  it('RC and RR writers: no error, the rollback refused (not losing rows); once the duplicates are gone it goes ahead, exact', async () => {
    const t = 'a2';
    const h = await ready(t, { acceptLostConstraints: ['a2_email_key'] }, ', email text UNIQUE');
    await db.pool.query(`ALTER TABLE ${t}_ctl DROP CONSTRAINT a2_ctl_email_key`);
    await h.signal('approveCutover');
    await waitFor(h, (p) => p.phase === 'rollback-window', 'cut over', 120_000);
    const restore = handoverWait(20_000);
    const out: Record<string, unknown> = {};
    const ctl: Record<string, unknown> = {};
    const sessions: PoolClient[] = [];
    const statements = (tbl: string) => ({
      rc1: `INSERT INTO ${tbl} VALUES (9200, 'a', '2026-01-05', 'dup@x')`,
      rc2: `INSERT INTO ${tbl} VALUES (9201, 'b', '2026-02-05', 'dup@x')`,
      rr: `INSERT INTO ${tbl} VALUES (9202, 'c', '2026-01-06', 'dup@x')`,
      rrUpd: `UPDATE ${tbl} SET email = 'dup@x' WHERE id IN (3, 4)`,
      transient1: `INSERT INTO ${tbl} VALUES (9203, 'd', '2026-01-07', 'tr@x'), (9204, 'e', '2026-03-07', 'tr@x')`,
      transient2: `DELETE FROM ${tbl} WHERE id = 9204`,
    });
    try {
      const old = await session('REPEATABLE READ'); // holds the swap back's handover
      sessions.push(old);
      const rr = await session('REPEATABLE READ');
      sessions.push(rr);
      await drained(`${t}_pf_rlog`);
      await h.signal('rollback');
      out.handingOver = await reverseHandingOver(db.pool, t);
      await sleep(300);
      const s = statements(t);
      out.rc1 = await outcome(db.pool, s.rc1);
      out.rc2 = await outcome(db.pool, s.rc2);
      out.rr = await outcome(rr, s.rr);
      out.rrUpd = await outcome(rr, s.rrUpd);
      out.rrCommit = await outcome(rr, 'COMMIT');
      out.transient1 = await outcome(db.pool, s.transient1);
      out.transient2 = await outcome(db.pool, s.transient2);
      await old.query('COMMIT');
      const c = statements(`${t}_ctl`);
      const rrc = await session('REPEATABLE READ');
      sessions.push(rrc);
      ctl.rc1 = await outcome(db.pool, c.rc1);
      ctl.rc2 = await outcome(db.pool, c.rc2);
      ctl.rr = await outcome(rrc, c.rr);
      ctl.rrUpd = await outcome(rrc, c.rrUpd);
      ctl.rrCommit = await outcome(rrc, 'COMMIT');
      ctl.transient1 = await outcome(db.pool, c.transient1);
      ctl.transient2 = await outcome(db.pool, c.transient2);
    } finally {
      for (const c of sessions) {
        await c.query('ROLLBACK').catch(() => undefined);
        c.release();
      }
      restore();
    }
    const p = await waitFor(
      h,
      (x) =>
        (x.phase === 'rollback-window' && (x.lastError ?? '').startsWith('Rolling back')) ||
        (x.phase !== 'rolling-back' && x.phase !== 'rollback-window'),
      'the swap back answered',
      90_000,
    ).catch(async (e) => ({ phase: `timeout ${(e as Error).message.slice(0, 300)}`, lastError: '' }) as never);
    out.phase = p.phase;
    out.lastError = (p.lastError ?? '').slice(0, 300);
    out.kind = await kindOf(t);
    out.diff = await diff(t);
    out.diffRows = out.diff ? await diffRows(t) : [];
    console.log(JSON.stringify({ out, ctl }));
    // remove the duplicates on both, roll back again
    if (out.kind === 'p') {
      for (const tbl of [t, `${t}_ctl`]) await db.pool.query(`DELETE FROM ${tbl} WHERE id IN (9201, 9202, 3, 4)`);
      await sleep(1000);
      await h.signal('rollback');
    }
    out.r = await ended(h);
    out.kind2 = await kindOf(t);
    out.diff2 = await diff(t);
    out.diffRows2 = out.diff2 ? await diffRows(t) : [];
    console.log(JSON.stringify({ out }));
    expect(ctl).toMatchObject({ rc1: '1 rows', rc2: '1 rows', rr: '1 rows', rrUpd: '2 rows' });
    expect(out).toMatchObject({
      handingOver: true,
      rc1: ctl.rc1,
      rc2: ctl.rc2,
      rr: ctl.rr,
      rrUpd: ctl.rrUpd,
      rrCommit: ctl.rrCommit,
      transient1: ctl.transient1,
      transient2: ctl.transient2,
      phase: 'rollback-window',
      kind: 'p',
      diff: 0,
      r: 'ok rolled-back',
      kind2: 'r',
      diff2: 0,
    });
    expect(out.lastError).toMatch(/^Rolling back/);
  });
});

void progress;
