/**
 * Archives of expired partitions: the log of how far each got (partflow.archive_log), the archive schema
 * of `detach`, and the verified, durable file of `dump`.
 */
import { spawn } from 'child_process';
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { pipeline } from 'stream/promises';
import * as zlib from 'zlib';
import type { Pool, PoolConfig } from 'pg';
import { failure } from '../../src/failures';
import { displayName, MAX_IDENT_BYTES, qualified, TableRef } from '../../src/ident';

export function archiveDir(): string {
  return process.env.PARTFLOW_ARCHIVE_DIR ?? path.join(os.homedir(), '.cache', 'partflow', 'archive');
}

/** Where `archive: "detach"` puts a schema's old partitions: `archive` for public, `archive_<schema>` otherwise. */
export function archiveSchema(schema: string): string {
  return schema === 'public' ? 'archive' : `archive_${schema}`.slice(0, MAX_IDENT_BYTES);
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

/**
 * The directory of one database's archives under `archiveDir()`: the database's name as it is when it is plain
 * ([A-Za-z0-9_-]), otherwise made safe with a hash of the exact name, so that no name (`..`, `a/b`) reaches
 * outside the archive directory.
 */
export function archiveDatabaseDir(db: string): string {
  const root = path.resolve(archiveDir());
  const plain = /^[A-Za-z0-9_-]+$/.test(db);
  const name = plain
    ? db
    : `${db.replace(/[^A-Za-z0-9_-]/g, '_')}-${createHash('sha256').update(db).digest('hex').slice(0, 10)}`;
  const dir = path.join(root, name);
  if (path.dirname(dir) !== root) throw new Error(`archive directory ${dir} is not inside ${root}`);
  return dir;
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

/** psql's COPY of the partition to stdout, connected the way the pool is. */
function psqlCopy(pool: Pool, part: TableRef) {
  const o = (pool as unknown as { options: PoolConfig }).options;
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
}

/** The sha256 and line count of a stream, piped on into `sink` when given. */
async function hashOf(stream: NodeJS.ReadableStream, sink?: NodeJS.WritableStream) {
  const h = createHash('sha256');
  let lines = 0;
  stream.on('data', (b: Buffer) => {
    h.update(b);
    for (const x of b) if (x === 10) lines++;
  });
  if (sink) await pipeline(stream, sink);
  else await new Promise((res, rej) => stream.on('end', res).on('error', rej));
  return { sha: h.digest('hex'), lines };
}

/** One COPY of the partition, hashed (and written to `sink`). */
async function copyOnce(pool: Pool, part: TableRef, sink?: NodeJS.WritableStream) {
  const p = psqlCopy(pool, part);
  let err = '';
  p.stderr.on('data', (d) => (err += d));
  const exit = new Promise<number>((res) => p.on('close', res));
  const r = await hashOf(p.stdout, sink);
  if ((await exit) !== 0) throw new Error(`psql COPY of ${displayName(part)} failed: ${err.trim()}`);
  return r;
}

/** What is needed to read the file back: its rows, hashes, the COPY settings and the column list. */
async function sidecarOf(pool: Pool, part: TableRef, file: string, rows: number, sha256: string) {
  const checksum = (
    await pool.query(`SELECT coalesce(sum(hashtextextended(t::text, 0)), 0)::text AS s FROM ${qualified(part)} t`)
  ).rows[0].s;
  const columns = (
    await pool.query(
      `SELECT quote_ident(attname) AS name, format_type(atttypid, atttypmod) AS type FROM pg_attribute
        WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum`,
      [qualified(part)],
    )
  ).rows as { name: string; type: string }[];
  const list = columns.map((c) => c.name).join(', ');
  return {
    table: `${part.schema}.${part.name}`,
    rows,
    sha256,
    checksum,
    format: 'COPY text, gzip',
    settings: DUMP_SETTINGS,
    columns,
    restore:
      `gunzip -c ${path.basename(file)} | ` +
      `PGOPTIONS='${DUMP_SETTINGS}' psql -c "COPY <table> (${list}) FROM STDIN"`,
  };
}

/** COPY to a gzip file, then prove the file holds exactly the table: same row count, same bytes as a fresh COPY. */
export async function dumpPartition(
  pool: Pool,
  part: TableRef,
): Promise<{ file: string; rows: number; sha256: string; checksum: string }> {
  const db = (await pool.query(`SELECT current_database() AS d`)).rows[0].d;
  const dir = archiveDatabaseDir(db);
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${archiveFileStem(part)}.copy.gz`);
  const tmp = `${file}.partial`;
  const gz = zlib.createGzip();
  const written = copyOnce(pool, part, gz);
  await Promise.all([written, pipeline(gz, fs.createWriteStream(tmp))]);
  const first = await written;
  const readBack = await hashOf(fs.createReadStream(tmp).pipe(zlib.createGunzip()));
  const again = await copyOnce(pool, part);
  const count = Number((await pool.query(`SELECT count(*) AS n FROM ${qualified(part)}`)).rows[0].n);
  if (readBack.sha !== first.sha || again.sha !== first.sha || readBack.lines !== count) {
    throw failure(
      `The archive of ${displayName(part)} does not match the table ` +
        `(${readBack.lines} rows in the file, ${count} in the table); the table is kept.`,
      'ArchiveMismatch',
    );
  }
  const sidecar = await sidecarOf(pool, part, file, count, first.sha);
  // on disk before the DROP commits: the file, its new name (the directory), the sidecar
  fsyncFile(tmp);
  fs.renameSync(tmp, file);
  fs.writeFileSync(`${file}.json`, JSON.stringify(sidecar, null, 2));
  fsyncFile(`${file}.json`);
  fsyncFile(dir);
  return { file, rows: count, sha256: first.sha, checksum: sidecar.checksum };
}
