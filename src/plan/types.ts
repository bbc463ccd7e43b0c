/**
 * The partitioning plan: every SQL statement partflow runs for one table, built purely from the catalog
 * snapshot (`TableInfo`) and the validated options, and frozen into the workflow's history.
 *
 * Names: the shadow is `<table>_pf_shadow`; partitions are `<table>_YYYY_MM` and `<table>_default` from
 * the start, so nothing is renamed below the parent at cut-over; the source becomes `<table>_old`.
 * The shadow's indexes get temporary names and take over the originals' names at cut-over, when the old
 * table's indexes are parked under `<table>_pfo_<n>`.
 */
import type { ForeignKeyInfo, PublicationInfo, ViewInfo } from '../catalog';
import type { TableRef } from '../ident';
import type { PartitionColumnType } from '../partitions';
import type { KeyLogApplySql } from './keylog';
import type { AppProbeSql } from './backfill';
import type { AttachSql } from './attach';

export const FORWARD_TRIGGER = 'partflow_sync_fwd';
export const REVERSE_TRIGGER = 'partflow_sync_rev';
/** statement-level AFTER TRUNCATE companions of the row triggers */
export const FORWARD_TRUNCATE_TRIGGER = 'partflow_sync_fwd_truncate';
export const REVERSE_TRUNCATE_TRIGGER = 'partflow_sync_rev_truncate';
export const STATE_SCHEMA = 'partflow';
/**
 * The names partflow gives its own triggers (the key log module's test trigger too), as an SQL condition on
 * `<alias>.tgname`: every other trigger is the application's, whatever its name.
 */
export function notPartflowTrigger(alias: string): string {
  const names = [
    FORWARD_TRIGGER,
    REVERSE_TRIGGER,
    FORWARD_TRUNCATE_TRIGGER,
    REVERSE_TRUNCATE_TRIGGER,
    'partflow_keylog',
    'partflow_snapshot_guard',
  ];
  return `${alias}.tgname::text NOT IN (${names.map((n) => `'${n}'`).join(', ')})`;
}

export interface PlannedPartition {
  name: string;
  from: string; // YYYY-MM inclusive
  to: string; // YYYY-MM exclusive
}

export interface IndexRename {
  original: string;
  shadowTemp: string;
  oldParked: string;
}

export interface PlanSql {
  /** one row per fact of the source's shape, as `sourceShape`; $1 is the table's OID */
  shape: string;
  /** one row (`fence`) naming partflow's triggers on $1 with their catalog row version and enabled state */
  triggerFence: string;
  /** one row (`n`): the moves counter's value */
  moves: string;
  /** after finalize or undo: the moves counter goes */
  dropCounters: string[];
  /** one transaction: the partitioned copy, its partitions, keys, indexes, grants, comment */
  shadow: string[];
  /** one statement each, own transaction and lock timeout: they lock the referenced tables briefly */
  shadowForeignKeys: string[];
  dropShadow: string[];
  syncTrigger: string[];
  dropSyncTrigger: string[];
  /**
   * the key log's applier (src/plan/keylog.ts); plans made before it mirror every write into the copy in the
   * writer's transaction instead
   */
  keyLog?: KeyLogApplySql;
  /**
   * the handover before the cut-over (docs/sync-design.md): the forward trigger's function that writes a change
   * into the copy in the writer's own transaction when its snapshot sees the applier's latest round (`on`), the
   * plain key log's (`off`), the applier's mark (`mark`) and the latest round's transaction id (`applied`, one
   * row, `x`). Plans made before it swap with the snapshot guard always.
   */
  handover?: HandoverSql;
  /**
   * the snapshot guard's statements, run in the cut-over's transaction only when the handover did not end
   * quiet (a transaction older than the applier's last round was still open, or the swap applied keys); plans
   * made before it have them at the end of `cutover`
   */
  cutoverGuard?: string[];
  /**
   * the application-latency bound's probe (src/plan/backfill.ts appProbeSql); plans made before it probe with
   * `SELECT txid_current()` alone
   */
  appProbe?: AppProbeSql;
  /** $1, $2: tid bounds [from, to); skips rows the trigger wrote already */
  backfillBatch: string;
  /** the same without ON CONFLICT: faster, fails with 23505 when the trigger wrote a row of the range */
  backfillBatchFast?: string;
  /** key mode: the largest key when the trigger is installed (the end of the walk) */
  maxKey: string;
  /** key mode: the key `batch` rows after $lo (or from the start), capped by $max; params in the key's types */
  keyBound: string;
  keyBoundFirst: string;
  /** key mode: copy the rows with lo < key <= hi (or key <= hi) */
  keyCopy: string;
  keyCopyFirst: string;
  /** statistics for the copy before it becomes the table (plans made before 0.2 lack it) */
  analyze?: string;
  /** the same per partition, one statement each (plans with it run these instead of `analyze`) */
  analyzePartitions?: string[];
  /** month bucket, row count, checksum per bucket, for the source and the shadow */
  verifySource: string;
  verifyShadow: string;
  /** chunked verification (plans made before 0.3 lack it: they verify in one snapshot) */
  verifyChunk?: VerifyChunkSql;
  /** the attach path's statements (plans with "method": "attach") */
  attach?: AttachSql;
  /** one transaction, beginning with its LOCK TABLE */
  cutover: string[];
  /** one transaction, beginning with its LOCK TABLE: undo of cutover while the old table is kept in sync */
  swapBack: string[];
  /** after swapBack: re-validate re-added inbound foreign keys, one statement each */
  validateInbound: string[];
  finalize: string[];
  /** the rollback window's key log (new table into old); plans made before it mirror in the writer's snapshot */
  reverseKeyLog?: KeyLogApplySql;
  /** the swap back's handover (as `handover`, into the old table); absent: plans before it, lost constraints */
  reverseHandover?: HandoverSql;
  /** the swap back's snapshot guard, run only when its handover did not end quiet (plans before: in `swapBack`) */
  swapBackGuard?: string[];
  /** the table's foreign keys on itself that the new table keeps (src/plan/selfKeys.ts; PostgreSQL 18+) */
  keptKeys?: KeptKeysSql;
}

