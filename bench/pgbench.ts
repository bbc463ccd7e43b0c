/**
 * pgbench (from Debian's PostgreSQL packages) at a fixed rate, in back-to-back rounds for as long as
 * `during` runs, with per-transaction logs: what the benchmark's application-impact figures and the fault
 * suite's pgbench scenario both measure.
 */
import { execFile } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

export interface PgbenchTx {
  startMs: number;
  endMs: number;
  /** from the scheduled start under --rate, so it includes any lag */
  latencyMs: number;
  /**
   * pgbench's schedule lag (its 7th log column under --rate): from the scheduled start to the moment its client
   * thread sent the transaction. Part of latencyMs; on this machine mostly pgbench's own thread waiting for a CPU
   */
  lagMs: number;
}

export interface PgbenchResult {
  /** committed transactions, from the per-transaction logs */
  tx: PgbenchTx[];
  /** failed transactions, from pgbench's summaries */
  failed: number;
  /** rounds in which a client aborted */
  abortedRounds: number;
  rounds: number;
}

export interface PgbenchOptions {
  conn: { host?: string; port: number; user?: string; database: string };
  /** script files, optionally with pgbench's `@weight` */
  scripts: string[];
  clients: number;
  rate: number;
  roundSeconds?: number;
}

export async function pgbenchWhile(opts: PgbenchOptions, during: () => Promise<void>): Promise<PgbenchResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pf-pgbench-'));
  const result: PgbenchResult = { tx: [], failed: 0, abortedRounds: 0, rounds: 0 };
  let stop = false;
  const rounds = (async () => {
    while (!stop) {
      const args = [
        '-n',
        '-c',
        String(opts.clients),
        '-j',
        '1',
        '-R',
        String(opts.rate),
        '-T',
        String(opts.roundSeconds ?? 5),
        '--max-tries',
        '1',
        '-l',
        `--log-prefix=${path.join(dir, `r${++result.rounds}`)}`,
        ...opts.scripts.flatMap((s) => ['-f', s]),
        '-h',
        String(opts.conn.host),
        '-p',
        String(opts.conn.port),
        '-U',
        String(opts.conn.user),
        opts.conn.database,
      ];
      const out = await new Promise<string>((resolve) => execFile('pgbench', args, (_e, o, e) => resolve(o + e)));
      const failed = /number of failed transactions: (\d+)/.exec(out);
      if (!failed) throw new Error(`pgbench printed no summary: ${out.trim().split('\n').slice(-3).join(' ')}`);
      result.failed += Number(failed[1]);
      if (/aborted/i.test(out)) result.abortedRounds++;
    }
  })();
  try {
    await during();
  } finally {
    stop = true;
    await rounds;
  }
  for (const f of fs.readdirSync(dir)) {
    for (const l of fs.readFileSync(path.join(dir, f), 'utf8').split('\n')) {
      const x = l.trim().split(/\s+/);
      if (x.length < 6 || x[2] === 'failed') continue; // failed ones are counted from the summaries
      const latencyMs = Number(x[2]) / 1000;
      const endMs = Number(x[4]) * 1000 + Number(x[5]) / 1000;
      result.tx.push({ startMs: endMs - latencyMs, endMs, latencyMs, lagMs: Number(x[6] ?? 0) / 1000 });
    }
  }
  fs.rmSync(dir, { recursive: true, force: true });
  return result;
}
