/**
 * The CLI's commands that name no single table: `fix` (fixConstraints), `report` and `maintain`
 * (maintainPartitions), `schedule` (its Schedule), `awaiting` (the fleet's runs waiting for approval).
 */
import * as fs from 'fs';
import { Command, Option } from 'commander';
import type { fixConstraints, FixResult } from '../workflows/fixConstraints';
import type { maintainPartitions, MaintainResult } from '../workflows/maintainPartitions';
import { awaitingApprovalQuery, FLEET_ATTRIBUTES } from '../src/fleet';
import { FixConstraintsInput, validateFixInput } from '../src/constraints';
import { ArchiveMode, MaintainPartitionsInput, validateMaintainInput } from '../src/maintenance';
import { createMaintenanceSchedule, DEFAULT_SCHEDULE_ID, describeSchedule } from './schedule';
import { collect, Ctx, num, Opts, UsageError } from './options';

/** Prints the audit as a table: fix, violations, policy, what happens. */
export function auditTable(r: FixResult): string[] {
  const lines = [`${'constraint'.padEnd(44)} ${'violations'.padStart(10)}  ${'policy'.padEnd(22)} result`];
  for (const a of r.audit) {
    const ap = r.applied.find((x) => x.name === a.name);
    const added = ap && `added${ap.rowsRepaired ? `, ${ap.rowsRepaired} rows repaired` : ''}`;
    const res = a.alreadyDone
      ? 'already in place'
      : ap
        ? `${added}${ap.indexCreated ? ', index created' : ''}`
        : r.status === 'dry-run'
          ? 'would add'
          : '-';
    lines.push(`${a.name.padEnd(44)} ${String(a.violations).padStart(10)}  ${a.policy.padEnd(22)} ${res}`);
    if (a.violations && a.listQuery) lines.push(`${''.padEnd(44)} list: ${a.listQuery}`);
  }
  return lines;
}

/** The health report as a table. */
export function maintainTable(r: MaintainResult): string[] {
  const lines: string[] = [];
  for (const t of r.tables) {
    const def = t.defaultPartition ? `${t.defaultPartition.rows} rows` : 'none';
    lines.push(
      `${t.table} (by ${t.column}): ${t.partitions.length} partitions, ${t.futurePartitions} ahead, ` +
        `oldest ${t.oldestPartition}, default ${def}`,
    );
    for (const c of t.created) {
      const moved = c.rowsMovedFromDefault ? ` (${c.rowsMovedFromDefault} rows moved out of the default)` : '';
      lines.push(`  created ${c.partition}${moved}`);
    }
    for (const a of t.archived) lines.push(`  archived ${a.partition} (${a.mode}${a.note ? `: ${a.note}` : ''})`);
    for (const s of t.skipped) lines.push(`  kept ${s.partition}: ${s.reason}`);
    for (const s of t.planned ?? []) {
      lines.push(`  would ${s.step} ${s.partition}${s.note ? ` (${s.note})` : ''}:`);
      for (const sql of [...s.locks, ...s.forward]) lines.push(`    ${sql};`);
      if (s.undo.length) lines.push(`    -- undo: ${s.undo.join('; ')}`);
    }
    for (const p of t.partitions) {
      const rows = String(p.rowsExact ?? p.rowsEstimated ?? '?').padStart(10);
      const est = p.rowsExact === undefined ? ' (est.)' : '';
      const kb = String(Math.round(p.bytes / 1024)).padStart(8);
      lines.push(`  ${p.name.padEnd(40)} ${p.from.slice(0, 10)} .. ${p.to.slice(0, 10)} ${rows} rows${est} ${kb} kB`);
    }
    for (const w of t.warnings) lines.push(`  warning: ${w}`);
  }
  for (const f of r.failures) lines.push(`FAILED ${f.table}: ${f.error}`);
  return lines;
}

function fixInputFrom(v: Opts): FixConstraintsInput {
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
  if (v.dryRun) input.dryRun = true;
  validateFixInput(input);
  return input;
}

function maintainInputFrom(v: Opts): MaintainPartitionsInput {
  let input: MaintainPartitionsInput;
  if (v.file) input = JSON.parse(fs.readFileSync(v.file as string, 'utf8'));
  else if (v.tables) {
    const table = (t: string) => ({
      table: t.trim(),
      ...(v.premake !== undefined ? { premake: num(v.premake, 'premake') } : {}),
      ...(v.retention ? { retention: v.retention as string } : {}),
      ...(v.archive ? { archive: v.archive as ArchiveMode } : {}),
      ...(v.timeZone ? { timeZone: v.timeZone as string } : {}),
    });
    input = { tables: String(v.tables).split(',').map(table) };
  } else throw new UsageError('Name the tables: --tables generated_images,credit_transactions or --file input.json.');
  validateMaintainInput(input);
  return input;
}

async function fix(ctx: Ctx, v: Opts): Promise<number> {
  const input = fixInputFrom(v);
  const h = await (
    await ctx.client()
  ).workflow.start<typeof fixConstraints>('fixConstraints', {
    taskQueue: ctx.config().taskQueue,
    workflowId: `fix-${Date.now()}`,
    args: [input],
  });
  ctx.out(`started ${h.workflowId}`);
  const r = await h.result();
  if (v.json) ctx.out(JSON.stringify(r, null, 2));
  else {
    for (const l of auditTable(r)) ctx.out(l);
    if (r.status === 'dry-run') for (const a of r.audit) for (const sql of a.sql ?? []) ctx.out(`${sql};`);
  }
  return 0;
}

