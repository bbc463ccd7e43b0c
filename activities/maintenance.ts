/**
 * `maintainTable`: one managed table's upkeep, in one activity so that one table's failure is its own:
 * rescue rows from the default partition and premake (same path: create the month's table, move its rows
 * out of the default, ATTACH — never CREATE ... PARTITION OF, which locks the parent exclusively),
 * retention with archive, and the health report. Every step checks the catalog first.
 */
import { spawn } from 'child_process';
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { pipeline } from 'stream/promises';
import * as zlib from 'zlib';
import { ApplicationFailure } from '@temporalio/common';
import type { Pool, PoolClient, PoolConfig } from 'pg';
import {
  byteLength,
  displayName,
  InputError,
  MAX_IDENT_BYTES,
  qualified,
  quoteIdent as q,
  quoteLiteral,
  TableRef,
} from '../src/ident';
import { expiredPartitions, LocalRange, MaintainTableSpec, monthCoverage, monthsToPremake } from '../src/maintenance';
import {
  addMonths,
  boundLiteral,
  bucketMonth,
  compareMonths,
  formatMonth,
  Month,
  OUTLIER_GAP_MONTHS,
  parseMonth,
  PartitionColumnType,
  partitionName,
} from '../src/partitions';
import { migrate } from './migrate';
import { classify, inTransaction, withHeartbeat, withLockRetry } from './db';
import { metrics } from './metrics';
import type { Deps } from './partition';
import { failure } from '../src/failures';

export interface PartitionHealth {
  name: string;
  from: string;
  to: string;
  /** from the planner's statistics; null when the partition was never analyzed */
  rowsEstimated: number | null;
  rowsExact?: number;
  bytes: number;
}

export interface TableReport {
  table: string;
  column: string;
  created: { partition: string; rowsMovedFromDefault: number }[];
  archived: { partition: string; mode: string; file?: string; rows?: number; note?: string }[];
  skipped: { partition: string; reason: string }[];
  partitions: PartitionHealth[];
  defaultPartition: { name: string; rows: number } | null;
  futurePartitions: number;
  oldestPartition: string | null;
  warnings: string[];
  /** partitions whose interrupted DETACH CONCURRENTLY this run finished */
  finishedDetaches?: string[];
  /** rows left in the default partition because they are dated far outside the partitions */
  sentinels?: { rows: number; months: string[] };
}

interface Parted {
  oid: number;
  column: string;
  type: PartitionColumnType;
  parts: (LocalRange & { schema: string; est: number; bytes: number })[];
  def: TableRef | null;
  current: Month;
}

export function archiveDir(): string {
  return process.env.PARTFLOW_ARCHIVE_DIR ?? path.join(os.homedir(), '.cache', 'partflow', 'archive');
}

/** Where `archive: "detach"` puts a schema's old partitions: `archive` for public, `archive_<schema>` otherwise. */
export function archiveSchema(schema: string): string {
  return schema === 'public' ? 'archive' : `archive_${schema}`.slice(0, MAX_IDENT_BYTES);
}

/**
 * How long creating a partition holds its locks, ms: the ATTACH scans the default partition (measured here
 * at about 10,000 rows/ms; 2,000 assumed) and the month's rows are inserted and deleted with their indexes
 * (20 rows/ms assumed). Conservative on purpose: a wrong guess should skip a month, not stall the table.
 */
export function attachLockEstimateMs(defaultRows: number, monthRows: number): number {
  return 5 + defaultRows / 2000 + monthRows / 20;
}

/** Session settings the COPY text depends on, fixed as pg_dump fixes them. */
const DUMP_SETTINGS =
  '-c DateStyle=ISO,YMD -c IntervalStyle=postgres -c extra_float_digits=3 -c TimeZone=UTC -c client_encoding=UTF8';

