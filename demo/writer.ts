/**
 * An application stand-in: lanes of writers that insert, update (also the partition key and the id) and
 * delete rows while a migration runs, and keep an independent record of every committed change: the row
 * as RETURNING showed it after commit. The record is later compared with the table's final content.
 */
import { createHash } from 'crypto';
import { Client, ClientConfig } from 'pg';

export interface WriterSpec {
  /** qualified, quoted table name */
  table: string;
  /** quoted id column */
  id: string;
  /** quoted partition column */
  ts: string;
  /** quoted text column the updates change */
  payload: string;
  /** SQL expression for a new id (re-keying updates) */
  newIdExpr: string;
  /** `INSERT INTO <table> AS t (...) VALUES (...)`, `$1` is the timestamp; no RETURNING */
  insertSql: string;
}

export interface WriterStats {
  ops: number;
  inserts: number;
  updates: number;
  moves: number;
  rekeys: number;
  deletes: number;
  errors: number;
  errorSamples: string[];
  /** 40001 of REPEATABLE READ or SERIALIZABLE lanes (`isolation`): the application retries, not an error */
  serializationFailures: number;
  /** the same per isolation level of the lane */
  serializationFailuresByLevel: Record<string, number>;
  maxLatencyMs: number;
  p99LatencyMs: number;
  /** the slowest statements, slowest first: how long, when it started (epoch ms), which kind */
  slowest: { ms: number; at: number; op: Op }[];
}

export type Op = 'insert' | 'update' | 'move' | 'rekey' | 'delete';

export class Writer {
  /** id → row JSON after the last committed change; deleted ids are absent */
  readonly record = new Map<string, string>();
  private touched = new Set<string>();
  private lanes: { client: Client; ids: string[] }[] = [];
  private running = false;
  private holding = false;
  private idle: boolean[] = [];
  private loops: Promise<void>[] = [];
  /** [start (epoch ms), took] of every statement */
  private timed: [number, number][] = [];
  readonly stats: WriterStats = {
    ops: 0,
    inserts: 0,
    updates: 0,
    moves: 0,
    rekeys: 0,
    deletes: 0,
    errors: 0,
    errorSamples: [],
    serializationFailures: 0,
    serializationFailuresByLevel: {},
    maxLatencyMs: 0,
    p99LatencyMs: 0,
    slowest: [],
  };

  constructor(
    private spec: WriterSpec,
    private conn: ClientConfig,
    private opts: {
      lanes?: number;
      opsPerSecondPerLane?: number;
      snapshot?: boolean;
      seed?: number;
      /** the statements this application makes; others are replaced by inserts (e.g. an INSERT-only role) */
      ops?: Op[];
      /** run on every connection first, e.g. `SET session_replication_role = replica` */
      onConnect?: string;
      /** inserted rows' timestamps, in days from now; default 13 months back to 2 months ahead */
      insertDays?: [number, number];
      /**
       * the lanes' isolation levels, by lane number modulo the list: each statement then runs in a transaction
       * of that level that takes its snapshot first (a read of one of the lane's rows), as an application
       * reading before it writes; 40001 is counted in `serializationFailures` and the change is not recorded
       */
      isolation?: ('READ COMMITTED' | 'REPEATABLE READ' | 'SERIALIZABLE')[];
    } = {},
  ) {}

  private async connect(): Promise<Client> {
    const client = new Client({ ...this.conn, application_name: 'partflow-demo-writer' });
    client.on('error', () => undefined); // a dropped connection shows up as failed queries, counted as errors
    await client.connect();
    if (this.opts.onConnect) await client.query(this.opts.onConnect);
    return client;
  }

  /** Loads the starting ids (and, with `snapshot`, every row) so the record starts complete. */
  async start(): Promise<void> {
    const laneCount = this.opts.lanes ?? 4;
    for (let i = 0; i < laneCount; i++) this.lanes.push({ client: await this.connect(), ids: [] });
    const s = this.spec;
    const sel = this.opts.snapshot
      ? `SELECT ${s.id}::text AS k, row_to_json(t)::text AS r FROM ${s.table} t`
      : `SELECT ${s.id}::text AS k FROM ${s.table}`;
    const rows = (await this.lanes[0].client.query(sel)).rows;
    rows.forEach((row, i) => {
      this.lanes[i % laneCount].ids.push(row.k);
      if (this.opts.snapshot) this.record.set(row.k, row.r);
    });
    this.running = true;
    this.loops = this.lanes.map((lane, i) => this.loop(lane, i));
  }

