/**
 * The streaming standby of the test cluster that scripts/standby.sh makes, and the replay lag the primary
 * shows of it: shared by the replica tests and bench:replica.
 */
import { execFile } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import type { Pool } from 'pg';

/** `scripts/standby.sh VERB PORT [ARGS]`: create (pg_basebackup -R), start, stop, remove, delay. */
export function standby(port: number | string, verb: string, ...args: string[]): Promise<void> {
  // from the source tree (ts-jest) or from dist/
  let root = __dirname;
  while (!fs.existsSync(path.join(root, 'scripts', 'standby.sh')) && root !== path.dirname(root)) {
    root = path.dirname(root);
  }
  const sh = path.join(root, 'scripts', 'standby.sh');
  return new Promise((resolve, reject) =>
    execFile('bash', [sh, verb, String(port), ...args], { timeout: 300_000 }, (err, _o, e) =>
      err ? reject(new Error(`standby.sh ${verb} ${args.join(' ')}: ${e || err.message}`)) : resolve(),
    ),
  );
}

/** The largest replay lag (bytes, from the WAL write position) of the standbys, or of the one named. */
export async function replayLag(pool: Pool, applicationName?: string): Promise<number | null> {
  const r = await pool.query(
    `SELECT max(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn))::float8 AS lag FROM pg_stat_replication
      WHERE $1::text IS NULL OR application_name = $1`,
    [applicationName ?? null],
  );
  return r.rows[0].lag;
}

/** Samples the replay lag every 100 ms while `work` runs; the largest sample. */
export async function peakLagWhile(
  pool: Pool,
  work: () => Promise<unknown>,
  applicationName?: string,
): Promise<number> {
  let peak = 0;
  let running = true;
  const sampler = (async () => {
    while (running) {
      peak = Math.max(peak, (await replayLag(pool, applicationName)) ?? 0);
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  try {
    await work();
  } finally {
    running = false;
    await sampler;
  }
  return peak;
}
