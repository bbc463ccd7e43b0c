/**
 * The run store: which partflow run holds which table, and in which state. Every workflow's run has a row:
 *  - a partitionTable run, one row per table in partflow.runs, its state beside what only a copy has (its
 *    checkpoints, its stored plan);
 *  - a fixConstraints or createIndexes run, one row per workflow run in partflow.fix_runs, its state beside
 *    what only a fix has (the tables it changes, the steps its undo needs).
 * What every run does with its row is written once, here, for both:
 *  - the claim's registry check and the registry itself (`runsHolding`): every run that holds a table,
 *    whatever its kind; preflight, maintenance, a fix's claim and a fix's undo all ask it;
 *  - the fence (`isActive`): inside a forward step's transaction, the run is still `active`, read FOR SHARE
 *    so that the undo marker waits for the step's commit;
 *  - the undo marker (`markUndoing`): the first step of every undo; no forward step commits after it;
 *  - the release (`markEnded`).
 * Run states: `active` → `undoing` (an undo began) → `rolled-back` / `undone`; `active` → `done` / `failed`;
 * a partitionTable run also `cleanup` (partflow cleanup took it).
 */
import type { Pool, PoolClient } from 'pg';
import { displayName, qualified, TableRef } from '../../src/ident';
import { STATE_SCHEMA } from '../../src/plan';

/** partitionTable's runs: one row per table */
export const RUNS = `${STATE_SCHEMA}.runs`;
/** fixConstraints' and createIndexes' runs: one row per workflow run */
export const FIX_RUNS = `${STATE_SCHEMA}.fix_runs`;

type Db = Pool | PoolClient;

/** One run's row: the table that holds it, its state column, and the condition that picks it ($1, $2, …). */
export interface RunKey {
  store: string;
  stateColumn: string;
  where: string;
  params: unknown[];
}

/** A partitionTable run: the table's row, held by `workflowId`. */
export function tableRun(table: TableRef, workflowId: string): RunKey {
  return {
    store: RUNS,
    stateColumn: 'run_state',
    where: 'table_schema = $1 AND table_name = $2 AND workflow_id = $3',
    params: [table.schema, table.name, workflowId],
  };
}

/** A fixConstraints or createIndexes run: the row of one workflow run (a reused workflow id is another run). */
export function fixRun(workflowId: string, runId: string): RunKey {
  return {
    store: FIX_RUNS,
    stateColumn: 'state',
    where: 'workflow_id = $1 AND run_id = $2',
    params: [workflowId, runId],
  };
}

/**
 * The fence, inside a forward step's transaction: the run is still `active`. The row is read FOR SHARE, so
 * `markUndoing`'s UPDATE waits for this transaction: once the undo has begun, no forward step of the run
 * commits, even from a worker that went on after its heartbeat timed out.
 */
export async function isActive(c: PoolClient, run: RunKey): Promise<boolean> {
  const r = await c.query(
    `SELECT 1 FROM ${run.store} WHERE ${run.where} AND ${run.stateColumn} = 'active' FOR SHARE`,
    run.params,
  );
  return !!r.rowCount;
}

/** The run's state, or null when it has no row; `forShare` inside an undo step's transaction (its fence). */
export async function stateOf(db: Db, run: RunKey, forShare = false): Promise<string | null> {
  const r = await db.query(
    `SELECT ${run.stateColumn} AS state FROM ${run.store} WHERE ${run.where}${forShare ? ' FOR SHARE' : ''}`,
    run.params,
  );
  return r.rows[0]?.state ?? null;
}

/**
 * The undo marker: an `active` run becomes `undoing`, waiting for a forward step's transaction in flight.
 * Returns the state after it (`undoing`, or what another actor left: `cleanup`, `done`, …), null for no row.
 */
export async function markUndoing(db: Db, run: RunKey): Promise<string | null> {
  const r = await moveState(db, run, 'active', 'undoing');
  return r.moved ? 'undoing' : r.state;
}

/** The run's state from `from` to `to` if it is `from` now; what it is otherwise (null: no row). */
async function moveState(
  db: Db,
  run: RunKey,
  from: string,
  to: string,
): Promise<{ moved: boolean; state: string | null }> {
  const n = run.params.length;
  const r = await db.query(
    `WITH moved AS (
       UPDATE ${run.store} SET ${run.stateColumn} = $${n + 2}, updated_at = now()
        WHERE ${run.where} AND ${run.stateColumn} = $${n + 1}
        RETURNING ${run.stateColumn} AS state)
     SELECT (SELECT state FROM moved) AS moved,
            (SELECT ${run.stateColumn} FROM ${run.store} WHERE ${run.where}) AS state`,
    [...run.params, from, to],
  );
  return { moved: !!r.rows[0]?.moved, state: r.rows[0]?.state ?? null };
}

/**
 * The undo's fence lifted again (a rollback refused under the swap back's lock: the run goes on in its window).
 * Returns null when this run was `undoing` and is `active` again, or the state partflow.runs records otherwise
 * (a cleanup took it meanwhile: the run does not go on).
 */
export async function markActiveAgain(db: Db, run: RunKey): Promise<string | null> {
  const r = await moveState(db, run, 'undoing', 'active');
  // already active: a retry of this step after its first attempt committed
  return r.moved || r.state === 'active' ? null : (r.state ?? 'gone');
}

/**
 * The release: the run's final state. `also` adds assignments to the same UPDATE, each given a placeholder
 * for its value by `param` (a fix run's undo steps).
 */
