/**
 * `fixConstraints`: input, the seed preset and its validation, pure; the SQL of each safe step is in
 * src/constraintSql.ts and src/fixSteps.ts.
 *
 * Foreign key: [supporting index CONCURRENTLY] → ADD ... NOT VALID (brief lock, new writes checked from here
 * on) → repair existing orphans in batches, each change recorded → VALIDATE (SHARE UPDATE EXCLUSIVE: writes
 * go on). On a partitioned table (PostgreSQL ≤ 17 refuses NOT VALID there): per partition NOT VALID +
 * VALIDATE, then the parent's constraint, which adopts the validated ones without a rescan.
 * NOT NULL: CHECK (col IS NOT NULL) NOT VALID → fill NULLs → VALIDATE → SET NOT NULL (no scan: the check
 * proves it) → DROP the check in its own statement.
 */
import {
  byteLength,
  InputError,
  MAX_IDENT_BYTES,
  parseColumnName,
  parseTableName,
  shortIdent,
  TableRef,
} from './ident';
import { lockTimeoutField } from './locks';
import { DEFAULT_REPLICA_BOUNDS, REPLICA_FIELDS, ReplicaBounds, replicaBoundsFrom } from './replicas';

export type FkAction = 'NO ACTION' | 'RESTRICT' | 'CASCADE' | 'SET NULL' | 'SET DEFAULT';

export interface ForeignKeyFixInput {
  kind: 'foreignKey';
  table: string;
  columns: string[];
  references: { table: string; columns: string[] };
  onDelete?: FkAction;
  onUpdate?: FkAction;
  /** `fail` (default): report and change nothing; `set-null` / `delete`: repair in batches, recorded for undo */
  orphans?: 'fail' | 'set-null' | 'delete';
  name?: string;
}

export interface NotNullFixInput {
  kind: 'notNull';
  table: string;
  column: string;
  /** `fail` (default) or `{ "fill": value }` */
  nulls?: 'fail' | { fill: string | number | boolean };
  name?: string;
}

export type FixInput = ForeignKeyFixInput | NotNullFixInput;

/** Input of the `fixConstraints` workflow. */
export interface FixConstraintsInput {
  fixes?: FixInput[];
  preset?: 'seed-critical-fixes';
  /**
   * with `preset`: per constraint name, how to handle what the audit finds,
   * e.g. {"fk_generated_images_user_id": {"orphans": "set-null"}}
   */
  overrides?: Record<string, { orphans?: ForeignKeyFixInput['orphans']; nulls?: NotNullFixInput['nulls'] }>;
  /** audit and return the SQL; change nothing */
  dryRun?: boolean;
  /** rows per repair batch, default 1000 */
  batchSize?: number;
  lockTimeoutMs?: number;
  /** the repairs wait on the standbys as partitionTable's backfill does (src/replicas.ts) */
  maxReplicaLagBytes?: number;
  maxReplicaLagSeconds?: number;
  maxWalBytesPerSecond?: number | null;
  ignoreUnknownReplicaLag?: boolean;
}

export interface ForeignKeyFix {
  kind: 'foreignKey';
  table: TableRef;
  columns: string[];
  references: { table: TableRef; columns: string[] };
  onDelete: FkAction;
  onUpdate: FkAction;
  orphans: 'fail' | 'set-null' | 'delete';
  name: string;
}

export interface NotNullFix {
  kind: 'notNull';
  table: TableRef;
  column: string;
  nulls: 'fail' | { fill: string | number | boolean };
  /** the helper CHECK's name */
  name: string;
}

export type Fix = ForeignKeyFix | NotNullFix;

export interface FixOptions {
  fixes: Fix[];
  dryRun: boolean;
  batchSize: number;
  lockTimeoutMs: number;
  replica: ReplicaBounds;
}

const ACTIONS: FkAction[] = ['NO ACTION', 'RESTRICT', 'CASCADE', 'SET NULL', 'SET DEFAULT'];

