/**
 * Replica-aware throttling against a real streaming standby of the test cluster (scripts/standby.sh:
 * pg_basebackup -R, its own port), with writers and their record.
 */
import type { WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { peakLagWhile as peakLag, replayLag, standby as runStandby } from '../../demo/standby';
import { compareWithRecord, Writer } from '../../demo/writer';
import type { PartitionTableInput } from '../../src/input';
import { TestDb, withClient } from '../helpers/pg';
import { startStack, Stack } from '../helpers/stack';
import { createTable, TestTable } from '../helpers/tables';
import { progress, sleep, waitFor } from '../helpers/workflow';
import { spawn } from 'child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'fs';
import { tmpdir } from 'os';
import { join } from 'path';
import { memoryStandbys, observeReplicas } from '../../activities/runtime/replicas';

const TQ = 'partflow-replica';
const STANDBY_PORT = Number(process.env.PARTFLOW_STANDBY_PORT ?? 54349);
const MiB = 1024 * 1024;
let stack: Stack;
let env: TestWorkflowEnvironment;
let db: TestDb;
let seq = 0;

const standby = (verb: string, ...args: string[]) => runStandby(STANDBY_PORT, verb, ...args);

beforeAll(async () => {
  stack = await startStack('replica', TQ);
  ({ env, db } = stack);
});

afterAll(async () => {
  await standby('remove').catch(() => undefined);
  await stack?.teardown();
});

function start(input: PartitionTableInput): Promise<WorkflowHandle> {
  const workflowId = `replica-${++seq}-${Date.now()}`;
  return env.client.workflow.start('partitionTable', { taskQueue: TQ, workflowId, args: [input] });
}

const lagBytes = () => replayLag(db.pool, `partflow_standby_${STANDBY_PORT}`);
const peakLagWhile = (work: () => Promise<unknown>) => peakLag(db.pool, work, `partflow_standby_${STANDBY_PORT}`);

async function expectExact(t: TestTable, w: Writer): Promise<void> {
  const stats = await w.stop();
  expect({ errors: stats.errors, samples: stats.errorSamples }).toEqual({ errors: 0, samples: [] });
  const cmp = await withClient(db.conn, (c) => compareWithRecord(c, t.spec, w.record));
  expect({ missing: cmp.missing, extra: cmp.extra, different: cmp.different }).toEqual({
    missing: 0,
    extra: 0,
    different: 0,
  });
  expect(cmp.tableChecksum).toBe(cmp.recordChecksum);
}

test('a standby replaying 2 s behind: the copy keeps its lag under maxReplicaLagBytes and still completes, verified', async () => {
  const bound = 4 * MiB;
  await createTable(db.pool, { schema: 'public', name: 'lagged' }, 100_000, 'uuid');
  // frozen now: an autovacuum of the 100,000 fresh rows during the copy writes tens of MiB of WAL (visibility
  // and freeze records with full-page images) that no throttle of partflow's bounds (a run saw a 34.5 MiB peak)
  await db.pool.query('VACUUM (FREEZE, ANALYZE) public.lagged');
  await standby('create', '2s');
  await waitForLag((x) => x !== null);
  // the control: the same rows copied unthrottled, committed in 100 transactions, drive the lag far past it
  await db.pool.query(`CREATE TABLE public.control (LIKE public.lagged INCLUDING INDEXES)`);
  const control = await peakLagWhile(() =>
    db.pool.query(`DO $$ BEGIN FOR i IN 0..99 LOOP
                     INSERT INTO public.control SELECT * FROM public.lagged WHERE n % 100 = i; COMMIT;
                   END LOOP; END $$`),
  );
  await db.pool.query(`DROP TABLE public.control`);
  await waitForLag((x) => x !== null && x < bound / 2);
  // No writers here: after a checkpoint an application's own writes put full-page images into the WAL
  // (a trace showed 1.4 MiB in 300 ms from two writer lanes while the copy was held back), which no
  // throttle of partflow's can bound. The standby-loss test below runs with writers and checks content.
  const h = await start({
    table: 'public.lagged',
    batchSize: 1000,
    approval: 'auto',
    rollbackWindow: '0s',
    maxReplicaLagBytes: bound,
    maxReplicaLagSeconds: 3600,
  });
  const held: string[] = [];
  const peak = await peakLagWhile(async () => {
    const p = await waitFor(
      h,
      (x) => {
        if (x.throttledBy) held.push(x.throttledBy.bound);
        return x.phase !== 'backfill' && x.phase !== 'preflight' && x.phase !== 'shadow' && x.phase !== 'sync';
      },
      'the end of the backfill',
      300_000,
    );
    return p;
  });
  const result = await h.result();
  expect(result.status).toBe('done');
  expect(result.verify?.ok).toBe(true);
  const rows = await db.pool.query(`SELECT count(*)::int AS n FROM public.lagged`);
  expect(rows.rows[0].n).toBe(100_000);
  process.stderr.write(
    `[measure] standby 2 s behind: unthrottled control peak ${(control / MiB).toFixed(1)} MiB, ` +
      `throttled backfill peak ${(peak / MiB).toFixed(1)} MiB (bound ${bound / MiB} MiB)\n`,
  );
  expect(control).toBeGreaterThan(3 * bound); // the test can fail: unthrottled, the bound is passed by far
  expect(held).toContain('maxReplicaLagBytes'); // the copy was held back ...
  expect(peak).toBeLessThan(bound + 1.5 * MiB); // ... and the lag stayed under the bound plus about one batch
});

test('a standby stopped mid-backfill pauses the copy until it is back; the run then completes exactly', async () => {
  const t = await createTable(db.pool, { schema: 'public', name: 'gone' }, 40_000, 'bigserial');
  await standby('delay', '0');
  await waitForLag((x) => x !== null && x < MiB);
  const w = new Writer(t.spec, db.conn, { lanes: 2, opsPerSecondPerLane: 20, snapshot: true, seed: 8 });
  await w.start();
  const h = await start({ table: 'public.gone', batchSize: 300, sleepMs: 50, approval: 'auto', rollbackWindow: '0s' });
  await waitFor(h, (p) => p.phase === 'backfill' && p.checkpointPage > 2, 'backfill progress', 120_000);
  await standby('stop');
  const paused = await waitFor(h, (p) => p.throttledBy?.bound === 'standbyGone', 'the copy held back', 60_000);
  expect(paused.throttledBy!.reason).toMatch(new RegExp(`standby partflow_standby_${STANDBY_PORT}@127\\.0\\.0\\.1`));
  const at = (await progress(h)).checkpointPage;
  await sleep(3000);
  const still = await progress(h);
  expect(still.checkpointPage).toBe(at); // nothing copied while the standby is gone
  expect(still.throttledBy?.since).toBe(paused.throttledBy!.since); // one hold, one start time
  await standby('start');
  expect((await h.result()).status).toBe('done');
  await expectExact(t, w);
});

async function waitForLag(ok: (lag: number | null) => boolean): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (ok(await lagBytes())) return;
    await sleep(100);
  }
  throw new Error(`standby lag never satisfied the condition (now ${await lagBytes()})`);
}