/** fsync a file or a directory (the directory makes a rename durable). */
function fsyncFile(p: string): void {
  const fd = fs.openSync(p, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * The archive file's name: schema and partition as they are when they are plain ([A-Za-z0-9_]), otherwise
 * with everything else replaced and a hash of the exact names, so no identifier can reach outside the
 * archive directory or collide with another.
 */
export function archiveFileStem(part: TableRef): string {
  const safe = (x: string) => x.replace(/[^A-Za-z0-9_]/g, '_');
  const stem = `${safe(part.schema)}.${safe(part.name)}`;
  if (stem === `${part.schema}.${part.name}`) return stem;
  return `${stem}-${createHash('sha256').update(`${part.schema}\0${part.name}`).digest('hex').slice(0, 10)}`;
}

/** A libpq URI without its password, and the password. */
export function withoutPassword(uri: string): { url: string; password: string | null } {
  try {
    const u = new URL(uri);
    if (!u.password) return { url: uri, password: null };
    const password = decodeURIComponent(u.password);
    u.password = '';
    return { url: u.toString(), password };
  } catch {
    return { url: uri, password: null }; // a keyword=value string: libpq's own format, passed on as it is
  }
}

function literalInner(lit: string): string {
  const m = /^'((?:[^']|'')*)'(::.*)?$/.exec(lit.trim());
  return m ? m[1].replace(/''/g, "'") : lit.trim();
}

async function inspect(c: PoolClient, spec: MaintainTableSpec): Promise<Parted> {
  const t = spec.table;
  const h = await c.query(
    `SELECT c.oid::int AS oid, c.relkind, pt.partstrat, pt.partnatts, a.attname,
            CASE a.atttypid WHEN 'timestamptz'::regtype THEN 'timestamptz' WHEN 'timestamp'::regtype THEN 'timestamp'
                            WHEN 'date'::regtype THEN 'date' ELSE format_type(a.atttypid, a.atttypmod) END AS kind
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       LEFT JOIN pg_partitioned_table pt ON pt.partrelid = c.oid
       LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = pt.partattrs[0]
      WHERE n.nspname = $1 AND c.relname = $2`,
    [t.schema, t.name],
  );
  if (!h.rowCount) throw new InputError(`Table ${displayName(t)} does not exist.`);
  const r = h.rows[0];
  if (r.relkind !== 'p')
    throw new InputError(`Table ${displayName(t)} is not partitioned; partition it with partitionTable first.`);
  if (r.partstrat !== 'r' || r.partnatts !== 1)
    throw new InputError(`Table ${displayName(t)} must be range-partitioned on one column to be maintained.`);
  if (!['timestamptz', 'timestamp', 'date'].includes(r.kind))
    throw new InputError(
      `Table ${displayName(t)} is partitioned by ${r.attname} (${r.kind}); only timestamp, timestamptz or date columns are maintained.`,
    );
  const type = r.kind as PartitionColumnType;
  const rows = (
    await c.query(
      `SELECT n.nspname AS schema, c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound,
            c.reltuples::bigint AS est, pg_total_relation_size(c.oid) AS bytes
       FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE i.inhparent = $1 AND NOT i.inhdetachpending ORDER BY c.relname`,
      [r.oid],
    )
  ).rows;
  const local = (x: string) =>
    type === 'timestamptz' ? `(${x}::timestamptz AT TIME ZONE $1)` : `(${x}::${type})::timestamp`;
  const ranged = rows
    .filter((p) => p.bound !== 'DEFAULT')
    .map((p) => {
      const m = /^FOR VALUES FROM \((.+)\) TO \((.+)\)$/.exec(p.bound);
      if (!m)
        throw new InputError(`Partition ${p.name} of ${displayName(t)} has a bound partflow cannot read: ${p.bound}.`);
      return { ...p, lo: m[1], hi: m[2] };
    });
  const texts = ranged.length
    ? (
        await c.query(
          `SELECT i, CASE WHEN lo = 'MINVALUE' THEN '0000-01-01 00:00:00' ELSE to_char(${local('lo')}, 'YYYY-MM-DD HH24:MI:SS') END AS lo,
                   CASE WHEN hi = 'MAXVALUE' THEN '9999-12-31 23:59:59' ELSE to_char(${local('hi')}, 'YYYY-MM-DD HH24:MI:SS') END AS hi
           FROM unnest($2::text[], $3::text[]) WITH ORDINALITY u(lo, hi, i) WHERE $1::text IS NOT NULL`,
          [
            spec.timeZone,
            ranged.map((p) => (p.lo === 'MINVALUE' ? p.lo : literalInner(p.lo))),
            ranged.map((p) => (p.hi === 'MAXVALUE' ? p.hi : literalInner(p.hi))),
          ],
        )
      ).rows
    : [];
  const parts = ranged.map((p, i) => ({
    name: p.name,
    schema: p.schema,
    lo: texts[i].lo,
    hi: texts[i].hi,
    est: Number(p.est),
    bytes: Number(p.bytes),
  }));
  const d = rows.find((p) => p.bound === 'DEFAULT');
  const current = parseMonth(
    (await c.query(`SELECT to_char(now() AT TIME ZONE $1, 'YYYY-MM') AS m`, [spec.timeZone])).rows[0].m,
  );
  return { oid: r.oid, column: r.attname, type, parts, def: d ? { schema: d.schema, name: d.name } : null, current };
}

