/**
 * partitionTable against a real PostgreSQL and the real Temporal dev server, with writers inserting,
 * updating (also the partition key and the id) and deleting throughout; final content compared with the
 * writers' own record of what they committed.
 */
import { WorkflowFailedError, WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Client } from 'pg';
import { compareWithRecord, Writer } from '../../demo/writer';
import type { PartitionTableInput } from '../../src/input';
import { hasTidRangeScan } from '../../src/versions';
import { catalogSnapshot, serverVersionNum, TestDb, withClient as withDbClient } from '../helpers/pg';
import { createTable, TestTable } from '../helpers/tables';
import { startStack, Stack } from '../helpers/stack';
import { forwardThenUndo, progress, sleep, waitFor } from '../helpers/workflow';

const TQ = 'partflow-it';
let stack: Stack;
let env: TestWorkflowEnvironment;
let db: TestDb;
let seq = 0;

beforeAll(async () => {
  stack = await startStack('it', TQ);
  ({ env, db } = stack);
});

afterAll(async () => {
  await stack?.teardown();
});

function start(input: PartitionTableInput, workflowId = `it-${++seq}-${Date.now()}`): Promise<WorkflowHandle> {
  return env.client.workflow.start('partitionTable', { taskQueue: TQ, workflowId, args: [input] });
}

const withClient = <T>(fn: (c: Client) => Promise<T>): Promise<T> => withDbClient(db.conn, fn);

async function expectMatchesRecord(t: TestTable, w: Writer): Promise<void> {
  const cmp = await withClient((c) => compareWithRecord(c, t.spec, w.record));
  expect({ missing: cmp.missing, extra: cmp.extra, different: cmp.different }).toEqual({
    missing: 0,
    extra: 0,
    different: 0,
  });
  expect(cmp.tableChecksum).toBe(cmp.recordChecksum);
  expect(cmp.rows).toBe(w.record.size);
}

async function relkind(ref: { schema: string; name: string }): Promise<string | undefined> {
  const r = await db.pool.query(
    `SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`,
    [ref.schema, ref.name],
  );
  return r.rows[0]?.relkind;
}

const writers: Writer[] = [];
function writerFor(t: TestTable): Writer {
  const w = new Writer(t.spec, db.conn, { lanes: 4, opsPerSecondPerLane: 40, snapshot: true, seed: ++seq });
  writers.push(w);
  return w;
}
afterEach(async () => {
  // a failed test must not leave writers running into the next one
  for (const w of writers.splice(0)) await w.stop().catch(() => undefined);
});

test('partitions a live table: nothing lost, nothing duplicated, writers never fail', async () => {
  const t = await createTable(db.pool, { schema: 'public', name: 'images' }, 20_000, 'uuid');
  const w = writerFor(t);
  await w.start();
  const h = await start({
    table: 'public.images',
    batchSize: 500,
    sleepMs: 20,
    approval: 'signal',
    rollbackWindow: '1h',
  });
  const during = await waitFor(h, (p) => p.rowsCopied > 0, 'backfill progress');
  expect(during.totalPages).toBeGreaterThan(0);
  expect(during.rowsEstimated).toBeGreaterThan(15_000);
  const gate = await waitFor(h, (p) => p.awaitingApproval, 'approval gate');
  expect(gate.verify?.ok).toBe(true);
  expect(gate.percent).toBe(100);
  // preflight said what the copy costs in disk (20,000 rows and four indexes: a few MiB)
  expect(gate.warnings.join(' ')).toMatch(/The copy needs about 0\.0\d GiB of disk, .*\(0\.0\d GiB of it indexes\)/);
  // the Web UI shows the progress as the workflow's current details (the built-in metadata query)
  const meta = await h.query<{ currentDetails?: string }>('__temporal_workflow_metadata');
  expect(meta.currentDetails).toMatch(
    /^\*\*public\.images\*\*: awaiting-approval: \*\*next: signal approveCutover\*\*/,
  );
  expect(meta.currentDetails).toMatch(/verification passed: \d+ rows in \d+ chunk\(s\)/);
  await sleep(1000); // writes keep flowing through the trigger while we wait at the gate
  expect((await progress(h)).phase).toBe('awaiting-approval');
  await h.signal('approveCutover');
  await waitFor(h, (p) => p.phase === 'rollback-window', 'cut-over');
  expect(await relkind({ schema: 'public', name: 'images' })).toBe('p');
  await sleep(1000); // writes after cut-over reach the old table through the reverse trigger
  await h.signal('finalize');
  const result = await h.result();
  const stats = await w.stop();
  expect(result.status).toBe('done');
  expect({ errors: stats.errors, samples: stats.errorSamples }).toEqual({ errors: 0, samples: [] });
  expect(stats.moves + stats.rekeys + stats.deletes).toBeGreaterThan(10);
  await expectMatchesRecord(t, w);
  // the copy was analyzed by partflow (last_analyze, not autovacuum's last_autoanalyze) before it became the table
  const unanalyzed = await db.pool.query(
    `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
      WHERE i.inhparent = 'public.images'::regclass AND s.last_analyze IS NULL`,
  );
  expect(unanalyzed.rows).toEqual([]);

  const cat = await db.pool.query(
    `SELECT (SELECT array_agg(a.attname::text ORDER BY array_position(con.conkey, a.attnum)) FROM pg_constraint con
               JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = ANY (con.conkey) WHERE con.conrelid = 'public.images'::regclass AND con.contype = 'p') AS pk,
            (SELECT array_agg(relname::text ORDER BY relname) FROM pg_class WHERE oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = 'public.images'::regclass)) AS idx,
            (SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.images'::regclass)::int AS parts,
            (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'partflow%')::int AS triggers,
            has_table_privilege('pf_reader', 'public.images', 'SELECT') AS reader,
            (SELECT relkind FROM pg_class WHERE oid = 'public.images_old'::regclass) AS old`,
  );
  expect(cat.rows[0]).toEqual({
    pk: ['id', 'created_at'],
    idx: ['images_lower_payload', 'images_pkey', 'images_ts', 'images_user_status'],
    parts: during.partitions, // from the oldest row's month to 3 months ahead, plus the default
    triggers: 0,
    reader: true,
    old: 'r',
  });
});

