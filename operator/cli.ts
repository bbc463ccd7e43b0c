/**
 * `npx partflow <command>`: the operator's CLI over the same workflows the Temporal CLI and Web UI drive.
 * Commands and their options are declared once (commander); help is generated from them. Signals, queries and
 * updates go through their definitions (workflows/definitions.ts), so their arguments and results are typed.
 * Exit codes: 0 done, 1 the operation failed, 2 bad usage or input.
 */
import type { Client, WorkflowHandle } from '@temporalio/client';
import { Command, CommanderError, Option } from 'commander';
import {
  approveCutoverSignal,
  finalizeSignal,
  pauseSignal,
  Progress,
  progressQuery,
  resumeSignal,
  rollbackSignal,
  throttleUpdate,
} from '../workflows/definitions';
import type { partitionTable } from '../workflows/partitionTable';
import { cleanupLeftovers, connectClient, partitionHandle, startPartition } from './client';
import { loadConfig } from '../src/config';
import { undoFixCommand } from './undoFix';
import { InputError, parseTableName } from '../src/ident';
import { PartitionTableInput, validatePartitionInput, validateThrottle } from '../src/input';
import { collect, Ctx, num, Opts, Out, replicaFrom, replicaOptions, UsageError } from './options';
import { otherCommands } from './operations';

export type { Ctx } from './options';
export { auditTable, maintainTable } from './operations';

/** The partitionTable input from `start`'s and `plan`'s options; bad input stops here, before anything starts. */
function inputFrom(table: string, v: Opts): PartitionTableInput {
  const input: PartitionTableInput = { table };
  if (v.column) input.column = v.column as string;
  if (v.premake) input.premake = num(v.premake, 'premake');
  if (v.batchSize) input.batchSize = num(v.batchSize, 'batch-size');
  if (v.sleepMs) input.sleepMs = num(v.sleepMs, 'sleep-ms');
  if (v.maxBatchMs) input.maxBatchMs = num(v.maxBatchMs, 'max-batch-ms');
  if (v.parallelism) input.parallelism = num(v.parallelism, 'parallelism');
  if (v.approval) input.approval = v.approval as 'signal' | 'auto';
  if (v.rollbackWindow) input.rollbackWindow = v.rollbackWindow as string;
  if (v.inboundForeignKeys) input.inboundForeignKeys = v.inboundForeignKeys as 'refuse' | 'drop';
  if (v.timeZone) input.timeZone = v.timeZone as string;
  if (v.lockTimeoutMs) input.lockTimeoutMs = num(v.lockTimeoutMs, 'lock-timeout-ms');
  if (v.startMonth) input.startMonth = v.startMonth as string;
  if (v.copyMode) input.copyMode = v.copyMode as PartitionTableInput['copyMode'];
  if (v.method) input.method = v.method as PartitionTableInput['method'];
  if (v.cutoffMonth) input.cutoffMonth = v.cutoffMonth as string;
  Object.assign(input, replicaFrom(v));
  if (v.olderSnapshots) input.olderSnapshots = v.olderSnapshots as 'wait' | 'guard';
  if ((v.acceptLostConstraint as string[] | undefined)?.length) {
    input.acceptLostConstraints = v.acceptLostConstraint as string[];
  }
  validatePartitionInput(input);
  return input;
}

function progressLine(p: Progress): string {
  const bar = '#'.repeat(Math.round(p.percent / 5)).padEnd(20, '.');
  const eta = p.etaSeconds === null ? '?' : `${p.etaSeconds}s`;
  const n = (x: number) => x.toLocaleString('en-US');
  const halt = p.paused ? ' (paused)' : p.pausing ? ' (pausing)' : '';
  return (
    `${p.table} ${p.phase}${halt} [${bar}] ${p.percent.toFixed(1)}% ` +
    `${n(p.rowsCopied)}/${n(p.rowsEstimated)} rows ${n(p.rowsPerSecond)} rows/s ETA ${eta} ` +
    `page ${p.checkpointPage}/${p.totalPages} lock retries ${p.lockWaitRetries} moves across months ` +
    `${p.rowMoves ?? 0}${p.lastError ? ` last error: ${p.lastError}` : ''}`
  );
}

