/**
 * The Temporal Web UI flows an operator uses, in headless Chromium (Debian's chromium driven by
 * playwright-core; no browser download): start partitionTable from the Start Workflow form, find it in the
 * list, run the progress query in the Queries tab, send approveCutover from the Signal form, then check
 * the database against the writers' record. Screenshots go to test-artifacts/webui/.
 */
import * as fs from 'fs';
import * as path from 'path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Client } from 'pg';
import { awaitingApprovalQuery } from '../../src/fleet';
import { Browser, chromium, Page } from 'playwright-core';
import { compareWithRecord, Writer } from '../../demo/writer';
import type { TestDb } from '../helpers/pg';
import { createTable } from '../helpers/tables';
import { startStack, Stack } from '../helpers/stack';
import { waitFor } from '../helpers/workflow';

const TQ = 'partflow-ui';
const UI_PORT = 18233 + (process.pid % 500);
const SHOTS = path.join(__dirname, '..', '..', 'test-artifacts', 'webui');
let stack: Stack;
let env: TestWorkflowEnvironment;
let db: TestDb;
let browser: Browser;

beforeAll(async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  stack = await startStack('ui', TQ, { uiPort: UI_PORT });
  ({ env, db } = stack);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-quic',
    ],
  });
});

afterAll(async () => {
  await browser?.close();
  await stack?.teardown();
});

const ui = (p: string) => `http://127.0.0.1:${UI_PORT}/namespaces/default${p}`;
const shot = (page: Page, name: string) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });

test('start from the Start Workflow form, query progress in the Queries tab, approve from the Signal form', async () => {
  const t = await createTable(db.pool, { schema: 'public', name: 'ui_images' }, 6000, 'uuid');
  const w = new Writer(t.spec, db.conn, { lanes: 2, opsPerSecondPerLane: 30, snapshot: true });
  await w.start();
  const page = await browser.newPage({ viewport: { width: 1400, height: 1100 } });
  const workflowId = `ui-partition-${Date.now()}`;

  // 1. Start Workflow form
  await page.goto(ui('/workflows/start-workflow'), { waitUntil: 'load' });
  await page.locator('#workflowId').fill(workflowId);
  await page.locator('#taskQueue').fill(TQ);
  await page.locator('#taskQueue').blur();
  await page.locator('#workflowType').fill('partitionTable');
  await page.locator('.cm-content').first().click();
  await page.keyboard.insertText(
    JSON.stringify({ table: 'public.ui_images', approval: 'signal', rollbackWindow: '0s', batchSize: 500 }),
  );
  await page.getByRole('heading', { name: 'Start a Workflow' }).click(); // the editor reformats on blur and the button moves
  await page.getByText('Task Queue is Active').waitFor();
  await page.waitForTimeout(500);
  await shot(page, '1-start-form');
  await page.getByTestId('start-workflow-button').click();
  const handle = env.client.workflow.getHandle(workflowId);
  await waitFor(handle, () => true, 'the workflow to exist', 30_000);

  // 2. it is in the list
  await page.goto(ui('/workflows'), { waitUntil: 'load' });
  await page.getByText(workflowId).first().waitFor({ timeout: 30_000 });
  await shot(page, '2-workflow-list');

  // 3. progress in the Queries tab, while it waits at the gate
  await waitFor(handle, (p) => p.awaitingApproval, 'approval gate');
  await page.goto(ui(`/workflows/${workflowId}`), { waitUntil: 'load' });
  await page.locator('[data-testid=queries-tab]:visible').first().click();
  await page.getByRole('button', { name: 'Run Query' }).click();
  await page.getByText('"awaiting-approval"').first().waitFor({ timeout: 30_000 });
  await shot(page, '3-progress-query');
  // the same progress without a query: the workflow's current details (setCurrentDetails), User Metadata tab
  // (the UI renders the Markdown in a sandboxed iframe)
  await page.getByText('User Metadata', { exact: true }).locator('visible=true').first().click();
  await page.getByText('Current Details').first().waitFor({ timeout: 30_000 });
  await page
    .frameLocator('iframe')
    .getByText(/public\.ui_images.*awaiting-approval: next: signal approveCutover/)
    .first()
    .waitFor({ timeout: 30_000 });
  await shot(page, '3b-current-details');

  // 3c. the fleet: the workflow list filtered by the search attributes lists the run waiting for approval
  // (issue 28, item 2; the same query as partflow awaiting and temporal workflow list --query)
  await page.goto(ui(`/workflows?query=${encodeURIComponent(awaitingApprovalQuery('public.ui_images'))}`), {
    waitUntil: 'load',
  });
  await page.getByText(workflowId).first().waitFor({ timeout: 30_000 });
  await shot(page, '3c-fleet-filter');
  await page.goto(ui(`/workflows/${workflowId}`), { waitUntil: 'load' });

  // 4. approveCutover from the Signal form
  await page.locator('button:has-text("More Actions"):visible').first().click();
  await page.locator('[data-testid=signal-button]:visible').first().click();
  await page.locator('[data-testid=signal-select-button]:visible').first().click();
  await page.getByText('approveCutover', { exact: true }).locator('visible=true').first().click();
  await page.waitForTimeout(500);
  await shot(page, '4-signal-form');
  await page.locator('[data-testid=confirm-modal-button]:visible').first().click();
  const result = await handle.result();
  await page.reload({ waitUntil: 'load' });
  await page.getByText('Completed').first().waitFor({ timeout: 30_000 });
  await shot(page, '5-completed');
  await page.close();

  // 5. the database
  const stats = await w.stop();
  expect(result.status).toBe('done');
  expect({ errors: stats.errors, samples: stats.errorSamples }).toEqual({ errors: 0, samples: [] });
  expect(
    (await db.pool.query(`SELECT relkind FROM pg_class WHERE oid = 'public.ui_images'::regclass`)).rows[0].relkind,
  ).toBe('p');
  const c = new Client(db.conn);
  await c.connect();
  const cmp = await compareWithRecord(c, t.spec, w.record);
  await c.end();
  expect({ missing: cmp.missing, extra: cmp.extra, different: cmp.different }).toEqual({
    missing: 0,
    extra: 0,
    different: 0,
  });
  for (const f of [
    '1-start-form',
    '2-workflow-list',
    '3-progress-query',
    '3b-current-details',
    '4-signal-form',
    '5-completed',
  ])
    expect(fs.statSync(path.join(SHOTS, `${f}.png`)).size).toBeGreaterThan(10_000);
});

