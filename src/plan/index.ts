/**
 * The partitioning plan, built purely from the catalog snapshot and the options as a composition of its
 * steps (one module each: forward statements and their undo built together), then frozen into history.
 * Activities execute these statements; a dry run shows them all, the undo included.
 */
import type { TableInfo } from '../catalog';
import { displayName, qualified } from '../ident';
import type { PartitionOptions } from '../input';
import {
  attachLayout,
  boundLiteral,
  formatMonth,
  MAX_MONTHLY_PARTITIONS,
  Month,
  parseMonth,
  partitionLayout,
} from '../partitions';
import { backfillStep } from './backfill';
import { PlanContext, q, refuse, sibling } from './context';
import { cutoverStep } from './cutover';
import { keptKeysSql } from './selfKeys';
import { checkNames, checkPreflight, plannedNames } from './preflight';
import { shadowStep } from './shadow';
import { attachCutoff, attachStep, checkAttach } from './attach';
import { everyPartitionStatements } from './statements';
import { movesCounter, syncObjects, syncStep } from './sync';
import type { Plan, PlannedPartition } from './types';
import { verifyStep } from './verify';
import { hasTidRangeScan } from '../versions';

export * from './types';
export { backfillSql, nextBatchSize, pagesPerBatch } from './backfill';
export type { BackfillSql } from './backfill';
export { splitLock } from './cutover';
export { checkPreflight, constraintsWithoutKey, plannedNames } from './preflight';
export { foreignKeyName } from './shadow';
export { counterOf, SHAPE_SQL, shapeDifferences, TRIGGER_FENCE_SQL, truncateFunctionSql } from './sync';
export type { Counter } from './sync';

/** What partitioning changes for the application, known before any step is built. */
function keyWarnings(ctx: PlanContext): void {
  const { info, sourceKey, shadowKey } = ctx;
  const pk = info.primaryKey!.name;
  if (shadowKey.length !== sourceKey.length) {
    ctx.warnings.push(
      `The primary key ${pk} becomes (${shadowKey.join(', ')}): PostgreSQL requires the partition key in every ` +
        `unique constraint of a partitioned table, so "${sourceKey.join(', ')}" alone is unique per partition ` +
        'only (new keys from a sequence or gen_random_uuid() stay unique). ' +
        `Application statements with ON CONFLICT (${sourceKey.join(', ')}) fail after the cut-over ("no unique ` +
        'or exclusion constraint matching the ON CONFLICT specification"): change them to ' +
        `ON CONFLICT (${shadowKey.join(', ')}) or ON CONFLICT ON CONSTRAINT ${pk}.`,
    );
    // preflight refuses the ones pg_stat_statements shows (statements.ts) and the widening it could not check
    const unchecked = info.appStatements == null ? 'not checked' : info.appStatementsHidden ? 'checked in part' : '';
    const accepted = unchecked
      ? `; the application's statements were ${unchecked}, accepted in "acceptLostConstraints"`
      : '';
    ctx.givenUp.push(
      `(${sourceKey.join(', ')}) is unique per partition only, not across the table (primary key ${pk} ` +
        `widened${accepted}).`,
    );
    for (const s of everyPartitionStatements(info, ctx.column)) {
      ctx.warnings.push(
        `"${s.query.replace(/\s+/g, ' ').slice(0, 160)}" (${s.calls} calls) does not name ${ctx.column}: after the ` +
          'cut-over it visits every partition.',
      );
    }
  }
  ctx.warnings.push(
    'On a partitioned table, two concurrent UPDATEs of the same row where one moves it to another month fail ' +
      'with SQLSTATE 40001 ("tuple to be locked was already moved to another partition"); the plain table did ' +
      'not: make sure the application retries 40001. The run counts such moves (progress "rowMoves").',
  );
}

