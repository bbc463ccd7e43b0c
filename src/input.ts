/**
 * The operator-facing input of `partitionTable` (see docs/contract.md) and its validation. Pure: used by the
 * workflow (deterministic), the activities and the CLI alike.
 */
import { InputError, parseColumnName, parseTableName, TableRef } from './ident';
import { DEFAULT_LOCK_TIMEOUT_MS } from './locks';
import { DEFAULT_REPLICA_BOUNDS, REPLICA_FIELDS, ReplicaBounds, replicaBoundsFrom } from './replicas';

/** Input of the `partitionTable` workflow. Only `table` is required. */
export interface PartitionTableInput {
  /** `schema.table` or `table`, as pg_dump -t reads it. */
  table: string;
  /** Partition key column (timestamp, timestamptz or date). Default `created_at`. */
  column?: string;
  /** Only `month` is supported. */
  interval?: 'month';
  /** Future months to create beyond the current one. Default 3. */
  premake?: number;
  /** Rows per backfill batch (converted to a page range). Default 5000. */
  batchSize?: number;
  /** Pause between batches, ms. Default 0. With `parallelism` N each stream pauses N times as long. */
  sleepMs?: number;
  /**
   * Page-range streams the backfill runs at once, each with its own checkpoint (page mode only). Default 1.
   * `batchSize` and `maxBatchMs` are per batch; the replica bounds, `maxWalBytesPerSecond` and `sleepMs` hold
   * for the streams together.
   */
  parallelism?: number;
  /**
   * Longest a backfill batch may take, ms: a batch takes no row locks, but the key log is applied only between
   * batches (the applier waits for the batch in flight). Batches shrink below `batchSize` to stay under it, and
   * grow back. Default 50.
   */
  maxBatchMs?: number;
  /** `signal` (default) waits for `approveCutover`; `auto` cuts over when verification passes. */
  approval?: 'signal' | 'auto';
  /** How long the old table is kept in sync after cut-over, e.g. `24h`, `30m`, `0s`. Default `24h`. */
  rollbackWindow?: string;
  /**
   * While the run waits for `approveCutover`, verification runs again this long after the last pass ended,
   * e.g. `5m` (default), `30s`; `0s`: never again.
   */
  reverifyEvery?: string;
  /** Rows per verification chunk, each compared in a snapshot of its own. Default 50000. */
  verifyChunkRows?: number;
  /** `refuse` (default) or `drop`: what to do with foreign keys of other tables that reference this one. */
  inboundForeignKeys?: 'refuse' | 'drop';
  /** Month boundaries for timestamptz columns are midnight in this zone. Default `UTC`. */
  timeZone?: string;
  /** lock_timeout for each DDL attempt, ms. Default 50 (src/locks.ts): the longest an application query waits. */
  lockTimeoutMs?: number;
  /** Return the plan and change nothing. */
  dryRun?: boolean;
  /**
   * How the backfill walks the table: `pages` (TID ranges, PostgreSQL 14+, the fastest), `keys` (primary-key
   * ranges), or `auto` (default: pages where the server has TID range scans).
   */
  copyMode?: 'auto' | 'pages' | 'keys';
  /**
   * First month (`YYYY-MM`) with a partition of its own; everything older goes into one partition
   * `<table>_older`. Needed when the data spans more than 120 months.
   */
  startMonth?: string;
  /**
   * `copy` (default): every row is copied into monthly partitions under a sync, then the tables are swapped.
   * `attach`: the rows stay where they are: the table becomes the partition `<table>_history` of a new
   * partitioned table, for every row before `cutoffMonth`, with monthly partitions from then on. No copy and
   * no sync; a CHECK on the partition column is validated first, so the ATTACH does not scan.
   */
  method?: 'copy' | 'attach';
  /**
   * The attach path's first monthly partition (`YYYY-MM`), at least two months after the current one
   * (default: the month after next). Until the cut-over the table refuses rows dated on or after it, and a
   * run not cut over two days before it undoes itself.
   */
  cutoffMonth?: string;
  /**
   * Names of unique indexes, UNIQUE or EXCLUDE constraints that do not contain the partition column and so
   * cannot be enforced on a partitioned table. Each is refused unless named here; named ones become plain
   * indexes (exclusion constraints are dropped) and the plan lists them.
   */
  acceptLostConstraints?: string[];
  /**
   * Names of the table's row triggers whose change of behaviour on a partitioned table the operator accepts: an
   * UPDATE that moves a row to another month runs as a DELETE and an INSERT (their row triggers fire, AFTER
   * UPDATE ones do not), and a BEFORE row trigger that names the partition column must never change it. Any
   * other row trigger is refused with the reason.
   */
  acceptTriggerChanges?: string[];
  /**
   * The copy waits while a standby visible in pg_stat_replication replays more than this many bytes behind,
   * or a replication slot holds more WAL than this. Default 134217728 (128 MiB). Changeable by `throttle`.
   */
  maxReplicaLagBytes?: number;
  /** The copy waits while a standby's replay_lag is over this many seconds. Default 10. */
  maxReplicaLagSeconds?: number;
  /** Optional cap on the WAL the copy writes per second. Default none. */
  maxWalBytesPerSecond?: number | null;
  /**
   * The application-latency bound: the copy pauses while partflow's probe's 99th percentile is over this
   * multiple of its idle baseline. Default 1.5; null for none. Changeable by `throttle`.
   */
  maxAppLatencyRatio?: number | null;
  /**
   * Default false: a standby seen earlier in the run that is gone, or a lag partflow cannot read, holds the
   * copy (fail closed). true: they do not.
   */
  ignoreUnknownReplicaLag?: boolean;
  /**
   * Sessions whose snapshot is older than partflow's last write into the copy when the cut-over is due (a
   * REPEATABLE READ or SERIALIZABLE transaction, or a long statement, open through the handover's deadline):
   * `wait` (default) hands the application's writes back to the key log, names them in progress and tries the
   * cut-over again until they have ended, so that none of them meets the new table; `guard` cuts over with the
   * snapshot guard, which fails their later statements on the table with 40001. `approveCutover` with
   * `{"olderSnapshots": "guard"}` changes it for the run.
   */
  olderSnapshots?: 'wait' | 'guard';
}