export function createMaintenanceActivities({ pool, log }: Deps) {
  /** The workflow id of a partflow run that owns the table (active or being undone), or null. */
  async function runOwning(t: TableRef): Promise<string | null> {
    const has = (await pool.query(`SELECT to_regclass('partflow.runs') IS NOT NULL AS ok`)).rows[0].ok;
    if (!has) return null;
    const r = await pool.query(
      `SELECT workflow_id FROM partflow.runs WHERE table_schema = $1 AND table_name = $2 AND run_state IN ('active', 'undoing')`,
      [t.schema, t.name],
    );
    return r.rows[0]?.workflow_id ?? null;
  }

  /** Creates the month's partition; rows of that month waiting in the default move into it in the same transaction. */
  async function ensureMonth(
    spec: MaintainTableSpec,
    p: Parted,
    m: Month,
  ): Promise<{ partition: string; rowsMovedFromDefault: number } | { skipped: string } | null> {
    const t = spec.table;
    const name = partitionName(t.name, m);
    if (byteLength(name) > MAX_IDENT_BYTES) {
      // PostgreSQL would cut it to 63 bytes without a word, and the next month's name would collide with it
      throw new InputError(
        `The partition name ${JSON.stringify(name)} would be ${byteLength(name)} bytes, over PostgreSQL's 63; partflow cannot name monthly partitions of ${displayName(t)} (rename the table to something shorter).`,
      );
    }
    const lo = boundLiteral(m, p.type, spec.timeZone);
    const hi = boundLiteral(addMonths(m, 1), p.type, spec.timeZone);
    const col = q(p.column);
    if (p.def) {
      // The transaction below blocks the table's writes while the ATTACH checks every row of the default
      // partition and the month's rows move: estimate that first, and do not take a lock it cannot release
      // within the lock timeout.
      const d = (
        await pool.query(
          `SELECT CASE WHEN c.reltuples >= 0 THEN c.reltuples ELSE NULL END::bigint AS est,
                (SELECT count(*) FROM ${qualified(p.def)} WHERE ${col} >= ${lo} AND ${col} < ${hi})::bigint AS month
           FROM pg_class c WHERE c.oid = to_regclass($1)`,
          [qualified(p.def)],
        )
      ).rows[0];
      const rows =
        d.est === null
          ? Number((await pool.query(`SELECT count(*)::bigint AS n FROM ${qualified(p.def)}`)).rows[0].n)
          : Number(d.est);
      const monthRows = Number(d.month);
      const ms = attachLockEstimateMs(rows, monthRows);
      if (ms > spec.lockTimeoutMs) {
        return {
          skipped: `creating it would block writes to ${displayName(t)} for about ${Math.round(ms)} ms (the ATTACH checks the ${rows} rows of ${p.def.name}${monthRows ? `, ${monthRows} of them to move` : ''}), over lockTimeoutMs ${spec.lockTimeoutMs}; move the default partition's rows out in a quiet hour (maintain with a larger "lockTimeoutMs" accepts that stall), then the next run creates it`,
        };
      }
    }
    const { result } = await withLockRetry(
      pool,
      log.child({ table: displayName(t), month: formatMonth(m) }),
      'create partition',
      spec.lockTimeoutMs,
      async (c) => {
        const exists = await c.query(
          `SELECT i.inhparent = $3 AS attached FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_inherits i ON i.inhrelid = c.oid WHERE n.nspname = $1 AND c.relname = $2`,
          [t.schema, name, p.oid],
        );
        if (exists.rowCount && exists.rows[0].attached) return null;
        if (exists.rowCount)
          throw failure(
            `${displayName({ schema: t.schema, name })} exists but is not a partition of ${displayName(t)}; rename or drop it so the month can be created.`,
            'NameTaken',
          );
        // ATTACH takes only SHARE UPDATE EXCLUSIVE on the parent, so an INSERT that routed its row with the
        // parent's partition list from before the ATTACH would put it into the default partition, whose
        // constraint the ATTACH has just narrowed: the application's insert fails. SHARE ROW EXCLUSIVE on the
        // parent alone (ONLY: not its partitions) waits for the writes in flight and holds new ones for this short
        // transaction; after it they see the new partition. Then the default partition: no row of this month can
        // land there between the move and the ATTACH. Parent first, as inserts lock them.
        await c.query(`LOCK TABLE ONLY ${qualified(t)} IN SHARE ROW EXCLUSIVE MODE`);
        if (p.def) await c.query(`LOCK TABLE ${qualified(p.def)} IN ACCESS EXCLUSIVE MODE`);
        const cols = (
          await c.query(
            `SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) AS l FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = ''`,
            [p.oid],
          )
        ).rows[0].l;
        const nt = qualified({ schema: t.schema, name });
        await c.query(
          `CREATE TABLE ${nt} (LIKE ${qualified(t)} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMMENTS INCLUDING GENERATED)`,
        );
        // owned like its siblings: by the parent's owner, not by partflow's role
        await c.query(`DO $$ BEGIN IF (SELECT relowner FROM pg_class WHERE oid = ${p.oid}) <> (SELECT relowner FROM pg_class WHERE oid = ${quoteLiteral(nt)}::regclass)
                       THEN EXECUTE format('ALTER TABLE %s OWNER TO %I', ${quoteLiteral(nt)}, (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = ${p.oid})); END IF; END $$`);
        let moved = 0;
        if (p.def) {
          const ins = await c.query(
            `INSERT INTO ${nt} (${cols}) SELECT ${cols} FROM ${qualified(p.def)} WHERE ${col} >= ${lo} AND ${col} < ${hi}`,
          );
          const del = await c.query(`DELETE FROM ${qualified(p.def)} WHERE ${col} >= ${lo} AND ${col} < ${hi}`);
          if (ins.rowCount !== del.rowCount)
            throw new Error(`moved ${ins.rowCount} rows but deleted ${del.rowCount} from the default partition`);
          moved = ins.rowCount ?? 0;
        }
        await c.query(`ALTER TABLE ${qualified(t)} ATTACH PARTITION ${nt} FOR VALUES FROM (${lo}) TO (${hi})`);
        return { partition: name, rowsMovedFromDefault: moved };
      },
      { relations: [qualified(t)] },
    );
    return result;
  }

  async function archiveLog(
    c: PoolClient | Pool,
    spec: MaintainTableSpec,
    partition: string,
    state: string,
    extra: Record<string, unknown> = {},
  ): Promise<void> {
    await c.query(
      `INSERT INTO partflow.archive_log (table_schema, table_name, partition, mode, state, detail) VALUES ($1, $2, $3, $4, $5, $6)
       ON CONFLICT (table_schema, partition) DO UPDATE SET state = EXCLUDED.state, detail = partflow.archive_log.detail || EXCLUDED.detail, updated_at = now()`,
      [spec.table.schema, spec.table.name, partition, spec.archive, state, JSON.stringify(extra)],
    );
  }

  /** COPY to a gzip file, then prove the file holds exactly the table: same row count, same bytes as a fresh COPY. */
  async function dumpPartition(
    part: TableRef,
  ): Promise<{ file: string; rows: number; sha256: string; checksum: string }> {
    const db = (await pool.query(`SELECT current_database() AS d`)).rows[0].d;
    const dir = path.join(archiveDir(), db);
    fs.mkdirSync(dir, { recursive: true });
    const file = path.join(dir, `${archiveFileStem(part)}.copy.gz`);
    // psql connects the way the pool does: its connection string, or its host/port/user/database
    const o = (pool as unknown as { options: PoolConfig }).options;
    const copy = () => {
      const args = ['-X', '-v', 'ON_ERROR_STOP=1', '-c', `COPY ${qualified(part)} TO STDOUT`];
      const env = { ...process.env };
      if (o.connectionString) {
        // the password goes in the child's environment, never on its command line (ps shows argv to everyone)
        const { url, password } = withoutPassword(o.connectionString);
        args.unshift(url);
        if (password !== null) env.PGPASSWORD = password;
      }
      for (const [k, v] of [
        ['PGHOST', o.host],
        ['PGPORT', o.port],
        ['PGUSER', o.user],
        ['PGDATABASE', o.database],
        ['PGPASSWORD', typeof o.password === 'string' ? o.password : undefined],
      ] as const) {
        if (v !== undefined && v !== null) env[k] = String(v);
      }
      // the text of a COPY depends on these session settings; fixed as pg_dump fixes them, so that the file
      // reads back the same whatever the server's or the role's defaults are
      env.PGOPTIONS = `${env.PGOPTIONS ?? ''} ${DUMP_SETTINGS}`.trim();
      return spawn('psql', args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    };
    const hashOf = async (stream: NodeJS.ReadableStream, sink?: NodeJS.WritableStream) => {
      const h = createHash('sha256');
      let lines = 0;
      stream.on('data', (b: Buffer) => {
        h.update(b);
        for (const x of b) if (x === 10) lines++;
      });
      if (sink) await pipeline(stream, sink);
      else await new Promise((res, rej) => stream.on('end', res).on('error', rej));
      return { sha: h.digest('hex'), lines };
    };
    const run = async (sink?: NodeJS.WritableStream) => {
      const p = copy();
      let err = '';
      p.stderr.on('data', (d) => (err += d));
      const exit = new Promise<number>((res) => p.on('close', res));
      const r = await hashOf(p.stdout, sink);
      if ((await exit) !== 0) throw new Error(`psql COPY of ${displayName(part)} failed: ${err.trim()}`);
      return r;
    };
    const tmp = `${file}.partial`;
    const gz = zlib.createGzip();
    const written = run(gz);
    await Promise.all([written, pipeline(gz, fs.createWriteStream(tmp))]);
    const first = await written;
    const readBack = await hashOf(fs.createReadStream(tmp).pipe(zlib.createGunzip()));
    const again = await run();
    const count = Number((await pool.query(`SELECT count(*) AS n FROM ${qualified(part)}`)).rows[0].n);
    if (readBack.sha !== first.sha || again.sha !== first.sha || readBack.lines !== count) {
      throw failure(
        `The archive of ${displayName(part)} does not match the table (${readBack.lines} rows in the file, ${count} in the table); the table is kept.`,
        'ArchiveMismatch',
      );
    }
    const checksum = (
      await pool.query(`SELECT coalesce(sum(hashtextextended(t::text, 0)), 0)::text AS s FROM ${qualified(part)} t`)
    ).rows[0].s;
    const columns = (
      await pool.query(
        `SELECT quote_ident(attname) AS name, format_type(atttypid, atttypmod) AS type FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum`,
        [qualified(part)],
      )
    ).rows as { name: string; type: string }[];
    // on disk before the DROP commits: the file, its new name (the directory), the sidecar
    fsyncFile(tmp);
    fs.renameSync(tmp, file);
    const sidecar = {
      table: `${part.schema}.${part.name}`,
      rows: count,
      sha256: first.sha,
      checksum,
      format: 'COPY text, gzip',
      settings: DUMP_SETTINGS,
      columns,
      restore: `gunzip -c ${path.basename(file)} | PGOPTIONS='${DUMP_SETTINGS}' psql -c "COPY <table> (${columns.map((c) => c.name).join(', ')}) FROM STDIN"`,
    };
    fs.writeFileSync(`${file}.json`, JSON.stringify(sidecar, null, 2));
    fsyncFile(`${file}.json`);
    fsyncFile(dir);
    return { file, rows: count, sha256: first.sha, checksum };
  }

  return {
    /** Everything for one table; the workflow runs one such activity per table and reports failures per table. */
    async maintainTable(spec: MaintainTableSpec): Promise<TableReport> {
      const l = log.child({ step: 'maintain', table: displayName(spec.table) });
      try {
        return await withHeartbeat(
          () => ({ table: displayName(spec.table) }),
          async () => {
            let p = await inTransaction(pool, (c) => inspect(c, spec), { readOnly: true });
            const report: TableReport = {
              table: displayName(spec.table),
              column: p.column,
              created: [],
              archived: [],
              skipped: [],
              partitions: [],
              defaultPartition: null,
              futurePartitions: 0,
              oldestPartition: null,
              warnings: [],
            };

            // A table that a partflow run owns (backfill, approval, rollback window) is left alone: a rescue's
            // DELETE from the default partition would fire the run's reverse trigger and lose rows on rollback.
            const owner = await runOwning(spec.table);
            const readOnly = spec.reportOnly || owner !== null;
            if (owner)
              report.warnings.push(
                `partflow run ${owner} owns ${displayName(spec.table)}: nothing was created, moved or archived; the next run after it ends catches up.`,
              );

            // 1. rows waiting in the default partition get their month's partition, except sentinels: infinities
            // and months more than OUTLIER_GAP_MONTHS before the oldest partition or after the premade ones
            if (p.def && !readOnly) {
              const tzExpr = p.type === 'timestamptz' ? `${q(p.column)} AT TIME ZONE $1` : `${q(p.column)}::timestamp`;
              const months = (
                await pool.query(
                  `SELECT DISTINCT to_char(${tzExpr}, 'YYYY-MM') AS m FROM ${qualified(p.def)} ORDER BY 1`,
                  p.type === 'timestamptz' ? [spec.timeZone] : [],
                )
              ).rows.map((r) => r.m as string | null);
              const firstMonths = p.parts
                .map((x) => bucketMonth(x.lo.slice(0, 7)))
                .filter((x): x is Month => !!x && x.year > 0)
                .sort(compareMonths);
              const from = addMonths(firstMonths[0] ?? p.current, -OUTLIER_GAP_MONTHS);
              const to = addMonths(p.current, spec.premake + OUTLIER_GAP_MONTHS);
              const sentinels: string[] = [];
              for (const mt of months) {
                const m = bucketMonth(mt);
                if (!m || compareMonths(m, from) < 0 || compareMonths(m, to) > 0) {
                  sentinels.push(mt ?? '±infinity');
                  continue;
                }
                const cov = monthCoverage(p.parts, m);
                if (cov.overlaps.length) {
                  report.warnings.push(
                    `Rows for ${mt} wait in ${p.def.name}, but ${cov.overlaps.join(', ')} partly covers that month; partflow cannot create a monthly partition there.`,
                  );
                  continue;
                }
                const r = await ensureMonth(spec, p, m);
                if (r && 'skipped' in r)
                  report.skipped.push({ partition: partitionName(spec.table.name, m), reason: r.skipped });
                else if (r) report.created.push(r);
              }
              if (sentinels.length) {
                const lo = boundLiteral(from, p.type, spec.timeZone);
                const hi = boundLiteral(addMonths(to, 1), p.type, spec.timeZone);
                const n = (
                  await pool.query(
                    `SELECT count(*)::bigint AS n FROM ${qualified(p.def)} WHERE NOT (${q(p.column)} >= ${lo} AND ${q(p.column)} < ${hi})`,
                  )
                ).rows[0].n;
                report.sentinels = { rows: Number(n), months: sentinels };
                report.warnings.push(
                  `${n} row(s) in ${p.def.name} are dated far outside the partitions (${sentinels.join(', ')}): sentinels or outliers, they stay in the default partition and get no partition.`,
                );
              }
              p = await inTransaction(pool, (c) => inspect(c, spec), { readOnly: true });
            }
            // 2. premake: the current month and `premake` months ahead
            for (const m of readOnly ? [] : monthsToPremake(p.current, spec.premake)) {
              const cov = monthCoverage(p.parts, m);
              if (cov.covered) continue;
              if (cov.overlaps.length) {
                report.warnings.push(
                  `${formatMonth(m)} is partly covered by ${cov.overlaps.join(', ')}; no monthly partition created.`,
                );
                continue;
              }
              const r = await ensureMonth(spec, p, m);
              if (r && 'skipped' in r)
                report.skipped.push({ partition: partitionName(spec.table.name, m), reason: r.skipped });
              else if (r) report.created.push(r);
            }
            if (report.created.length) p = await inTransaction(pool, (c) => inspect(c, spec), { readOnly: true });

            // 3. a DETACH ... CONCURRENTLY interrupted after its first transaction left a partition "detach
            // pending": every later detach of the table fails until it is finished (FINALIZE waits for older
            // snapshots; it takes SHARE UPDATE EXCLUSIVE on the parent, writes go on)
            if (!readOnly) {
              const stuck = (
                await pool.query(
                  `SELECT n.nspname AS schema, c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE i.inhparent = $1 AND i.inhdetachpending`,
                  [p.oid],
                )
              ).rows as TableRef[];
              for (const part of stuck) {
                await withLockRetry(pool, l, 'finish detach', spec.lockTimeoutMs * 20, (c) =>
                  c.query(`ALTER TABLE ${qualified(spec.table)} DETACH PARTITION ${qualified(part)} FINALIZE`),
                );
                report.warnings.push(
                  `${part.name} was left "detach pending" by an interrupted DETACH CONCURRENTLY; the detach was finished (it is now a table of its own, ${qualified(part)}).`,
                );
                report.finishedDetaches = [...(report.finishedDetaches ?? []), part.name];
                // one of ours (retention was detaching it): its archiving goes on below
                await migrate(pool);
                await pool.query(
                  `UPDATE partflow.archive_log SET state = 'detached', updated_at = now() WHERE table_schema = $1 AND partition = $2 AND state = 'detaching'`,
                  [spec.table.schema, part.name],
                );
              }
            }

            // 4. retention
            if (spec.retentionMonths !== null && !readOnly) {
              await migrate(pool);
              const pending = (
                await pool.query(
                  `SELECT partition FROM partflow.archive_log WHERE table_schema = $1 AND table_name = $2 AND state = 'detached'`,
                  [spec.table.schema, spec.table.name],
                )
              ).rows.map((r) => r.partition as string);
              const expired = expiredPartitions(p.parts, p.current, spec.retentionMonths);
              const fks = (
                await pool.query(
                  `SELECT con.conrelid::regclass::text AS child, (SELECT array_agg(quote_ident(attname) ORDER BY array_position(con.conkey, attnum)) FROM pg_attribute WHERE attrelid = con.conrelid AND attnum = ANY (con.conkey)) AS cols,
                      (SELECT array_agg(quote_ident(attname) ORDER BY array_position(con.confkey, attnum)) FROM pg_attribute WHERE attrelid = con.confrelid AND attnum = ANY (con.confkey)) AS refcols
                 FROM pg_constraint con WHERE con.contype = 'f' AND con.confrelid = $1 AND con.conparentid = 0`,
                  [p.oid],
                )
              ).rows;
              for (const part of expired) {
                const ref = { schema: part.schema, name: part.name };
                const needed = [];
                for (const fk of fks) {
                  const hit = await pool.query(
                    `SELECT 1 FROM ${fk.child} c WHERE (${fk.cols.map((x: string) => `c.${x}`).join(', ')}) IN (SELECT ${fk.refcols.join(', ')} FROM ${qualified(ref)}) LIMIT 1`,
                  );
                  if (hit.rowCount) needed.push(fk.child);
                }
                if (needed.length) {
                  report.skipped.push({
                    partition: part.name,
                    reason: `rows in ${needed.join(', ')} still reference it`,
                  });
                  continue;
                }
                await archiveLog(pool, spec, part.name, 'detaching');
                let note: string | undefined;
                if (p.def) {
                  note =
                    'plain DETACH (a brief exclusive lock on the parent): DETACH CONCURRENTLY is refused while a default partition exists';
                  await withLockRetry(pool, l, 'detach', spec.lockTimeoutMs, (c) =>
                    c.query(`ALTER TABLE ${qualified(spec.table)} DETACH PARTITION ${qualified(ref)}`),
                  );
                } else {
                  const c = await pool.connect();
                  try {
                    await c.query(`SET lock_timeout = ${spec.lockTimeoutMs * 20}`);
                    await c.query(
                      `ALTER TABLE ${qualified(spec.table)} DETACH PARTITION ${qualified(ref)} CONCURRENTLY`,
                    );
                  } finally {
                    await c.query('RESET lock_timeout').catch(() => undefined);
                    c.release();
                  }
                  note = 'DETACH CONCURRENTLY';
                }
                await archiveLog(pool, spec, part.name, 'detached', { note });
                pending.push(part.name);
              }
              for (const name of pending) {
                const ref = { schema: spec.table.schema, name };
                const exists = (await pool.query(`SELECT to_regclass($1) IS NOT NULL AS ok`, [qualified(ref)])).rows[0]
                  .ok;
                if (!exists) {
                  await archiveLog(pool, spec, name, 'archived');
                  continue;
                }
                const entry: TableReport['archived'][number] = { partition: name, mode: spec.archive };
                if (spec.archive === 'detach') {
                  // one archive schema per source schema: partitions of same-named tables in two schemas never meet
                  const archive = archiveSchema(spec.table.schema);
                  await pool.query(`CREATE SCHEMA IF NOT EXISTS ${q(archive)}`);
                  await withLockRetry(pool, l, 'archive', spec.lockTimeoutMs, (c) =>
                    c.query(`ALTER TABLE ${qualified(ref)} SET SCHEMA ${q(archive)}`),
                  );
                  entry.note = `now ${displayName({ schema: archive, name })}`;
                } else if (spec.archive === 'drop') {
                  await withLockRetry(pool, l, 'drop', spec.lockTimeoutMs, (c) =>
                    c.query(`DROP TABLE ${qualified(ref)}`),
                  );
                } else if (spec.archive === 'dump') {
                  const d = await dumpPartition(ref);
                  Object.assign(entry, {
                    file: d.file,
                    rows: d.rows,
                    note: `verified: ${d.rows} rows, sha256 ${d.sha256.slice(0, 12)}…`,
                  });
                  await archiveLog(pool, spec, name, 'dumped', {
                    file: d.file,
                    rows: d.rows,
                    sha256: d.sha256,
                    checksum: d.checksum,
                  });
                  await withLockRetry(pool, l, 'drop', spec.lockTimeoutMs, (c) =>
                    c.query(`DROP TABLE ${qualified(ref)}`),
                  );
                } else {
                  entry.note = `detached, left as ${qualified(ref)}`;
                }
                await archiveLog(pool, spec, name, 'archived');
                report.archived.push(entry);
              }
              if (report.archived.length) p = await inTransaction(pool, (c) => inspect(c, spec), { readOnly: true });
            }

            // 5. health
            const nextMonth = `${formatMonth(addMonths(p.current, 1))}-01 00:00:00`;
            for (const part of [...p.parts].sort((a, b) => (a.lo < b.lo ? -1 : 1))) {
              const h: PartitionHealth = {
                name: part.name,
                from: part.lo,
                to: part.hi,
                rowsEstimated: part.est < 0 ? null : part.est,
                bytes: part.bytes,
              };
              if (spec.exactCounts)
                h.rowsExact = Number(
                  (await pool.query(`SELECT count(*) AS n FROM ${qualified({ schema: part.schema, name: part.name })}`))
                    .rows[0].n,
                );
              report.partitions.push(h);
            }
            if (p.def)
              report.defaultPartition = {
                name: p.def.name,
                rows: Number((await pool.query(`SELECT count(*) AS n FROM ${qualified(p.def)}`)).rows[0].n),
              };
            report.futurePartitions = p.parts.filter((x) => x.lo >= nextMonth).length;
            report.oldestPartition = report.partitions[0]?.name ?? null;
            if (report.futurePartitions < spec.premake)
              report.warnings.push(
                `Only ${report.futurePartitions} future partition(s), fewer than premake ${spec.premake}.`,
              );
            if (report.defaultPartition && report.defaultPartition.rows > 0)
              report.warnings.push(
                `${report.defaultPartition.name} holds ${report.defaultPartition.rows} row(s) that no monthly partition covers.`,
              );
            const past = report.partitions
              .filter((x) => x.to <= `${formatMonth(p.current)}-01 00:00:00` && x.bytes > 0)
              .map((x) => x.bytes)
              .sort((a, b) => a - b);
            if (past.length >= 3) {
              const median = past[Math.floor(past.length / 2)];
              for (const x of report.partitions.filter((y) => y.to <= `${formatMonth(p.current)}-01 00:00:00`)) {
                if (x.bytes > 4 * median || x.bytes < median / 4)
                  report.warnings.push(`${x.name} is ${x.bytes} bytes, far from the median ${median}.`);
              }
            }
            metrics.partitionsCreated(report.table, report.created.length);
            metrics.partitionsArchived(report.table, report.archived.length);
            if (report.defaultPartition) metrics.defaultRows(report.table, report.defaultPartition.rows);
            l.info(
              { created: report.created.length, archived: report.archived.length, warnings: report.warnings },
              'maintained',
            );
            return report;
          },
        );
      } catch (err) {
        classify(err, `maintenance of ${displayName(spec.table)}`);
      }
    },
  };
}

export type MaintenanceActivities = ReturnType<typeof createMaintenanceActivities>;
