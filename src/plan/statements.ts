/**
 * The application's statements that partitioning breaks (issue 29, item 6), found in pg_stat_statements where
 * the extension is installed: an `INSERT INTO <table> ... ON CONFLICT (<columns>)` whose columns leave out the
 * partition column fails after the cut-over with 42P10 (every unique index of a partitioned table contains the
 * partition column, so nothing matches), and `ON CONFLICT ON CONSTRAINT <name>` naming the primary key or a
 * unique constraint without the partition column either fails (the constraint is given up) or silently checks a
 * wider key (the primary key becomes (id, <column>): an existing id with another month is inserted a second
 * time). Preflight refuses naming each statement with its calls.
 */
import type { TableInfo } from '../catalog';
import { displayName, TableRef } from '../ident';
import { refuse } from './context';

export interface AppStatement {
  query: string;
  calls: number;
}

/** An identifier as written: quoted kept as is, unquoted folded to lower case. */
function ident(s: string): string {
  const t = s.trim();
  return t.startsWith('"') ? t.slice(1, -1).replace(/""/g, '"') : t.toLowerCase();
}

const NAME = String.raw`(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)`;
const INSERT_INTO = new RegExp(String.raw`\binsert\s+into\s+(?:(${NAME})\s*\.\s*)?(${NAME})`, 'gi');
const CONFLICT_COLUMNS = /\bon\s+conflict\s*\(([^)]*)\)/i;
const CONFLICT_CONSTRAINT = new RegExp(String.raw`\bon\s+conflict\s+on\s+constraint\s+(${NAME})`, 'i');

/** Why `query` fails or changes meaning after the cut-over, or null. */
export function whyItBreaks(
  query: string,
  table: TableRef,
  column: string,
  constraintsWithoutColumn: string[],
): string | null {
  // comments out (pg_stat_statements keeps them), then each INSERT INTO with the text up to the next one: the
  // ON CONFLICT in that stretch is that insert's
  const text = query.replace(/\/\*[\s\S]*?\*\//g, ' ').replace(/--[^\n]*/g, ' ');
  const inserts = [...text.matchAll(INSERT_INTO)];
  for (const [k, target] of inserts.entries()) {
    if (ident(target[2]) !== table.name || (target[1] && ident(target[1]) !== table.schema)) continue;
    const end = k + 1 < inserts.length ? inserts[k + 1].index : text.length;
    const why = conflictBreaks(text.slice(target.index, end), column, constraintsWithoutColumn);
    if (why) return why;
  }
  return null;
}

function conflictBreaks(query: string, column: string, constraintsWithoutColumn: string[]): string | null {
  const cols = CONFLICT_COLUMNS.exec(query);
  if (cols) {
    const names = cols[1].split(',').map((c) => ident(c.split(/\s+(?:collate|[a-z_]+_ops)\b/i)[0]));
    if (!names.includes(column)) return `ON CONFLICT (${names.join(', ')}) has no unique index to match: 42P10`;
  }
  const named = CONFLICT_CONSTRAINT.exec(query);
  if (named && constraintsWithoutColumn.includes(ident(named[1]))) {
    return `ON CONFLICT ON CONSTRAINT ${ident(named[1])} no longer checks the same key`;
  }
  return null;
}

/** Refused before anything changes, each statement named with its calls. */
export function checkStatements(info: TableInfo, column: string): void {
  if (!info.appStatements?.length) return;
  const without = info.indexes
    .filter((i) => i.isUnique && !i.keyColumns.includes(column))
    .map((i) => i.constraintName ?? i.name);
  const broken = info.appStatements
    .map((s) => ({ ...s, why: whyItBreaks(s.query, info.table, column, without) }))
    .filter((s) => s.why);
  if (!broken.length) return;
  const list = broken
    .slice(0, 5)
    .map((s) => `"${s.query.replace(/\s+/g, ' ').slice(0, 160)}" (${s.calls} calls: ${s.why})`)
    .join('; ');
  const more = broken.length > 5 ? `; and ${broken.length - 5} more` : '';
  refuse(
    `The application runs statements on ${displayName(info.table)} that fail or change meaning once it is ` +
      `partitioned by ${column} (pg_stat_statements): ${list}${more}; ` +
      `make them name the partition column first (a unique index on (..., ${column}), built CONCURRENTLY, lets ` +
      `ON CONFLICT (..., ${column}) work before and after the cut-over), or, if they no longer run, reset the ` +
      'statistics (SELECT pg_stat_statements_reset()) and start again.',
  );
}