/** The foreign keys on itself the new table keeps: added NOT VALID in the cut-over, validated after it. */
export interface HandoverSql {
  on: string;
  off: string;
  mark: string;
  applied: string;
}

export interface KeptKeysSql {
  names: string[];
  /** in the cut-over's transaction, after its own statements (both paths) */
  add: string[];
  /** after the cut-over committed, one statement each (SHARE UPDATE EXCLUSIVE: writes go on) */
  validate: string[];
  /** the swap back's first statements after its LOCK TABLE (in `swapBack` already; listed for the reader) */
  drop: string[];
}

/**
 * What a partitionTable workflow hands its steps instead of the plan: "the plan partflow stored for this
 * workflow's run of `planOf`" (claimRun stores it in partflow.runs). The plan is held there, once; each step
 * reads it, so no statement a step runs comes from its arguments.
 */
export interface PlanRef {
  planOf: TableRef;
}

/** The reference to `plan` (workflows: deterministic, no I/O). */
export function refOf(plan: Plan): PlanRef {
  return { planOf: { schema: plan.table.schema, name: plan.table.name } };
}

export interface Plan {
  /** absent: the copy path; `attach`: the rows stay, the table becomes the history partition (sql.attach) */
  method?: 'attach';
  table: TableRef;
  tableOid: number;
  shadow: TableRef;
  old: TableRef;
  partitionColumn: string;
  columnType: PartitionColumnType;
  /** pages: TID ranges (PostgreSQL 14+); keys: primary-key ranges */
  copyMode: 'pages' | 'keys';
  /** page-range streams the backfill runs at once (absent in plans made before parallel copy: 1) */
  parallelism?: number;
  timeZone: string;
  partitions: PlannedPartition[];
  defaultPartition: string;
  /** columns copied by the trigger and the backfill (generated columns are recomputed) */
  columns: string[];
  /** the source's primary key */
  sourceKey: string[];
  /** the shadow's primary key: the source's plus the partition column */
  shadowKey: string[];
  estimatedRows: number;
  pages: number;
  inboundForeignKeys: ForeignKeyInfo[];
  indexRenames: IndexRename[];
  functions: { forward: string; reverse: string };
  /** the source as preflight saw it (columns, indexes, constraints, triggers): the cut-over refuses on any change */
  sourceShape: string[];
  /** CARRIED_SQL's lines for the source: what a rollback compares the new table's with (older plans: none) */
  carried?: string[];
  /** the publications that name the table, as preflight read them: the rollback refuses when they changed */
  publications?: PublicationInfo[];
  /** the views that read the source as preflight read them: the cut-over refuses on a change (older plans: none) */
  views?: ViewInfo[];
  /** sequence counting updates that move a row to another month (nextval per move, no row locks) */
  movesCounter: TableRef;
  sql: PlanSql;
  /** what partitioning changes for the application (informational) */
  warnings: string[];
  /** what the operator gave up with an explicit input (acceptLostConstraints) or what is not carried */
  givenUp: string[];
  /** rows the layout puts in the default partition (outliers, infinities, far-future rows) */
  outsideRows: number;
}

/** Checksums per month of one key chunk, per side (src/plan/verify.ts). */
export interface VerifyChunkSql {
  source: { first: string; between: string; after: string };
  shadow: { first: string; between: string; after: string };
  /** the chunk's keys of both sides logged in the key log, to be copied again (plans with a key log) */
  requeue?: { first: string; between: string; after: string };
}
