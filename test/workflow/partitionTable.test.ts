/**
 * The workflow's orchestration with mocked activities on the real dev server: step order, approval,
 * pause, compensation order on failure at each step, rollback, and continue-as-new carrying the state
 * (the server's suggestion threshold lowered so it happens after a few dozen events).
 */
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import type { Activities } from '../../activities';
import type { Plan } from '../../src/plan';
import { startDevServer } from '../helpers/temporal';
import { progress, sleep, waitFor } from '../helpers/workflow';

let env: TestWorkflowEnvironment;
let n = 0;

beforeAll(async () => {
  env = await startDevServer(['--dynamic-config-value', 'limit.historyCount.suggestContinueAsNew=40']);
});
afterAll(async () => {
  await env?.teardown();
});

const fakePlan = {
  table: { schema: 'public', name: 't' },
  estimatedRows: 1000,
  partitions: [{ name: 't_2025_01', from: '2025-01', to: '2025-02' }],
  warnings: [],
  old: { schema: 'public', name: 't_old' },
  sql: { backfillBatch: 'x' },
} as unknown as Plan;

type Calls = string[];

function mocks(calls: Calls, opts: { failAt?: keyof Activities; chunks?: number } = {}): Activities {
  const chunks = opts.chunks ?? 3;
  let page = 0;
  const rec =
    (name: keyof Activities, out: unknown = undefined) =>
    async (..._args: unknown[]) => {
      calls.push(name);
      if (opts.failAt === name) throw ApplicationFailure.nonRetryable(`injected failure in ${name}`, 'Injected');
      return typeof out === 'function' ? (out as () => unknown)() : out;
    };
  return {
    preflight: rec('preflight', { plan: fakePlan, summary: [] }),
    claimRun: rec('claimRun'),
    releaseRun: rec('releaseRun'),
    createShadow: rec('createShadow', { created: true, foreignKeys: 0 }),
    dropShadow: rec('dropShadow'),
    installSyncTrigger: rec('installSyncTrigger', { totalPages: chunks * 10, lockWaitRetries: 0 }),
    dropSyncTrigger: rec('dropSyncTrigger'),
    // the copy's chunk, under the name runs since plan references call it (recorded as the step it is)
    copyChunk: rec('backfillChunk', () => {
      page += 10;
      return {
        nextPage: page,
        totalPages: chunks * 10,
        rowsCopied: page * 10,
        rowsThisChunk: 100,
        pagesThisChunk: 10,
        batches: 1,
        elapsedMs: 100,
        done: page >= chunks * 10,
        percent: (100 * page) / (chunks * 10),
        checkpoint: `page ${page}`,
      };
    }),
    verify: rec('verify', { ok: true, rows: 1000, ranges: [], mismatches: [], elapsedMs: 5 }),
    cutover: rec('cutover', { alreadyDone: false, attempts: 1, lockWaitRetries: 0, lockHoldMs: 3 }),
    swapBack: rec('swapBack', { swapped: true, lockHoldMs: 2 }),
    finalize: rec('finalize'),
    rollbackBlocker: rec('rollbackBlocker', null),
    beginUndo: rec('beginUndo'),
    fleetRegistered: async () => false, // not a step of the plan: left out of `calls`
  } as unknown as Activities;
}

async function withWorker<T>(activities: Activities, fn: (taskQueue: string) => Promise<T>): Promise<T> {
  const taskQueue = `wf-${++n}`;
  const worker = await Worker.create({
    connection: env.nativeConnection,
    taskQueue,
    workflowsPath: require.resolve('../../workflows'),
    activities,
  });
  return worker.runUntil(fn(taskQueue));
}

const start = (taskQueue: string, input: Record<string, unknown>) =>
  env.client.workflow.start('partitionTable', {
    taskQueue,
    workflowId: `wf-${n}-${Date.now()}`,
    args: [{ table: 't', ...input }],
  });

test('runs the steps in order, waits for approval, finalizes', async () => {
  const calls: Calls = [];
  await withWorker(mocks(calls), async (tq) => {
    const h = await start(tq, { approval: 'signal', rollbackWindow: '1h' });
    await waitFor(h, (p) => p.awaitingApproval, 'approval gate');
    await sleep(300);
    expect(calls).not.toContain('cutover');
    await h.signal('approveCutover');
    await waitFor(h, (p) => p.phase === 'rollback-window', 'window');
    await h.signal('finalize');
    expect((await h.result()).status).toBe('done');
  });
  expect(calls).toEqual([
    'preflight',
    'claimRun',
    'createShadow',
    'installSyncTrigger',
    'backfillChunk',
    'backfillChunk',
    'backfillChunk',
    'verify',
    'cutover',
    'finalize',
    'releaseRun',
  ]);
});

