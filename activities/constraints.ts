/**
 * Activities of `fixConstraints`. Each looks at the catalog first and does only what is missing.
 */
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import type { Pool, PoolClient } from 'pg';
import {
  auditSql,
  describeFix,
  Fix,
  fkClause,
  FixOptions,
  ForeignKeyFix,
  repairBatchSql,
  restoreSql,
  supportingIndexName,
} from '../src/constraints';
import { displayName, InputError, qualified, quoteIdent as q, TableRef } from '../src/ident';
import { activityContext, classify, currentWorkflowId, inTransaction, withHeartbeat, withLockRetry } from './db';
import type { Deps } from './partition';
import { failure } from '../src/failures';
import { migrate } from './migrate';

export interface FixInfo {
  tableOid: number;
  relkind: string;
  partitions: TableRef[];
  pk: string[];
  alreadyDone: boolean;
  hasIndex: boolean;
  /** SQL literal of the fill value, typed */
  fill?: string;
}

export interface FixAudit {
  fixNo: number;
  fix: Fix;
  description: string;
  info: FixInfo;
  violations: number;
  /** the query that lists the violating rows (their values stay out of the workflow's history) */
  listQuery: string;
  policy: string;
  /** what will be run, in order */
  sql: string[];
  notes: string[];
}

export interface StepResult {
  changed: boolean;
  rows?: number;
  lockWaitRetries: number;
  note?: string;
}

const INTEGER = ['smallint', 'integer', 'bigint'];
const TEXT = ['text', 'character varying', 'character'];
function compatible(a: string, b: string): boolean {
  const base = (t: string) => t.replace(/\(.*\)/, '').trim();
  const x = base(a);
  const y = base(b);
  return x === y || (INTEGER.includes(x) && INTEGER.includes(y)) || (TEXT.includes(x) && TEXT.includes(y));
}

async function rel(c: PoolClient, t: TableRef): Promise<{ oid: number; relkind: string } | null> {
  const r = await c.query(
    `SELECT c.oid::int AS oid, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`,
    [t.schema, t.name],
  );
  return r.rowCount ? r.rows[0] : null;
}

async function columns(
  c: PoolClient,
  oid: number,
): Promise<Map<string, { type: string; notNull: boolean; attnum: number }>> {
  const r = await c.query(
    `SELECT attname, format_type(atttypid, atttypmod) AS type, attnotnull, attnum FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped`,
    [oid],
  );
  return new Map(r.rows.map((x) => [x.attname, { type: x.type, notNull: x.attnotnull, attnum: x.attnum }]));
}