/** Sections 2 and 3 of the seed plan, with the ON DELETE / ON UPDATE it recommends. */
export function seedCriticalFixes(): FixInput[] {
  const admin: [string, string][] = [
    ['industry_id', 'industries'],
    ['category_id', 'categories'],
    ['product_type_id', 'product_types'],
    ['product_pose_id', 'product_poses'],
    ['product_theme_id', 'product_themes'],
    ['product_background_id', 'product_backgrounds'],
    ['ai_face_id', 'ai_faces'],
  ];
  return [
    {
      kind: 'foreignKey',
      table: 'generated_images',
      columns: ['user_id'],
      references: { table: 'users', columns: ['id'] },
      onDelete: 'SET NULL',
      onUpdate: 'CASCADE',
      name: 'fk_generated_images_user_id',
    },
    ...admin.map(([col, ref]): FixInput => ({
      kind: 'foreignKey',
      table: 'generated_images',
      columns: [col],
      references: { table: ref, columns: ['id'] },
      onDelete: 'RESTRICT',
      onUpdate: 'CASCADE',
      name: `fk_generated_images_${col}`,
    })),
    {
      kind: 'foreignKey',
      table: 'user_businesses',
      columns: ['user_id'],
      references: { table: 'users', columns: ['id'] },
      onDelete: 'CASCADE',
      onUpdate: 'CASCADE',
      name: 'fk_user_businesses_user_id',
    },
    {
      kind: 'foreignKey',
      table: 'contact_forms',
      columns: ['read_by'],
      references: { table: 'users', columns: ['id'] },
      onDelete: 'SET NULL',
      onUpdate: 'CASCADE',
      name: 'fk_contact_forms_read_by',
    },
    { kind: 'notNull', table: 'contact_forms', column: 'email' },
    { kind: 'notNull', table: 'user_addresses', column: 'user_id' },
  ];
}

function checkName(name: string, field: string): string {
  if (typeof name !== 'string' || name === '') throw new InputError(`${field} must be a constraint name.`);
  if (name.includes('\0')) throw new InputError(`${field} contains a NUL character, which no PostgreSQL name can.`);
  if (byteLength(name) > MAX_IDENT_BYTES)
    throw new InputError(`${field} ${JSON.stringify(name)} is over PostgreSQL's 63 bytes; choose a shorter name.`);
  return name;
}

/**
 * One entry of `overrides`: only the policies (`orphans`, `nulls`) of a preset fix may change, never its table,
 * columns or name; each is checked here so that a refusal names the override it came from.
 */
function checkOverride(raw: unknown, at: string): Record<string, unknown> {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw))
    throw new InputError(`${at} must be an object such as {"orphans": "set-null"} or {"nulls": {"fill": ...}}.`);
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o))
    if (k !== 'orphans' && k !== 'nulls')
      throw new InputError(`${at}: unknown field ${JSON.stringify(k)}; an override sets only "orphans" or "nulls".`);
  if (o.orphans !== undefined && !['fail', 'set-null', 'delete'].includes(o.orphans as string))
    throw new InputError(`${at}.orphans must be "fail", "set-null" or "delete".`);
  if (o.nulls !== undefined && o.nulls !== 'fail') {
    const n = o.nulls as Record<string, unknown>;
    if (!n || typeof n !== 'object' || !('fill' in n) || !['string', 'number', 'boolean'].includes(typeof n.fill))
      throw new InputError(`${at}.nulls must be "fail" or {"fill": <value>}.`);
  }
  return o;
}

/** Every field of fixConstraints' input (docs/contract.md documents each; a test checks). */
export const FIX_INPUT_FIELDS = [
  'fixes',
  'preset',
  'overrides',
  'dryRun',
  'batchSize',
  'lockTimeoutMs',
  // the application-latency bound is partitionTable's copy's only
  ...REPLICA_FIELDS.filter((f) => f !== 'maxAppLatencyRatio'),
];

export function validateFixInput(raw: unknown): FixOptions {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw))
    throw new InputError('The input must be a JSON object with "fixes" or "preset".');
  const input = raw as Record<string, unknown>;
  for (const k of Object.keys(input)) {
    const known: readonly string[] = FIX_INPUT_FIELDS;
    if (!known.includes(k)) throw new InputError(`Unknown field "${k}"; known fields are ${known.join(', ')}.`);
  }
  let list: unknown[];
  if (input.preset !== undefined) {
    if (input.preset !== 'seed-critical-fixes')
      throw new InputError(`Field "preset" must be "seed-critical-fixes", not ${JSON.stringify(input.preset)}.`);
    if (input.fixes !== undefined) throw new InputError('Give either "preset" or "fixes", not both.');
    list = seedCriticalFixes();
    const overrides = (input.overrides ?? {}) as Record<string, Record<string, unknown>>;
    if (typeof overrides !== 'object' || Array.isArray(overrides))
      throw new InputError('Field "overrides" must map constraint names to {"orphans": ...} or {"nulls": ...}.');
    for (const [name, o] of Object.entries(overrides)) {
      const i = (list as FixInput[]).findIndex(
        (f) => f.name === name || (f.kind === 'notNull' && `${f.table}_${f.column}_pf_not_null` === name),
      );
      if (i < 0) throw new InputError(`overrides: the preset has no fix named ${JSON.stringify(name)}.`);
      list[i] = { ...(list[i] as FixInput), ...checkOverride(o, `overrides[${JSON.stringify(name)}]`) } as FixInput;
    }
  } else {
    if (input.overrides !== undefined)
      throw new InputError('Field "overrides" goes with "preset"; set the policies on each fix instead.');
    if (!Array.isArray(input.fixes) || input.fixes.length === 0)
      throw new InputError('Field "fixes" must be a non-empty list, or use {"preset": "seed-critical-fixes"}.');
    list = input.fixes;
  }
  const fixes = list.map((f, i) => validateFix(f, `fixes[${i}]`));
  const batchSize = input.batchSize === undefined ? 1000 : Number(input.batchSize);
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 100_000)
    throw new InputError('Field "batchSize" must be a whole number from 1 to 100000.');
  const lockTimeoutMs = lockTimeoutField(input.lockTimeoutMs);
  if (input.dryRun !== undefined && typeof input.dryRun !== 'boolean')
    throw new InputError('Field "dryRun" must be true or false.');
  const replica = { ...DEFAULT_REPLICA_BOUNDS, ...replicaBoundsFrom(input, 'Field ') };
  return { fixes, dryRun: input.dryRun === true, batchSize, lockTimeoutMs, replica };
}