test('verification in chunks, each in a short snapshot; while the run waits, it verifies again: a difference is copied again and reported repaired, one that copying cannot fix fails the run, naming the range', async () => {
  const t = await createTable(db.pool, { schema: 'public', name: 'reverify' }, 20_000, 'uuid');
  const w = writerFor(t);
  await w.start();
  const h = await start({
    table: 'public.reverify',
    approval: 'signal',
    verifyChunkRows: 2000,
    reverifyEvery: '1s',
  });
  const gate = await waitFor(h, (p) => p.awaitingApproval, 'approval gate');
  expect(gate.verify).toMatchObject({ ok: true, mismatches: [] });
  expect(gate.verify!.chunks).toBeGreaterThanOrEqual(10); // 20,000 rows and more in chunks of 2,000
  expect(gate.verify!.longestSnapshotMs).toBeLessThan(gate.verify!.elapsedMs);
  // passes repeat while the run waits, and pass: the writers' changes are in the copy too
  const again = await waitFor(
    h,
    (p) => !!p.verify?.endedAt && p.verify.endedAt > gate.verify!.endedAt!,
    'a re-verification',
  );
  expect(again.verify!.ok).toBe(true);
  // a row only the copy has (written past the sync trigger) is found by the next pass, copied again (gone: the
  // table does not have it) and reported as repaired
  await db.pool.query(
    `INSERT INTO public.reverify_pf_shadow (id, user_id, status, payload, n, created_at)
     SELECT gen_random_uuid(), user_id, status, 'written past the trigger', n, created_at FROM public.reverify LIMIT 1`,
  );
  const repaired = await waitFor(h, (p) => (p.verify?.repaired.length ?? 0) > 0, 'a repaired chunk');
  expect(repaired.verify!.ok).toBe(true);
  expect(repaired.verify!.repaired[0]).toMatch(/^keys .* month \d{4}-\d{2}: source \d+ rows, copy \d+$/);
  const left = await db.pool.query(
    `SELECT count(*)::int AS n FROM reverify_pf_shadow WHERE payload = 'written past the trigger'`,
  );
  expect(left.rows[0].n).toBe(0);
  // a copy that changes what is copied into it (a trigger of its own): copying again cannot fix it
  await db.pool.query(`CREATE FUNCTION public.reverify_alter() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN NEW.payload := 'altered'; RETURN NEW; END $$`);
  await db.pool.query(`CREATE TRIGGER alter_copy BEFORE INSERT ON public.reverify_pf_shadow
    FOR EACH ROW EXECUTE FUNCTION public.reverify_alter()`);
  const err = await h.result().then(
    () => null,
    (e) => e,
  );
  await w.stop();
  expect(err).toBeInstanceOf(WorkflowFailedError);
  expect((err as WorkflowFailedError).cause!.message).toMatch(
    /Verification of public\.reverify failed: source and copy differ in reverify_\d{4}_\d{2} \(source \d+ rows, copy \d+\)(, reverify_\w+ \(source \d+ rows, copy \d+\))* \(keys .* month \d{4}-\d{2}: source \d+ rows, copy \d+/,
  );
  expect(await relkind({ schema: 'public', name: 'reverify' })).toBe('r');
  expect(await relkind({ schema: 'public', name: 'reverify_pf_shadow' })).toBeUndefined();
  await expectMatchesRecord(t, w);
});

test('rollback after cut-over restores the plain table with every row written since, and the exact catalog', async () => {
  const t = await createTable(db.pool, { schema: 'public', name: 'credits' }, 10_000, 'bigserial');
  const before = await catalogSnapshot(db.pool, ['public']);
  const w = writerFor(t);
  await w.start();
  const h = await start({ table: 'credits', batchSize: 1000, approval: 'auto', rollbackWindow: '1h' });
  await waitFor(h, (p) => p.phase === 'rollback-window', 'cut-over');
  await sleep(1500); // inserts, updates, moves and deletes on the partitioned table
  const rowsAfterCutover = w.stats.ops;
  await h.signal('rollback');
  const result = await h.result();
  await sleep(500);
  const stats = await w.stop();
  expect(result.status).toBe('rolled-back');
  expect({ errors: stats.errors, samples: stats.errorSamples }).toEqual({ errors: 0, samples: [] });
  expect(stats.ops).toBeGreaterThan(rowsAfterCutover);
  expect(await relkind({ schema: 'public', name: 'credits' })).toBe('r');
  await expectMatchesRecord(t, w);
  // same relations, columns, indexes (names too), constraints, sequence ownership, grants; no partflow triggers
  const after = await catalogSnapshot(db.pool, ['public']);
  expect(after).toEqual(before);
  const run = await db.pool.query(`SELECT run_state FROM partflow.runs WHERE table_name = 'credits'`);
  expect(run.rows[0].run_state).toBe('rolled-back');
});

test('writers in READ COMMITTED, REPEATABLE READ and SERIALIZABLE through the copy, the cut-over, the rollback window and a rollback: exact, and no 40001 the same writers do not get without partflow', async () => {
  const isolation: ('READ COMMITTED' | 'REPEATABLE READ' | 'SERIALIZABLE')[] = [
    'READ COMMITTED',
    'REPEATABLE READ',
    'SERIALIZABLE',
  ];
  const levels = () => ({ lanes: 6, opsPerSecondPerLane: 30, snapshot: true, seed: ++seq, isolation });
  /** the same writers for 8 s on a table with no run: their own 40001 per 1,000 statements */
  const baseline = async (name: string, partitioned: boolean) => {
    const p = await createTable(db.pool, { schema: 'public', name }, 8_000, 'bigserial');
    if (partitioned) {
      const r = await start({ table: name, batchSize: 1000, approval: 'auto', rollbackWindow: '0s' });
      expect((await r.result()).status).toBe('done');
    }
    const b = new Writer(p.spec, db.conn, levels());
    writers.push(b);
    await b.start();
    await sleep(8000);
    const st = await b.stop();
    expect({ errors: st.errors, samples: st.errorSamples }).toEqual({ errors: 0, samples: [] });
    return { failures: st.serializationFailures, ops: st.ops };
  };
  const plain = await baseline('iso_plain', false);
  // a table partitioned earlier: what SERIALIZABLE writers get from the partitioned layout itself (a lookup by
  // id alone reads every partition's index, so more predicate locks and more read/write conflicts)
  const partitioned = await baseline('iso_parted', true);

  const t = await createTable(db.pool, { schema: 'public', name: 'iso_run' }, 8_000, 'bigserial');
  const before = await catalogSnapshot(db.pool, ['public']);
  const w = new Writer(t.spec, db.conn, levels());
  writers.push(w);
  await w.start();
  const h = await start({ table: 'iso_run', batchSize: 200, sleepMs: 30, approval: 'signal', rollbackWindow: '1h' });
  await waitFor(h, (p) => p.awaitingApproval, 'approval gate');
  const copied = { failures: w.stats.serializationFailures, ops: w.stats.ops };
  await h.signal('approveCutover');
  await waitFor(h, (p) => p.phase === 'rollback-window', 'cut-over');
  // a second for the transactions whose snapshot predates the cut-over (README: they may read a row's previous
  // version and get 40001 on it; counted with the swaps below, not in the window's steady state)
  await sleep(1000);
  const rr = () => w.stats.serializationFailuresByLevel['REPEATABLE READ'] ?? 0;
  const cut = { failures: w.stats.serializationFailures, ops: w.stats.ops, rr: rr() };
  await sleep(2500); // every kind of write, in all three levels, on the partitioned table
  const window = {
    failures: w.stats.serializationFailures - cut.failures,
    ops: w.stats.ops - cut.ops,
    repeatableRead: rr() - cut.rr,
  };
  await h.signal('rollback');
  const result = await h.result();
  await sleep(300);
  const stats = await w.stop();
  const swaps = { failures: stats.serializationFailures - copied.failures - window.failures };
  console.log(JSON.stringify({ serializationFailures: { plain, partitioned, copied, window, swaps } }));
  expect(result.status).toBe('rolled-back');
  // no error but the writers' own 40001 (which they retry); the old in-snapshot trigger raised 40001 of its own
  // and let a REPEATABLE READ delete come back
  expect({ errors: stats.errors, samples: stats.errorSamples }).toEqual({ errors: 0, samples: [] });
  // 40001 no more often than the same writers get without partflow on the plain table until the cut-over
  // (twice the rate, and two, for timing). In the window, SERIALIZABLE lanes meet the partitioned table's own
  // read/write conflicts, whose count swings widely run to run (printed, with the partitioned baseline); the
  // REPEATABLE READ lanes, each writing its own rows, can get 40001 only from partflow (the old in-snapshot
  // trigger gave them some): none. The seconds around the two swaps are printed, not asserted (the known limit).
  // (a baseline of 0 in 8 s says the rate is under about one per baseline, not that it is 0: counted as 1;
  // a run of 2026-12-06 got 3 in the copy against a baseline of 0 in 1,446 statements, 0 on the next run)
  const allowed = (base: { failures: number; ops: number }, ops: number) =>
    Math.ceil((2 * Math.max(1, base.failures) * ops) / Math.max(1, base.ops)) + 2;
  expect(copied.failures).toBeLessThanOrEqual(allowed(plain, copied.ops));
  expect(window.repeatableRead).toBe(0);
  expect(await relkind({ schema: 'public', name: 'iso_run' })).toBe('r');
  await expectMatchesRecord(t, w);
  const after = await catalogSnapshot(db.pool, ['public']);
  expect(after).toEqual(before);
});

test('parallel copy: three streams walk their own page ranges with their own checkpoints; a VACUUM FULL mid-copy splits the new file again; exact under writers', async () => {
  const t = await createTable(db.pool, { schema: 'public', name: 'streamed' }, 20_000, 'uuid');
  if (!hasTidRangeScan(await serverVersionNum(db.pool))) {
    // PostgreSQL 13: no page walk to split among streams; refused by preflight, nothing changed
    const before = await catalogSnapshot(db.pool, ['public']);
    const refused = await start({ table: 'streamed', parallelism: 3, approval: 'signal', rollbackWindow: '0s' })
      .then((h) => h.result())
      .catch((e) => e);
    expect(refused).toBeInstanceOf(WorkflowFailedError);
    expect((refused as WorkflowFailedError).cause!.message).toMatch(
      /"parallelism": 3 splits the table's pages among streams, which needs the page walk \(PostgreSQL 14\+, this is 13;/,
    );
    expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);
    return;
  }
  const w = writerFor(t);
  await w.start();
  const h = await start({
    table: 'streamed',
    batchSize: 100,
    sleepMs: 20,
    parallelism: 3,
    approval: 'signal',
    rollbackWindow: '0s',
  });
  const mid = await waitFor(h, (p) => p.phase === 'backfill' && p.checkpointPage > 30, 'backfill progress');
  const streams = async () =>
    (
      await db.pool.query(
        `SELECT stream, start_page::int AS s, next_page::int AS n, end_page::int AS e, filenode::bigint AS f
           FROM partflow.backfill_streams WHERE table_name = 'streamed' ORDER BY stream`,
      )
    ).rows;
  const total = Number(
    (await db.pool.query(`SELECT total_pages FROM partflow.runs WHERE table_name = 'streamed'`)).rows[0].total_pages,
  );
  const split = await streams();
  // three ranges, end to end over the pages recorded with the trigger, and more than one of them moving
  expect(split.map((x) => x.stream)).toEqual([0, 1, 2]);
  expect(split[0].s).toBe(0);
  expect(split[1].s).toBe(split[0].e);
  expect(split[2].s).toBe(split[1].e);
  expect(split[2].e).toBe(total);
  expect(split.filter((x) => x.n > x.s).length).toBeGreaterThanOrEqual(2);
  expect(mid.checkpoint).toMatch(/pages in 3 streams/);
  await db.pool.query(`VACUUM FULL public.streamed`); // a new file: every stream's pages mean something else now
  const gate = await waitFor(h, (p) => p.awaitingApproval, 'approval gate', 180_000);
  expect(gate.verify?.ok).toBe(true);
  const run = await db.pool.query(
    `SELECT rewrites, filenode::bigint AS f FROM partflow.runs WHERE table_name = 'streamed'`,
  );
  expect(run.rows[0].rewrites).toBe(1);
  const after = await streams();
  expect(after.every((x) => x.f === run.rows[0].f && x.n === x.e)).toBe(true);
  expect(after[0].f).not.toBe(split[0].f);
  await h.signal('approveCutover');
  const result = await h.result();
  const stats = await w.stop();
  expect(result.status).toBe('done');
  expect({ errors: stats.errors, samples: stats.errorSamples }).toEqual({ errors: 0, samples: [] });
  await expectMatchesRecord(t, w);
});