/** Reads and checks one fix against the catalog; InputError for anything the operator must change. */
async function inspect(c: PoolClient, fix: Fix, fixNo: number): Promise<FixInfo> {
  const t = await rel(c, fix.table);
  const where = `fixes[${fixNo}]`;
  if (!t) throw new InputError(`${where}: table ${displayName(fix.table)} does not exist.`);
  if (!['r', 'p'].includes(t.relkind)) throw new InputError(`${where}: ${displayName(fix.table)} is not a table.`);
  const cols = await columns(c, t.oid);
  const fixCols = fix.kind === 'foreignKey' ? fix.columns : [fix.column];
  for (const col of fixCols)
    if (!cols.has(col))
      throw new InputError(`${where}: table ${displayName(fix.table)} has no column ${JSON.stringify(col)}.`);
  const pkr = await c.query(
    `SELECT array_agg(a.attname::text ORDER BY array_position(con.conkey, a.attnum)) AS pk FROM pg_constraint con
       JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = ANY (con.conkey) WHERE con.conrelid = $1 AND con.contype = 'p'`,
    [t.oid],
  );
  const pk: string[] = pkr.rows[0]?.pk ?? [];
  const parts =
    t.relkind === 'p'
      ? (
          await c.query(
            `SELECT n.nspname AS schema, c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE i.inhparent = $1 ORDER BY c.relname`,
            [t.oid],
          )
        ).rows
      : [];
  const info: FixInfo = {
    tableOid: t.oid,
    relkind: t.relkind,
    partitions: parts,
    pk,
    alreadyDone: false,
    hasIndex: true,
  };

  if (fix.kind === 'notNull') {
    info.alreadyDone = cols.get(fix.column)!.notNull;
    if (fix.nulls !== 'fail') {
      if (!pk.length)
        throw new InputError(
          `${where}: ${displayName(fix.table)} has no primary key, which partflow needs to record the filled rows for undo.`,
        );
      const type = cols.get(fix.column)!.type;
      try {
        await c.query('SAVEPOINT fill_check');
        await c.query(`SELECT $1::${type}`, [String(fix.nulls.fill)]);
        await c.query('RELEASE SAVEPOINT fill_check');
      } catch {
        await c.query('ROLLBACK TO SAVEPOINT fill_check');
        throw new InputError(
          `${where}.nulls.fill: ${JSON.stringify(fix.nulls.fill)} is not a valid ${type} for ${displayName(fix.table)}.${fix.column}.`,
        );
      }
      info.fill = `${(await c.query('SELECT quote_literal($1::text) AS l', [String(fix.nulls.fill)])).rows[0].l}::${type}`;
    }
    return info;
  }

  const r = await rel(c, fix.references.table);
  if (!r) throw new InputError(`${where}: referenced table ${displayName(fix.references.table)} does not exist.`);
  const rcols = await columns(c, r.oid);
  fix.references.columns.forEach((rc, i) => {
    const mine = cols.get(fix.columns[i])!;
    const theirs = rcols.get(rc);
    if (!theirs)
      throw new InputError(
        `${where}: referenced table ${displayName(fix.references.table)} has no column ${JSON.stringify(rc)}.`,
      );
    if (!compatible(mine.type, theirs.type)) {
      throw new InputError(
        `${where}: ${displayName(fix.table)}.${fix.columns[i]} is ${mine.type} but ${displayName(fix.references.table)}.${rc} is ${theirs.type}; the types must match.`,
      );
    }
    if (fix.orphans === 'set-null' && mine.notNull)
      throw new InputError(
        `${where}: orphans "set-null" cannot work, ${displayName(fix.table)}.${fix.columns[i]} is NOT NULL; use "delete" or "fail".`,
      );
  });
  const refAttnums = fix.references.columns.map((rc) => rcols.get(rc)!.attnum).sort((a, b) => a - b);
  const uniq = await c.query(
    `SELECT 1 FROM pg_index WHERE indrelid = $1 AND indisunique AND indpred IS NULL AND indexprs IS NULL
        AND (SELECT array_agg(x ORDER BY x) FROM unnest(indkey::int2[]) x) = $2::int2[]`,
    [r.oid, refAttnums],
  );
  if (!uniq.rowCount) {
    throw new InputError(
      `${where}: ${displayName(fix.references.table)}(${fix.references.columns.join(', ')}) has no primary key or unique constraint, which a foreign key must reference; add one first.`,
    );
  }
  if (fix.orphans !== 'fail' && !pk.length)
    throw new InputError(
      `${where}: ${displayName(fix.table)} has no primary key, which partflow needs to record repaired rows for undo.`,
    );
  const myAttnums = fix.columns.map((col) => cols.get(col)!.attnum);
  const existing = await c.query(
    `SELECT conname, convalidated, conkey = $2::int2[] AND confrelid = $3 AND confkey = $4::int2[] AS same FROM pg_constraint
      WHERE conrelid = $1 AND contype = 'f' AND conparentid = 0 AND (conname = $5 OR (conkey = $2::int2[] AND confrelid = $3))`,
    [t.oid, myAttnums, r.oid, fix.references.columns.map((rc) => rcols.get(rc)!.attnum), fix.name],
  );
  const named = existing.rows.find((x) => x.conname === fix.name);
  if (named && !named.same)
    throw new InputError(
      `${where}: a different constraint named ${fix.name} exists on ${displayName(fix.table)}; pick another "name".`,
    );
  info.alreadyDone = existing.rows.some((x) => x.same && x.convalidated);
  // an index whose leading columns are the FK columns serves the referenced side's deletes and updates
  const idx = await c.query(
    `SELECT 1 FROM pg_index WHERE indrelid = $1 AND indpred IS NULL AND (indkey::int2[])[0:${myAttnums.length - 1}] = $2::int2[]`,
    [t.oid, myAttnums],
  );
  info.hasIndex = idx.rowCount! > 0;
  return info;
}