test('the summary our CLI gives a run, and its current details after a pause and a resume (issue 28 item 5)', async () => {
  const { startPartition } = await import('../../operator/client');
  await createTable(db.pool, { schema: 'public', name: 'ui_paused' }, 4000, 'uuid');
  const handle = await startPartition(
    env.client,
    { table: 'public.ui_paused', approval: 'signal', batchSize: 100, sleepMs: 300 },
    TQ,
  );
  await waitFor(handle, (p) => p.phase === 'backfill' && p.rowsCopied > 0, 'backfill', 60_000);
  await handle.signal('pause');
  await waitFor(handle, (p) => p.paused, 'paused', 60_000);
  const page = await browser.newPage({ viewport: { width: 1400, height: 1100 } });
  await page.goto(ui(`/workflows/${handle.workflowId}`), { waitUntil: 'load' });
  // the static summary and details the CLI set when it started the run (the UI renders them as Markdown)
  const dump = async (name: string) =>
    fs.writeFileSync(
      path.join(SHOTS, `${name}.txt`),
      (
        await Promise.all(
          page.frames().map((f) =>
            f
              .locator('body')
              .innerText()
              .catch(() => ''),
          ),
        )
      ).join('\n----\n'),
    );
  // the UI renders each Markdown field in its own sandboxed iframe: read every frame's text until one matches
  const frameTexts = async () =>
    Promise.all(
      page.frames().map((f) =>
        f
          .locator('body')
          .innerText({ timeout: 2_000 })
          .catch(() => ''),
      ),
    );
  const anywhere = async (text: RegExp) => {
    for (let i = 0; i < 60; i++) {
      if ((await frameTexts()).some((t) => text.test(t))) return;
      await page.waitForTimeout(500);
    }
    await dump('not-found');
    throw new Error(`the Web UI never showed ${text}`);
  };
  // the static summary and details the CLI set when it started the run, under User Metadata (Markdown)
  await page.getByText('User Metadata', { exact: true }).locator('visible=true').first().click();
  await page.getByText('Current Details').first().waitFor({ timeout: 30_000 });
  await anywhere(/partitionTable public\.ui_paused: monthly partitions by created_at, copy/);
  await shot(page, '6-summary');
  await anywhere(/public\.ui_paused: backfill \(paused\): next: signal resume/);
  await shot(page, '7-details-paused');
  await handle.signal('resume');
  await waitFor(handle, (p) => !p.paused && p.phase === 'backfill', 'resumed', 60_000);
  // refreshed by the signal: no "(paused)", a rate again while rows are copied
  await page.reload({ waitUntil: 'load' });
  await page.getByText('User Metadata', { exact: true }).locator('visible=true').first().click();
  await anywhere(/rows\/s/);
  const details = (await frameTexts()).find((t) => /public\.ui_paused: backfill/.test(t));
  expect(details).toBeDefined();
  expect(details).not.toMatch(/\(paused\)|signal resume/);
  await shot(page, '8-details-resumed');
  await page.close();
  await handle.signal('rollback');
  expect((await handle.result()).status).toBe('rolled-back');
  for (const f of ['6-summary', '7-details-paused', '8-details-resumed'])
    expect(fs.statSync(path.join(SHOTS, `${f}.png`)).size).toBeGreaterThan(10_000);
});
