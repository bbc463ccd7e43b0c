/**
 * Step "shadow": the partitioned copy `<table>_pf_shadow` with its partitions, primary key, indexes under
 * temporary names, grants, comments and owner, in one transaction; its outbound foreign keys one by one.
 * Undo: drop the copy.
 */
import { referencesItself, TableInfo } from '../catalog';
import { keepsSelfKey } from './selfKeys';
import { displayName, qualified, quoteLiteral } from '../ident';
import { boundLiteral } from '../partitions';
import { constraintsWithoutKey } from './preflight';
import { PlanContext, q, refuse, sibling } from './context';
import type { IndexRename, PlanSql } from './types';

type ShadowSql = Pick<PlanSql, 'shadow' | 'shadowForeignKeys' | 'dropShadow'>;

/** The copy and its partitions with the source's storage: tablespace, storage parameters, UNLOGGED. */
function partitionsSql(ctx: PlanContext): string[] {
  const { info, table, opts, type } = ctx;
  const st = qualified(ctx.shadow);
  const storage = info.storage;
  const tablespace = storage.tablespace ? ` TABLESPACE ${q(storage.tablespace)}` : '';
  const options = storage.reloptions.map((o) => {
    const i = o.indexOf('=');
    return `${o.slice(0, i)} = ${quoteLiteral(o.slice(i + 1))}`;
  });
  const withOptions = options.length ? ` WITH (${options.join(', ')})` : '';
  const unlogged = storage.unlogged ? 'UNLOGGED ' : '';
  const bound = (m: Parameters<typeof boundLiteral>[0]) => boundLiteral(m, type, opts.timeZone);
  const sql = [
    `CREATE TABLE ${st} (LIKE ${qualified(table)} INCLUDING ALL EXCLUDING INDEXES) ` +
      `PARTITION BY RANGE (${q(ctx.column)})${tablespace}`,
  ];
  for (const p of ctx.layout.partitions) {
    sql.push(
      `CREATE ${unlogged}TABLE ${qualified(sibling(table, p.name))} PARTITION OF ${st} ` +
        `FOR VALUES FROM (${bound(p.from)}) TO (${bound(p.to)})${withOptions}${tablespace}`,
    );
  }
  sql.push(
    `CREATE ${unlogged}TABLE ${qualified(sibling(table, ctx.defaultPartition))} PARTITION OF ${st} ` +
      `DEFAULT${withOptions}${tablespace}`,
  );
  return sql;
}

/** Replica identity FULL or NOTHING is carried to every partition; USING INDEX is given up. */
function replicaIdentitySql(ctx: PlanContext): string[] {
  const { storage } = ctx.info;
  if (storage.replicaIdentity === 'f' || storage.replicaIdentity === 'n') {
    const ri = storage.replicaIdentity === 'f' ? 'FULL' : 'NOTHING';
    const rels = [ctx.shadow, ...ctx.allPartitions.map((p) => sibling(ctx.table, p))];
    return rels.map((r) => `ALTER TABLE ${qualified(r)} REPLICA IDENTITY ${ri}`);
  }
  if (storage.replicaIdentity === 'i') {
    ctx.givenUp.push(
      `Replica identity USING INDEX ${storage.replicaIdentityIndex} is not carried over: ` +
        `the new table uses its primary key (${ctx.shadowKey.join(', ')}) as replica identity.`,
    );
  }
  return [];
}

/** The primary key with the partition column added, under the temporary name `<table>_pfi_0`. */
function primaryKeySql(ctx: PlanContext, renames: IndexRename[]): string[] {
  const { info, table } = ctx;
  const st = qualified(ctx.shadow);
  const temp = `${table.name}_pfi_0`;
  const sql = [`ALTER TABLE ${st} ADD CONSTRAINT ${q(temp)} PRIMARY KEY (${ctx.shadowKey.map(q).join(', ')})`];
  renames.push({ original: info.primaryKey!.name, shadowTemp: temp, oldParked: `${table.name}_pfo_0` });
  const pk = info.indexes.find((i) => i.isPrimary);
  if (pk?.constraintComment) {
    sql.push(`COMMENT ON CONSTRAINT ${q(temp)} ON ${st} IS ${quoteLiteral(pk.constraintComment)}`);
  }
  if (pk?.comment) sql.push(`COMMENT ON INDEX ${qualified(sibling(table, temp))} IS ${quoteLiteral(pk.comment)}`);
  return sql;
}

/** One secondary index or UNIQUE constraint on the copy; lost uniqueness is listed in `givenUp`. */
function indexSql(ctx: PlanContext, idx: TableInfo['indexes'][number], n: number, lost: Set<string>): string[] {
  const st = qualified(ctx.shadow);
  const temp = `${ctx.table.name}_pfi_${n}`;
  const kind = idx.constraintName ? 'constraint' : 'index';
  let unique = idx.isUnique;
  if (lost.has(idx.name)) {
    unique = false;
    ctx.givenUp.push(
      `Unique ${kind} ${idx.name} becomes a plain index: uniqueness of (${idx.keyColumns.join(', ')}) ` +
        'is no longer enforced (accepted in "acceptLostConstraints").',
    );
  }
  if (idx.tail === null)
    refuse(`Cannot read the definition of index ${idx.name} (${idx.def}); drop it or report this as a bug.`);
  const sql: string[] = [];
  if (unique && idx.constraintName && idx.constraintDef) {
    // a UNIQUE constraint stays a constraint (ON CONFLICT ON CONSTRAINT, foreign keys to it)
    sql.push(`ALTER TABLE ${st} ADD CONSTRAINT ${q(temp)} ${idx.constraintDef}`);
    if (idx.constraintComment) {
      sql.push(`COMMENT ON CONSTRAINT ${q(temp)} ON ${st} IS ${quoteLiteral(idx.constraintComment)}`);
    }
  } else {
    sql.push(`CREATE ${unique ? 'UNIQUE ' : ''}INDEX ${q(temp)} ON ${st} ${idx.tail}`);
  }
  if (idx.comment) sql.push(`COMMENT ON INDEX ${qualified(sibling(ctx.table, temp))} IS ${quoteLiteral(idx.comment)}`);
  return sql;
}