/** A live progress line until the run ends or waits for approval. */
async function watch(h: WorkflowHandle, intervalMs: number, out: Out, json = false): Promise<number> {
  const tty = process.stdout.isTTY;
  for (;;) {
    let p: Progress;
    try {
      p = await h.query(progressQuery);
    } catch (err) {
      const d = await h.describe();
      if (d.status.name === 'RUNNING') throw err;
      out(`${h.workflowId}: ${d.status.name.toLowerCase()}`);
      return d.status.name === 'COMPLETED' ? 0 : 1;
    }
    const line = json ? JSON.stringify(p) : progressLine(p);
    if (tty && !json) process.stdout.write(`\r\x1b[2K${line}`);
    else out(line);
    if (['done', 'rolled-back', 'failed'].includes(p.phase) || p.awaitingApproval) {
      if (tty && !json) process.stdout.write('\n');
      if (p.awaitingApproval && !json) {
        out(`verified ${p.verify?.rows ?? 0} rows; waiting for approval: partflow approve ${p.table}`);
      }
      return p.phase === 'failed' ? 1 : 0;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** A command that names a table: the table is checked and the run's handle made. */
function onTable(ctx: Ctx, fn: (table: string, h: WorkflowHandle, v: Opts) => Promise<number>) {
  return async (table: string, v: Opts) => {
    parseTableName(table);
    ctx.code = await fn(table, partitionHandle(await ctx.client(), table), v);
  };
}

async function plan(ctx: Ctx, table: string, h: WorkflowHandle, v: Opts): Promise<number> {
  const client = await ctx.client();
  const ph = await client.workflow.start<typeof partitionTable>('partitionTable', {
    taskQueue: ctx.config().taskQueue,
    workflowId: `plan-${h.workflowId}-${Date.now()}`,
    args: [{ ...inputFrom(table, v), dryRun: true }],
  });
  const r = await ph.result();
  if (v.json) {
    ctx.out(JSON.stringify(r, null, 2));
    return 0;
  }
  const p = r.plan!;
  ctx.out(
    `partitions (${p.partitions.length + 1}): ${p.partitions.map((x) => x.name).join(', ')}, ${p.defaultPartition}`,
  );
  ctx.out(`estimated rows: ${p.estimatedRows}; rows in the default partition: ${p.outsideRows ?? 0}`);
  ctx.out(`backfill: ${p.copyMode} walk in ${p.parallelism ?? 1} stream(s)`);
  for (const g of p.givenUp ?? []) ctx.out(`given up: ${g}`);
  for (const w of p.warnings) ctx.out(`warning: ${w}`);
  for (const s of r.statements ?? []) ctx.out(`-- ${s.step}\n${s.sql};`);
  return 0;
}

async function cleanup(ctx: Ctx, table: string, v: Opts): Promise<number> {
  const { out } = ctx;
  const r = await cleanupLeftovers(await ctx.client(), table, ctx.config().taskQueue, v.yes === true);
  if (v.json) {
    out(JSON.stringify(r, null, 2));
    return r.refused ? 1 : 0;
  }
  const run = r.report.run;
  const cut = run?.cutoverDone ? ', cut over' : '';
  out(run ? `run ${run.workflowId}: ${run.state}${cut}` : `no partflow run recorded for ${table}`);
  for (const x of r.report.leftovers) out(`  left behind: ${x}`);
  for (const h of r.report.heldBy ?? []) {
    out(`held by ${h.kind} run ${h.workflowId}: ${h.state}`);
    for (const x of h.left) out(`  on the table: ${x} (cleanup keeps it)`);
  }
  const live = run && ['active', 'undoing', 'cleanup'].includes(run.state);
  const holder = live ? undefined : r.report.heldBy?.[0]?.workflowId;
  if (r.refused) out(r.refused);
  else if (holder && !r.report.removed) out(`nothing changed; run again with --yes to release the hold of ${holder}`);
  else if (holder) out(`released: ${table} is no longer held by ${holder}`);
  else if (r.report.phase === 'none') out('nothing to clean up');
  else if (r.report.removed && r.report.phase === 'after-cutover') {
    out(`removed; ${table} stays partitioned, ${table}_old is kept for you to drop`);
  } else if (r.report.removed) out(`removed; ${table} is as it was before the run`);
  else {
    for (const sql of r.report.statements) out(`  would run: ${sql}`);
    out(`nothing changed; run again with --yes to remove it`);
  }
  return r.refused ? 1 : 0;
}

/** The options of a partitionTable input, shared by `start` and `plan`. */
function partitionOptions(c: Command): Command {
  return replicaOptions(c)
    .option('--column <name>', 'the timestamp column to partition by (created_at)')
    .option('--premake <n>', 'months created ahead of the current one (default 3)')
    .option('--batch-size <rows>', 'rows per backfill batch (default 5000)')
    .option('--sleep-ms <ms>', 'pause between batches (default 0)')
    .option('--max-batch-ms <ms>', 'longest a batch may hold its row locks; batches shrink to stay under it')
    .option('--parallelism <n>', 'page-range streams the backfill runs at once (default 1)')
    .addOption(new Option('--approval <how>', 'signal: wait for approve; auto: cut over when verified'))
    .option('--rollback-window <duration>', 'how long the old table is kept in sync after the cut-over (24h)')
    .addOption(new Option('--inbound-foreign-keys <how>', 'refuse, or drop them at the cut-over'))
    .option('--time-zone <zone>', 'the zone months are cut in (UTC)')
    .option('--lock-timeout-ms <ms>', 'longest any DDL waits for its lock before retrying (50)')
    .option('--start-month <YYYY-MM>', 'older rows go to one partition <table>_older')
    .addOption(new Option('--copy-mode <mode>', 'auto, pages (TID ranges, 14+) or keys (primary-key ranges)'))
    .addOption(
      new Option('--method <how>', 'copy every row (default), or attach: the rows stay').choices(['copy', 'attach']),
    )
    .option('--cutoff-month <YYYY-MM>', 'attach: the first monthly partition (default the month after next)')
    .option('--accept-lost-constraint <name>', 'give up a uniqueness guarantee (repeatable)', collect)
    .addOption(olderSnapshotsOption());
}

/** `--older-snapshots`: start/plan's input field, and approve's argument. */
function olderSnapshotsOption(): Option {
  return new Option(
    '--older-snapshots <what>',
    "sessions with snapshots older than the swap (the cut-over, or a rollback's swap back): wait for them " +
      '(default) or swap with the guard (40001)',
  ).choices(['wait', 'guard']);
}

/** The signals a table's run takes, each with what it does. */
const SIGNALS = [
  ['pause', pauseSignal, 'pause the backfill after the current batch (within seconds); no locks are held while paused'],
  ['resume', resumeSignal, 'continue the backfill from its checkpoint'],
  ['approve', approveCutoverSignal, 'allow the cut-over (the run waits in phase awaiting-approval for this)'],
  [
    'rollback',
    rollbackSignal,
    'undo: before the cut-over drop the copy; in the rollback window swap the old table back',
  ],
  ['finalize', finalizeSignal, 'end the rollback window now (the old table is kept as <table>_old)'],
] as const;

function tableCommands(p: Command, ctx: Ctx): void {
  partitionOptions(
    p.command('plan <table>').description('show every SQL statement, the partitions and warnings (dry run)'),
  )
    .option('--json', 'the whole plan as JSON')
    .action(onTable(ctx, (table, h, v) => plan(ctx, table, h, v)));
  partitionOptions(
    p.command('start <table>').description('start partitionTable (workflow id partition-<schema>.<table>)'),
  )
    .option('--watch', 'follow the progress until the run ends or waits for approval')
    .action(
      onTable(ctx, async (table, _h, v) => {
        const started = await startPartition(await ctx.client(), inputFrom(table, v), ctx.config().taskQueue);
        ctx.out(
          `started ${started.workflowId} (run ${started.firstExecutionRunId}); follow it with: partflow watch ${table}`,
        );
        return v.watch ? watch(started, 1000, ctx.out) : 0;
      }),
    );
  p.command('status <table>')
    .description('phase, progress, rate, ETA, checkpoint, lock retries, last error')
    .option('--json', 'for scripts')
    .action(
      onTable(ctx, async (_t, h, v) => {
        const progress = await h.query(progressQuery);
        ctx.out(v.json ? JSON.stringify(progress, null, 2) : progressLine(progress));
        return 0;
      }),
    );
  p.command('watch <table>')
    .description('a live progress line until the run ends or waits for approval')
    .option('--interval-ms <ms>', 'how often to ask', '1000')
    .option('--json', 'one JSON object per line')
    .action(onTable(ctx, (_t, h, v) => watch(h, num(v.intervalMs, 'interval-ms') ?? 1000, ctx.out, v.json === true)));
  replicaOptions(p.command('throttle <table>'))
    .description('change the backfill speed and the replica bounds; applied to the next batch')
    .option('--batch-size <rows>', 'rows per batch')
    .option('--sleep-ms <ms>', 'pause between batches')
    .action(
      onTable(ctx, async (_t, h, v) => {
        const speed = { batchSize: num(v.batchSize, 'batch-size'), sleepMs: num(v.sleepMs, 'sleep-ms') };
        const t = validateThrottle({ ...speed, ...replicaFrom(v) });
        ctx.out(`throttle now ${JSON.stringify(await h.executeUpdate(throttleUpdate, { args: [t] }))}`);
        return 0;
      }),
    );
  for (const [name, signal, what] of SIGNALS) {
    const c = p.command(`${name} <table>`).description(what);
    if (name === 'approve') c.addOption(olderSnapshotsOption());
    c.action(
      onTable(ctx, async (_t, h, v) => {
        // approve --older-snapshots guard: a cut-over that older snapshots hold goes ahead with the guard
        if (name === 'approve' && v.olderSnapshots)
          await h.signal(approveCutoverSignal, { olderSnapshots: v.olderSnapshots as 'wait' | 'guard' });
        else await h.signal(signal as typeof pauseSignal);
        ctx.out(`sent ${signal.name} to ${h.workflowId}`);
        return 0;
      }),
    );
  }
  p.command('cancel <table>')
    .description('cancel the workflow; its compensations run first')
    .action(
      onTable(ctx, async (_t, h) => {
        await h.cancel();
        ctx.out(`cancellation requested for ${h.workflowId}; compensations run before it ends`);
        return 0;
      }),
    );
  p.command('cleanup <table>')
    .description('what a terminated run left behind (triggers, the copy); refused while the run still runs')
    .option('--yes', 'remove it')
    .option('--json', 'the report as JSON')
    .action(onTable(ctx, (table, _h, v) => cleanup(ctx, table, v)));
}

function program(ctx: Ctx, err: Out): Command {
  const p = new Command('partflow')
    .description('zero-downtime PostgreSQL partitioning on Temporal')
    .option('--verbose', 'print the stack of an error')
    .addHelpText('after', '\nEnvironment: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, PARTFLOW_TASK_QUEUE.')
    .exitOverride()
    .configureOutput({ writeOut: (s) => ctx.out(s.trimEnd()), writeErr: (s) => err(s.trimEnd()) })
    .showSuggestionAfterError(false);
  tableCommands(p, ctx);
  otherCommands(p, ctx);
  undoFixCommand(p, ctx);
  for (const c of p.commands) c.exitOverride().configureOutput(p.configureOutput());
  return p;
}

/** Commander's own errors as partflow's one sentence. */
function usageMessage(e: CommanderError, argv: string[]): string {
  if (e.code === 'commander.unknownCommand') {
    return `Unknown command "${argv.find((a) => !a.startsWith('-'))}"; run partflow --help for the list.`;
  }
  if (e.code === 'commander.missingArgument') {
    const command = argv.find((a) => !a.startsWith('-'));
    if (command === 'undo-fix')
      return 'partflow undo-fix needs the fixConstraints workflow id, e.g. partflow undo-fix fix-1764000000000.';
    return `partflow ${command} needs a table, e.g. partflow ${command} public.generated_images.`;
  }
  return e.message.replace(/^error: /, '');
}

export async function main(argv: string[], out: Out = (s) => process.stdout.write(s + '\n')): Promise<number> {
  const err = (s: string) => process.stderr.write(`${s}\n`);
  let client: Client | undefined;
  const ctx: Ctx = {
    out,
    config: () => loadConfig(),
    client: async () => (client ??= await connectClient(loadConfig())),
    code: 0,
  };
  // --verbose may come anywhere, also after a command's own options
  const verbose = argv.includes('--verbose');
  argv = argv.filter((a) => a !== '--verbose');
  if (!argv.length) argv = ['--help'];
  try {
    await program(ctx, () => undefined).parseAsync(argv, { from: 'user' });
    return ctx.code;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.help') return 0;
      err(`partflow: ${usageMessage(e, argv)}`);
      return 2;
    }
    const x = e as Error & { cause?: Error };
    const usage = e instanceof UsageError || e instanceof InputError;
    const msg = x.cause?.message && !usage ? `${x.message}: ${x.cause.message}` : x.message;
    err(`partflow: ${msg}`);
    if (verbose) err(`${x.stack}`);
    return usage ? 2 : 1;
  } finally {
    await client?.connection.close();
  }
}

if (require.main === module) {
  void main(process.argv.slice(2)).then((code) => process.exit(code));
}
