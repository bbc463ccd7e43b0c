/**
 * `npx partflow <command>`: the operator's CLI over the same workflows the Temporal CLI and Web UI drive.
 * Exit codes: 0 done, 1 the operation failed, 2 bad usage or input.
 */
import { parseArgs } from 'util';
import type { Client, WorkflowHandle } from '@temporalio/client';
import type { Progress } from '../workflows/definitions';
import { cleanupLeftovers, connectClient, partitionHandle, startPartition } from './client';
import { InputError, parseTableName } from './ident';
import { PartitionTableInput, validatePartitionInput, validateThrottle } from './input';
import * as fs from 'fs';
import { loadConfig } from './config';
import { FixConstraintsInput, validateFixInput } from './constraints';
import type { FixResult } from '../workflows/fixConstraints';
import type { MaintainResult } from '../workflows/maintainPartitions';
import { ArchiveMode, MaintainPartitionsInput, validateMaintainInput } from './maintenance';
import { createMaintenanceSchedule, DEFAULT_SCHEDULE_ID, describeSchedule } from './schedule';

const HELP: Record<string, string> = {
  '': `partflow: zero-downtime PostgreSQL partitioning on Temporal

Usage: partflow <command> [options]

Commands:
  plan <table>       show every SQL statement, the partitions and warnings (dry run, changes nothing)
  start <table>      start partitionTable (workflow id partition-<schema>.<table>)
  status <table>     phase, progress, rate, ETA, last error (--json for scripts)
  watch <table>      live progress until the run ends or waits for approval
  pause <table>      pause the backfill (takes effect within seconds, holds no locks)
  resume <table>     resume the backfill
  throttle <table>   --batch-size N and/or --sleep-ms N, applied to the next batch
  approve <table>    approve the cut-over
  rollback <table>   undo: before cut-over drops the copy; after it swaps the old table back
  finalize <table>   end the rollback window now
  cancel <table>     cancel the workflow (compensations run)
  cleanup <table>    show what a terminated run left behind; --yes removes it
  fix                add foreign keys and NOT NULLs online: --preset seed-critical-fixes or --file input.json;
                     audits first and changes nothing when violations have no policy
  report             the partition health report as a table, changing nothing: --tables a,b or --file input.json
  maintain           run maintainPartitions once now: --file input.json or --tables a,b [--premake 3] [--retention "12 months"] [--archive detach]
  schedule <verb>    create|show|pause|unpause|trigger|delete the maintenance Schedule (create takes maintain's options and --cron)

Environment: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, PARTFLOW_TASK_QUEUE. Run 'partflow <command> --help' for options.`,
  start: `partflow start <table> [--column created_at] [--premake 3] [--batch-size 5000] [--sleep-ms 0] [--max-batch-ms 50]
  [--approval signal|auto] [--rollback-window 24h] [--inbound-foreign-keys refuse|drop] [--time-zone UTC]
  [--lock-timeout-ms 500] [--start-month YYYY-MM] [--accept-lost-constraint NAME ...] [--watch]`,
  plan: 'partflow plan <table> [--column created_at] [--premake 3] [--time-zone UTC] [--start-month YYYY-MM] [--accept-lost-constraint NAME ...] [--json]',
  status: 'partflow status <table> [--json]: phase, progress, rate, ETA, checkpoint, lock retries, last error',
  watch:
    'partflow watch <table> [--interval-ms 1000] [--json]: a live progress line until the run ends or waits for approval',
  pause:
    'partflow pause <table>: stop the backfill after the current batch (within seconds); no locks are held while paused',
  resume: 'partflow resume <table>: continue the backfill from its checkpoint',
  approve: 'partflow approve <table>: allow the cut-over (the run waits in phase awaiting-approval for this)',
  rollback:
    'partflow rollback <table>: before cut-over, drop the copy; during the rollback window, swap the old table back',
  finalize: 'partflow finalize <table>: end the rollback window now (the old table is kept as <table>_old)',
  cancel: 'partflow cancel <table>: cancel the workflow; its compensations run first',
  cleanup:
    'partflow cleanup <table> [--yes] [--json]: what a terminated run left behind (triggers, the copy); with --yes removes it. Refused while the run still runs',
  report:
    'partflow report (--file input.json | --tables t1,t2 [--time-zone UTC]) [--json]: the health report, nothing changed',
  throttle: 'partflow throttle <table> [--batch-size N] [--sleep-ms N]',
  maintain:
    'partflow maintain (--file input.json | --tables t1,t2 [--premake 3] [--retention "12 months"] [--archive detach|dump|drop|none] [--time-zone UTC]) [--json]',
  schedule: `partflow schedule create (--file input.json | --tables t1,t2 [--premake 3] [--retention "12 months"] [--archive detach] [--time-zone UTC]) [--cron "0 3 1 * *"] [--id partflow-maintenance]
partflow schedule show|pause|unpause|trigger|delete [--id partflow-maintenance]`,
  fix: `partflow fix --preset seed-critical-fixes | --file fixes.json  [--dry-run] [--json]
  [--set NAME.orphans=set-null|delete|fail] [--set NAME.fill=VALUE]   (policies for the preset's fixes, by constraint name)`,
};