test('pause stops scheduling backfill chunks until resume', async () => {
  const calls: Calls = [];
  await withWorker(mocks(calls, { chunks: 1000 }), async (tq) => {
    const h = await start(tq, { approval: 'auto', rollbackWindow: '0s' });
    await waitFor(h, (p) => p.checkpointPage > 0, 'backfill');
    await h.signal('pause');
    await waitFor(h, (p) => p.paused, 'paused');
    await sleep(200);
    const a = (await progress(h)).checkpointPage;
    await sleep(800);
    expect((await progress(h)).checkpointPage).toBe(a);
    await h.signal('rollback');
    expect((await h.result()).status).toBe('rolled-back');
  });
});

test.each<[keyof Activities, string[]]>([
  ['createShadow', ['beginUndo', 'dropShadow', 'releaseRun']],
  ['installSyncTrigger', ['beginUndo', 'dropSyncTrigger', 'dropShadow', 'releaseRun']],
  ['backfillChunk', ['beginUndo', 'dropSyncTrigger', 'dropShadow', 'releaseRun']],
  ['verify', ['beginUndo', 'dropSyncTrigger', 'dropShadow', 'releaseRun']],
  ['cutover', ['beginUndo', 'swapBack', 'dropSyncTrigger', 'dropShadow', 'releaseRun']],
  ['finalize', ['beginUndo', 'swapBack', 'dropSyncTrigger', 'dropShadow', 'releaseRun']],
])('a failure in %s fences the run, then runs the compensations in reverse order', async (failAt, compensations) => {
  const calls: Calls = [];
  await withWorker(mocks(calls, { failAt }), async (tq) => {
    const h = await start(tq, { approval: 'auto', rollbackWindow: '0s' });
    const err = await h.result().catch((e) => e);
    expect(err).toBeInstanceOf(WorkflowFailedError);
    expect((err as WorkflowFailedError).cause?.message).toBe(`injected failure in ${failAt}`);
    expect((await progress(h)).phase).toBe('failed');
  });
  expect(calls.slice(calls.lastIndexOf(failAt) + 1)).toEqual(compensations);
});

test('rollback in the window swaps back and undoes the rest', async () => {
  const calls: Calls = [];
  await withWorker(mocks(calls), async (tq) => {
    const h = await start(tq, { approval: 'auto', rollbackWindow: '1h' });
    await waitFor(h, (p) => p.phase === 'rollback-window', 'window');
    await h.signal('rollback');
    expect((await h.result()).status).toBe('rolled-back');
    expect((await progress(h)).phase).toBe('rolled-back');
  });
  expect(calls.slice(calls.indexOf('cutover') + 1)).toEqual([
    'rollbackBlocker',
    'beginUndo',
    'swapBack',
    'dropSyncTrigger',
    'dropShadow',
    'releaseRun',
  ]);
});

test('a preflight refusal fails with its sentence and compensates nothing', async () => {
  const calls: Calls = [];
  await withWorker(mocks(calls, { failAt: 'preflight' }), async (tq) => {
    const err = await (await start(tq, {})).result().catch((e) => e);
    expect((err as WorkflowFailedError).cause?.message).toBe('injected failure in preflight');
  });
  expect(calls).toEqual(['preflight']);
});

test('continue-as-new keeps history bounded and carries the checkpoint and settings', async () => {
  const calls: Calls = [];
  await withWorker(mocks(calls, { chunks: 40 }), async (tq) => {
    const h = await start(tq, { approval: 'signal', rollbackWindow: '0s', batchSize: 777 });
    const gate = await waitFor(h, (p) => p.awaitingApproval, 'approval gate', 120_000);
    expect(gate.rowsCopied).toBe(4000);
    expect(gate.batchSize).toBe(777);
    await h.signal('approveCutover');
    expect((await h.result()).status).toBe('done');
    // the first run of this workflow id ended in continue-as-new
    const first = env.client.workflow.getHandle(h.workflowId, h.firstExecutionRunId);
    expect((await first.describe()).status.name).toBe('CONTINUED_AS_NEW');
  });
  expect(calls.filter((c) => c === 'preflight')).toHaveLength(1);
  expect(calls.filter((c) => c === 'backfillChunk')).toHaveLength(40);
});
