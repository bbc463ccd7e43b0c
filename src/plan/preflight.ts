/**
 * Every refusal reason the catalog can show, checked before anything runs; the first one found is thrown
 * as one sentence that names the object and the way forward.
 */
import { referencedColumns, referencesItself, TableInfo } from '../catalog';
import { keepsSelfKey } from './selfKeys';
import { byteLength, displayName, MAX_IDENT_BYTES, TableRef } from '../ident';
import type { PartitionOptions } from '../input';
import { refuse } from './context';
import { checkTriggers } from './triggers';
import { checkViews } from './views';
import { checkRowSecurity } from './policies';
import { checkPublications } from './publications';
import { checkKeyWidening, checkStatements, widenedKey } from './statements';
import type { PlannedPartition } from './types';
import { hasTidRangeScan, majorOf, MIN_SERVER_VERSION_NUM } from '../versions';

const them = (n: number, one: string, many: string) => (n > 1 ? many : one);

function checkServer(info: TableInfo, opts: PartitionOptions): void {
  const v = info.serverVersionNum;
  const major = majorOf(v);
  if (v < MIN_SERVER_VERSION_NUM) {
    refuse(`PostgreSQL ${major} is too old: partflow needs PostgreSQL 13 or newer.`);
  }
  if (!hasTidRangeScan(v) && opts.copyMode === 'pages') {
    refuse(`PostgreSQL ${major} has no TID range scans (14+); use "copyMode": "keys" or "auto".`);
  }
  const pages = opts.copyMode === 'pages' || (opts.copyMode === 'auto' && hasTidRangeScan(v));
  if (opts.parallelism > 1 && !pages) {
    refuse(
      `"parallelism": ${opts.parallelism} splits the table's pages among streams, which needs the page walk ` +
        `(PostgreSQL 14+, this is ${major}; "copyMode" "pages" or "auto"); ` +
        'use "parallelism": 1 with "copyMode": "keys".',
    );
  }
}

function checkKind(info: TableInfo, t: string): void {
  const { partitionOf, parents, children } = info.inheritance;
  if (info.relkind === 'p')
    refuse(`Table ${t} is already partitioned; use maintainPartitions to manage its partitions.`);
  if (info.relkind !== 'r') {
    refuse(`${t} is not an ordinary table (relkind ${info.relkind}); only tables can be partitioned.`);
  }
  if (partitionOf) {
    refuse(
      `Table ${t} is itself a partition of ${partitionOf}; ` +
        `partition ${partitionOf} with maintainPartitions instead, or detach ${t} first.`,
    );
  }
  if (parents.length) {
    refuse(
      `Table ${t} inherits from ${parents.join(', ')} (table inheritance); a partitioned table cannot inherit: ` +
        'remove the inheritance (ALTER TABLE ... NO INHERIT) first.',
    );
  }
  if (children.length) {
    refuse(
      `Table ${t} has inheritance children (${children.join(', ')}) whose rows a swap would leave behind; ` +
        `remove the inheritance (ALTER TABLE child NO INHERIT ${t}) first.`,
    );
  }
}

function checkKeyColumn(info: TableInfo, opts: PartitionOptions, t: string): void {
  const pc = info.partitionColumn;
  if (!pc) refuse(`Table ${t} has no column ${JSON.stringify(opts.column)}; set "column" to its timestamp column.`);
  const c = JSON.stringify(pc.name);
  if (!['timestamptz', 'timestamp', 'date'].includes(pc.type)) {
    refuse(`Column ${c} of ${t} is ${pc.type}; the partition column must be timestamp, timestamptz or date.`);
  }
  if (info.columns.find((x) => x.name === pc.name)?.generated) {
    refuse(
      `Column ${c} of ${t} is GENERATED; ` +
        'partition by a plain column (the one it is computed from, or a stored copy of it).',
    );
  }
  if (!info.primaryKey) {
    refuse(`Table ${t} has no primary key; add one first, partflow needs it to keep the copy in sync.`);
  }
  if (info.nullKeyRows > 0) {
    refuse(
      `Column ${c} of ${t} has ${info.nullKeyRows} NULL rows; ` +
        'fill them and make it NOT NULL first (fixConstraints can do both online).',
    );
  }
  if (!pc.notNull) {
    refuse(
      `Column ${c} of ${t} allows NULL, which a partition key in a primary key cannot; ` +
        'make it NOT NULL first (fixConstraints does it online).',
    );
  }
}

/** `workflow <id>` for a partitionTable run, `<kind> workflow <id>` for another kind. */
function runName(run: NonNullable<TableInfo['activeRun']>): string {
  return `${run.kind && run.kind !== 'partitionTable' ? `${run.kind} ` : ''}workflow ${run.workflowId}`;
}