const options = {
  help: { type: 'boolean', short: 'h' },
  json: { type: 'boolean' },
  verbose: { type: 'boolean' },
  watch: { type: 'boolean' },
  column: { type: 'string' },
  premake: { type: 'string' },
  'batch-size': { type: 'string' },
  'sleep-ms': { type: 'string' },
  'max-batch-ms': { type: 'string' },
  approval: { type: 'string' },
  'rollback-window': { type: 'string' },
  'inbound-foreign-keys': { type: 'string' },
  'time-zone': { type: 'string' },
  'lock-timeout-ms': { type: 'string' },
  'start-month': { type: 'string' },
  'accept-lost-constraint': { type: 'string', multiple: true },
  yes: { type: 'boolean' },
  'interval-ms': { type: 'string' },
  preset: { type: 'string' },
  file: { type: 'string' },
  set: { type: 'string', multiple: true },
  'dry-run': { type: 'boolean' },
  tables: { type: 'string' },
  retention: { type: 'string' },
  archive: { type: 'string' },
  cron: { type: 'string' },
  id: { type: 'string' },
} as const;

class UsageError extends Error {}

const num = (v: string | undefined, flag: string): number | undefined => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new UsageError(`--${flag} takes a number, not ${JSON.stringify(v)}.`);
  return n;
};

function inputFrom(table: string, v: Record<string, string | string[] | boolean | undefined>): PartitionTableInput {
  const input: PartitionTableInput = { table };
  if (v.column) input.column = v.column as string;
  if (v.premake) input.premake = num(v.premake as string, 'premake');
  if (v['batch-size']) input.batchSize = num(v['batch-size'] as string, 'batch-size');
  if (v['sleep-ms']) input.sleepMs = num(v['sleep-ms'] as string, 'sleep-ms');
  if (v['max-batch-ms']) input.maxBatchMs = num(v['max-batch-ms'] as string, 'max-batch-ms');
  if (v.approval) input.approval = v.approval as 'signal' | 'auto';
  if (v['rollback-window']) input.rollbackWindow = v['rollback-window'] as string;
  if (v['inbound-foreign-keys']) input.inboundForeignKeys = v['inbound-foreign-keys'] as 'refuse' | 'drop';
  if (v['time-zone']) input.timeZone = v['time-zone'] as string;
  if (v['lock-timeout-ms']) input.lockTimeoutMs = num(v['lock-timeout-ms'] as string, 'lock-timeout-ms');
  if (v['start-month']) input.startMonth = v['start-month'] as string;
  if (v['accept-lost-constraint']) input.acceptLostConstraints = v['accept-lost-constraint'] as string[];
  validatePartitionInput(input); // bad input stops here, before anything is started
  return input;
}

export function progressLine(p: Progress): string {
  const bar = '#'.repeat(Math.round(p.percent / 5)).padEnd(20, '.');
  const eta = p.etaSeconds === null ? '?' : `${p.etaSeconds}s`;
  return `${p.table} ${p.phase}${p.paused ? ' (paused)' : ''} [${bar}] ${p.percent.toFixed(1)}% ${p.rowsCopied.toLocaleString('en-US')}/${p.rowsEstimated.toLocaleString('en-US')} rows ${p.rowsPerSecond.toLocaleString('en-US')} rows/s ETA ${eta} page ${p.checkpointPage}/${p.totalPages} lock retries ${p.lockWaitRetries} moves across months ${p.rowMoves ?? 0}${p.lastError ? ` last error: ${p.lastError}` : ''}`;
}