/** Rows the layout leaves to the default partition, and old rows counted as outliers. */
function layoutWarnings(ctx: PlanContext, partitions: PlannedPartition[], startMonth: boolean): void {
  const { info, table, layout, type, opts } = ctx;
  const outsideRows = info.keyRange?.outsideRows ?? 0;
  const specs = layout.partitions;
  if (outsideRows > 0) {
    const col = q(ctx.column);
    const from = boundLiteral(specs[0].from, type, opts.timeZone);
    const to = boundLiteral(specs[specs.length - 1].to, type, opts.timeZone);
    ctx.warnings.push(
      `${outsideRows} row(s) of ${displayName(table)} fall outside the monthly partitions ` +
        `${partitions[0].from} … ${partitions[partitions.length - 1].from} and go to ${ctx.defaultPartition}: ` +
        'outliers, infinities or far-future rows ' +
        `(list them with: SELECT * FROM ${qualified(table)} WHERE ${col} < ${from} OR ${col} >= ${to}).`,
    );
  }
  const body = layout.bodyStart && formatMonth(layout.bodyStart);
  if (body && info.oldestMonth && !startMonth && info.oldestMonth < body) {
    ctx.warnings.push(
      `Rows before ${body} (from ${info.oldestMonth}) are separated from the rest by more than a year without ` +
        'rows and count as outliers; set "startMonth" to give them a partition instead.',
    );
  }
}

/** The context every step reads, after the preflight checks and the layout's own refusals. */
function planContext(
  info: TableInfo,
  opts: PartitionOptions,
): { ctx: PlanContext; partitions: PlannedPartition[]; cutoff: Month | null } {
  // the attach path's own refusals first: what it does not carry, the copy path may
  const cutoff = opts.method === 'attach' ? attachCutoff(opts, info.currentMonth) : null;
  if (cutoff) checkAttach(info, opts, displayName(info.table));
  checkPreflight(info, opts);
  const table = info.table;
  const pc = info.partitionColumn!;
  const startMonth = opts.startMonth ? parseMonth(opts.startMonth) : null;
  const months = (info.keyRange?.months ?? []).map(parseMonth);
  const layout = cutoff
    ? attachLayout(table.name, cutoff, parseMonth(info.currentMonth), opts.premake)
    : partitionLayout(table.name, months, parseMonth(info.currentMonth), opts.premake, startMonth);
  if (!startMonth && layout.monthly > MAX_MONTHLY_PARTITIONS) {
    const suggest = formatMonth(layout.partitions[layout.monthly - MAX_MONTHLY_PARTITIONS].from);
    refuse(
      `The rows of ${displayName(table)} span ${layout.monthly} months ` +
        `from ${formatMonth(layout.partitions[0].from)}, ` +
        `more than ${MAX_MONTHLY_PARTITIONS} monthly partitions; set "startMonth" (e.g. "${suggest}") to keep ` +
        `everything older in one partition ${table.name}_older.`,
    );
  }
  const partitions = layout.partitions.map((s) => ({ name: s.name, from: formatMonth(s.from), to: formatMonth(s.to) }));
  const defaultPartition = `${table.name}_default`;
  const names = plannedNames(table, partitions, info.indexes.filter((i) => !i.isPrimary).length + 1);
  if (cutoff)
    names.push(`${table.name}_history`, `${table.name}_pfa_key`, `${table.name}_pfa_back`, `${table.name}_pfa_bound`);
  checkNames(info, names);
  const sourceKey = info.primaryKey!.columns;
  const ctx: PlanContext = {
    info,
    opts,
    table,
    shadow: sibling(table, `${table.name}_pf_shadow`),
    old: sibling(table, `${table.name}_old`),
    column: pc.name,
    type: pc.type as PlanContext['type'],
    layout,
    sourceColumns: info.columns.map((c) => c.name),
    columns: info.columns.filter((c) => !c.generated).map((c) => c.name),
    identityAlways: info.columns.filter((c) => c.identity === 'a').map((c) => c.name),
    overriding: info.columns.some((c) => c.identity !== ''),
    sourceKey,
    shadowKey: sourceKey.includes(pc.name) ? [...sourceKey] : [...sourceKey, pc.name],
    allPartitions: [...layout.partitions.map((s) => s.name), defaultPartition],
    defaultPartition,
    warnings: [],
    givenUp: [],
  };
  keyWarnings(ctx);
  if (!cutoff) layoutWarnings(ctx, partitions, !!startMonth);
  return { ctx, partitions, cutoff };
}

