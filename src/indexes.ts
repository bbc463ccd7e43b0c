/**
 * `createIndexes`: input, the seed preset, and the statements of an online index build. Pure.
 *
 * PostgreSQL has no CREATE INDEX CONCURRENTLY on a partitioned table, and a plain CREATE INDEX there blocks
 * writes to every partition for the whole build. So: the index ON ONLY the parent (invalid, empty, instant),
 * CREATE INDEX CONCURRENTLY on each partition (writes go on), ALTER INDEX ... ATTACH PARTITION each; the
 * attach of the last one makes the parent index valid. On a plain table: CREATE INDEX CONCURRENTLY.
 * Partitions made later (CREATE TABLE ... PARTITION OF, or ATTACH PARTITION as maintenance does) get a
 * matching index from PostgreSQL itself, for every index of the parent.
 */
import {
  byteLength,
  InputError,
  MAX_IDENT_BYTES,
  parseColumnName,
  parseTableName,
  qualified,
  shortIdent,
  TableRef,
} from './ident';
import { quoteIdent as q } from './ident';
import { lockTimeoutField } from './locks';

export interface IndexInput {
  table: string;
  /** column names, each optionally followed by ` DESC` */
  columns: string[];
  /** a predicate for a partial index; its functions must be IMMUTABLE (`now()` is not) */
  where?: string;
  unique?: boolean;
  name?: string;
}

/** Input of the `createIndexes` workflow. */
export interface CreateIndexesInput {
  indexes?: IndexInput[];
  preset?: 'seed-indexes';
  /** check and return the statements; change nothing */
  dryRun?: boolean;
  lockTimeoutMs?: number;
}

export interface IndexSpec {
  table: TableRef;
  columns: { name: string; desc: boolean }[];
  where: string | null;
  unique: boolean;
  name: string;
}

export interface IndexOptions {
  indexes: IndexSpec[];
  dryRun: boolean;
  lockTimeoutMs: number;
}

/** The fields of createIndexes' input and of each index in it (docs/contract.md; a test checks). */
export const INDEX_INPUT_FIELDS = ['indexes', 'preset', 'dryRun', 'lockTimeoutMs'];
export const INDEX_FIELDS = ['table', 'columns', 'where', 'unique', 'name'];

/**
 * Sections 1.1 and 1.2 of the seed plan. Its `(expires_at) WHERE expires_at < NOW()` cannot exist (an index
 * predicate must mean the same at every moment: now() is not IMMUTABLE): the preset has the plain index on
 * expires_at instead, which serves `WHERE expires_at < now()` as well.
 */
export function seedIndexes(): IndexInput[] {
  return [
    {
      table: 'generated_images',
      columns: ['user_id', 'generation_status'],
      where: 'user_id IS NOT NULL',
      name: 'idx_generated_images_user_status',
    },
    { table: 'generated_images', columns: ['expires_at'], name: 'idx_generated_images_expires_at' },
    {
      table: 'generated_images',
      columns: ['generation_type', 'generation_status', 'created_at'],
      name: 'idx_generated_images_type_status_created',
    },
    { table: 'credit_transactions', columns: ['user_id', 'created_at'], name: 'idx_credit_transactions_user_created' },
    { table: 'credit_transactions', columns: ['operation_type'], name: 'idx_credit_transactions_operation_type' },
  ];
}

/**
 * A predicate's text is never run as the operator wrote it. Here it is only bounded; PostgreSQL then parses it
 * as the WHERE of an index on an empty temporary copy of the table (activities/indexes.ts), in one statement
 * of the extended protocol (no second statement can ride along), which refuses subqueries, functions that are
 * not IMMUTABLE and columns the table lacks; what the real build runs is PostgreSQL's own deparsed form of it.
 */
export function checkPredicate(where: string, at: string): string {
  if (typeof where !== 'string' || !where.trim()) throw new InputError(`${at} must be an SQL condition.`);
  if (where.length > 1000) throw new InputError(`${at} is longer than 1000 characters.`);
  if (where.includes('\0')) throw new InputError(`${at} contains a NUL character.`);
  return where.trim();
}

function validateIndex(raw: unknown, at: string): IndexSpec {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new InputError(`${at} must be an object.`);
  const f = raw as Record<string, unknown>;
  for (const k of Object.keys(f))
    if (!INDEX_FIELDS.includes(k))
      throw new InputError(`${at}: unknown field "${k}"; known fields are ${INDEX_FIELDS.join(', ')}.`);
  const table = parseTableName(f.table as string, `${at}.table`);
  if (!Array.isArray(f.columns) || f.columns.length === 0 || f.columns.length > 32)
    throw new InputError(`${at}.columns must list from 1 to 32 column names.`);
  const columns = f.columns.map((c, j) => {
    const m = typeof c === 'string' ? /^(.*?)(\s+(asc|desc))?$/i.exec(c.trim()) : null;
    const name = parseColumnName((m?.[1] ?? c) as string, `${at}.columns[${j}]`);
    return { name, desc: (m?.[3] ?? '').toLowerCase() === 'desc' };
  });
  if (f.unique !== undefined && typeof f.unique !== 'boolean')
    throw new InputError(`${at}.unique must be true or false.`);
  const where = f.where === undefined ? null : checkPredicate(f.where as string, `${at}.where`);
  let name: string;
  if (f.name === undefined) name = shortIdent(['idx', table.name, ...columns.map((c) => c.name)], 'pf');
  else if (typeof f.name !== 'string' || !f.name) throw new InputError(`${at}.name must be an index name.`);
  else if (byteLength(f.name) > MAX_IDENT_BYTES)
    throw new InputError(`${at}.name ${JSON.stringify(f.name)} is over PostgreSQL's 63 bytes; choose a shorter name.`);
  else name = f.name;
  return { table, columns, where, unique: f.unique === true, name };
}