  async stop(): Promise<WriterStats> {
    if (!this.running && this.lanes.length === 0) return this.stats;
    this.running = false;
    await Promise.all(this.loops);
    for (const l of this.lanes.splice(0)) await l.client.end().catch(() => undefined);
    this.stats.p99LatencyMs = this.p99Between(-Infinity, Infinity).p99;
    return this.stats;
  }

  private pick(rnd: () => number): Op {
    const r = rnd();
    if (r < 0.4) return 'insert';
    if (r < 0.62) return this.allowed('update');
    if (r < 0.75) return this.allowed('move');
    if (r < 0.8) return this.allowed('rekey');
    return this.allowed('delete');
  }

  private allowed(op: Op): Op {
    return !this.opts.ops || this.opts.ops.includes(op) ? op : 'insert';
  }

  private async loop(lane: { client: Client; ids: string[] }, laneNo: number): Promise<void> {
    let seed = (this.opts.seed ?? 42) * 1000 + laneNo;
    const rnd = () => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed / 2147483648;
    };
    const s = this.spec;
    const ret = `RETURNING ${s.id}::text AS k, row_to_json(t)::text AS r`;
    const pause = 1000 / (this.opts.opsPerSecondPerLane ?? 25);
    const level = this.opts.isolation?.[laneNo % this.opts.isolation.length];
    // the statement alone (autocommit), or in a transaction of the lane's level whose snapshot comes first
    const run = async (sql: string, params: unknown[]) => {
      if (!level) return lane.client.query(sql, params);
      try {
        await lane.client.query(`BEGIN ISOLATION LEVEL ${level}`);
        await lane.client.query(`SELECT 1 FROM ${s.table} WHERE ${s.id} = $1`, [lane.ids[0] ?? null]);
        await new Promise((r) => setTimeout(r, 5));
        const r = await lane.client.query(sql, params);
        await lane.client.query('COMMIT');
        return r;
      } catch (err) {
        await lane.client.query('ROLLBACK').catch(() => undefined);
        throw err;
      }
    };
    while (this.running) {
      if (this.holding) {
        this.idle[laneNo] = true;
        await new Promise((r) => setTimeout(r, 20));
        continue;
      }
      this.idle[laneNo] = false;
      const op: Op = lane.ids.length === 0 ? 'insert' : this.pick(rnd);
      const idx = Math.floor(rnd() * lane.ids.length);
      const id = lane.ids[idx];
      const t0 = Date.now();
      const p0 = performance.now(); // the statement's time to a tenth of a ms: an idle one takes 1 or 2
      try {
        if (op === 'insert') {
          // timestamps from 13 months ago to 2 months ahead: old partitions, current, future and the default
          const [lo, hi] = this.opts.insertDays ?? [-340, 60];
          const ts = new Date(Date.now() + Math.floor((lo + rnd() * (hi - lo)) * 86400_000));
          const r = await run(`${s.insertSql} ${ret}`, [ts]);
          this.apply(lane, r.rows[0], true);
          this.stats.inserts++;
        } else if (op === 'update') {
          const r = await run(
            `UPDATE ${s.table} AS t SET ${s.payload} = md5(random()::text) WHERE ${s.id} = $1 ${ret}`,
            [id],
          );
          if (r.rowCount) {
            this.apply(lane, r.rows[0], false);
            this.stats.updates++;
          }
        } else if (op === 'move') {
          const days = rnd() < 0.5 ? -35 : 33;
          const r = await run(
            `UPDATE ${s.table} AS t SET ${s.ts} = ${s.ts} + interval '${days} days' WHERE ${s.id} = $1 ${ret}`,
            [id],
          );
          if (r.rowCount) {
            this.apply(lane, r.rows[0], false);
            this.stats.moves++;
          }
        } else if (op === 'rekey') {
          const r = await run(`UPDATE ${s.table} AS t SET ${s.id} = ${s.newIdExpr} WHERE ${s.id} = $1 ${ret}`, [id]);
          if (r.rowCount) {
            this.forget(lane, idx, id);
            this.apply(lane, r.rows[0], true);
            this.stats.rekeys++;
          }
        } else {
          const r = await run(`DELETE FROM ${s.table} WHERE ${s.id} = $1`, [id]);
          if (r.rowCount) {
            this.forget(lane, idx, id);
            this.stats.deletes++;
          }
        }
        this.stats.ops++;
      } catch (err) {
        if (level && (err as { code?: string }).code === '40001') {
          this.stats.serializationFailures++;
          const by = this.stats.serializationFailuresByLevel;
          by[level] = (by[level] ?? 0) + 1;
        } else {
          this.stats.errors++;
          if (this.stats.errorSamples.length < 5) this.stats.errorSamples.push(`${op}: ${(err as Error).message}`);
        }
      }
      const took = Math.round((performance.now() - p0) * 10) / 10;
      this.timed.push([t0, took]);
      if (took > this.stats.maxLatencyMs) this.stats.maxLatencyMs = took;
      this.noteSlow(took, t0, op);
      await new Promise((r) => setTimeout(r, Math.max(0, pause - took)));
    }
  }

  /** The longest statement that started from `from` to `to` (epoch ms), and how many started then. */
  longestBetween(from: number, to: number): { ms: number; ops: number } {
    const within = this.timed.filter(([at]) => at >= from && at <= to);
    return { ms: Math.max(0, ...within.map(([, took]) => took)), ops: within.length };
  }

  /** The 99th percentile of the statements that started from `from` to `to` (epoch ms), ms (0 if none did), and how many. */
  p99Between(from: number, to: number): { p99: number; ops: number } {
    const within = this.timed
      .filter(([at]) => at >= from && at <= to)
      .map(([, took]) => took)
      .sort((a, b) => a - b);
    return { p99: within.length ? within[Math.floor(within.length * 0.99)] : 0, ops: within.length };
  }

  private noteSlow(ms: number, at: number, op: Op): void {
    const slow = this.stats.slowest;
    if (slow.length >= 5 && ms <= slow[slow.length - 1].ms) return;
    slow.push({ ms, at, op });
    slow.sort((a, b) => b.ms - a.ms);
    slow.length = Math.min(slow.length, 5);
  }

  private apply(lane: { ids: string[] }, row: { k: string; r: string }, isNew: boolean): void {
    if (isNew) lane.ids.push(row.k);
    this.record.set(row.k, row.r);
    this.touched.add(row.k);
  }

  private forget(lane: { ids: string[] }, idx: number, id: string): void {
    lane.ids[idx] = lane.ids[lane.ids.length - 1];
    lane.ids.pop();
    this.record.delete(id);
    this.touched.add(id);
  }

  /**
   * Stops issuing statements and waits until none is in flight: for a database restart, where a statement
   * cut off mid-flight would leave its outcome unknown. `release` reconnects every lane and goes on.
   */
  async hold(): Promise<void> {
    this.holding = true;
    while (this.idle.filter(Boolean).length < this.lanes.length) await new Promise((r) => setTimeout(r, 20));
  }

  async release(): Promise<void> {
    for (const lane of this.lanes) {
      await lane.client.end().catch(() => undefined);
      lane.client = await this.connect();
    }
    this.holding = false;
  }

  /** After a TRUNCATE of the table made while the writer was held: every row it knew is gone. */
  truncated(): void {
    for (const id of this.record.keys()) this.touched.add(id);
    this.record.clear();
    for (const lane of this.lanes) lane.ids.length = 0;
  }

  /** Ids whose rows the writer changed (including deleted ones). */
  touchedIds(): string[] {
    return [...this.touched];
  }
}

