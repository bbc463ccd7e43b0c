/**
 * Step "backfill": the statements that copy the rows the table had when the sync trigger was installed,
 * by page ranges (TID scans, PostgreSQL 14+) or by primary-key ranges. No undo of its own: dropping the copy
 * removes what it copied.
 */
import { qualified, quoteLiteral } from '../ident';
import { PlanContext, positional, q } from './context';
import type { Plan, PlanSql } from './types';

/** The statements of the plan the backfill runs: the workflow hands these to backfillChunk, not the plan. */
export type BackfillSql = Pick<
  PlanSql,
  | 'backfillBatch'
  | 'backfillBatchFast'
  | 'keyBound'
  | 'keyBoundFirst'
  | 'keyCopy'
  | 'keyCopyFirst'
  | 'keyLog'
  | 'appProbe'
>;

/**
 * The application-latency bound's probe: what one application write transaction does, timed. `keys` reads the
 * TIDs of up to 256 live rows at random pages of the table (512 random (page, item 1..16) TIDs, each a TID
 * read; pages from the table's size on disk), as text; `read` takes one of them as $1, reads that row's primary key
 * and looks the row up again by it (an index descent and a heap fetch: the whole row is read), and upserts
 * the probing backend's row of partflow.probe, so that its commit writes WAL and waits for the flush (and a
 * synchronous standby) as the application's commits do. A `SELECT txid_current()` alone (the probe before it)
 * stayed at its idle median while the copy slowed the application's transactions by half (bench/impact.ts),
 * and its commit never waits for a flush. No key leaves the server, so no type's text form matters, and the
 * table is read by position: a column renamed during the run breaks nothing. A row updated since `keys` read
 * its TID is not found (`found` false) and its TID is dropped from the probe's list (AppProbe). Rows whose
 * items 1..16 are all HOT redirects are not found at all; a table of only such pages falls back to the bare
 * commit.
 */
export interface AppProbeSql {
  keys: string;
  read: string;
}

export const PROBE_TABLE = 'partflow.probe';

export function appProbeSql(ctx: PlanContext): AppProbeSql {
  const { table, sourceColumns, sourceKey } = ctx;
  const at = (c: string) => `a${sourceColumns.indexOf(c) + 1}`;
  const aliases = sourceColumns.map((_, i) => `a${i + 1}`).join(', ');
  const rel = qualified(table);
  const pages = `greatest(pg_relation_size(${quoteLiteral(rel)}::regclass) / current_setting('block_size')::int, 1)`;
  const tids =
    `SELECT format('(%s,%s)', floor(random() * ${pages})::bigint, i)::tid AS t ` +
    'FROM generate_series(1, 32) p, generate_series(1, 16) i';
  const live = `LATERAL (SELECT ctid FROM ${rel} WHERE ctid = r.t) s`;
  const keys = `SELECT s.ctid::text AS tid FROM (${tids}) r, ${live} LIMIT 256`;
  const key = `(SELECT * FROM ${rel} WHERE ctid = $1::tid) AS k(${aliases})`;
  const match = sourceKey.map((c) => `s.${at(c)} = k.${at(c)}`).join(' AND ');
  const byKey = `${positional(table, sourceColumns)} JOIN ${key} ON ${match}`;
  // the columns' stored sizes: the heap tuple is read (no index-only scan), its TOAST values are not fetched
  const sizes = sourceColumns.map((_, i) => `coalesce(pg_column_size(s.a${i + 1}), 0)`).join(' + ');
  const lookup = `SELECT (${sizes}) >= 0 FROM ${byKey} LIMIT 1`;
  const write =
    `INSERT INTO ${PROBE_TABLE} AS p (pid, probes) VALUES (pg_backend_pid(), 1) ` +
    'ON CONFLICT (pid) DO UPDATE SET probes = p.probes + 1 RETURNING 1';
  const read = `WITH w AS (${write}) SELECT (SELECT count(*) FROM w) AS wrote, coalesce((${lookup}), false) AS found`;
  return { keys, read };
}

export function backfillSql(plan: Plan): BackfillSql {
  const { backfillBatch, backfillBatchFast, keyBound, keyBoundFirst, keyCopy, keyCopyFirst, keyLog, appProbe } =
    plan.sql;
  // plans made before the key log have none: their batches neither lock nor apply
  return {
    backfillBatch,
    backfillBatchFast,
    keyBound,
    keyBoundFirst,
    keyCopy,
    keyCopyFirst,
    ...(keyLog ? { keyLog } : {}),
    ...(appProbe ? { appProbe } : {}),
  };
}

/**
 * The copy of one page range, without row locks: a row changed while the batch reads it has its key in the log,
 * which is applied only after the batch commits (the batch holds the key log's advisory lock shared), so the
 * copy never keeps a state older than the table's. `backfillBatchFast` has no ON CONFLICT (speculative
 * insertion costs about a sixth of the copy's speed): when the applier already wrote a row of the range it
 * fails with 23505 and the batch is copied again with `backfillBatch`, which keeps the applier's row (as new
 * as the batch's, or newer).
 */