export function validateIndexInput(raw: unknown): IndexOptions {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw))
    throw new InputError('The input must be a JSON object with "indexes" or "preset".');
  const input = raw as Record<string, unknown>;
  for (const k of Object.keys(input))
    if (!INDEX_INPUT_FIELDS.includes(k))
      throw new InputError(`Unknown field "${k}"; known fields are ${INDEX_INPUT_FIELDS.join(', ')}.`);
  let list: unknown[];
  if (input.preset !== undefined) {
    if (input.preset !== 'seed-indexes')
      throw new InputError(`Field "preset" must be "seed-indexes", not ${JSON.stringify(input.preset)}.`);
    if (input.indexes !== undefined) throw new InputError('Give either "preset" or "indexes", not both.');
    list = seedIndexes();
  } else {
    if (!Array.isArray(input.indexes) || input.indexes.length === 0)
      throw new InputError('Field "indexes" must be a non-empty list, or use {"preset": "seed-indexes"}.');
    list = input.indexes;
  }
  const indexes = list.map((x, i) => validateIndex(x, `indexes[${i}]`));
  const names = indexes.map((x) => `${x.table.schema}.${x.name}`);
  const twice = names.find((n, i) => names.indexOf(n) !== i);
  if (twice) throw new InputError(`Two indexes are named ${twice}; give each its own "name".`);
  const lockTimeoutMs = lockTimeoutField(input.lockTimeoutMs);
  if (input.dryRun !== undefined && typeof input.dryRun !== 'boolean')
    throw new InputError('Field "dryRun" must be true or false.');
  return { indexes, dryRun: input.dryRun === true, lockTimeoutMs };
}

export function describeIndex(x: IndexSpec): string {
  const cols = x.columns.map((c) => `${c.name}${c.desc ? ' DESC' : ''}`).join(', ');
  return `${x.unique ? 'UNIQUE ' : ''}${x.table.schema}.${x.table.name} (${cols})${x.where ? ` WHERE ${x.where}` : ''}`;
}

/** An online build: the parent index (partitioned table only), one index per table built CONCURRENTLY, the undo. */
export interface IndexBuild {
  /** partitioned table: the index ON ONLY the parent, then one per partition, attached */
  parent?: { name: string; sql: string };
  each: { table: TableRef; name: string; sql: string; attach?: string }[];
  /** undo: the parent index (it takes the attached ones with it), then each */
  drop: string[];
}

/** What the build needs of an index: where, what name, and the definition after `ON <table>`. */
export interface IndexShape {
  table: TableRef;
  name: string;
  /** e.g. `("user_id", "created_at" DESC) WHERE user_id IS NOT NULL` */
  definition: string;
  unique: boolean;
  /** the name of the index on one partition */
  childName: (partition: TableRef) => string;
}

export function indexShape(x: IndexSpec): IndexShape {
  const cols = x.columns.map((c) => `${q(c.name)}${c.desc ? ' DESC' : ''}`).join(', ');
  return {
    table: x.table,
    name: x.name,
    definition: `(${cols})${x.where ? ` WHERE ${x.where}` : ''}`,
    unique: x.unique,
    childName: (p) => shortIdent([p.name, ...x.columns.map((c) => c.name)], `${fnv(x.name)}_idx`),
  };
}

/** 6 hex digits of FNV-1a: partition index names of two indexes on the same columns differ. */
function fnv(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h.toString(16).padStart(8, '0').slice(0, 6);
}

/** The statements of an online build of `x` on a table of kind `relkind` with these partitions. */
export function indexBuild(x: IndexShape, relkind: string, partitions: TableRef[]): IndexBuild {
  const at = (schema: string, name: string) => qualified({ schema, name });
  const create = `CREATE ${x.unique ? 'UNIQUE ' : ''}INDEX`;
  if (relkind !== 'p') {
    const sql = `${create} CONCURRENTLY IF NOT EXISTS ${q(x.name)} ON ${qualified(x.table)} ${x.definition}`;
    return {
      each: [{ table: x.table, name: x.name, sql }],
      drop: [`DROP INDEX CONCURRENTLY IF EXISTS ${at(x.table.schema, x.name)}`],
    };
  }
  const each = partitions.map((p) => {
    const child = x.childName(p);
    return {
      table: p,
      name: child,
      sql: `${create} CONCURRENTLY IF NOT EXISTS ${q(child)} ON ${qualified(p)} ${x.definition}`,
      attach: `ALTER INDEX ${at(x.table.schema, x.name)} ATTACH PARTITION ${at(p.schema, child)}`,
    };
  });
  return {
    parent: { name: x.name, sql: `${create} IF NOT EXISTS ${q(x.name)} ON ONLY ${qualified(x.table)} ${x.definition}` },
    each,
    drop: [
      `DROP INDEX IF EXISTS ${at(x.table.schema, x.name)}`,
      ...each.map((e) => `DROP INDEX CONCURRENTLY IF EXISTS ${at(e.table.schema, e.name)}`),
    ],
  };
}
