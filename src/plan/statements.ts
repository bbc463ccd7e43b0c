/**
 * The application's statements that partitioning breaks (issue 29, item 6), found in pg_stat_statements where
 * the extension is installed. After the cut-over every unique index contains the partition column, so
 * - `INSERT ... ON CONFLICT (<columns>)` whose columns leave out the partition column fails with 42P10, and so
 *   does `ON CONFLICT ON CONSTRAINT <name>` naming a unique constraint that is given up;
 * - `ON CONFLICT ON CONSTRAINT <primary key>` and `ON CONFLICT DO ...` without a target silently check a wider
 *   key: an existing id with another month is inserted a second time.
 * Preflight refuses the first kind always and the second unless the primary key's widening is accepted
 * (`acceptLostConstraints`), naming each statement with its calls. Inserts through a view of the table count
 * as inserts into the table. Statements that find rows by the key alone (they visit every partition) are
 * listed in the plan's warnings with their calls.
 */
import type { TableInfo } from '../catalog';
import { displayName, TableRef } from '../ident';
import { refuse } from './context';

export interface AppStatement {
  query: string;
  calls: number;
  /** a function's or procedure's body: its signature (`function public.bump(bigint)`) */
  source?: string;
}

/** What a statement does after the cut-over: fails (42P10), or checks another key than before. */
export interface Broken {
  kind: 'fails' | 'changes';
  why: string;
}

/** An identifier as written: quoted kept as is, unquoted folded to lower case. */
function ident(s: string): string {
  const t = s.trim();
  return t.startsWith('"') ? t.slice(1, -1).replace(/""/g, '"') : t.toLowerCase();
}

const NAME = String.raw`(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)`;
const INSERT_INTO = new RegExp(String.raw`\binsert\s+into\s+(?:(${NAME})\s*\.\s*)?(${NAME})`, 'gi');
const ON_CONFLICT = /\bon\s+conflict\b\s*/i;
const CONFLICT_CONSTRAINT = new RegExp(String.raw`^on\s+constraint\s+(${NAME})`, 'i');

/** The statement's text without comments (pg_stat_statements keeps them) and string literals. */
function bare(query: string): string {
  return query
    .replace(/\/\*[\s\S]*?\*\//g, ' ')
    .replace(/--[^\n]*/g, ' ')
    .replace(/'(?:[^']|'')*'/g, "''");
}

/** The text between the parenthesis at `open` and its match, or null when unbalanced. */
function balanced(text: string, open: number): string | null {
  let depth = 0;
  let quoted = false;
  for (let i = open; i < text.length; i++) {
    const ch = text[i];
    if (ch === '"') quoted = !quoted;
    if (quoted) continue;
    if (ch === '(') depth++;
    if (ch === ')' && --depth === 0) return text.slice(open + 1, i);
  }
  return null;
}