function checkReferences(info: TableInfo, opts: PartitionOptions, t: string): void {
  if (info.activeRun) {
    refuse(
      `Table ${t} already has a partflow run in progress (${runName(info.activeRun)}); ` +
        'wait for it, or roll it back, before starting another' +
        (info.activeRun.kind && info.activeRun.kind !== 'partitionTable'
          ? ` (if its workflow was terminated, release it with partflow cleanup ${t}).`
          : '.'),
    );
  }
  checkSelfReference(info, opts, t);
  const others = info.inboundForeignKeys.filter((f) => !referencesItself(info, f));
  if (others.length && opts.inboundForeignKeys !== 'drop') {
    const list = others.map((f) => `${displayName(f.table)}.${f.name}`).join(', ');
    refuse(
      `Other tables reference ${t} by foreign key (${list}); a partitioned table cannot be referenced by its id ` +
        'alone, so rerun with "inboundForeignKeys": "drop" to drop them at cut-over.',
    );
  }
  checkViews(info, t);
}

/**
 * A foreign key of the table on itself (`parent_id` REFERENCES the table's `id`). It cannot stay on the old table
 * through the copy's cut-over (it would name the old table), nor go on the copy while rows arrive in key order.
 * One that carries the partition column is kept on PostgreSQL 18 (src/plan/selfKeys.ts). One on `(id)` alone
 * has no unique key to point at once the primary key is `(id, <column>)`; one with the partition column before
 * 18 could be added to the partitioned table only by checking every row under a lock that blocks writes. Either
 * is dropped only on the explicit `inboundForeignKeys: "drop"`, listed under "given up", and a rollback restores
 * and validates it.
 */
function checkSelfReference(info: TableInfo, opts: PartitionOptions, t: string): void {
  const self = info.inboundForeignKeys.filter((f) => referencesItself(info, f) && !keepsSelfKey(info, f));
  if (!self.length || opts.inboundForeignKeys === 'drop') return;
  const pc = info.partitionColumn?.name ?? '';
  const keys = self.map((f) => `${f.name} ${f.def.replace(/^FOREIGN KEY /, '')}`).join(', ');
  const why = self.every((f) => referencedColumns(f.def).includes(pc))
    ? 'PostgreSQL before 18 adds a foreign key to a partitioned table only by checking every row under a lock ' +
      'that blocks writes, so partflow keeps it only on 18 (added NOT VALID, validated with writes going on)'
    : `after partitioning the referenced key is unique only together with ${pc}, so it cannot be kept`;
  refuse(
    `Table ${t} references itself by foreign key ${keys}; ${why}: rerun with "inboundForeignKeys": "drop" to drop ` +
      'it at the cut-over (given up: the new table does not check it; a rollback restores and validates it).',
  );
}

function checkReplication(info: TableInfo, t: string): void {
  if (info.implicitPublications.length) {
    refuse(
      `Publication(s) ${info.implicitPublications.join(', ')} publish every table of ` +
        `${JSON.stringify(info.table.schema)} or of the database, so the copy and partflow's own tables would be ` +
        'published and break subscribers; publish an explicit table list while partflow runs.',
    );
  }
  if (info.subscriptions.length) {
    refuse(
      `Table ${t} is the target of logical replication subscription(s) ${info.subscriptions.join(', ')}, ` +
        "which follow the table's OID and would keep writing into the old table; partition it on the publisher, " +
        'or drop the table from the subscription first.',
    );
  }
  const bound = info.oidDependents;
  if (bound.length) {
    const n = bound.length;
    refuse(
      `${bound.join(', ')} ${them(n, 'is', 'are')} bound to ${t} by OID and would keep using the old table ` +
        `after the swap; drop ${them(n, 'it', 'them')} first and recreate ${them(n, 'it', 'them')} afterwards.`,
    );
  }
  checkPublications(info, t, info.currentUser);
}

function checkObjects(info: TableInfo, t: string): void {
  if (info.rules.length) {
    refuse(`Table ${t} has rules (${info.rules.join(', ')}), which partflow cannot carry over; drop them first.`);
  }
  checkRowSecurity(info, t);
  if (info.sequences.filter((s) => s.kind === 'serial').length > 1) {
    refuse(`Table ${t} has more than one serial column; partflow handles at most one.`);
  }
  const deferrable = info.indexes.filter((i) => i.deferrable).map((i) => i.constraintName ?? i.name);
  if (deferrable.length) {
    refuse(
      `Constraint(s) ${deferrable.join(', ')} of ${t} are DEFERRABLE, which the copy's upserts cannot use as ` +
        'arbiters; make them NOT DEFERRABLE first (CREATE UNIQUE INDEX CONCURRENTLY on the same columns, then ' +
        'swap the constraint to it with ADD CONSTRAINT ... USING INDEX).',
    );
  }
  const invalid = info.indexes.filter((i) => !i.isValid).map((i) => i.name);
  if (invalid.length) {
    refuse(
      `Index(es) ${invalid.join(', ')} of ${t} are INVALID (left by a failed CREATE INDEX CONCURRENTLY); ` +
        'drop or REINDEX them first, a valid copy would reject writes the table accepts.',
    );
  }
}