function plannedSql(fix: Fix, info: FixInfo, batchSize: number): { sql: string[]; notes: string[] } {
  const t = qualified(fix.table);
  const sql: string[] = [];
  const notes: string[] = [];
  if (info.alreadyDone) return { sql, notes: ['already in place: skipped'] };
  if (fix.kind === 'notNull') {
    sql.push(`ALTER TABLE ${t} ADD CONSTRAINT ${q(fix.name)} CHECK (${q(fix.column)} IS NOT NULL) NOT VALID`);
    if (fix.nulls !== 'fail')
      sql.push(
        `-- in batches of ${batchSize}, recorded in partflow.repairs\n${repairBatchSql(fix, info.pk, info.fill)}`,
      );
    sql.push(
      `ALTER TABLE ${t} VALIDATE CONSTRAINT ${q(fix.name)}`,
      `ALTER TABLE ${t} ALTER COLUMN ${q(fix.column)} SET NOT NULL`,
      `ALTER TABLE ${t} DROP CONSTRAINT ${q(fix.name)}`,
    );
    return { sql, notes };
  }
  const cols = fix.columns.map(q).join(', ');
  if (!info.hasIndex) {
    if (info.relkind === 'p') {
      const parent = supportingIndexName(fix);
      sql.push(`CREATE INDEX IF NOT EXISTS ${q(parent)} ON ONLY ${t} (${cols})`);
      for (const p of info.partitions) {
        const child = supportingIndexName(fix, p.name);
        sql.push(
          `CREATE INDEX CONCURRENTLY IF NOT EXISTS ${q(child)} ON ${qualified(p)} (${cols})`,
          `ALTER INDEX ${qualified({ schema: fix.table.schema, name: parent })} ATTACH PARTITION ${qualified({ schema: p.schema, name: child })}`,
        );
      }
    } else {
      sql.push(`CREATE INDEX CONCURRENTLY IF NOT EXISTS ${q(supportingIndexName(fix))} ON ${t} (${cols})`);
    }
    notes.push(
      `creates index ${supportingIndexName(fix)} on (${fix.columns.join(', ')}): none supports the foreign key`,
    );
  }
  const targets = info.relkind === 'p' ? info.partitions : [fix.table];
  const actions = [
    ['ON DELETE', fix.onDelete],
    ['ON UPDATE', fix.onUpdate],
  ].filter(([, a]) => a && !['NO ACTION', 'RESTRICT'].includes(String(a).toUpperCase()));
  if (actions.length) {
    notes.push(
      `${actions.map(([k, a]) => `${k} ${a}`).join(' and ')} acts from the NOT VALID step on: what it changes in ${displayName(fix.table)} when rows of ${displayName(fix.references.table)} are deleted or re-keyed during the run is not recorded and stays if the run is undone`,
    );
  }
  for (const p of targets)
    sql.push(`ALTER TABLE ${qualified(p)} ADD CONSTRAINT ${q(fix.name)} ${fkClause(fix)} NOT VALID`);
  if (fix.orphans !== 'fail')
    sql.push(`-- in batches of ${batchSize}, recorded in partflow.repairs\n${repairBatchSql(fix, info.pk)}`);
  for (const p of targets) sql.push(`ALTER TABLE ${qualified(p)} VALIDATE CONSTRAINT ${q(fix.name)}`);
  if (info.relkind === 'p') {
    sql.push(`ALTER TABLE ${t} ADD CONSTRAINT ${q(fix.name)} ${fkClause(fix)}`);
    notes.push(
      'partitioned: NOT VALID + VALIDATE per partition, then the parent constraint adopts them without a rescan',
    );
  }
  return { sql, notes };
}

const wfId = (): string => currentWorkflowId() ?? 'local';
/** The workflow run: a workflow id reused later (fix-seed, say) must never undo this run's repairs. */
const runId = (): string | null => activityContext()?.info.workflowExecution?.runId ?? null;