async function watch(h: WorkflowHandle, intervalMs: number, out: (s: string) => void, json = false): Promise<number> {
  const tty = process.stdout.isTTY;
  for (;;) {
    let p: Progress;
    try {
      p = await h.query<Progress>('progress');
    } catch (err) {
      const d = await h.describe();
      if (d.status.name !== 'RUNNING') {
        out(`${h.workflowId}: ${d.status.name.toLowerCase()}`);
        return d.status.name === 'COMPLETED' ? 0 : 1;
      }
      throw err;
    }
    const line = json ? JSON.stringify(p) : progressLine(p);
    if (tty && !json) process.stdout.write(`\r\x1b[2K${line}`);
    else out(line);
    if (['done', 'rolled-back', 'failed'].includes(p.phase) || p.awaitingApproval) {
      if (tty && !json) process.stdout.write('\n');
      if (p.awaitingApproval && !json)
        out(`verified ${p.verify?.rows ?? 0} rows; waiting for approval: partflow approve ${p.table}`);
      return p.phase === 'failed' ? 1 : 0;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export async function main(
  argv: string[],
  out: (s: string) => void = (s) => process.stdout.write(s + '\n'),
): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (err) {
    process.stderr.write(`partflow: ${(err as Error).message}\n`);
    return 2;
  }
  const { values: v, positionals } = parsed;
  const [command = '', table] = positionals;
  if (v.help || command === '' || command === 'help') {
    out(HELP[command] ?? HELP['']);
    return 0;
  }
  let client: Client | undefined;
  try {
    if (command === 'fix') {
      client = await connectClient(loadConfig());
      return await fix(client, v as Record<string, unknown>, out);
    }
    if (command === 'maintain' || command === 'schedule' || command === 'report') {
      const config = loadConfig();
      client = await connectClient(config);
      return await maintenance(client, command, table, v as Record<string, unknown>, config.taskQueue, out);
    }
    const needsTable = [
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
      'cleanup',
    ];
    if (!needsTable.includes(command))
      throw new UsageError(`Unknown command "${command}"; run partflow --help for the list.`);
    if (!table)
      throw new UsageError(`partflow ${command} needs a table, e.g. partflow ${command} public.generated_images.`);
    parseTableName(table);
    const config = loadConfig();
    client = await connectClient(config);
    const h = partitionHandle(client, table);
    switch (command) {
      case 'plan': {
        const input = { ...inputFrom(table, v), dryRun: true };
        const ph = await client.workflow.start('partitionTable', {
          taskQueue: config.taskQueue,
          workflowId: `plan-${h.workflowId}-${Date.now()}`,
          args: [input],
        });
        const r = await ph.result();
        if (v.json) out(JSON.stringify(r, null, 2));
        else {
          out(
            `partitions (${r.plan.partitions.length + 1}): ${r.plan.partitions.map((p: { name: string }) => p.name).join(', ')}, ${r.plan.defaultPartition}`,
          );
          out(`estimated rows: ${r.plan.estimatedRows}; rows in the default partition: ${r.plan.outsideRows ?? 0}`);
          for (const g of r.plan.givenUp ?? []) out(`given up: ${g}`);
          for (const w of r.plan.warnings) out(`warning: ${w}`);
          for (const s of r.statements) out(`-- ${s.step}\n${s.sql};`);
        }
        return 0;
      }
      case 'start': {
        const started = await startPartition(client, inputFrom(table, v), config.taskQueue);
        out(
          `started ${started.workflowId} (run ${started.firstExecutionRunId}); follow it with: partflow watch ${table}`,
        );
        return v.watch ? await watch(started, 1000, out) : 0;
      }
      case 'status': {
        const p = await h.query<Progress>('progress');
        out(v.json ? JSON.stringify(p, null, 2) : progressLine(p));
        return 0;
      }
      case 'watch':
        return await watch(h, num(v['interval-ms'] as string | undefined, 'interval-ms') ?? 1000, out, v.json === true);
      case 'throttle': {
        const t = validateThrottle({
          batchSize: num(v['batch-size'] as string | undefined, 'batch-size'),
          sleepMs: num(v['sleep-ms'] as string | undefined, 'sleep-ms'),
        });
        const r = await h.executeUpdate('throttle', { args: [t] });
        out(`throttle now ${JSON.stringify(r)}`);
        return 0;
      }
      case 'cleanup': {
        const r = await cleanupLeftovers(client, table, config.taskQueue, v.yes === true);
        if (v.json) out(JSON.stringify(r, null, 2));
        else {
          const run = r.report.run;
          out(
            run
              ? `run ${run.workflowId}: ${run.state}${run.cutoverDone ? ', cut over' : ''}`
              : `no partflow run recorded for ${table}`,
          );
          for (const x of r.report.leftovers) out(`  left behind: ${x}`);
          if (r.refused) out(r.refused);
          else if (r.report.phase === 'none') out('nothing to clean up');
          else if (r.report.removed)
            out(
              r.report.phase === 'after-cutover'
                ? `removed; ${table} stays partitioned, ${table}_old is kept for you to drop`
                : `removed; ${table} is as it was before the run`,
            );
          else {
            for (const sql of r.report.statements) out(`  would run: ${sql}`);
            out(`nothing changed; run again with --yes to remove it`);
          }
        }
        return r.refused ? 1 : 0;
      }
      case 'cancel':
        await h.cancel();
        out(`cancellation requested for ${h.workflowId}; compensations run before it ends`);
        return 0;
      default: {
        const signal = command === 'approve' ? 'approveCutover' : command;
        await h.signal(signal);
        out(`sent ${signal} to ${h.workflowId}`);
        return 0;
      }
    }
  } catch (err) {
    const e = err as Error & { cause?: Error };
    const usage = err instanceof UsageError || err instanceof InputError;
    const msg = e.cause?.message && !usage ? `${e.message}: ${e.cause.message}` : e.message;
    process.stderr.write(`partflow: ${msg}\n`);
    if (v.verbose) process.stderr.write(`${e.stack}\n`);
    return usage ? 2 : 1;
  } finally {
    await client?.connection.close();
  }
}

function fixInputFrom(v: Record<string, unknown>): FixConstraintsInput {
  let input: FixConstraintsInput;
  if (v.file) input = JSON.parse(fs.readFileSync(v.file as string, 'utf8'));
  else if (v.preset) input = { preset: v.preset as 'seed-critical-fixes' };
  else throw new UsageError('partflow fix needs --preset seed-critical-fixes or --file input.json.');
  for (const s of (v.set as string[] | undefined) ?? []) {
    const m = /^([^.=]+)\.(orphans|fill)=(.*)$/.exec(s);
    if (!m) throw new UsageError(`--set takes NAME.orphans=POLICY or NAME.fill=VALUE, not ${JSON.stringify(s)}.`);
    input.overrides ??= {};
    input.overrides[m[1]] = m[2] === 'orphans' ? { orphans: m[3] as 'set-null' } : { nulls: { fill: m[3] } };
  }
  if (v['dry-run']) input.dryRun = true;
  validateFixInput(input);
  return input;
}

/** Prints the audit as a table: fix, violations, policy, what happens. */
export function auditTable(r: FixResult): string[] {
  const lines = [`${'constraint'.padEnd(44)} ${'violations'.padStart(10)}  ${'policy'.padEnd(22)} result`];
  for (const a of r.audit) {
    const ap = r.applied.find((x) => x.name === a.name);
    const res = a.alreadyDone
      ? 'already in place'
      : ap
        ? `added${ap.rowsRepaired ? `, ${ap.rowsRepaired} rows repaired` : ''}${ap.indexCreated ? ', index created' : ''}`
        : r.status === 'dry-run'
          ? 'would add'
          : '-';
    lines.push(`${a.name.padEnd(44)} ${String(a.violations).padStart(10)}  ${a.policy.padEnd(22)} ${res}`);
    if (a.violations && a.listQuery) lines.push(`${''.padEnd(44)} list: ${a.listQuery}`);
  }
  return lines;
}

async function fix(client: Client, v: Record<string, unknown>, out: (s: string) => void): Promise<number> {
  const input = fixInputFrom(v);
  const h = await client.workflow.start('fixConstraints', {
    taskQueue: loadConfig().taskQueue,
    workflowId: `fix-${Date.now()}`,
    args: [input],
  });
  out(`started ${h.workflowId}`);
  const r: FixResult = await h.result();
  if (v.json) out(JSON.stringify(r, null, 2));
  else {
    for (const l of auditTable(r)) out(l);
    if (r.status === 'dry-run') for (const a of r.audit) for (const sql of a.sql ?? []) out(`${sql};`);
  }
  return 0;
}

function maintainInputFrom(v: Record<string, unknown>): MaintainPartitionsInput {
  let input: MaintainPartitionsInput;
  if (v.file) input = JSON.parse(fs.readFileSync(v.file as string, 'utf8'));
  else if (v.tables) {
    input = {
      tables: String(v.tables)
        .split(',')
        .map((t) => ({
          table: t.trim(),
          ...(v.premake !== undefined ? { premake: num(v.premake as string, 'premake') } : {}),
          ...(v.retention ? { retention: v.retention as string } : {}),
          ...(v.archive ? { archive: v.archive as ArchiveMode } : {}),
          ...(v['time-zone'] ? { timeZone: v['time-zone'] as string } : {}),
        })),
    };
  } else throw new UsageError('Name the tables: --tables generated_images,credit_transactions or --file input.json.');
  validateMaintainInput(input);
  return input;
}

/** The health report as a table. */
export function maintainTable(r: MaintainResult): string[] {
  const lines: string[] = [];
  for (const t of r.tables) {
    lines.push(
      `${t.table} (by ${t.column}): ${t.partitions.length} partitions, ${t.futurePartitions} ahead, oldest ${t.oldestPartition}, default ${t.defaultPartition ? `${t.defaultPartition.rows} rows` : 'none'}`,
    );
    for (const c of t.created)
      lines.push(
        `  created ${c.partition}${c.rowsMovedFromDefault ? ` (${c.rowsMovedFromDefault} rows moved out of the default)` : ''}`,
      );
    for (const a of t.archived) lines.push(`  archived ${a.partition} (${a.mode}${a.note ? `: ${a.note}` : ''})`);
    for (const s of t.skipped) lines.push(`  kept ${s.partition}: ${s.reason}`);
    for (const p of t.partitions)
      lines.push(
        `  ${p.name.padEnd(40)} ${p.from.slice(0, 10)} .. ${p.to.slice(0, 10)} ${String(p.rowsExact ?? p.rowsEstimated ?? '?').padStart(10)} rows${p.rowsExact === undefined ? ' (est.)' : ''} ${String(Math.round(p.bytes / 1024)).padStart(8)} kB`,
      );
    for (const w of t.warnings) lines.push(`  warning: ${w}`);
  }
  for (const f of r.failures) lines.push(`FAILED ${f.table}: ${f.error}`);
  return lines;
}

async function maintenance(
  client: Client,
  command: string,
  verb: string | undefined,
  v: Record<string, unknown>,
  taskQueue: string,
  out: (s: string) => void,
): Promise<number> {
  if (command === 'maintain' || command === 'report') {
    const input = { ...maintainInputFrom(v), ...(command === 'report' ? { reportOnly: true } : {}) };
    const h = await client.workflow.start('maintainPartitions', {
      taskQueue,
      workflowId: `${command}-${Date.now()}`,
      args: [input],
    });
    const r: MaintainResult = await h.result();
    if (v.json) out(JSON.stringify(r, null, 2));
    else for (const l of maintainTable(r)) out(l);
    return r.ok ? 0 : 1;
  }
  const id = (v.id as string | undefined) ?? DEFAULT_SCHEDULE_ID;
  const handle = client.schedule.getHandle(id);
  switch (verb) {
    case 'create':
      await createMaintenanceSchedule(client, maintainInputFrom(v), {
        scheduleId: id,
        taskQueue,
        cron: v.cron as string | undefined,
      });
      out(`created schedule ${id}; see it with: partflow schedule show, or in the Web UI under Schedules`);
      return 0;
    case 'show':
      out(JSON.stringify(describeSchedule(await handle.describe()), null, 2));
      return 0;
    case 'pause':
      await handle.pause('paused from the partflow CLI');
      out(`paused ${id}`);
      return 0;
    case 'unpause':
      await handle.unpause('resumed from the partflow CLI');
      out(`unpaused ${id}`);
      return 0;
    case 'trigger':
      await handle.trigger();
      out(`triggered ${id}: a maintainPartitions run starts now`);
      return 0;
    case 'delete':
      await handle.delete();
      out(`deleted ${id}`);
      return 0;
    default:
      throw new UsageError('partflow schedule takes create, show, pause, unpause, trigger or delete.');
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
