/**
 * `npx partflow ...` as an operator runs it (the compiled bin), against the dev server and a worker.
 */
import { execFile } from 'child_process';
import * as path from 'path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { TestDb } from '../helpers/pg';
import { createTable } from '../helpers/tables';
import { startStack, Stack } from '../helpers/stack';

const TQ = 'partflow-cli';
const BIN = path.join(__dirname, '..', '..', 'bin', 'partflow.js');
let stack: Stack;
let env: TestWorkflowEnvironment;
let db: TestDb;

beforeAll(async () => {
  stack = await startStack('cli', TQ);
  ({ env, db } = stack);
});
afterAll(async () => {
  await stack?.teardown();
});

function cli(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { env: { ...process.env, TEMPORAL_ADDRESS: env.address, PARTFLOW_TASK_QUEUE: TQ }, timeout: 120_000 },
      (error, stdout, stderr) => {
        resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, out: stdout, err: stderr });
      },
    );
  });
}

test('help, usage errors and bad input: exit 2 with one sentence and no stack trace', async () => {
  const help = await cli('--help');
  expect(help.code).toBe(0);
  for (const c of [
    'plan',
    'start',
    'status',
    'watch',
    'pause',
    'resume',
    'throttle',
    'approve',
    'rollback',
    'finalize',
    'cancel',
    'awaiting',
    'fix',
    'report',
    'schedule',
  ])
    expect(help.out).toContain(c);
  for (const c of ['start', 'pause', 'fix', 'schedule'])
    expect((await cli(c, '--help')).out).toMatch(new RegExp(`partflow ${c}`));
  const unknown = await cli('explode', 't');
  expect(unknown).toMatchObject({
    code: 2,
    err: 'partflow: Unknown command "explode"; run partflow --help for the list.\n',
  });
  const bad = await cli('start', 't', '--approval', 'maybe');
  expect(bad.code).toBe(2);
  expect(bad.err).toMatch(/^partflow: Field "approval" must be one of "signal", "auto", not "maybe"\.\n$/);
  expect((await cli('status')).code).toBe(2);
});

test('plan, start, status, pause, throttle, resume, watch, approve, report: one run driven from our CLI', async () => {
  await createTable(db.pool, { schema: 'public', name: 'cli_images' }, 20_000, 'bigserial');
  const plan = await cli('plan', 'cli_images', '--parallelism', '2');
  expect(plan.code).toBe(0);
  expect(plan.out).toMatch(/^backfill: pages walk in 2 stream\(s\)$/m);
  expect(plan.out).toMatch(/^-- shadow\nCREATE TABLE "public"\."cli_images_pf_shadow"/m);
  expect(plan.out).toMatch(/^-- cutover\nLOCK TABLE/m);
  const started = await cli(
    'start',
    'cli_images',
    '--batch-size',
    '100',
    '--sleep-ms',
    '50',
    '--rollback-window',
    '0s',
  );
  expect(started).toMatchObject({ code: 0 });
  expect(started.out).toMatch(/^started partition-public\.cli_images/);
  // issue 28 item 1: the Web UI's summary and details name the table, the change and the key input
  const described = await env.client.workflow.getHandle('partition-public.cli_images').describe();
  expect(await described.staticSummary()).toBe(
    'partitionTable public.cli_images: monthly partitions by created_at, copy',
  );
  expect(await described.staticDetails()).toMatch(/^\*\*column\*\*: created_at\n\*\*method\*\*: copy\n/);
  let status: { phase: string; paused: boolean; batchSize: number } = { phase: '', paused: false, batchSize: 0 };
  for (let i = 0; i < 100 && status.phase !== 'backfill'; i++) {
    const s = await cli('status', 'cli_images', '--json');
    if (s.code === 0) status = JSON.parse(s.out);
    if (status.phase !== 'backfill') await new Promise((r) => setTimeout(r, 200));
  }
  expect(status.phase).toBe('backfill');
  expect((await cli('pause', 'cli_images')).out).toBe('sent pause to partition-public.cli_images\n');
  // paused once the chunk in flight ends; pausing until then
  const st = JSON.parse((await cli('status', 'cli_images', '--json')).out);
  expect(st.paused || st.pausing).toBe(true);
  expect((await cli('throttle', 'cli_images', '--batch-size', '4000', '--sleep-ms', '0')).out).toBe(
    'throttle now {"batchSize":4000,"sleepMs":0}\n',
  );
  const badThrottle = await cli('throttle', 'cli_images', '--batch-size', '-3');
  expect(badThrottle.code).toBe(2);
  expect((await cli('resume', 'cli_images')).code).toBe(0);
  const watched = await cli('watch', 'cli_images', '--interval-ms', '200');
  expect({ code: watched.code, err: watched.err }).toEqual({ code: 0, err: '' });
  expect(watched.out).toMatch(
    /public\.cli_images (backfill|verify|awaiting-approval) \[[#.]{20}\] \d+\.\d% [\d,]+\/[\d,]+ rows/,
  );
  expect(watched.out).toMatch(/waiting for approval: partflow approve public\.cli_images\n$/);
  // issue 28 item 2: the fleet's list of runs waiting for approval names this one
  let waiting = await cli('awaiting');
  for (let i = 0; i < 25 && !waiting.out.includes('public.cli_images'); i++) waiting = await cli('awaiting');
  expect(waiting.out).toMatch(
    /^public\.cli_images {2}partition-public\.cli_images {2}started \S+; approve: partflow approve public\.cli_images$/m,
  );
  const junk = await cli('approve', 'cli_images', '--older-snapshots', 'sometimes');
  expect(junk.code).not.toBe(0);
  expect(junk.err + junk.out).toMatch(/sometimes/);
  expect((await cli('approve', 'cli_images', '--older-snapshots', 'guard')).code).toBe(0);
  const done = await cli('watch', 'cli_images', '--interval-ms', '200');
  expect(done.code).toBe(0);
  expect(done.out).toMatch(/public\.cli_images done/);
  const report = await cli('report', '--tables', 'cli_images');
  expect(report.code).toBe(0);
  expect(report.out).toMatch(
    /^public\.cli_images \(by created_at\): \d+ partitions, 3 ahead, oldest cli_images_\d{4}_\d{2}, default 0 rows$/m,
  );
  expect(report.out).not.toMatch(/created /);
});

test('a second worker on a taken metrics address stops with the address and PARTFLOW_METRICS_ADDRESS named', async () => {
  const net = await import('net');
  const taken = net.createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  const port = (taken.address() as { port: number }).port;
  try {
    const r = await new Promise<{ code: number; err: string }>((resolve) => {
      execFile(
        process.execPath,
        [path.join(__dirname, '..', '..', 'dist', 'worker', 'main.js')],
        {
          env: { ...process.env, PARTFLOW_METRICS_ADDRESS: `127.0.0.1:${port}`, TEMPORAL_ADDRESS: env.address },
          timeout: 60_000,
        },
        (error, _out, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, err: stderr }),
      );
    });
    expect(r.code).toBe(1);
    expect(r.err).toMatch(
      new RegExp(`the metrics exporter cannot listen on 127\\.0\\.0\\.1:${port} \\(.*\\).*PARTFLOW_METRICS_ADDRESS`),
    );
  } finally {
    taken.close();
  }
});