/** Compares a table's content with a record; returns mismatch counts and order-independent checksums. */
export async function compareWithRecord(
  client: Client,
  spec: Pick<WriterSpec, 'table' | 'id'>,
  record: Map<string, string>,
  onlyIds?: string[],
): Promise<{
  missing: number;
  extra: number;
  different: number;
  tableChecksum: string;
  recordChecksum: string;
  rows: number;
}> {
  const rows = onlyIds
    ? (
        await client.query(
          `SELECT ${spec.id}::text AS k, row_to_json(t)::text AS r FROM ${spec.table} t WHERE ${spec.id}::text = ANY($1::text[])`,
          [onlyIds],
        )
      ).rows
    : (await client.query(`SELECT ${spec.id}::text AS k, row_to_json(t)::text AS r FROM ${spec.table} t`)).rows;
  const actual = new Map<string, string>();
  let duplicates = 0;
  for (const r of rows) {
    if (actual.has(r.k)) duplicates++;
    actual.set(r.k, r.r);
  }
  const expected = onlyIds ? new Map(onlyIds.filter((k) => record.has(k)).map((k) => [k, record.get(k)!])) : record;
  let missing = 0;
  let different = 0;
  for (const [k, v] of expected) {
    const a = actual.get(k);
    if (a === undefined) missing++;
    else if (a !== v) different++;
  }
  const extra = duplicates + [...actual.keys()].filter((k) => !expected.has(k)).length;
  return {
    missing,
    extra,
    different,
    tableChecksum: checksum(rows.map((r) => `${r.k}\t${r.r}`)),
    recordChecksum: checksum([...expected].map(([k, v]) => `${k}\t${v}`)),
    rows: rows.length,
  };
}

function checksum(lines: string[]): string {
  const h = createHash('sha256');
  for (const l of [...lines].sort()) h.update(l + '\n');
  return h.digest('hex').slice(0, 16);
}