/**
 * Inside a forward step's transaction: this fixConstraints run is still `active` (FOR SHARE: beginFixUndo's
 * UPDATE waits for it). Once the undo has begun, no forward DDL or repair batch of the run can commit, even
 * from a worker that went on after its heartbeat timed out. Outside a workflow (scripts, tests) there is no
 * run to fence.
 */
async function fixFence(c: PoolClient): Promise<void> {
  const run = runId();
  if (!run) return;
  const r = await c.query(
    `SELECT 1 FROM partflow.fix_runs WHERE workflow_id = $1 AND run_id = $2 AND state = 'active' FOR SHARE`,
    [wfId(), run],
  );
  if (!r.rowCount)
    throw failure(`fixConstraints run ${wfId()} is being undone or is over; this step does nothing.`, 'RunUndone');
}

/** What a fix's DDL locks, for the look-ahead: the table (and its partitions) and the referenced table. */
function lockedByFix(fix: Fix): { relations: string[] } {
  return { relations: [qualified(fix.table), ...(fix.kind === 'foreignKey' ? [qualified(fix.references.table)] : [])] };
}

export function createConstraintActivities({ pool, log }: Deps) {
  const l = (step: string, fix: Fix) => log.child({ step, fix: describeFix(fix), workflowId: wfId() });

  async function hasConstraint(
    c: PoolClient | Pool,
    t: TableRef,
    name: string,
  ): Promise<{ validated: boolean } | null> {
    const r = await c.query(
      `SELECT convalidated FROM pg_constraint WHERE conrelid = to_regclass($1) AND conname = $2`,
      [qualified(t), name],
    );
    return r.rowCount ? { validated: r.rows[0].convalidated } : null;
  }

  async function dropFixConstraint(fixNo: number, fix: Fix, info: FixInfo, lockTimeoutMs: number): Promise<StepResult> {
    let retries = 0;
    const targets = fix.kind === 'foreignKey' && info.relkind === 'p' ? [fix.table, ...info.partitions] : [fix.table];
    for (const t of targets) {
      const { stats } = await withLockRetry(
        pool,
        l('drop constraint', fix),
        `drop ${fix.name}`,
        lockTimeoutMs,
        (c) => c.query(`ALTER TABLE ${qualified(t)} DROP CONSTRAINT IF EXISTS ${q(fix.name)}`),
        lockedByFix(fix),
      );
      retries += stats.lockWaitRetries;
    }
    void fixNo;
    return { changed: true, lockWaitRetries: retries };
  }

  return {
    /** Records this run as active: the fence every forward step checks. */
    async claimFix(): Promise<void> {
      try {
        await migrate(pool);
        if (runId())
          await pool.query(
            `INSERT INTO partflow.fix_runs (workflow_id, run_id, state) VALUES ($1, $2, 'active') ON CONFLICT DO NOTHING`,
            [wfId(), runId()],
          );
      } catch (err) {
        classify(err, 'claim');
      }
    },

    /** The first step of every undo; waits for a forward step's transaction in flight. */
    async beginFixUndo(): Promise<void> {
      try {
        await migrate(pool);
        await pool.query(
          `UPDATE partflow.fix_runs SET state = 'undoing', updated_at = now() WHERE workflow_id = $1 AND run_id = $2 AND state = 'active'`,
          [wfId(), runId()],
        );
      } catch (err) {
        classify(err, 'begin undo');
      }
    },

    async releaseFix(state: 'done' | 'rolled-back' | 'failed'): Promise<void> {
      try {
        await migrate(pool);
        await pool.query(
          `UPDATE partflow.fix_runs SET state = $3, updated_at = now() WHERE workflow_id = $1 AND run_id = $2`,
          [wfId(), runId(), state],
        );
      } catch (err) {
        classify(err, 'release');
      }
    },

    /** Read-only: checks every fix, counts violations (with the query that lists them), and the SQL each will run. */
    async auditFixes(opts: FixOptions): Promise<FixAudit[]> {
      try {
        return await withHeartbeat(
          () => ({ step: 'audit' }),
          () =>
            inTransaction(
              pool,
              async (c) => {
                const out: FixAudit[] = [];
                for (const [i, fix] of opts.fixes.entries()) {
                  const info = await inspect(c, fix, i);
                  let violations = 0;
                  const a = auditSql(fix, info.pk);
                  if (!info.alreadyDone) violations = Number((await c.query(a.count)).rows[0].n);
                  const policy =
                    fix.kind === 'foreignKey'
                      ? `orphans: ${fix.orphans}`
                      : `nulls: ${fix.nulls === 'fail' ? 'fail' : `fill ${JSON.stringify(fix.nulls.fill)}`}`;
                  const { sql, notes } = plannedSql(fix, info, opts.batchSize);
                  out.push({
                    fixNo: i,
                    fix,
                    description: describeFix(fix),
                    info,
                    violations,
                    listQuery: a.list,
                    policy,
                    sql,
                    notes,
                  });
                }
                return out;
              },
              { readOnly: true, isolation: 'REPEATABLE READ' },
            ),
        );
      } catch (err) {
        classify(err, 'audit');
      }
    },

    /** CREATE INDEX CONCURRENTLY (per partition, then attached, on a partitioned table); invalid leftovers are rebuilt. */
    async createSupportingIndex(fix: ForeignKeyFix, info: FixInfo): Promise<StepResult> {
      const log = l('index', fix);
      const cols = fix.columns.map(q).join(', ');
      const conc = async (name: string, on: TableRef) => {
        await inTransaction(pool, fixFence); // CONCURRENTLY cannot run inside the fence's transaction: checked just before
        const ex = await pool.query(
          `SELECT i.indisvalid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_index i ON i.indexrelid = c.oid WHERE n.nspname = $1 AND c.relname = $2`,
          [on.schema, name],
        );
        if (ex.rowCount && ex.rows[0].indisvalid === false)
          await pool.query(`DROP INDEX CONCURRENTLY IF EXISTS ${qualified({ schema: on.schema, name })}`);
        // waits for older transactions but never blocks writes; heartbeats keep Temporal informed
        await withHeartbeat(
          () => ({ step: 'index', name }),
          () => pool.query(`CREATE INDEX CONCURRENTLY IF NOT EXISTS ${q(name)} ON ${qualified(on)} (${cols})`),
        );
      };
      try {
        const parent = supportingIndexName(fix);
        if (info.relkind === 'p') {
          await withLockRetry(pool, log, 'index parent', 500, (c) =>
            c.query(`CREATE INDEX IF NOT EXISTS ${q(parent)} ON ONLY ${qualified(fix.table)} (${cols})`),
          );
          for (const p of info.partitions) {
            const child = supportingIndexName(fix, p.name);
            await conc(child, p);
            const attached = await pool.query(
              `SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass($1) AND inhparent = to_regclass($2)`,
              [qualified({ schema: p.schema, name: child }), qualified({ schema: fix.table.schema, name: parent })],
            );
            if (!attached.rowCount)
              await withLockRetry(pool, log, 'attach index', 500, (c) =>
                c.query(
                  `ALTER INDEX ${qualified({ schema: fix.table.schema, name: parent })} ATTACH PARTITION ${qualified({ schema: p.schema, name: child })}`,
                ),
              );
          }
        } else {
          await conc(parent, fix.table);
        }
        log.info({ index: parent }, 'supporting index ready');
        return { changed: true, lockWaitRetries: 0, note: `created index ${parent}` };
      } catch (err) {
        classify(err, `index for ${fix.name}`);
      }
    },

    async dropSupportingIndex(fix: ForeignKeyFix, info: FixInfo): Promise<StepResult> {
      try {
        const parent = supportingIndexName(fix);
        if (info.relkind === 'p') {
          // dropping the parent index drops the attached partition indexes with it (brief lock on the parent)
          await withLockRetry(pool, l('drop index', fix), 'drop index', 500, (c) =>
            c.query(`DROP INDEX IF EXISTS ${qualified({ schema: fix.table.schema, name: parent })}`),
          );
          for (const p of info.partitions)
            await pool.query(
              `DROP INDEX CONCURRENTLY IF EXISTS ${qualified({ schema: p.schema, name: supportingIndexName(fix, p.name) })}`,
            );
        } else {
          await pool.query(
            `DROP INDEX CONCURRENTLY IF EXISTS ${qualified({ schema: fix.table.schema, name: parent })}`,
          );
        }
        return { changed: true, lockWaitRetries: 0 };
      } catch (err) {
        classify(err, `drop index for ${fix.name}`);
      }
    },

    /** ADD ... NOT VALID: from here on new writes are checked; existing rows are not scanned. */
    async addConstraintNotValid(fix: Fix, info: FixInfo, lockTimeoutMs: number): Promise<StepResult> {
      const log = l('constraint', fix);
      let retries = 0;
      try {
        const targets = fix.kind === 'foreignKey' && info.relkind === 'p' ? info.partitions : [fix.table];
        for (const t of targets) {
          if (await hasConstraint(pool, t, fix.name)) continue;
          const sql =
            fix.kind === 'foreignKey'
              ? `ALTER TABLE ${qualified(t)} ADD CONSTRAINT ${q(fix.name)} ${fkClause(fix)} NOT VALID`
              : `ALTER TABLE ${qualified(t)} ADD CONSTRAINT ${q(fix.name)} CHECK (${q(fix.column)} IS NOT NULL) NOT VALID`;
          const { stats } = await withLockRetry(
            pool,
            log,
            `add ${fix.name}`,
            lockTimeoutMs,
            async (c) => {
              await fixFence(c);
              return c.query(sql);
            },
            lockedByFix(fix),
          );
          retries += stats.lockWaitRetries;
        }
        log.info({ lockWaitRetries: retries }, 'constraint added NOT VALID');
        return { changed: true, lockWaitRetries: retries };
      } catch (err) {
        classify(err, `add ${fix.name}`);
      }
    },

    dropConstraint: dropFixConstraint,

    /** Repairs violations in batches; each changed row's key and old value go to partflow.repairs. */
    async repair(fixNo: number, fix: Fix, info: FixInfo, batchSize: number, lockTimeoutMs = 500): Promise<StepResult> {
      const log = l('repair', fix);
      let rows = 0;
      try {
        await migrate(pool);
        const sql = repairBatchSql(fix, info.pk, info.fill);
        const wf = wfId();
        for (;;) {
          // a batch waits at most the run's lock timeout for a row the application holds, then rolls back and
          // is retried: an application transaction never waits on a batch that waits on another
          const { result: r } = await withLockRetry(
            pool,
            log,
            `repair for ${fix.name}`,
            lockTimeoutMs,
            async (c) => {
              await fixFence(c);
              return c.query(sql, [wf, fixNo, batchSize, runId()]);
            },
            { maxAttempts: 30 },
          );
          rows += r.rowCount ?? 0;
          const ctx = activityContext();
          ctx?.heartbeat({ fix: fix.name, rowsRepaired: rows });
          if (ctx?.cancellationSignal.aborted)
            throw new CancelledFailure(`repair of ${fix.name} cancelled after ${rows} rows`);
          if (!r.rowCount) break;
        }
        log.info({ rows }, 'repaired');
        return { changed: rows > 0, rows, lockWaitRetries: 0 };
      } catch (err) {
        classify(err, `repair for ${fix.name}`);
      }
    },

    /** Undo of repair: the constraint goes first (the old values violate it), then every recorded change is reverted. */
    async restoreRepairs(fixNo: number, fix: Fix, info: FixInfo, lockTimeoutMs: number): Promise<StepResult> {
      try {
        await dropFixConstraint(fixNo, fix, info, lockTimeoutMs);
        if (fix.kind === 'notNull') {
          const nn = await pool.query(
            `SELECT attnotnull FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2`,
            [qualified(fix.table), fix.column],
          );
          if (nn.rows[0]?.attnotnull)
            await withLockRetry(
              pool,
              l('restore', fix),
              'drop not null',
              lockTimeoutMs,
              (c) => c.query(`ALTER TABLE ${qualified(fix.table)} ALTER COLUMN ${q(fix.column)} DROP NOT NULL`),
              lockedByFix(fix),
            );
        }
        if (!(await pool.query(`SELECT to_regclass('partflow.repairs') IS NOT NULL AS ok`)).rows[0].ok)
          return { changed: false, lockWaitRetries: 0 };
        const cols = (
          await pool.query(
            `SELECT attname, attgenerated <> '' AS generated, attidentity <> '' AS identity FROM pg_attribute
            WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum`,
            [qualified(fix.table)],
          )
        ).rows;
        const insertable = cols.filter((x) => !x.generated).map((x) => x.attname as string);
        const overriding = cols.some((x) => x.identity);
        const rows = await inTransaction(pool, async (c) => {
          let n = 0;
          const [lock, ...rest] = restoreSql(fix, info.pk, insertable, overriding, info.fill);
          await c.query(lock, [wfId(), fixNo, runId()]);
          for (const sql of rest.slice(0, -1)) n += (await c.query(sql, [wfId(), fixNo, runId()])).rowCount ?? 0;
          await c.query(rest[rest.length - 1], [wfId(), fixNo, runId()]);
          return n;
        });
        return { changed: true, rows, lockWaitRetries: 0 };
      } catch (err) {
        classify(err, `restore for ${fix.name}`);
      }
    },

    /** VALIDATE (writes go on); for NOT NULL then SET NOT NULL, proven by the check, and the check dropped. */
    async validateConstraint(fix: Fix, info: FixInfo, lockTimeoutMs: number): Promise<StepResult> {
      const log = l('validate', fix);
      let retries = 0;
      const run = async (what: string, sql: string) => {
        const { stats } = await withHeartbeat(
          () => ({ step: what }),
          () =>
            withLockRetry(
              pool,
              log,
              what,
              lockTimeoutMs,
              async (c) => {
                await fixFence(c);
                await c.query('SET LOCAL statement_timeout = 0');
                return c.query(sql);
              },
              lockedByFix(fix),
            ),
        );
        retries += stats.lockWaitRetries;
      };
      try {
        if (fix.kind === 'notNull') {
          const t = qualified(fix.table);
          if (await hasConstraint(pool, fix.table, fix.name)) {
            await run('validate', `ALTER TABLE ${t} VALIDATE CONSTRAINT ${q(fix.name)}`);
            await run('set not null', `ALTER TABLE ${t} ALTER COLUMN ${q(fix.column)} SET NOT NULL`);
            await run('drop check', `ALTER TABLE ${t} DROP CONSTRAINT ${q(fix.name)}`);
          }
        } else {
          const targets = info.relkind === 'p' ? info.partitions : [fix.table];
          for (const t of targets) {
            const h = await hasConstraint(pool, t, fix.name);
            if (h && !h.validated)
              await run('validate', `ALTER TABLE ${qualified(t)} VALIDATE CONSTRAINT ${q(fix.name)}`);
          }
          if (info.relkind === 'p' && !(await hasConstraint(pool, fix.table, fix.name))) {
            await run(
              'parent constraint',
              `ALTER TABLE ${qualified(fix.table)} ADD CONSTRAINT ${q(fix.name)} ${fkClause(fix)}`,
            );
          }
        }
        log.info({ lockWaitRetries: retries }, 'validated');
        return { changed: true, lockWaitRetries: retries };
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code === '23503' || code === '23514') {
          throw failure(
            `${describeFix(fix)}: rows violating it appeared during the run (${(err as Error).message}); nothing is kept.`,
            'ViolationsAppeared',
          );
        }
        classify(err, `validate ${fix.name}`);
      }
    },

    /** Undo of validate for NOT NULL: the column allows NULL again. */
    async dropNotNull(fix: Fix, lockTimeoutMs: number): Promise<StepResult> {
      if (fix.kind !== 'notNull') return { changed: false, lockWaitRetries: 0 };
      try {
        const { stats } = await withLockRetry(
          pool,
          l('undo', fix),
          'drop not null',
          lockTimeoutMs,
          (c) => c.query(`ALTER TABLE ${qualified(fix.table)} ALTER COLUMN ${q(fix.column)} DROP NOT NULL`),
          lockedByFix(fix),
        );
        return { changed: true, lockWaitRetries: stats.lockWaitRetries };
      } catch (err) {
        classify(err, `undo NOT NULL on ${fix.column}`);
      }
    },
  };
}

export type ConstraintActivities = ReturnType<typeof createConstraintActivities>;