export interface PartitionOptions {
  table: TableRef;
  column: string;
  interval: 'month';
  premake: number;
  batchSize: number;
  sleepMs: number;
  parallelism: number;
  maxBatchMs: number;
  approval: 'signal' | 'auto';
  rollbackWindowMs: number;
  rollbackWindow: string;
  reverifyEveryMs: number;
  verifyChunkRows: number;
  inboundForeignKeys: 'refuse' | 'drop';
  timeZone: string;
  lockTimeoutMs: number;
  dryRun: boolean;
  copyMode: 'auto' | 'pages' | 'keys';
  startMonth: string | null;
  method: 'copy' | 'attach';
  cutoffMonth: string | null;
  acceptLostConstraints: string[];
  acceptTriggerChanges: string[];
  olderSnapshots: OlderSnapshots;
  replica: ReplicaBounds;
}

/** What the cut-over does about sessions holding snapshots older than partflow's last write (the input's field). */
export type OlderSnapshots = 'wait' | 'guard';

/** Every field of partitionTable's input (docs/contract.md documents each; a test checks). */
export const PARTITION_INPUT_FIELDS = [
  ...REPLICA_FIELDS,
  'table',
  'column',
  'interval',
  'premake',
  'batchSize',
  'sleepMs',
  'parallelism',
  'maxBatchMs',
  'approval',
  'rollbackWindow',
  'reverifyEvery',
  'verifyChunkRows',
  'inboundForeignKeys',
  'acceptTriggerChanges',
  'method',
  'cutoffMonth',
  'timeZone',
  'lockTimeoutMs',
  'dryRun',
  'copyMode',
  'startMonth',
  'acceptLostConstraints',
  'olderSnapshots',
] as const;
const KNOWN_FIELDS = new Set<string>(PARTITION_INPUT_FIELDS);