test("walsenders that are no standby (a base backup, pg_receivewal, a logical client): not recorded, so their end holds nothing (the demo held as standbyGone after a test's pg_basebackup)", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pf-receivers-'));
  mkdirSync(join(dir, 'wal')); // pg_receivewal writes into a directory that exists
  const root = join(__dirname, '../..');
  const since = (await db.pool.query(`SELECT now() AS t`)).rows[0].t;
  const slot = `pf_test_recvlogical_${process.pid}`;
  const dbname = (await db.pool.query(`SELECT current_database() AS d`)).rows[0].d;
  await db.pool.query(`SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, [slot]);
  // each in a process group of its own (pg_basebackup streams the WAL from a child), stopped by its pid; the
  // backup slow (32 kB/s, the least --max-rate takes), so that it is still running when the primary is looked at
  const client = (cmd: string) =>
    spawn('bash', ['-c', `source scripts/env.sh && exec "$(pg_bindir)"/${cmd}`], {
      cwd: root,
      stdio: 'ignore',
      detached: true,
    });
  const conn = '-h 127.0.0.1 -p "$PARTFLOW_PG_PORT" -U postgres';
  const clients = [
    client(`pg_basebackup ${conn} -D ${dir}/backup -X stream -c fast --max-rate=32k`),
    client(`pg_receivewal ${conn} -D ${dir}/wal --no-loop --status-interval=1`),
    client(`pg_recvlogical ${conn} -d ${dbname} --slot=${slot} --start -f /dev/null`),
  ];
  const ours = `FROM pg_stat_replication r JOIN pg_stat_activity a USING (pid) WHERE a.backend_start >= $1`;
  try {
    type Seen = { state: string; name: string; replays: boolean; logical: boolean };
    let seen: Seen[] = [];
    for (let i = 0; i < 150 && seen.filter((x) => x.state === 'streaming').length < 3; i++) {
      await sleep(200);
      seen = (
        await db.pool.query(
          `SELECT r.state, r.application_name AS name, r.replay_lsn IS NOT NULL AS replays,
                  a.datid IS NOT NULL AS logical ${ours}
              AND (r.state = 'backup' OR r.write_lsn IS NOT NULL OR a.datid IS NOT NULL) ORDER BY 1, 2`,
          [since],
        )
      ).rows;
    }
    // the backup's two connections (its files; its WAL stream), pg_receivewal's and pg_recvlogical's (a
    // database's, and its slot): none reports a replay
    expect(seen).toEqual([
      { state: 'backup', name: 'pg_basebackup', replays: false, logical: false },
      { state: 'streaming', name: 'pg_basebackup', replays: false, logical: false },
      { state: 'streaming', name: 'pg_receivewal', replays: false, logical: false },
      { state: 'streaming', name: 'pg_recvlogical', replays: false, logical: true },
    ]);
    const known = memoryStandbys();
    const view = await observeReplicas(db.pool, known);
    // (an earlier test's standby may still stream: it is one, and is left out of the comparison)
    const ofOurs = (names: string[]) => names.filter((n) => /^pg_(basebackup|receivewal|recvlogical)@/.test(n));
    expect({
      standbys: ofOurs(view.standbys.map((x) => x.name)),
      expected: ofOurs(view.expected),
      saved: ofOurs(await known.load()),
      // the logical client's slot is bounded as every slot is
      slot: view.slots.some((x) => x.name === slot),
    }).toEqual({ standbys: [], expected: [], saved: [], slot: true });
  } finally {
    for (const c of clients) {
      if (c.exitCode !== null || c.signalCode !== null) continue;
      const exited = new Promise((r) => c.once('exit', r));
      process.kill(-c.pid!, 'SIGTERM');
      await exited;
    }
    // a throttled walsender notices its client gone only when it next sends
    await db.pool.query(`SELECT pg_terminate_backend(r.pid) ${ours}`, [since]);
    for (let i = 0; i < 50; i++) {
      const active = await db.pool.query(`SELECT active FROM pg_replication_slots WHERE slot_name = $1`, [slot]);
      if (!active.rows.length) break;
      if (!active.rows[0].active) {
        await db.pool.query(`SELECT pg_drop_replication_slot($1)`, [slot]);
        break;
      }
      await sleep(100);
    }
    rmSync(dir, { recursive: true, force: true });
  }
});