test('rows the trigger wrote ahead of the backfill: the fast copy meets them, the batch is copied again with ON CONFLICT, nothing doubled', async () => {
  const t = await createTable(db.pool, { schema: 'public', name: 'ahead' }, 8_000, 'bigserial');
  const h = await start({ table: 'ahead', batchSize: 100, sleepMs: 100, approval: 'signal', rollbackWindow: '0s' });
  const p0 = await waitFor(h, (p) => p.phase === 'backfill' && p.checkpointPage > 0, 'backfill progress');
  // update rows on every page not copied yet (HOT updates stay on their page): the trigger writes them first
  const r = await db.pool.query(`UPDATE public.ahead SET payload = 'ahead of the copy' WHERE ctid >= $1::tid`, [
    `(${p0.checkpointPage + 5},0)`,
  ]);
  expect(r.rowCount).toBeGreaterThan(100);
  const w = writerFor(t);
  await w.start();
  const gate = await waitFor(h, (p) => p.awaitingApproval, 'approval gate', 180_000);
  expect(gate.mergedBatches).toBeGreaterThan(0);
  await h.signal('approveCutover');
  const result = await h.result();
  await w.stop();
  expect(result.status).toBe('done');
  expect(
    (await db.pool.query(`SELECT count(*)::int AS n FROM public.ahead WHERE payload = 'ahead of the copy'`)).rows[0].n,
  ).toBeGreaterThan(0);
  await expectMatchesRecord(t, w);
});