export async function markEnded(
  db: Db,
  run: RunKey,
  state: string,
  also?: (param: (value: unknown) => string) => string,
): Promise<void> {
  const params = [...run.params, state];
  const param = (value: unknown): string => `$${params.push(value)}`;
  const more = also ? `, ${also(param)}` : '';
  await db.query(
    `UPDATE ${run.store} SET ${run.stateColumn} = $${run.params.length + 1}${more}, updated_at = now()
      WHERE ${run.where}`,
    params,
  );
}

/** A run that holds a table, from the registry. */
export interface Holder {
  kind: string;
  workflowId: string;
  /** a fix run's workflow run; null for partitionTable (its row is the table's) */
  runId: string | null;
  /** the held table, as the operator writes it */
  table: string;
  state: string;
}

/**
 * The registry: every run that holds one of `tables`, partitionTable runs first, then the oldest first. A
 * partitionTable run holds its table while `active`, `undoing` or `cleanup`; a fix run holds its tables while
 * `active` or `undoing`. `except` leaves out one workflow (a run asking about others), or one workflow run. Reads
 * only, and works on a schema partflow never set up or set up by an older version (a dry run writes nothing).
 */
export async function runsHolding(
  db: Db,
  tables: TableRef[],
  except?: { workflowId: string | null; runId?: string },
): Promise<Holder[]> {
  if (!tables.length) return [];
  const has = (
    await db.query(
      `SELECT to_regclass($1) IS NOT NULL AS runs,
              EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass($2) AND attname = 'kind') AS fix_runs`,
      [RUNS, FIX_RUNS],
    )
  ).rows[0];
  const params: unknown[] = [];
  const param = (value: unknown): string => `$${params.push(value)}`;
  const parts: string[] = [];
  if (has.runs) {
    parts.push(
      `SELECT 'partitionTable' AS kind, r.workflow_id, NULL::text AS run_id, x.i, r.run_state AS state,
              r.started_at, 0 AS o
         FROM ${RUNS} r
         JOIN unnest(${param(tables.map((t) => t.schema))}::text[], ${param(tables.map((t) => t.name))}::text[])
              WITH ORDINALITY x(s, n, i) ON x.s = r.table_schema AND x.n = r.table_name
        WHERE r.run_state IN ('active', 'undoing', 'cleanup')`,
    );
  }
  if (has.fix_runs) {
    parts.push(
      `SELECT coalesce(f.kind, 'fixConstraints') AS kind, f.workflow_id, f.run_id, x.i, f.state, f.started_at, 1 AS o
         FROM ${FIX_RUNS} f
         JOIN unnest(${param(tables.map((t) => qualified(t)))}::text[]) WITH ORDINALITY x(q, i) ON x.q = ANY (f.tables)
        WHERE f.state IN ('active', 'undoing')`,
    );
  }
  if (!parts.length) return [];
  let others = '';
  if (except?.workflowId) {
    const wf = param(except.workflowId);
    others = except.runId
      ? `WHERE NOT (h.workflow_id = ${wf} AND h.run_id IS NOT DISTINCT FROM ${param(except.runId)}::text)`
      : `WHERE h.workflow_id <> ${wf}`;
  }
  const r = await db.query(
    `SELECT * FROM (${parts.join(' UNION ALL ')}) h ${others} ORDER BY o, started_at, workflow_id`,
    params,
  );
  return r.rows.map((h) => ({
    kind: h.kind,
    workflowId: h.workflow_id,
    runId: h.run_id,
    table: displayName(tables[Number(h.i) - 1]),
    state: h.state,
  }));
}

/**
 * Serializes claims (inside the claim's transaction, until it commits): a partitionTable claim and a fix
 * claim of the same table, each reading the registry before writing its row, cannot both pass.
 */
export async function lockRegistry(c: PoolClient): Promise<void> {
  await c.query(`SELECT pg_advisory_xact_lock(hashtext('partflow.run_store'))`);
}

/**
 * Another actor takes the run (partflow cleanup): its state becomes `to` when it is one of `from`. Returns
 * whether it did; the run's own steps then find a state that is not theirs and do nothing.
 */
export async function takeOver(db: Db, run: RunKey, to: string, from: string[]): Promise<boolean> {
  const n = run.params.length;
  const r = await db.query(
    `UPDATE ${run.store} SET ${run.stateColumn} = $${n + 1}, updated_at = now()
      WHERE ${run.where} AND ${run.stateColumn} = ANY ($${n + 2}::text[])`,
    [...run.params, to, from],
  );
  return !!r.rowCount;
}

/** The fixConstraints or createIndexes runs of `workflowId` with `table` among their tables, in any state. */
export async function fixRunsOf(
  db: Db,
  workflowId: string,
  table: TableRef,
): Promise<{ runId: string; state: string; kind: string; undoBy: string | null }[]> {
  const has = await db.query(
    `SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = 'kind') AS ok`,
    [FIX_RUNS],
  );
  if (!has.rows[0].ok) return [];
  const r = await db.query(
    `SELECT run_id, state, coalesce(kind, 'fixConstraints') AS kind, undo_by FROM ${FIX_RUNS}
      WHERE workflow_id = $1 AND $2 = ANY (tables) ORDER BY started_at`,
    [workflowId, qualified(table)],
  );
  return r.rows.map((x) => ({ runId: x.run_id, state: x.state, kind: x.kind, undoBy: x.undo_by ?? null }));
}
