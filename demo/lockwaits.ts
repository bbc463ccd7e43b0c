/**
 * Samples, every `everyMs`, the application's statements (sessions with the given application_name) that wait
 * for a lock (a table, a row or a transaction: pg_stat_activity's wait_event_type 'Lock') and keeps the
 * longest wait seen per statement, with when it began. The demo's writers and the benchmark's pgbench run
 * single statements on rows chosen at random, so a lock wait there is partflow's doing (or, rarely, two of
 * them on the same row): the direct measure of the waits partflow causes, to `everyMs`.
 */
import { Client, ClientConfig } from 'pg';

export interface LockWait {
  ms: number;
  /** when the waiting statement began, epoch ms */
  at: number;
  /** the wait event, the statement's start and the start of the statement it waits behind */
  what: string;
}

export class LockWaitSampler {
  private longest = new Map<string, LockWait>();
  private stopped = false;
  private loop: Promise<void> | null = null;
  private client: Client;

  constructor(
    conn: ClientConfig,
    private applicationName: string,
    private everyMs = 10,
  ) {
    this.client = new Client({ ...conn, application_name: 'partflow-lock-sampler' });
  }

  async start(): Promise<void> {
    await this.client.connect();
    this.client.on('error', () => undefined);
    this.loop = this.sample().catch(() => undefined);
  }

  private async sample(): Promise<void> {
    while (!this.stopped) {
      const r = await this.client.query(
        `SELECT pid, extract(epoch FROM query_start) * 1000 AS started,
                extract(epoch FROM clock_timestamp() - query_start) * 1000 AS ms,
                wait_event || ': ' || left(query, 40) || coalesce(' behind ' || (
                  SELECT left(b.query, 60) FROM pg_stat_activity b WHERE b.pid = (pg_blocking_pids(a.pid))[1]), '') AS what
           FROM pg_stat_activity a
          WHERE application_name = $1 AND wait_event_type = 'Lock' AND datname = current_database()`,
        [this.applicationName],
      );
      for (const x of r.rows) {
        const key = `${x.pid}@${x.started}`;
        const ms = Number(x.ms);
        if (ms > (this.longest.get(key)?.ms ?? 0)) this.longest.set(key, { ms, at: Number(x.started), what: x.what });
      }
      await new Promise((res) => setTimeout(res, this.everyMs));
    }
  }

  /** Stops sampling; the waits seen, longest first. */
  async stop(): Promise<LockWait[]> {
    this.stopped = true;
    await this.loop;
    await this.client.end().catch(() => undefined);
    return [...this.longest.values()].sort((a, b) => b.ms - a.ms);
  }
}