test('a long transaction holding the table at cut-over: the cut-over retries and writers wait at most the lock timeout', async () => {
  const t = await createTable(db.pool, { schema: 'public', name: 'locked' }, 5_000, 'uuid');
  const w = writerFor(t);
  const h = await start({
    table: 'locked',
    batchSize: 2000,
    approval: 'signal',
    rollbackWindow: '0s',
    lockTimeoutMs: 300,
  });
  await waitFor(h, (p) => p.awaitingApproval, 'approval gate');
  await w.start();
  const holder = new Client(db.conn);
  await holder.connect();
  await holder.query('BEGIN');
  await holder.query('SELECT count(*) FROM public.locked'); // ACCESS SHARE until COMMIT
  await h.signal('approveCutover');
  await sleep(3000);
  expect((await progress(h)).phase).toBe('cutover'); // still trying, not through
  expect(await relkind({ schema: 'public', name: 'locked' })).toBe('r');
  await holder.query('COMMIT');
  await holder.end();
  const result = await h.result();
  const stats = await w.stop();
  expect(result.status).toBe('done');
  expect(result.cutover!.lockWaitRetries).toBeGreaterThan(0);
  expect({ errors: stats.errors, samples: stats.errorSamples }).toEqual({ errors: 0, samples: [] });
  // an application statement queued behind our lock request waits at most lock_timeout (300 ms) plus a margin
  expect(stats.maxLatencyMs).toBeLessThan(300 + 400);
  await expectMatchesRecord(t, w);
});

test('pause holds no locks and stops the copy; throttle is validated; resume finishes', async () => {
  const t = await createTable(db.pool, { schema: 'public', name: 'paused' }, 20_000, 'uuid');
  const h = await start({ table: 'paused', batchSize: 100, sleepMs: 50, approval: 'auto', rollbackWindow: '0s' });
  await waitFor(h, (p) => p.phase === 'backfill' && p.checkpointPage > 0, 'backfill progress');
  await h.signal('pause');
  // `paused` only once the chunk in flight has ended: from then on nothing copies
  const seen = new Set<string>();
  await waitFor(
    h,
    (p) => {
      seen.add(p.paused ? 'paused' : p.pausing ? 'pausing' : 'copying');
      return p.paused;
    },
    'paused flag',
  );
  const a = await db.pool.query(`SELECT next_page FROM partflow.runs WHERE table_name = 'paused'`);
  const details = async () =>
    (await h.query<{ currentDetails?: string }>('__temporal_workflow_metadata')).currentDetails ?? '';
  const whilePaused = await details();
  await sleep(2000);
  const b = await db.pool.query(`SELECT next_page FROM partflow.runs WHERE table_name = 'paused'`);
  expect(b.rows[0].next_page).toBe(a.rows[0].next_page);
  expect(seen.has('pausing')).toBe(true); // the pause met a chunk in flight (3 s chunks of 100-row batches)
  expect(whilePaused).toMatch(/: backfill \(paused\)/);
  expect(whilePaused).not.toMatch(/rows\/s|s left/);
  expect(await progress(h)).toMatchObject({ paused: true, pausing: false, rowsPerSecond: 0, etaSeconds: null });
  expect(Number(a.rows[0].next_page)).toBeLessThan((await progress(h)).totalPages);
  const locks = await db.pool.query(
    `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_stat_activity s ON s.pid = l.pid WHERE s.application_name = 'partflow' AND l.relation = 'public.paused'::regclass`,
  );
  expect(locks.rows[0].n).toBe(0);
  await expect(h.executeUpdate('throttle', { args: [{ batchSize: -1 }] })).rejects.toMatchObject({
    cause: { message: expect.stringMatching(/"batchSize" must be a whole number/) },
  });
  await expect(h.executeUpdate('throttle', { args: [{ batchSize: 5000, sleepMs: 0 }] })).resolves.toEqual({
    batchSize: 5000,
    sleepMs: 0,
  });
  expect((await progress(h)).batchSize).toBe(5000);
  await h.signal('resume');
  // the details follow the resume at once, not when the next chunk ends (3 s)
  let afterResume = await details();
  for (let i = 0; i < 15 && /\(paused\)/.test(afterResume); i++) {
    await sleep(100);
    afterResume = await details();
  }
  expect(afterResume).not.toMatch(/\(paused\)/);
  const result = await h.result();
  expect(result.status).toBe('done');
  const n = await db.pool.query(`SELECT count(*)::int AS n FROM public.paused`);
  expect(n.rows[0].n).toBe(20_000);
  void t;
});

test('cancelling mid-backfill undoes every step and leaves the catalog as it was', async () => {
  await createTable(db.pool, { schema: 'public', name: 'cancelled' }, 20_000, 'uuid');
  const before = await catalogSnapshot(db.pool, ['public']);
  const h = await start({ table: 'cancelled', batchSize: 100, sleepMs: 50 });
  // rows, not pages: the key walk (PostgreSQL 13) reports no page until it ends
  await waitFor(h, (p) => p.phase === 'backfill' && p.rowsCopied > 0, 'backfill progress');
  await h.cancel();
  await expect(h.result()).rejects.toThrow(WorkflowFailedError);
  expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);
  const run = await db.pool.query(`SELECT run_state FROM partflow.runs WHERE table_name = 'cancelled'`);
  expect(run.rows[0].run_state).toBe('rolled-back');
});