async function maintain(ctx: Ctx, command: 'maintain' | 'report', v: Opts): Promise<number> {
  const input = {
    ...maintainInputFrom(v),
    ...(command === 'report' ? { reportOnly: true } : {}),
    ...(v.dryRun ? { dryRun: true } : {}),
  };
  const h = await (
    await ctx.client()
  ).workflow.start<typeof maintainPartitions>('maintainPartitions', {
    taskQueue: ctx.config().taskQueue,
    workflowId: `${command}-${Date.now()}`,
    args: [input],
  });
  const r = await h.result();
  if (v.json) ctx.out(JSON.stringify(r, null, 2));
  else for (const l of maintainTable(r)) ctx.out(l);
  return r.ok ? 0 : 1;
}

async function schedule(ctx: Ctx, verb: string, v: Opts): Promise<number> {
  const client = await ctx.client();
  const id = (v.id as string | undefined) ?? DEFAULT_SCHEDULE_ID;
  const handle = client.schedule.getHandle(id);
  const say = (s: string) => (ctx.out(s), 0);
  switch (verb) {
    case 'create': {
      const opts = { scheduleId: id, taskQueue: ctx.config().taskQueue, cron: v.cron as string | undefined };
      await createMaintenanceSchedule(client, maintainInputFrom(v), opts);
      return say(`created schedule ${id}; see it with: partflow schedule show, or in the Web UI under Schedules`);
    }
    case 'show':
      return say(JSON.stringify(describeSchedule(await handle.describe()), null, 2));
    case 'pause':
      await handle.pause('paused from the partflow CLI');
      return say(`paused ${id}`);
    case 'unpause':
      await handle.unpause('resumed from the partflow CLI');
      return say(`unpaused ${id}`);
    case 'trigger':
      await handle.trigger();
      return say(`triggered ${id}: a maintainPartitions run starts now`);
    case 'delete':
      await handle.delete();
      return say(`deleted ${id}`);
    default:
      throw new UsageError('partflow schedule takes create, show, pause, unpause, trigger or delete.');
  }
}

function maintainOptions(c: Command): Command {
  return c
    .option('--file <input.json>', 'a maintainPartitions input')
    .option('--tables <t1,t2>', 'the tables to maintain, with the options below')
    .option('--premake <n>', 'months created ahead (3)')
    .option('--retention <interval>', 'e.g. "12 months": older partitions are retired')
    .addOption(
      new Option('--archive <mode>', 'what retired partitions become').choices(['detach', 'dump', 'drop', 'none']),
    )
    .option('--time-zone <zone>', 'the zone months are cut in (UTC)');
}

/** The runs across the fleet that wait for their cut-over's approval (the fleet's search attributes). */
async function awaiting(ctx: Ctx, v: Opts): Promise<number> {
  const client = await ctx.client();
  const rows: { workflowId: string; table: unknown; since: string }[] = [];
  for await (const w of client.workflow.list({ query: awaitingApprovalQuery(v.table as string | undefined) })) {
    const table = w.searchAttributes?.[FLEET_ATTRIBUTES.table.name]?.[0];
    rows.push({ workflowId: w.workflowId, table, since: w.startTime.toISOString() });
  }
  if (v.json) ctx.out(JSON.stringify(rows, null, 2));
  else if (!rows.length)
    ctx.out('no run waits for approval (runs on a namespace without the fleet search attributes are not listed)');
  else
    for (const r of rows)
      ctx.out(`${r.table}  ${r.workflowId}  started ${r.since}; approve: partflow approve ${r.table}`);
  return 0;
}

export function otherCommands(p: Command, ctx: Ctx): void {
  p.command('awaiting')
    .description('every run waiting for its cut-over approval, across the fleet')
    .option('--table <schema.table>', 'one table only')
    .option('--json', 'for scripts')
    .action(async (v: Opts) => void (ctx.code = await awaiting(ctx, v)));
  p.command('fix')
    .description(
      'add foreign keys and NOT NULLs online; audits first and changes nothing when violations have no policy',
    )
    .option('--preset <name>', "seed-critical-fixes: the seed plan's foreign keys and NOT NULLs")
    .option('--file <input.json>', 'a fixConstraints input')
    .option(
      '--set <NAME.orphans=POLICY|NAME.fill=VALUE>',
      "a policy for one of the preset's fixes (repeatable)",
      collect,
    )
    .option('--dry-run', 'audit and list the statements, change nothing')
    .option('--json', 'the result as JSON')
    .action(async (v: Opts) => void (ctx.code = await fix(ctx, v)));
  maintainOptions(p.command('report').description('the partition health report, changing nothing'))
    .option('--json', 'the report as JSON')
    .action(async (v: Opts) => void (ctx.code = await maintain(ctx, 'report', v)));
  maintainOptions(p.command('maintain').description('run maintainPartitions once now'))
    .option('--dry-run', 'list each step with its statements and their undo, change nothing')
    .option('--json', 'the report as JSON')
    .action(async (v: Opts) => void (ctx.code = await maintain(ctx, 'maintain', v)));
  maintainOptions(
    p
      .command('schedule <verb>')
      .description(
        "create|show|pause|unpause|trigger|delete the maintenance Schedule (create takes maintain's options)",
      ),
  )
    .option('--cron <expr>', 'when create runs it (default: monthly, on the 1st at 03:00 UTC)')
    .option('--id <id>', 'the Schedule id', DEFAULT_SCHEDULE_ID)
    .action(async (verb: string, v: Opts) => void (ctx.code = await schedule(ctx, verb, v)));
}
