/**
 * `fixConstraints`' statements, pure: the FOREIGN KEY clause, the audit of the rows a VALIDATE would reject,
 * their repair in batches and its restore (the undo), the supporting index's name. The steps that use them are
 * in src/fixSteps.ts; the input and its validation in src/constraints.ts.
 */
import { qualified, quoteIdent as q, quoteLiteral, shortIdent } from './ident';
import type { Fix, ForeignKeyFix } from './constraints';

const cols = (c: string[]) => c.map(q).join(', ');

/** The FOREIGN KEY clause, as ADD CONSTRAINT takes it. */
export function fkClause(f: ForeignKeyFix): string {
  const ref = `${qualified(f.references.table)} (${cols(f.references.columns)})`;
  return `FOREIGN KEY (${cols(f.columns)}) REFERENCES ${ref} ON DELETE ${f.onDelete} ON UPDATE ${f.onUpdate}`;
}

/** Rows of `child` whose key is set but has no parent: the rows VALIDATE would reject. */
export function orphanCondition(f: ForeignKeyFix, alias = 'c'): string {
  const set = f.columns.map((c) => `${alias}.${q(c)} IS NOT NULL`).join(' AND ');
  const match = f.columns.map((c, i) => `p.${q(f.references.columns[i])} = ${alias}.${q(c)}`).join(' AND ');
  return `${set} AND NOT EXISTS (SELECT 1 FROM ${qualified(f.references.table)} p WHERE ${match})`;
}

function violationCondition(f: Fix, alias = 'c'): string {
  return f.kind === 'foreignKey' ? orphanCondition(f, alias) : `${alias}.${q(f.column)} IS NULL`;
}

/**
 * The audit's count, and the query that lists the violating rows. The listing is for the operator to run:
 * row values never go into a workflow's history (which many teams ship elsewhere), only counts and queries.
 */
export function auditSql(f: Fix, pk: string[]): { count: string; list: string } {
  const t = qualified(f.table);
  const cond = violationCondition(f);
  const shown = f.kind === 'foreignKey' ? f.columns : [f.column];
  const key = pk.length ? pk : ['ctid'];
  return {
    count: `SELECT count(*)::bigint AS n FROM ${t} c WHERE ${cond}`,
    list:
      `SELECT ${[...key, ...shown].map((c) => (c === 'ctid' ? 'c.ctid' : `c.${q(c)}`)).join(', ')} FROM ${t} c ` +
      `WHERE ${cond}`,
  };
}

/**
 * One repair batch: up to $3 violating rows are changed and each change is recorded in partflow.repairs
 * ($1 workflow id, $2 fix number, $4 the workflow's run id) in the same statement, with the table's name.
 * Returns the number changed.
 */
export function repairBatchSql(f: Fix, pk: string[], fill?: string): string {
  const t = qualified(f.table);
  const cond = violationCondition(f);
  const pkList = cols(pk);
  const pkJson = `jsonb_build_array(${pk.map((c) => `v.${q(c)}`).join(', ')})`;
  const match = pk.map((c) => `t.${q(c)} = v.${q(c)}`).join(' AND ');
  const record = (column: string, action: string) =>
    `a AS (INSERT INTO partflow.repairs (workflow_id, fix_no, run_id, table_name, pk, action, ${column}) ` +
    `SELECT $1, $2, $4, ${quoteLiteral(t)}, ${pkJson}, ${action}, v.old FROM v)`;
  const batch = `FROM ${t} c WHERE ${cond} LIMIT $3 FOR UPDATE`;
  if (f.kind === 'foreignKey' && f.orphans === 'delete') {
    return `WITH v AS (SELECT ${pkList}, to_jsonb(c.*) AS old ${batch}),
${record('old_row', "'delete'")}
DELETE FROM ${t} t USING v WHERE ${match}`;
  }
  const targets = f.kind === 'foreignKey' ? f.columns : [f.column];
  const newValue = f.kind === 'foreignKey' ? 'NULL' : fill!;
  const old = `jsonb_build_object(${targets.map((c) => `${quoteLiteral(c)}, c.${q(c)}`).join(', ')})`;
  const action = quoteLiteral(f.kind === 'foreignKey' ? 'set-null' : 'fill');
  return `WITH v AS (SELECT ${pkList}, ${old} AS old ${batch}),
${record('old_values', action)}
UPDATE ${t} t SET ${targets.map((c) => `${q(c)} = ${newValue}`).join(', ')} FROM v WHERE ${match}`;
}

/**
 * Undo of every repair of one fix of this run and table ($1 workflow id, $2 fix number, $3 run id), newest
 * first. The first statement locks the records: a second attempt running at the same time waits, then finds
 * them restored. A deleted row comes back unless its key exists again (generated columns are recomputed,
 * identity values kept); a changed column gets its old value only where it still holds the repaired one
 * (the application may have fixed the row since).
 */
export function restoreSql(f: Fix, pk: string[], insertable: string[], overriding: boolean, fill?: string): string[] {
  const t = qualified(f.table);
  const targets = f.kind === 'foreignKey' ? f.columns : [f.column];
  const mine =
    'r.workflow_id = $1 AND r.fix_no = $2 AND r.run_id IS NOT DISTINCT FROM $3 ' +
    `AND r.table_name = ${quoteLiteral(t)} AND r.restored_at IS NULL`;
  const rec = (from: string) => `(jsonb_populate_record(NULL::${t}, ${from}))`;
  const keyOf = (i: number, c: string) => `${rec(`jsonb_build_object(${quoteLiteral(c)}, r.pk->${i})`)}.${q(c)}`;
  const repaired =
    f.kind === 'foreignKey'
      ? targets.map((c) => `t.${q(c)} IS NULL`).join(' AND ')
      : `t.${q(f.column)} IS NOT DISTINCT FROM ${fill}`;
  return [
    `SELECT r.id FROM partflow.repairs r WHERE ${mine} ORDER BY r.id FOR UPDATE`,
    `INSERT INTO ${t} (${cols(insertable)})${overriding ? ' OVERRIDING SYSTEM VALUE' : ''}
       SELECT ${insertable.map((c) => `x.${q(c)}`).join(', ')}
         FROM partflow.repairs r, LATERAL jsonb_populate_record(NULL::${t}, r.old_row) x
        WHERE ${mine} AND r.action = 'delete'
          AND NOT EXISTS (SELECT 1 FROM ${t} e WHERE ${pk.map((c) => `e.${q(c)} = x.${q(c)}`).join(' AND ')})
        ORDER BY r.id DESC`,
    `UPDATE ${t} t SET ${targets.map((c) => `${q(c)} = ${rec('r.old_values')}.${q(c)}`).join(', ')}
       FROM partflow.repairs r WHERE ${mine} AND r.action <> 'delete' AND ${repaired}
        AND ${pk.map((c, i) => `t.${q(c)} = ${keyOf(i, c)}`).join(' AND ')}`,
    `UPDATE partflow.repairs r SET restored_at = now() WHERE ${mine}`,
  ];
}

export function supportingIndexName(f: ForeignKeyFix, table = f.table.name): string {
  return shortIdent([table, ...f.columns], 'pf_fk_idx');
}