test('awkward identifiers: a non-public schema, spaces, capitals, an ALWAYS identity key', async () => {
  const ref = { schema: 'App Schema', name: 'Credit "Tx"' };
  const t = await createTable(db.pool, ref, 8_000, 'identity', 'Created At');
  const w = writerFor(t);
  await w.start();
  const h = await start({
    table: '"App Schema"."Credit ""Tx"""',
    column: '"Created At"',
    batchSize: 700,
    approval: 'auto',
    rollbackWindow: '0s',
  });
  const result = await h.result();
  const stats = await w.stop();
  expect(result.status).toBe('done');
  expect({ errors: stats.errors, samples: stats.errorSamples }).toEqual({ errors: 0, samples: [] });
  expect(await relkind(ref)).toBe('p');
  await expectMatchesRecord(t, w);
  // the new identity sequence continues past every id the old one handed out
  const r = await db.pool.query(`INSERT INTO "App Schema"."Credit ""Tx""" ("Created At") VALUES (now()) RETURNING id`);
  const max = await db.pool.query(`SELECT max(id) AS m FROM "App Schema"."Credit ""Tx""_old"`);
  expect(Number(r.rows[0].id)).toBeGreaterThan(Number(max.rows[0].m));
});

test('key-range backfill (PostgreSQL 13 path, forced here) is exact under the same writers', async () => {
  const t = await createTable(db.pool, { schema: 'public', name: 'keyed' }, 15_000, 'uuid');
  const w = writerFor(t);
  await w.start();
  const h = await start({
    table: 'keyed',
    copyMode: 'keys',
    batchSize: 100,
    sleepMs: 30,
    approval: 'auto',
    rollbackWindow: '0s',
  });
  const mid = await waitFor(h, (p) => p.phase === 'backfill' && p.rowsCopied > 0, 'key backfill progress');
  expect(mid.checkpoint).toMatch(/^key checkpoint after \d+ rows/); // the key's values stay out of history
  const result = await h.result();
  const stats = await w.stop();
  expect(result.status).toBe('done');
  expect({ errors: stats.errors, samples: stats.errorSamples }).toEqual({ errors: 0, samples: [] });
  await expectMatchesRecord(t, w);
});

test('date partition column and month edges in a non-UTC time zone', async () => {
  await db.pool.query(`CREATE TABLE public.days (id int PRIMARY KEY, d date NOT NULL)`);
  await db.pool.query(`INSERT INTO public.days SELECT g, date '2025-01-31' + g FROM generate_series(0, 2) g`); // Jan 31, Feb 1, Feb 2
  await db.pool.query(`CREATE TABLE public.zoned (id int PRIMARY KEY, ts timestamptz NOT NULL)`);
  // 03:00 UTC on Feb 1 is still January 31 in New York
  await db.pool.query(`INSERT INTO public.zoned VALUES (1, '2025-02-01 03:00:00+00'), (2, '2025-02-01 06:00:00+00')`);
  expect(
    (await (await start({ table: 'days', column: 'd', approval: 'auto', rollbackWindow: '0s' })).result()).status,
  ).toBe('done');
  expect(
    (
      await (
        await start({
          table: 'zoned',
          column: 'ts',
          timeZone: 'America/New_York',
          approval: 'auto',
          rollbackWindow: '0s',
        })
      ).result()
    ).status,
  ).toBe('done');
  const where = await db.pool.query(
    `SELECT tableoid::regclass::text AS part, id FROM public.days UNION ALL SELECT tableoid::regclass::text, id FROM public.zoned ORDER BY 1, 2`,
  );
  expect(where.rows).toEqual([
    { part: 'days_2025_01', id: 0 },
    { part: 'days_2025_02', id: 1 },
    { part: 'days_2025_02', id: 2 },
    { part: 'zoned_2025_01', id: 1 },
    { part: 'zoned_2025_02', id: 2 },
  ]);
});

test('inboundForeignKeys "drop": dropped at cut-over, restored and validated by rollback', async () => {
  await db.pool.query(
    `CREATE TABLE public.accounts (id bigint PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now())`,
  );
  await db.pool.query(
    `INSERT INTO public.accounts SELECT g, now() - g * interval '1 day' FROM generate_series(1, 500) g`,
  );
  await db.pool.query(
    `CREATE TABLE public.logins (id serial PRIMARY KEY, account_id bigint CONSTRAINT logins_account_fk REFERENCES public.accounts (id))`,
  );
  await db.pool.query(`INSERT INTO public.logins (account_id) SELECT 1 + g % 500 FROM generate_series(1, 1000) g`);
  const fk = () =>
    db.pool.query(
      `SELECT convalidated, confrelid::regclass::text AS target FROM pg_constraint WHERE conname = 'logins_account_fk'`,
    );
  const h = await start({ table: 'accounts', inboundForeignKeys: 'drop', approval: 'auto', rollbackWindow: '1h' });
  const p = await waitFor(h, (x) => x.phase === 'rollback-window', 'cut-over');
  expect(p.warnings.join(' ')).toMatch(/public\.logins\.logins_account_fk/);
  expect((await fk()).rowCount).toBe(0);
  await h.signal('rollback');
  expect((await h.result()).status).toBe('rolled-back');
  expect((await fk()).rows).toEqual([{ convalidated: true, target: 'accounts' }]);
});