/** Split at the commas outside parentheses and quotes. */
function topLevel(list: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let quoted = false;
  let start = 0;
  for (let i = 0; i < list.length; i++) {
    const ch = list[i];
    if (ch === '"') quoted = !quoted;
    if (quoted) continue;
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      parts.push(list.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(list.slice(start));
  return parts;
}

/** The column an inference element names (`id`, `"Id" COLLATE "C"`, `(id)`, `id text_ops`), or its text. */
function elementColumn(element: string): string {
  let e = element.trim();
  while (e.startsWith('(') && balanced(e, 0)?.length === e.length - 2) e = e.slice(1, -1).trim();
  const head = new RegExp(String.raw`^(${NAME})(?:\s+(?:collate\b.*|[a-z_][a-z0-9_]*))?$`, 'is').exec(e);
  return head ? ident(head[1]) : e;
}

/**
 * Why `query` fails or changes meaning after the cut-over, or null. `targets` are the table and the views
 * an insert can reach it through; `givenUp` the unique constraints that do not survive; `primaryKey` the
 * primary key's name when it widens (null when it already holds the partition column).
 */
export function whyItBreaks(
  query: string,
  targets: TableRef[],
  column: string,
  givenUp: string[],
  primaryKey: string | null,
): Broken | null {
  const text = bare(query);
  const inserts = [...text.matchAll(INSERT_INTO)];
  for (const [k, target] of inserts.entries()) {
    const hit = targets.some((t) => ident(target[2]) === t.name && (!target[1] || ident(target[1]) === t.schema));
    if (!hit) continue;
    const end = k + 1 < inserts.length ? inserts[k + 1].index : text.length;
    const why = conflictBreaks(text.slice(target.index, end), column, givenUp, primaryKey);
    if (why) return why;
  }
  return null;
}

function conflictBreaks(insert: string, column: string, givenUp: string[], primaryKey: string | null): Broken | null {
  const on = ON_CONFLICT.exec(insert);
  if (!on) return null;
  const rest = insert.slice(on.index + on[0].length);
  if (rest.startsWith('(')) {
    const inside = balanced(rest, 0);
    if (inside === null) return null;
    const names = topLevel(inside).map(elementColumn);
    if (names.includes(column)) return null;
    return { kind: 'fails', why: `ON CONFLICT (${names.join(', ')}) has no unique index to match: 42P10` };
  }
  const named = CONFLICT_CONSTRAINT.exec(rest);
  if (named) {
    const name = ident(named[1]);
    if (name === primaryKey) {
      return { kind: 'changes', why: `ON CONFLICT ON CONSTRAINT ${name} checks (..., ${column}) instead of the key` };
    }
    if (givenUp.includes(name)) return { kind: 'fails', why: `ON CONFLICT ON CONSTRAINT ${name}: it is given up` };
    return null;
  }
  if (primaryKey && /^do\b/i.test(rest)) {
    return { kind: 'changes', why: `ON CONFLICT without a target checks the primary key with ${column} in it` };
  }
  return null;
}

/** The tables and views an insert into `info`'s table can be written against. */
function targetsOf(info: TableInfo): TableRef[] {
  return [info.table, ...(info.views ?? []).filter((v) => v.kind === 'v')];
}

/** The primary key's name when partitioning widens it, else null. */
export function widenedKey(info: TableInfo, column: string): string | null {
  return info.primaryKey && !info.primaryKey.columns.includes(column) ? info.primaryKey.name : null;
}

/**
 * Refused before anything changes, each statement named with its calls: the ones that fail always, the ones
 * that check a wider key unless the widening is accepted.
 */
export function checkStatements(info: TableInfo, column: string, accepted: string[]): void {
  const statements: AppStatement[] = [...(info.appStatements ?? []), ...(info.appFunctions ?? [])];
  if (!statements.length) return;
  const pk = widenedKey(info, column);
  const givenUp = info.indexes
    .filter((i) => i.isUnique && !i.keyColumns.includes(column) && !i.isPrimary)
    .map((i) => i.constraintName ?? i.name);
  const widenAccepted = pk !== null && accepted.includes(pk);
  const broken = statements
    .map((s) => ({ ...s, broken: whyItBreaks(s.query, targetsOf(info), column, givenUp, pk) }))
    .filter((s) => s.broken && !(s.broken.kind === 'changes' && widenAccepted));
  if (!broken.length) return;
  const list = broken
    .slice(0, 5)
    .map((s) =>
      s.source ? `${s.source} (${s.broken!.why})` : `"${oneLine(s.query)}" (${s.calls} calls: ${s.broken!.why})`,
    )
    .join('; ');
  const more = broken.length > 5 ? `; and ${broken.length - 5} more` : '';
  const changes = broken.some((s) => s.broken!.kind === 'changes')
    ? `; a statement that only checks a wider key is accepted with "${pk}" in "acceptLostConstraints"`
    : '';
  refuse(
    `The application runs statements on ${displayName(info.table)} that fail or change meaning once it is ` +
      `partitioned by ${column} (pg_stat_statements): ${list}${more}; ` +
      `make them name the partition column first (a unique index on (..., ${column}), built CONCURRENTLY, lets ` +
      `ON CONFLICT (..., ${column}) work before and after the cut-over)${changes}, or, if they no longer run, ` +
      'reset the statistics (SELECT pg_stat_statements_reset()) and start again.',
  );
}

function oneLine(query: string): string {
  return query.replace(/\s+/g, ' ').slice(0, 160);
}

const READS = /\b(?:from|join|update|delete\s+from)\s+(?:(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)\s*\.\s*)?/gi;

/**
 * The application's statements that read or change rows of the table without naming the partition column:
 * after the cut-over they visit every partition (a lookup by id alone). Hottest first, at most five.
 */
export function everyPartitionStatements(info: TableInfo, column: string): AppStatement[] {
  const names = targetsOf(info).map((t) => t.name);
  const mentions = (text: string) => {
    for (const m of text.matchAll(READS)) {
      const after = text.slice(m.index + m[0].length);
      const name = new RegExp(`^(${NAME})`).exec(after);
      if (name && names.includes(ident(name[1]))) return true;
    }
    return false;
  };
  const col = new RegExp(
    String.raw`(?<![A-Za-z0-9_$])"?${column.replace(/[^A-Za-z0-9_]/g, '\\$&')}"?(?![A-Za-z0-9_$])`,
    'i',
  );
  return (info.appStatements ?? [])
    .filter((s) => {
      const text = bare(s.query);
      // partflow's own statements (an earlier run's copy or checks) name its objects: not the application's
      const ours = /_pf_|\bpartflow\./i.test(text);
      return !ours && /\bwhere\b/i.test(text) && mentions(text) && !col.test(text);
    })
    .sort((a, b) => b.calls - a.calls)
    .slice(0, 5);
}

/**
 * The primary key's widening gives up a guarantee (the key unique across the table): accepted without a word
 * when pg_stat_statements showed every statement of the database, else only when listed in
 * `acceptLostConstraints`.
 */
export function checkKeyWidening(info: TableInfo, column: string, accepted: string[], t: string): void {
  const pk = widenedKey(info, column);
  if (!pk || accepted.includes(pk)) return;
  const why =
    info.appStatements === null || info.appStatements === undefined
      ? 'pg_stat_statements is not installed or not readable in this database'
      : info.appStatementsHidden
        ? `${info.appStatementsHidden} statement(s) of other roles are hidden from partflow's role in ` +
          'pg_stat_statements'
        : null;
  if (!why) return;
  refuse(
    `The primary key ${pk} of ${t} becomes (${info.primaryKey!.columns.join(', ')}, ${column}), so ` +
      `(${info.primaryKey!.columns.join(', ')}) is unique per partition only, and ${why}, so the application's ` +
      `statements that would fail or change meaning (ON CONFLICT) cannot be checked: install pg_stat_statements ` +
      `(shared_preload_libraries, CREATE EXTENSION) or grant partflow's role pg_read_all_stats and let the ` +
      `application run, or list "${pk}" in "acceptLostConstraints" to accept the widening.`,
  );
}
