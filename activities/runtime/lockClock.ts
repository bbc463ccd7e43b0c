/**
 * How long a step's transaction held its locks, as the application meets them: from the LOCK statement to the
 * moment a session queued behind them goes on.
 *
 * "Until COMMIT returned" over-counts whenever the transaction dropped storage: PostgreSQL releases its locks
 * first and unlinks the dropped files after (xact.c, CommitTransaction: "this may take many seconds, also
 * delay until after releasing locks"). Measured on PostgreSQL 15 here: the COMMIT of a DROP INDEX of 428 MB
 * returned after 114 ms, while a session queued behind the lock went on after 4 ms. The attach path's
 * cut-over drops the original primary key's index, so its COMMIT grows with the table and its locks do not.
 *
 * The watcher is a second connection, taken before the lock, that queues `SELECT ... WHERE false` behind it
 * as the transaction's last statement and is seen waiting in pg_locks before the step returns (so COMMIT goes
 * out only after it queued). If it cannot be seen queued, the COMMIT's return is the figure (never less).
 */
import { Pool, PoolClient } from 'pg';

export class LockClock {
  private lockedAt = 0;
  private armed?: Promise<number>;
  private watcher?: PoolClient;
  private watcherPid = 0;

  private constructor(
    private readonly pool: Pool,
    private readonly relation: string,
  ) {}

  /** Before the step: its watcher's connection, so nothing under the lock waits for a new one. */
  static async open(pool: Pool, relation: string): Promise<LockClock> {
    const clock = new LockClock(pool, relation);
    try {
      clock.watcher = await pool.connect();
      // a watcher queued behind another session's lock too (a deploy's ALTER) gives up in 5 s: then the
      // COMMIT's return is the figure, and the step is not kept from heartbeating for long
      const r = await clock.watcher.query(`SET lock_timeout = '5s'; SELECT pg_backend_pid() AS pid`);
      clock.watcherPid = Number((r as unknown as { rows: { pid: number }[] }[])[1].rows[0].pid);
    } catch {
      clock.watcher?.release(true); // the COMMIT's return will be the figure
      clock.watcher = undefined;
    }
    return clock;
  }

  /**
   * Right before the step's LOCK statement (each attempt): a LOCK of several tables holds the first while it
   * waits for the next, so the hold is counted from its start (more, by at most its waits, never less).
   */
  locked(): void {
    this.lockedAt = Date.now();
    this.armed = undefined;
  }

  /** The last thing in the transaction on `c`: queue the watcher behind its locks. */
  async arm(c: PoolClient): Promise<void> {
    const w = this.watcher;
    if (!w) return;
    const done = w.query(`SELECT 1 FROM ONLY ${this.relation} WHERE false`).then(
      () => Date.now(),
      () => Number.NaN,
    );
    for (let i = 0; i < 50; i++) {
      const q = await c.query('SELECT EXISTS (SELECT FROM pg_locks WHERE pid = $1 AND NOT granted) AS queued', [
        this.watcherPid,
      ]);
      if (q.rows[0].queued) {
        this.armed = done;
        return;
      }
    }
    // not seen queued: its figure could come before the release; wait for it after the COMMIT and ignore it
    this.armed = done.then(() => Number.NaN);
  }

  /**
   * The step's body timed: from its first statement (the LOCK; a LOCK of several tables holds the first while it
   * waits for the next) to its last, the watcher queued.
   */
  timed<T>(fn: (c: PoolClient) => Promise<T>): (c: PoolClient) => Promise<T> {
    return async (c) => {
      this.locked();
      const result = await fn(c);
      await this.arm(c);
      return result;
    };
  }

  /** After the COMMIT returned: milliseconds from the grant to the release. */
  async heldMs(): Promise<number> {
    const committed = Date.now();
    const released = this.armed ? await this.armed : Number.NaN;
    const upTo = Number.isFinite(released) ? Math.min(released, committed) : committed;
    return Math.max(0, upTo - this.lockedAt);
  }

  /** The COMMIT's return, for the log beside the release. */
  commitMs(): number {
    return Date.now() - this.lockedAt;
  }

  close(): void {
    const w = this.watcher;
    this.watcher = undefined;
    if (!w) return;
    // its lock_timeout must not stay on a pooled connection (a preflight waiting for a lock on it failed after
    // 5 s: CI, 2026-12-05); a watcher still queued is let go once its query ends (pg runs the RESET after it)
    const giveBack = () =>
      w.query('RESET lock_timeout').then(
        () => w.release(),
        (err: Error) => w.release(err),
      );
    if (this.armed) void this.armed.finally(giveBack);
    else void giveBack();
  }
}