describe('bad input: one clear sentence, nothing changed', () => {
  beforeAll(async () => {
    await db.pool.query(`CREATE TABLE public.nopk (created_at timestamptz NOT NULL, v text)`);
    await db.pool.query(`CREATE TABLE public.textcol (id int PRIMARY KEY, created_at text NOT NULL)`);
    await db.pool.query(`CREATE TABLE public.nullable (id int PRIMARY KEY, created_at timestamptz)`);
    await db.pool.query(
      `CREATE TABLE public.parted (id int, created_at timestamptz NOT NULL, PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)`,
    );
    await db.pool.query(`CREATE TABLE public.parent (id int PRIMARY KEY, created_at timestamptz NOT NULL)`);
    await db.pool.query(`CREATE TABLE public.child (id int PRIMARY KEY, parent_id int REFERENCES public.parent (id))`);
    await db.pool.query(`CREATE TABLE public.viewed (id int PRIMARY KEY, created_at timestamptz NOT NULL)`);
    await db.pool.query(`CREATE MATERIALIZED VIEW public.recent AS SELECT * FROM public.viewed`);
    await db.pool.query(`CREATE TABLE public.dry (id int PRIMARY KEY, created_at timestamptz NOT NULL)`);
    await db.pool.query(`CREATE TABLE public.${'l'.repeat(55)} (id int PRIMARY KEY, created_at timestamptz NOT NULL)`);
  });

  it.each<[string, PartitionTableInput, RegExp]>([
    ['missing table', { table: 'public.nope' }, /Table public\.nope does not exist/],
    ['missing column', { table: 'parent', column: 'made_at' }, /has no column "made_at"/],
    ['wrong column type', { table: 'textcol' }, /is text; the partition column must be timestamp, timestamptz or date/],
    ['no primary key', { table: 'nopk' }, /has no primary key/],
    ['nullable partition column', { table: 'nullable' }, /allows NULL/],
    ['already partitioned', { table: 'parted' }, /already partitioned/],
    [
      'referenced by a foreign key',
      { table: 'parent' },
      /Other tables reference public\.parent by foreign key \(public\.child\.child_parent_id_fkey\)/,
    ],
    ['a dependent materialized view', { table: 'viewed' }, /Materialized view\(s\) public\.recent read public\.viewed/],
    ['generated names too long', { table: 'l'.repeat(55) }, /would be \d+ bytes, over PostgreSQL's 63/],
    ['invalid field', { table: 'parent', premake: 'three' as unknown as number }, /"premake" must be a whole number/],
    [
      'parallel copy with the key walk',
      { table: 'dry', parallelism: 2, copyMode: 'keys' },
      /"parallelism": 2 splits the table's pages among streams, which needs the page walk/,
    ],
    ['too many streams', { table: 'dry', parallelism: 17 }, /"parallelism" must be a whole number from 1 to 16/],
  ])('%s', async (_label, input, message) => {
    const before = await catalogSnapshot(db.pool, ['public', 'partflow']);
    const h = await start(input);
    const err = await h.result().then(
      () => null,
      (e: WorkflowFailedError) => e,
    );
    expect(err).toBeInstanceOf(WorkflowFailedError);
    expect(err!.cause?.message).toMatch(message);
    expect(err!.cause?.message.split('. ').length).toBeLessThanOrEqual(2); // one sentence
    expect(await catalogSnapshot(db.pool, ['public', 'partflow'])).toEqual(before);
  });

  it('dryRun returns every statement and touches nothing', async () => {
    const before = await catalogSnapshot(db.pool, ['public', 'partflow']);
    const result = await (await start({ table: 'dry', dryRun: true })).result();
    expect(result.status).toBe('dry-run');
    expect(result.statements.map((s: { step: string }) => s.step)).toContain('cutover');
    expect(result.plan.partitions.length).toBeGreaterThan(0);
    expect(await catalogSnapshot(db.pool, ['public', 'partflow'])).toEqual(before);
  });

  it('a second run on a table that has one in progress is refused', async () => {
    await createTable(db.pool, { schema: 'public', name: 'busy' }, 20_000, 'uuid');
    const first = await start({ table: 'busy', batchSize: 100, sleepMs: 50 });
    await waitFor(first, (p) => p.phase === 'backfill', 'first run in backfill');
    const second = await start({ table: 'busy' }, 'someone-else');
    await expect(second.result()).rejects.toThrow(WorkflowFailedError);
    const err = await second.result().catch((e: WorkflowFailedError) => e);
    expect((err as WorkflowFailedError).cause?.message).toMatch(/already has a partflow run in progress/);
    expect((await progress(first)).phase).toBe('backfill');
    await first.signal('rollback');
    expect((await first.result()).status).toBe('rolled-back');
  });
});

describe('a run cannot be hijacked through its input', () => {
  beforeAll(async () => {
    await db.pool.query(
      `CREATE TABLE public.canary (id int PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now())`,
    );
    await db.pool.query(`INSERT INTO public.canary VALUES (1)`);
  });

  it('refuses an external "resume" carrying SQL, and the canary table survives', async () => {
    const plan = (await (await start({ table: 'canary', dryRun: true })).result()).plan;
    const crafted = {
      ...plan,
      sql: {
        ...plan.sql,
        finalize: ['DROP TABLE public.canary CASCADE'],
        cutover: ['DROP TABLE public.canary CASCADE'],
      },
    };
    const input = {
      table: 'canary',
      rollbackWindow: '0s',
      resume: { phase: 'rollback-window', plan: crafted, done: [], paused: false },
    } as unknown as PartitionTableInput;
    const err = await (await start(input)).result().then(
      () => null,
      (e: WorkflowFailedError) => e,
    );
    expect(err?.cause?.message).toMatch(/Field "resume" is partflow's internal state .* never accepted in an input/);
    expect(await relkind({ schema: 'public', name: 'canary' })).toBe('r');
    expect((await db.pool.query(`SELECT count(*)::int AS n FROM public.canary`)).rows[0].n).toBe(1);
  });

  it('an activity handed a plan other than the one its run stored refuses to run its SQL', async () => {
    const { createActivities } = await import('../../activities');
    const { createLogger } = await import('../../src/logger');
    const acts = createActivities({
      pool: db.pool,
      log: createLogger({ test: 'hijack' }).child({}, { level: 'fatal' }),
    });
    const pre = await acts.preflight({ table: 'canary' });
    await acts.claimRun(pre.plan.table, pre.plan);
    try {
      const tampered = { ...pre.plan, sql: { ...pre.plan.sql, finalize: ['DROP TABLE public.canary CASCADE'] } };
      await expect(acts.finalize(tampered, 500)).rejects.toThrow(
        /is not the one partflow made for workflow local; refusing to run its SQL/,
      );
      await expect(
        acts.backfillChunk({
          table: pre.plan.table,
          copyMode: 'pages',
          sql: { ...pre.plan.sql, backfillBatch: 'DROP TABLE public.canary CASCADE' },
          batchSize: 10,
          sleepMs: 0,
          maxMs: 100,
        }),
      ).rejects.toThrow(/refusing to run its SQL/);
      expect(await relkind({ schema: 'public', name: 'canary' })).toBe('r');
    } finally {
      await acts.releaseRun(pre.plan.table, 'rolled-back');
    }
  });

  it("a step handed a reference runs the plan its own run stored; another workflow's reference is refused", async () => {
    const { createActivities } = await import('../../activities');
    const { createLogger } = await import('../../src/logger');
    const { refOf } = await import('../../src/plan');
    const { MockActivityEnvironment } = await import('@temporalio/testing');
    const acts = createActivities({
      pool: db.pool,
      log: createLogger({ test: 'planref' }).child({}, { level: 'fatal' }),
    });
    const as = (wf: string) => new MockActivityEnvironment({ workflowExecution: { workflowId: wf, runId: `${wf}-r` } });
    const pre = (await as('ref-owner').run(acts.preflight, { table: 'canary' })) as Awaited<
      ReturnType<typeof acts.preflight>
    >;
    await as('ref-owner').run(acts.claimRun, pre.plan.table, pre.plan);
    try {
      // the reference carries no SQL: the step builds the copy the stored plan names
      await as('ref-owner').run(acts.createShadow, refOf(pre.plan), 500);
      expect(await relkind(pre.plan.shadow)).toBe('p');
      await expect(as('ref-other').run(acts.dropShadow, refOf(pre.plan), 500)).rejects.toThrow(
        /has no plan stored for workflow ref-other on public\.canary; refusing to run this step/,
      );
      expect(await relkind(pre.plan.shadow)).toBe('p');
      await expect(
        as('ref-owner').run(acts.dropShadow, { planOf: { schema: 'public', name: 'no_such_run' } }, 500),
      ).rejects.toThrow(/has no plan stored for workflow ref-owner on public\.no_such_run/);
      await as('ref-owner').run(acts.beginUndo, pre.plan.table);
      await as('ref-owner').run(acts.dropShadow, refOf(pre.plan), 500);
      expect(await relkind(pre.plan.shadow)).toBeUndefined();
    } finally {
      await as('ref-owner').run(acts.releaseRun, pre.plan.table, 'rolled-back' as const);
    }
    expect(await relkind({ schema: 'public', name: 'canary' })).toBe('r');
  });
});

describe('cancelling while a step waits on a lock the look-ahead cannot see: the undo waits for it, nothing is left', () => {
  /** An application's open write, as a prepared transaction: it holds ROW EXCLUSIVE and has no backend to see. */
  async function holdRowExclusive(table: string, gid: string): Promise<() => Promise<void>> {
    await withClient(async (c) => {
      await c.query('BEGIN');
      await c.query(`LOCK TABLE ${table} IN ROW EXCLUSIVE MODE`);
      await c.query(`PREPARE TRANSACTION '${gid}'`);
    });
    return () => db.pool.query(`COMMIT PREPARED '${gid}'`).then(() => undefined);
  }

  async function leftovers(table: string): Promise<Record<string, unknown>> {
    const r = await db.pool.query(
      `SELECT (SELECT count(*)::int FROM pg_trigger WHERE tgname LIKE 'partflow%') AS triggers,
              (SELECT count(*)::int FROM pg_proc WHERE pronamespace = to_regnamespace('partflow')) AS functions,
              (SELECT count(*)::int FROM pg_class WHERE relname LIKE $1 || '\\_pf\\_%' OR relname = $1 || '_old') AS relations,
              (SELECT run_state FROM partflow.runs WHERE table_name = $1) AS run`,
      [table],
    );
    return r.rows[0];
  }

  it.each<[string, 'sync' | 'cutover']>([
    ['the sync trigger step', 'sync'],
    ['the cut-over', 'cutover'],
  ])('%s', async (_label, at) => {
    const name = `cancel_${at}`;
    const t = await createTable(db.pool, { schema: 'public', name }, 4_000, 'uuid');
    const w = writerFor(t);
    await w.start();
    let release: (() => Promise<void>) | null = null;
    if (at === 'sync') release = await holdRowExclusive(`public.${name}`, `pf_${name}`);
    const h = await start({ table: name, approval: 'signal', rollbackWindow: '0s', lockTimeoutMs: 100 });
    if (at === 'cutover') {
      await waitFor(h, (p) => p.awaitingApproval, 'approval gate');
      release = await holdRowExclusive(`public.${name}`, `pf_${name}`);
      await h.signal('approveCutover');
    }
    await waitFor(h, (p) => p.phase === at, `phase ${at}`);
    await sleep(1500); // the step retries its lock meanwhile
    expect((await progress(h)).phase).toBe(at);
    await h.cancel();
    await sleep(1000);
    await release!(); // the lock goes; a step that had not stopped would now commit its DDL
    await expect(h.result()).rejects.toThrow(WorkflowFailedError);
    // in the history, the forward step closed (cancelled) before the first undo step was scheduled
    const forward = at === 'sync' ? 'installSyncTrigger' : 'cutover';
    const { forwardClosed, undoScheduled } = await forwardThenUndo(h, forward, [
      'beginUndo',
      'dropSyncTrigger',
      'swapBack',
      'dropShadow',
    ]);
    expect(forwardClosed).toBeLessThan(undoScheduled);
    expect(undoScheduled).toBeLessThan(Infinity);
    await sleep(500);
    const stats = await w.stop();
    expect(await leftovers(name)).toEqual({ triggers: 0, functions: 0, relations: 0, run: 'rolled-back' });
    expect(await relkind({ schema: 'public', name })).toBe('r');
    expectNoWriterErrors(stats);
    await expectMatchesRecord(t, w);
    await db.pool.query(`INSERT INTO public.${name} (payload) VALUES ('after the cancel')`); // the application writes
  });
});

function expectNoWriterErrors(stats: { errors: number; errorSamples: string[] }): void {
  expect({ errors: stats.errors, samples: stats.errorSamples }).toEqual({ errors: 0, samples: [] });
}

test('an undo that cannot restore everything goes to the end and says what is left: a re-added foreign key rows now violate', async () => {
  await db.pool.query(
    `CREATE TABLE public.owners (id bigint PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now())`,
  );
  await db.pool.query(
    `INSERT INTO public.owners SELECT g, now() - g * interval '1 day' FROM generate_series(1, 300) g`,
  );
  await db.pool.query(
    `CREATE TABLE public.pets (id serial PRIMARY KEY, owner_id bigint CONSTRAINT pets_owner_fk REFERENCES public.owners (id))`,
  );
  await db.pool.query(`INSERT INTO public.pets (owner_id) SELECT 1 + g % 300 FROM generate_series(1, 600) g`);
  const h = await start({ table: 'owners', inboundForeignKeys: 'drop', approval: 'auto', rollbackWindow: '1h' });
  await waitFor(h, (x) => x.phase === 'rollback-window', 'cut-over');
  // written while the key is dropped: an orphan the re-added key will reject
  await db.pool.query(`INSERT INTO public.pets (owner_id) VALUES (999999)`);
  await h.signal('rollback');
  const result = await h.result();
  expect(result.status).toBe('rolled-back');
  expect(result.undoProblems.join(' ')).toMatch(
    /foreign key public\.pets\.pets_owner_fk is back but NOT VALID .*VALIDATE CONSTRAINT pets_owner_fk/,
  );
  expect(await relkind({ schema: 'public', name: 'owners' })).toBe('r');
  expect(await relkind({ schema: 'public', name: 'owners_pf_shadow' })).toBeUndefined();
  const fk = await db.pool.query(`SELECT convalidated FROM pg_constraint WHERE conname = 'pets_owner_fk'`);
  expect(fk.rows).toEqual([{ convalidated: false }]);
  const run = await db.pool.query(`SELECT run_state FROM partflow.runs WHERE table_name = 'owners'`);
  expect(run.rows[0].run_state).toBe('rolled-back'); // not left active: the next run may start
});

describe('partflow cleanup after a terminate', () => {
  it('refuses while the run still runs, shows what a terminated run left, removes it with --yes', async () => {
    const { cleanupLeftovers } = await import('../../operator/client');
    const t = await createTable(db.pool, { schema: 'public', name: 'terminated' }, 8_000, 'uuid');
    const before = await catalogSnapshot(db.pool, ['public']);
    const w = writerFor(t);
    await w.start();
    const h = await start({ table: 'terminated', batchSize: 50, sleepMs: 100, approval: 'signal' });
    await waitFor(h, (p) => p.phase === 'backfill' && p.checkpointPage > 2, 'backfill progress');
    const live = await cleanupLeftovers(env.client, 'public.terminated', TQ, true);
    expect(live.refused).toMatch(
      new RegExp(`Workflow ${h.workflowId} still runs and owns public\\.terminated; cancel it`),
    );
    expect(await relkind({ schema: 'public', name: 'terminated_pf_shadow' })).toBe('p');
    await h.terminate('operator pulled the plug');
    await sleep(500);
    const look = await cleanupLeftovers(env.client, 'public.terminated', TQ, false);
    expect(look.refused).toBeUndefined();
    expect(look.report.phase).toBe('before-cutover');
    expect(look.report.leftovers).toEqual(
      expect.arrayContaining([
        'trigger partflow_sync_fwd on terminated',
        'table terminated_pf_shadow (partitioned copy)',
        'keys copied since the last verification terminated_pf_seen',
      ]),
    );
    expect(look.report.removed).toBe(false);
    expect(await relkind({ schema: 'public', name: 'terminated_pf_shadow' })).toBe('p'); // nothing changed yet
    const done = await cleanupLeftovers(env.client, 'public.terminated', TQ, true);
    expect(done.report.removed).toBe(true);
    await sleep(300);
    const stats = await w.stop();
    expect({ errors: stats.errors, samples: stats.errorSamples }).toEqual({ errors: 0, samples: [] });
    expect(await catalogSnapshot(db.pool, ['public'])).toEqual(before);
    expect(
      (await db.pool.query(`SELECT count(*)::int AS n FROM pg_proc WHERE pronamespace = to_regnamespace('partflow')`))
        .rows[0].n,
    ).toBe(0);
    expect(
      (await db.pool.query(`SELECT run_state FROM partflow.runs WHERE table_name = 'terminated'`)).rows[0].run_state,
    ).toBe('rolled-back');
    await expectMatchesRecord(t, w);
    // a new run may start
    const again = await (await start({ table: 'terminated', dryRun: true })).result();
    expect(again.status).toBe('dry-run');
  });

  it('after the cut-over: the reverse triggers go, the table stays partitioned and <table>_old is kept', async () => {
    const { cleanupLeftovers } = await import('../../operator/client');
    await createTable(db.pool, { schema: 'public', name: 'terminated_late' }, 2_000, 'uuid');
    const h = await start({ table: 'terminated_late', approval: 'auto', rollbackWindow: '1h' });
    await waitFor(h, (p) => p.phase === 'rollback-window', 'cut-over');
    await h.terminate();
    const done = await cleanupLeftovers(env.client, 'public.terminated_late', TQ, true);
    expect(done.report.phase).toBe('after-cutover');
    expect(done.report.removed).toBe(true);
    expect(await relkind({ schema: 'public', name: 'terminated_late' })).toBe('p');
    expect(await relkind({ schema: 'public', name: 'terminated_late_old' })).toBe('r');
    expect(
      (await db.pool.query(`SELECT count(*)::int AS n FROM pg_trigger WHERE tgname LIKE 'partflow%'`)).rows[0].n,
    ).toBe(0);
    // Temporal retrying the removal after it committed: reports, changes nothing (the run stays done)
    const { createCleanupActivities } = await import('../../activities/cleanup');
    const { createLogger } = await import('../../src/logger');
    const acts = createCleanupActivities({
      pool: db.pool,
      log: createLogger({ test: 'cleanup-retry' }).child({}, { level: 'fatal' }),
    });
    const retry = await acts.removeLeftovers({ schema: 'public', name: 'terminated_late' }, h.workflowId, 500);
    expect(retry.removed).toBe(false);
    expect(retry.run?.state).toBe('done');
    const state = await db.pool.query(`SELECT run_state FROM partflow.runs WHERE table_name = 'terminated_late'`);
    expect(state.rows[0].run_state).toBe('done');
  });
});

test('a slow preflight heartbeats and completes in its first attempt (here it waits 18 s for a lock, past the 15 s heartbeat timeout)', async () => {
  await db.pool.query(`CREATE TABLE public.slowpre (id int PRIMARY KEY, created_at timestamptz NOT NULL)`);
  await withClient(async (c) => {
    await c.query('BEGIN');
    await c.query(`LOCK TABLE public.slowpre IN ACCESS EXCLUSIVE MODE`);
    await c.query(`PREPARE TRANSACTION 'pf_slowpre'`);
  });
  const h = await start({ table: 'slowpre', dryRun: true });
  await sleep(18_000);
  await db.pool.query(`COMMIT PREPARED 'pf_slowpre'`);
  expect((await h.result()).status).toBe('dry-run');
  const events = (await h.fetchHistory()).events ?? [];
  const preflight = events.find((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'preflight');
  const started = events
    .filter((e) => String(e.activityTaskStartedEventAttributes?.scheduledEventId) === String(preflight?.eventId))
    .map((e) => e.activityTaskStartedEventAttributes!.attempt);
  expect(started).toEqual([1]);
});