/** Parses `90s`, `30m`, `24h`, `7d`, `1500ms`; `0` and `0s` mean none. */
export function parseDuration(text: string, field: string): number {
  if (typeof text !== 'string') throw new InputError(`Field "${field}" must be a duration such as "24h" or "30m".`);
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(text);
  if (!m)
    throw new InputError(`Field "${field}" must be a duration such as "24h" or "30m", not ${JSON.stringify(text)}.`);
  const n = Number(m[1]);
  const unit = m[2] ?? (n === 0 ? 's' : '');
  if (!unit) throw new InputError(`Field "${field}" needs a unit (ms, s, m, h or d): ${JSON.stringify(text)}.`);
  const factor = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[unit as 'ms'];
  return Math.round(n * factor);
}

function intField(v: unknown, field: string, def: number, min: number, max: number): number {
  if (v === undefined || v === null) return def;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new InputError(`Field "${field}" must be a whole number from ${min} to ${max}, not ${JSON.stringify(v)}.`);
  }
  return v;
}

function enumField<T extends string>(v: unknown, field: string, allowed: readonly T[], def: T): T {
  if (v === undefined || v === null) return def;
  if (!allowed.includes(v as T)) {
    throw new InputError(
      `Field "${field}" must be one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}, not ${JSON.stringify(v)}.`,
    );
  }
  return v as T;
}