export function buildPlan(info: TableInfo, opts: PartitionOptions): Plan {
  const { ctx, partitions, cutoff } = planContext(info, opts);
  const shadow = shadowStep(ctx);
  const keptKeys = keptKeysSql(ctx);
  const attach = cutoff ? attachStep(ctx, shadow.indexRenames, cutoff, keptKeys?.drop ?? []) : undefined;
  const sync = syncStep(ctx);
  const backfill = backfillStep(ctx);
  const verify = verifyStep(ctx);
  const cutover = cutoverStep(ctx, shadow.indexRenames, sync.dropSyncTrigger, keptKeys?.drop ?? []);
  if (info.totalBytes && !attach) {
    const gib = (b: number) => `${(b / 2 ** 30).toFixed(b < 2 ** 30 ? 2 : 1)} GiB`;
    ctx.warnings.push(
      `The copy needs about ${gib(info.totalBytes)} of disk, as much as the table with its indexes ` +
        `(${gib(info.indexBytes ?? 0)} of it indexes), and writes about as much WAL; the old table is kept ` +
        'until you drop it after finalize. Check the free space of the data directory (and of a standby) first.',
    );
  }
  if (info.estimatedRows < 0) {
    ctx.warnings.push('The table has never been analyzed: the row estimate is unknown until the backfill reports.');
  }
  const { forward, reverse } = syncObjects(info.oid);
  const copyMode =
    opts.copyMode === 'auto' ? (hasTidRangeScan(info.serverVersionNum) ? 'pages' : 'keys') : opts.copyMode;
  return {
    table: ctx.table,
    tableOid: info.oid,
    shadow: ctx.shadow,
    old: ctx.old,
    partitionColumn: ctx.column,
    columnType: ctx.type,
    copyMode,
    parallelism: opts.parallelism,
    timeZone: opts.timeZone,
    partitions,
    defaultPartition: ctx.defaultPartition,
    columns: ctx.columns,
    sourceKey: ctx.sourceKey,
    shadowKey: ctx.shadowKey,
    estimatedRows: Math.max(0, info.estimatedRows),
    pages: info.pages,
    inboundForeignKeys: info.inboundForeignKeys,
    indexRenames: shadow.indexRenames,
    functions: { forward: qualified(forward.fn), reverse: qualified(reverse.fn) },
    sourceShape: info.shape,
    ...(info.views ? { views: info.views } : {}),
    ...(info.carried ? { carried: info.carried } : {}),
    ...(info.publicationDetails?.length ? { publications: info.publicationDetails } : {}),
    movesCounter: movesCounter(ctx),
    sql: {
      ...sync,
      ...shadowSqlOf(shadow),
      ...backfill,
      ...verify,
      ...cutover,
      ...(attach ? { attach } : {}),
      ...(keptKeys ? { keptKeys } : {}),
    },
    ...(attach ? { method: 'attach' as const } : {}),
    warnings: ctx.warnings,
    givenUp: ctx.givenUp,
    outsideRows: info.keyRange?.outsideRows ?? 0,
  };
}

function shadowSqlOf(
  s: ReturnType<typeof shadowStep>,
): Pick<Plan['sql'], 'shadow' | 'shadowForeignKeys' | 'dropShadow'> {
  return { shadow: s.shadow, shadowForeignKeys: s.shadowForeignKeys, dropShadow: s.dropShadow };
}