/** What kind of uniqueness an index or constraint would lose, for the refusal. */
function lostKind(i: TableInfo['indexes'][number], column: string): string {
  if (i.constraintName && !i.isUnique) return 'exclusion constraint';
  if (i.keyColumns.includes(column)) return 'unique';
  return `unique without ${column}${i.columns.includes(column) ? ' in its key, only in INCLUDE' : ''}`;
}

function checkLostConstraints(info: TableInfo, opts: PartitionOptions, t: string): void {
  const column = info.partitionColumn!.name;
  const lost = constraintsWithoutKey(info);
  const unaccepted = lost.filter((i) => !opts.acceptLostConstraints.includes(i.name));
  if (unaccepted.length) {
    const list = unaccepted.map((i) => `${i.name} (${lostKind(i, column)})`);
    const it = them(unaccepted.length, 'it', 'them');
    refuse(
      `${t} has ${list.join(', ')}, which a table partitioned by ${column} cannot enforce across partitions; ` +
        `add ${column} to ${it} first, or list ${it} in "acceptLostConstraints" to give the guarantee up.`,
    );
  }
  const pk = widenedKey(info, column);
  const unknown = opts.acceptLostConstraints.filter((n) => n !== pk && !lost.some((i) => i.name === n));
  if (unknown.length) {
    const n = unknown.length;
    refuse(
      `"acceptLostConstraints" names ${unknown.join(', ')}, which ` +
        `${them(n, 'is not a unique index or constraint', 'are not unique indexes or constraints')} of ${t} ` +
        `that partitioning would lose or widen; remove ${them(n, 'it', 'them')} from the list.`,
    );
  }
}

/** Checks every refusal reason that the catalog can show; the first one found is thrown as one sentence. */
export function checkPreflight(info: TableInfo, opts: PartitionOptions): void {
  const t = displayName(info.table);
  checkServer(info, opts);
  checkKind(info, t);
  checkKeyColumn(info, opts, t);
  checkReferences(info, opts, t);
  checkReplication(info, t);
  checkObjects(info, t);
  checkTriggers(info, opts);
  if (info.noInheritChecks?.length) {
    const n = info.noInheritChecks.length;
    refuse(
      `CHECK ${info.noInheritChecks.join(', ')} of ${t} ${n > 1 ? 'are' : 'is'} NO INHERIT, which a partitioned ` +
        `table cannot have: recreate ${n > 1 ? 'them' : 'it'} without NO INHERIT first ` +
        '(ADD CONSTRAINT ... NOT VALID, ' +
        'then VALIDATE: no write lock), or drop it.',
    );
  }
  checkStatements(info, opts.column, opts.acceptLostConstraints);
  checkKeyWidening(info, opts.column, opts.acceptLostConstraints, t);
  checkLostConstraints(info, opts, t);
  for (const o of info.storage.reloptions) {
    if (!/^[a-z_.]+=[A-Za-z0-9_.-]+$/.test(o)) {
      refuse(`Storage parameter ${JSON.stringify(o)} of ${t} is not one partflow can carry over; reset it first.`);
    }
  }
}

/** Unique indexes and UNIQUE / EXCLUDE constraints that a table partitioned by the column cannot keep. */
export function constraintsWithoutKey(info: TableInfo): TableInfo['indexes'] {
  const pc = info.partitionColumn!.name;
  return info.indexes.filter(
    (i) => !i.isPrimary && ((i.constraintName && !i.isUnique) || (i.isUnique && !i.keyColumns.includes(pc))),
  );
}

/** All names the plan creates; each must fit in 63 bytes and be free. */
export function plannedNames(table: TableRef, partitions: PlannedPartition[], indexCount: number): string[] {
  const n = table.name;
  const names = [
    `${n}_pf_shadow`,
    `${n}_old`,
    `${n}_default`,
    `${n}_pf_moves`,
    `${n}_pf_log`,
    `${n}_pf_rlog`,
    `${n}_pf_rlost`,
    `${n}_pf_seen`,
    `${n}_pf_trunc`,
    ...partitions.map((p) => p.name),
  ];
  for (let i = 0; i < indexCount; i++) names.push(`${n}_pfi_${i}`, `${n}_pfo_${i}`);
  return names;
}

export function checkNames(info: TableInfo, names: string[]): void {
  for (const name of names) {
    if (byteLength(name) > MAX_IDENT_BYTES) {
      refuse(
        `The generated name ${JSON.stringify(name)} would be ${byteLength(name)} bytes, over PostgreSQL's 63; ` +
          'rename the table to something shorter first.',
      );
    }
  }
  const taken = names.filter((nm) => info.takenNames.includes(nm));
  if (taken.length) {
    refuse(
      `Names partflow needs are already taken in schema ${JSON.stringify(info.table.schema)}: ` +
        `${taken.join(', ')}; drop or rename them first.`,
    );
  }
}