function pageSql(ctx: PlanContext): Pick<PlanSql, 'backfillBatch' | 'backfillBatchFast'> {
  const { columns, sourceColumns, overriding } = ctx;
  const values = columns.map((c) => `s.a${sourceColumns.indexOf(c) + 1}`).join(', ');
  const range = ' WHERE ctid >= $1::tid AND ctid < $2::tid';
  const select = `SELECT ${values} FROM ${positional(ctx.table, sourceColumns, range)}`;
  const overridingClause = overriding ? ' OVERRIDING SYSTEM VALUE' : '';
  const insertInto = `INSERT INTO ${qualified(ctx.shadow)} (${columns.map(q).join(', ')})${overridingClause}`;
  return {
    backfillBatch: `${insertInto} ${select} ON CONFLICT DO NOTHING`,
    backfillBatchFast: `${insertInto} ${select}`,
  };
}

/**
 * Key ranges: bounds first (index order), then the copy of exactly that range, without row locks (the key log
 * covers what changes meanwhile). The checkpoint is the bound, never a key the copy read.
 */
/** The key as a row value, and the parameters that bound it (`$from`, `$from + 1`, … cast to the key's types). */
export function keyTuple(ctx: PlanContext): { tuple: string; params: (from: number) => string; n: number } {
  const { sourceKey, info } = ctx;
  const keyTypes = sourceKey.map((k) => info.columns.find((c) => c.name === k)!.type);
  return {
    tuple: `(${sourceKey.map(q).join(', ')})`,
    params: (from: number) => `(${keyTypes.map((ty, i) => `$${from + i}::${ty}`).join(', ')})`,
    n: keyTypes.length,
  };
}

function keySql(ctx: PlanContext): Pick<PlanSql, 'maxKey' | 'keyBound' | 'keyBoundFirst' | 'keyCopy' | 'keyCopyFirst'> {
  const { sourceKey } = ctx;
  const t = qualified(ctx.table);
  const colList = ctx.columns.map(q).join(', ');
  const { tuple, params, n } = keyTuple(ctx);
  const keyText = `ARRAY[${sourceKey.map((k) => `${q(k)}::text`).join(', ')}]`;
  const order = sourceKey.map(q).join(', ');
  const between = `${tuple} > ${params(1)} AND ${tuple} <= ${params(n + 1)}`;
  const copy = (where: string) =>
    `WITH src AS (SELECT ${colList} FROM ${t} WHERE ${where}),
ins AS (INSERT INTO ${qualified(ctx.shadow)} (${colList})${ctx.overriding ? ' OVERRIDING SYSTEM VALUE' : ''} ` +
    `SELECT ${colList} FROM src ON CONFLICT DO NOTHING RETURNING 1)
SELECT (SELECT count(*) FROM src)::bigint AS read, (SELECT count(*) FROM ins)::bigint AS inserted`;
  const bound = (where: string) => `SELECT ${keyText} AS k FROM ${t} WHERE ${where} ORDER BY ${order}`;
  const desc = sourceKey.map((k) => `${q(k)} DESC`).join(', ');
  return {
    maxKey: `SELECT ${keyText} AS k FROM ${t} ORDER BY ${desc} LIMIT 1`,
    keyBound: `${bound(between)} OFFSET $${2 * n + 1}::int - 1 LIMIT 1`,
    keyBoundFirst: `${bound(`${tuple} <= ${params(1)}`)} OFFSET $${n + 1}::int - 1 LIMIT 1`,
    keyCopy: copy(between),
    keyCopyFirst: copy(`${tuple} <= ${params(1)}`),
  };
}

export function backfillStep(ctx: PlanContext): BackfillSql & Pick<PlanSql, 'maxKey'> {
  return { ...pageSql(ctx), ...keySql(ctx), appProbe: appProbeSql(ctx) };
}

/** Rows per backfill batch → pages per batch, from the table's density. */
export function pagesPerBatch(batchRows: number, estimatedRows: number, pages: number): number {
  const density = pages > 0 && estimatedRows > 0 ? estimatedRows / pages : 50;
  return Math.max(1, Math.min(100_000, Math.ceil(batchRows / Math.max(1, density))));
}

/**
 * The next batch size (pages or keys) under a time budget: a batch that took longer than `budgetMs` shrinks
 * the next one in proportion (with a 20 % margin); one that took under 60 % of it grows by a fifth, never
 * past `cap` (the operator's batchSize).
 */
export function nextBatchSize(current: number, cap: number, tookMs: number, budgetMs: number): number {
  if (tookMs > budgetMs) return Math.max(1, Math.min(cap, Math.floor((current * budgetMs * 0.8) / tookMs)));
  if (tookMs < budgetMs * 0.6) return Math.min(cap, Math.max(current + 1, Math.ceil(current * 1.2)));
  return Math.min(cap, current);
}