export function validatePartitionInput(raw: unknown): PartitionOptions {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new InputError('The input must be a JSON object such as {"table": "public.generated_images"}.');
  }
  const input = raw as Record<string, unknown>;
  for (const k of Object.keys(input)) {
    if (!KNOWN_FIELDS.has(k))
      throw new InputError(`Unknown field "${k}"; known fields are ${[...KNOWN_FIELDS].join(', ')}.`);
  }
  const table = parseTableName(input.table as string, 'table');
  const column = parseColumnName((input.column as string | undefined) ?? 'created_at', 'column');
  const interval = enumField(input.interval, 'interval', ['month'] as const, 'month');
  const rollbackWindow = (input.rollbackWindow as string | undefined) ?? '24h';
  const timeZone = (input.timeZone as string | undefined) ?? 'UTC';
  if (typeof timeZone !== 'string' || !/^[A-Za-z0-9_+\-/]{1,64}$/.test(timeZone)) {
    throw new InputError(`Field "timeZone" must be a time zone name such as "UTC" or "Europe/Berlin".`);
  }
  if (input.dryRun !== undefined && typeof input.dryRun !== 'boolean')
    throw new InputError('Field "dryRun" must be true or false.');
  const startMonth = input.startMonth === undefined || input.startMonth === null ? null : String(input.startMonth);
  if (startMonth !== null && (typeof startMonth !== 'string' || !/^\d{4}-(0[1-9]|1[0-2])$/.test(startMonth)))
    throw new InputError(
      `Field "startMonth" must be a month such as "2024-01", not ${JSON.stringify(input.startMonth)}.`,
    );
  const cutoffMonth = (input.cutoffMonth as string | undefined) ?? null;
  if (cutoffMonth !== null && (typeof cutoffMonth !== 'string' || !/^\d{4}-(0[1-9]|1[0-2])$/.test(cutoffMonth)))
    throw new InputError(
      `Field "cutoffMonth" must be a month such as "2027-02", not ${JSON.stringify(input.cutoffMonth)}.`,
    );
  const method = enumField(input.method, 'method', ['copy', 'attach'] as const, 'copy');
  if (cutoffMonth !== null && method !== 'attach')
    throw new InputError('Field "cutoffMonth" belongs to "method": "attach"; remove it or set the method.');
  const lost = input.acceptLostConstraints ?? [];
  if (!Array.isArray(lost) || lost.some((x) => typeof x !== 'string' || !x)) {
    throw new InputError(
      'Field "acceptLostConstraints" must be a list of index or constraint names, such as ["users_email_key"].',
    );
  }
  const keep = input.acceptTriggerChanges ?? [];
  if (!Array.isArray(keep) || keep.some((x) => typeof x !== 'string' || !x)) {
    throw new InputError('Field "acceptTriggerChanges" must be a list of trigger names, such as ["audit_changes"].');
  }
  return {
    table,
    column,
    interval,
    premake: intField(input.premake, 'premake', 3, 0, 120),
    batchSize: intField(input.batchSize, 'batchSize', 5000, 1, 1_000_000),
    sleepMs: intField(input.sleepMs, 'sleepMs', 0, 0, 600_000),
    parallelism: intField(input.parallelism, 'parallelism', 1, 1, 16),
    maxBatchMs: intField(input.maxBatchMs, 'maxBatchMs', 50, 5, 60_000),
    approval: enumField(input.approval, 'approval', ['signal', 'auto'] as const, 'signal'),
    rollbackWindowMs: parseDuration(rollbackWindow, 'rollbackWindow'),
    rollbackWindow,
    reverifyEveryMs: parseDuration((input.reverifyEvery as string | undefined) ?? '5m', 'reverifyEvery'),
    verifyChunkRows: intField(input.verifyChunkRows, 'verifyChunkRows', 50_000, 100, 10_000_000),
    inboundForeignKeys: enumField(
      input.inboundForeignKeys,
      'inboundForeignKeys',
      ['refuse', 'drop'] as const,
      'refuse',
    ),
    timeZone,
    lockTimeoutMs: intField(input.lockTimeoutMs, 'lockTimeoutMs', DEFAULT_LOCK_TIMEOUT_MS, 10, 60_000),
    dryRun: input.dryRun === true,
    copyMode: enumField(input.copyMode, 'copyMode', ['auto', 'pages', 'keys'] as const, 'auto'),
    startMonth,
    method,
    cutoffMonth,
    acceptLostConstraints: lost as string[],
    acceptTriggerChanges: keep as string[],
    olderSnapshots: enumField(input.olderSnapshots, 'olderSnapshots', ['wait', 'guard'] as const, 'wait'),
    replica: { ...DEFAULT_REPLICA_BOUNDS, ...replicaBoundsFrom(input as Record<string, unknown>, 'Field ') },
  };
}

/** The `throttle` update's argument. */
export interface ThrottleInput extends Partial<ReplicaBounds> {
  batchSize?: number;
  sleepMs?: number;
}

export function validateThrottle(raw: unknown): ThrottleInput {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw))
    throw new InputError('throttle takes an object such as {"batchSize": 2000, "sleepMs": 50}.');
  const t = raw as Record<string, unknown>;
  const known = ['batchSize', 'sleepMs', ...REPLICA_FIELDS];
  for (const k of Object.keys(t)) {
    if (!known.includes(k)) throw new InputError(`throttle: unknown field "${k}"; use ${known.join(', ')}.`);
  }
  if (!Object.keys(t).some((k) => t[k] !== undefined)) throw new InputError('throttle needs batchSize or sleepMs.');
  const out: ThrottleInput = replicaBoundsFrom(t, 'throttle: ');
  if (t.batchSize !== undefined) out.batchSize = intField(t.batchSize, 'batchSize', 0, 1, 1_000_000);
  if (t.sleepMs !== undefined) out.sleepMs = intField(t.sleepMs, 'sleepMs', 0, 0, 600_000);
  return out;
}

/** The workflow id our CLI uses, per docs/contract.md. */
export function partitionWorkflowId(table: TableRef): string {
  return `partition-${table.schema}.${table.name}`;
}