function validateFix(raw: unknown, at: string): Fix {
  if (!raw || typeof raw !== 'object') throw new InputError(`${at} must be an object with "kind".`);
  const f = raw as Record<string, unknown>;
  if (f.kind === 'foreignKey') {
    const table = parseTableName(f.table as string, `${at}.table`);
    if (!Array.isArray(f.columns) || f.columns.length === 0)
      throw new InputError(`${at}.columns must list the referencing columns.`);
    const columns = f.columns.map((c, j) => parseColumnName(c as string, `${at}.columns[${j}]`));
    const ref = f.references as Record<string, unknown> | undefined;
    if (!ref || typeof ref !== 'object') throw new InputError(`${at}.references must name a table and its columns.`);
    const refTable = parseTableName(ref.table as string, `${at}.references.table`);
    if (!Array.isArray(ref.columns) || ref.columns.length !== columns.length) {
      throw new InputError(`${at}.references.columns must list as many columns as ${at}.columns (${columns.length}).`);
    }
    const refColumns = ref.columns.map((c, j) => parseColumnName(c as string, `${at}.references.columns[${j}]`));
    const action = (v: unknown, field: string): FkAction => {
      if (v === undefined) return 'NO ACTION';
      const up = String(v).toUpperCase().replace(/_/g, ' ') as FkAction;
      if (!ACTIONS.includes(up)) throw new InputError(`${at}.${field} must be one of ${ACTIONS.join(', ')}.`);
      return up;
    };
    const orphans = (f.orphans ?? 'fail') as ForeignKeyFix['orphans'];
    if (!['fail', 'set-null', 'delete'].includes(orphans))
      throw new InputError(`${at}.orphans must be "fail", "set-null" or "delete".`);
    const name =
      f.name === undefined
        ? shortIdent(['fk', table.name, ...columns], 'fkey').replace(/_fkey$/, '')
        : checkName(f.name as string, `${at}.name`);
    return {
      kind: 'foreignKey',
      table,
      columns,
      references: { table: refTable, columns: refColumns },
      onDelete: action(f.onDelete, 'onDelete'),
      onUpdate: action(f.onUpdate, 'onUpdate'),
      orphans,
      name,
    };
  }
  if (f.kind === 'notNull') {
    const table = parseTableName(f.table as string, `${at}.table`);
    const column = parseColumnName(f.column as string, `${at}.column`);
    let nulls: NotNullFix['nulls'] = 'fail';
    if (f.nulls !== undefined && f.nulls !== 'fail') {
      const n = f.nulls as Record<string, unknown>;
      if (!n || typeof n !== 'object' || !('fill' in n) || !['string', 'number', 'boolean'].includes(typeof n.fill)) {
        throw new InputError(`${at}.nulls must be "fail" or {"fill": <value>}.`);
      }
      nulls = { fill: n.fill as string | number | boolean };
    }
    const name =
      f.name === undefined
        ? shortIdent([table.name, column], 'pf_not_null')
        : checkName(f.name as string, `${at}.name`);
    return { kind: 'notNull', table, column, nulls, name };
  }
  throw new InputError(`${at}.kind must be "foreignKey" or "notNull".`);
}

export function describeFix(f: Fix): string {
  return f.kind === 'foreignKey'
    ? `${f.table.schema}.${f.table.name}(${f.columns.join(', ')}) → ` +
        `${f.references.table.schema}.${f.references.table.name}(${f.references.columns.join(', ')})`
    : `${f.table.schema}.${f.table.name}.${f.column} NOT NULL`;
}

/**
 * The tables a fix holds in the run store while it runs: its own, and for a foreign key the table it
 * references (converted by partitionTable meanwhile, the key would be left pointing at the old table).
 */
export function tablesOf(fix: Fix): TableRef[] {
  return fix.kind === 'foreignKey' ? [fix.table, fix.references.table] : [fix.table];
}