function indexesSql(ctx: PlanContext, renames: IndexRename[]): string[] {
  const lost = new Set(constraintsWithoutKey(ctx.info).map((i) => i.name));
  const sql: string[] = [];
  ctx.info.indexes
    .filter((i) => !i.isPrimary)
    .forEach((idx, i) => {
      if (idx.constraintName && !idx.isUnique) {
        ctx.givenUp.push(
          `Exclusion constraint ${idx.constraintName} (${idx.def}) is dropped: a partitioned table cannot have one ` +
            '(accepted in "acceptLostConstraints").',
        );
        return;
      }
      sql.push(...indexSql(ctx, idx, i + 1, lost));
      renames.push({
        original: idx.name,
        shadowTemp: `${ctx.table.name}_pfi_${i + 1}`,
        oldParked: `${ctx.table.name}_pfo_${i + 1}`,
      });
    });
  return sql;
}

/** Table and column grants (not the owner's), the comment, and the owner when partflow is not it. */
function accessSql(ctx: PlanContext): string[] {
  const { info, table } = ctx;
  const st = qualified(ctx.shadow);
  const sql: string[] = [];
  const to = (g: { grantee: string; grantable: boolean }) =>
    `${g.grantee === 'PUBLIC' ? 'PUBLIC' : q(g.grantee)}${g.grantable ? ' WITH GRANT OPTION' : ''}`;
  for (const g of info.grants) {
    if (g.grantee !== info.owner) sql.push(`GRANT ${g.privilege} ON ${st} TO ${to(g)}`);
  }
  for (const g of info.columnGrants) {
    if (g.grantee !== info.owner) sql.push(`GRANT ${g.privilege} (${q(g.column)}) ON ${st} TO ${to(g)}`);
  }
  if (info.comment !== null) sql.push(`COMMENT ON TABLE ${st} IS ${quoteLiteral(info.comment)}`);
  if (info.owner !== info.currentUser) {
    sql.push(`ALTER TABLE ${st} OWNER TO ${q(info.owner)}`);
    for (const p of ctx.allPartitions)
      sql.push(`ALTER TABLE ${qualified(sibling(table, p))} OWNER TO ${q(info.owner)}`);
  }
  return sql;
}

export function shadowStep(ctx: PlanContext): ShadowSql & { indexRenames: IndexRename[] } {
  const { info } = ctx;
  const st = qualified(ctx.shadow);
  const indexRenames: IndexRename[] = [];
  const shadow = [
    ...partitionsSql(ctx),
    ...replicaIdentitySql(ctx),
    ...info.storage.statisticsTargets.map(
      (s) => `ALTER TABLE ${st} ALTER COLUMN ${q(s.column)} SET STATISTICS ${s.target}`,
    ),
    ...primaryKeySql(ctx, indexRenames),
    ...indexesSql(ctx, indexRenames),
    ...accessSql(ctx),
  ];
  const outbound = info.outboundForeignKeys;
  const shadowForeignKeys = outbound.map((f) => `ALTER TABLE ${st} ADD CONSTRAINT ${q(f.name)} ${f.def}`);
  // the table's foreign keys on itself (inbound, not outbound) stay off the copy (checkSelfReference); the new
  // table gets those it keeps in the cut-over (src/plan/selfKeys.ts)
  for (const f of info.inboundForeignKeys.filter((x) => referencesItself(info, x) && !keepsSelfKey(info, x))) {
    ctx.givenUp.push(
      `foreign key ${f.name} of ${displayName(info.table)} on itself: dropped at the cut-over, the new table does ` +
        'not check it, nor run its ON DELETE or ON UPDATE action (inboundForeignKeys "drop"; a rollback restores ' +
        'and validates it)',
    );
  }
  for (const f of outbound) {
    if (f.comment) ctx.givenUp.push(`The comment on foreign key ${f.name} is not carried over.`);
  }
  if (info.indexes.some((i) => /\sTABLESPACE\s/.test(i.def))) {
    ctx.givenUp.push("Index tablespaces are not carried over: the new indexes are in the table's tablespace.");
  }
  return { shadow, shadowForeignKeys, dropShadow: [`DROP TABLE IF EXISTS ${st}`], indexRenames };
}

/** The constraint a `shadowForeignKeys` statement adds (the executor skips one that exists). */
export function foreignKeyName(statement: string): string {
  const m = /ADD CONSTRAINT ("(?:[^"]|"")+")/.exec(statement);
  if (!m) throw new Error(`not an ADD CONSTRAINT statement: ${statement.slice(0, 80)}`);
  return m[1].slice(1, -1).replace(/""/g, '"');
}