/** Human summary of a plan, for dry runs and the CLI. */
export function planSummary(plan: Plan): string {
  const first = plan.partitions[0]?.from;
  const last = plan.partitions.at(-1)?.from;
  const lines = [
    `table ${displayName(plan.table)} → partitioned by ${plan.partitionColumn} (${plan.columnType}), ` +
      `${plan.partitions.length} monthly partitions ${first} … ${last} + ${plan.defaultPartition}`,
    `estimated rows ${plan.estimatedRows}, ${plan.pages} pages; primary key (${plan.shadowKey.join(', ')}); ` +
      `${plan.partitions.length + 1} partitions in all, ${plan.outsideRows} row(s) in the default partition`,
    `backfill by ${plan.copyMode === 'pages' ? 'page' : 'key'} ranges` +
      ((plan.parallelism ?? 1) > 1 ? `, ${plan.parallelism} streams at once` : ', one stream'),
  ];
  for (const g of plan.givenUp) lines.push(`given up: ${g}`);
  for (const w of plan.warnings) lines.push(`warning: ${w}`);
  return lines.join('\n');
}

/** Every forward statement of the plan in the order the workflow runs them. */
export function planStatements(plan: Plan): { step: string; sql: string }[] {
  const s = plan.sql;
  const each = (step: string, list: string[]) => list.map((sql) => ({ step, sql }));
  const a = s.attach;
  if (a) {
    return [
      ...each('attach key', [a.buildKey]),
      ...each('shadow', [...s.shadow, ...s.shadowForeignKeys]),
      ...each('attach check', [a.addCheck, a.validateCheck]),
      ...each('cutover', [...a.cutover, ...(s.keptKeys?.add ?? [])]),
      ...each('validate kept keys', s.keptKeys?.validate ?? []),
    ];
  }
  const backfill = plan.copyMode === 'pages' ? [s.backfillBatch] : [s.keyBound, s.keyCopy];
  return [
    ...each('shadow', [...s.shadow, ...s.shadowForeignKeys]),
    ...each('sync', s.syncTrigger),
    ...each('backfill', backfill),
    ...each('verify', [
      ...(s.analyzePartitions ?? (s.analyze ? [s.analyze] : [])),
      ...(s.verifyChunk
        ? [s.keyBound, s.verifyChunk.source.between, s.verifyChunk.shadow.between]
        : [s.verifySource, s.verifyShadow]),
    ]),
    ...each('handover', s.handover ? [s.handover.on, s.handover.mark, s.handover.off] : []),
    ...each('cutover', [...s.cutover, ...(s.keptKeys?.add ?? []), ...(s.cutoverGuard ?? [])]),
    ...each('validate kept keys', s.keptKeys?.validate ?? []),
    ...each('finalize', [...s.finalize, ...s.dropCounters]),
  ];
}

/**
 * The undo of each step, in the order a rollback runs them from the furthest point (after the cut-over):
 * swap back and re-validate the inbound foreign keys, drop the sync, drop the copy.
 */
export function undoStatements(plan: Plan): { step: string; sql: string }[] {
  const s = plan.sql;
  const each = (step: string, list: string[]) => list.map((sql) => ({ step, sql }));
  const a = s.attach;
  if (a) {
    return [
      ...each('undo cutover', [a.buildBack, ...a.swapBack, ...(a.swapBackGuard ?? []), ...s.validateInbound]),
      ...each('undo attach check', [a.dropCheck]),
      ...each('undo shadow', s.dropShadow),
      ...each('undo attach key', [a.dropKey, a.dropBack]),
    ];
  }
  return [
    ...each('undo handover', s.reverseHandover ? [s.reverseHandover.on, s.reverseHandover.mark] : []),
    ...each('undo cutover', [...s.swapBack, ...(s.swapBackGuard ?? []), ...s.validateInbound]),
    ...each('undo sync', [...s.dropSyncTrigger, ...s.dropCounters]),
    ...each('undo shadow', s.dropShadow),
  ];
}
