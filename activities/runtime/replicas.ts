/**
 * What the primary shows of its standbys and replication slots, and the wait of a bulk step while one of
 * the operator's bounds holds it back (src/replicas.ts decides).
 */
import type { Pool, PoolClient } from 'pg';
import type { TableRef } from '../../src/ident';
import { PROBE_TABLE, type AppProbeSql } from '../../src/plan/backfill';
import {
  APP_PROBES,
  appLatencyHold,
  Hold,
  ReplicaBounds,
  replicaHold,
  ReplicaView,
  Slot,
  Standby,
  walRateWaitMs,
  worstLag,
} from '../../src/replicas';
import { PACE, quantile, Sample } from '../../src/pacer';
import { activityContext, sleep } from './db';
import { metrics } from './metrics';
import { RUNS } from './runStore';

/**
 * The standbys a bulk step has seen streaming: a partitionTable run keeps them in partflow.runs (so that a
 * worker that takes over still knows them), a repair in memory for its activity.
 */
export interface KnownStandbys {
  load(): Promise<string[]>;
  save(names: string[]): Promise<void>;
}

/** Read from partflow.runs once per chunk, written back only when a new standby shows up. */
export function runStandbys(pool: Pool, table: TableRef): KnownStandbys {
  const key = [table.schema, table.name];
  let known: string[] | null = null;
  return {
    load: async () =>
      (known ??=
        (await pool.query(`SELECT standbys FROM ${RUNS} WHERE table_schema = $1 AND table_name = $2`, key)).rows[0]
          ?.standbys ?? []),
    save: async (names) => {
      await pool.query(`UPDATE ${RUNS} SET standbys = $3 WHERE table_schema = $1 AND table_name = $2`, [...key, names]);
      known = names;
    },
  };
}

export function memoryStandbys(): KnownStandbys {
  let known: string[] = [];
  return { load: async () => known, save: async (names) => void (known = names) };
}

/**
 * The standbys and slots now, and the standbys seen before (these recorded with them). A standby is a physical
 * walsender (connected to no database) whose receiver replays; so none of these is one (reviews helper-26 and
 * helper-27, 2026-12-06; a first, name-based form missed a real standby named pg_basebackup):
 * - a base backup's copy of the files (state `backup`);
 * - a receiver that reports a write position and never a replay position (the WAL stream of pg_basebackup,
 *   pg_receivewal, Barman's receive-wal; a standby reports the three together). Recorded, such a stream held a
 *   run as `lagUnknown` while it ran and as `standbyGone` once it ended (the demo's run, after a test's
 *   pg_basebackup);
 * - a logical walsender (a subscription, its table syncs, pg_recvlogical, a CDC client): its slot holds the WAL
 *   it has not confirmed, and the slot is bounded by maxReplicaLagBytes as every slot is. As a standby, a dropped
 *   subscription held a run as `standbyGone` for good, and a table sync while it copied as `lagUnknown`.
 * A standby not streaming yet, or before its receiver's first report, counts for the lag bounds (unknown lag:
 * held) but is recorded only once it streams with positions (where the role cannot read the state, without
 * pg_monitor, at once, as before: then a pg_receivewal is recorded too). Lags are measured from
 * the WAL insert position, not the write position: with asynchronous commit (the backfill's) the WAL writer
 * is up to wal_writer_delay behind, and the lag would show that much too little.
 */
export async function observeReplicas(pool: Pool, known: KnownStandbys): Promise<ReplicaView> {
  // one round trip before every batch: the insert position, the standbys and the slots
  const now = await pool.query(
    `SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::float8 AS wal,
            (SELECT coalesce(json_agg(json_build_object(
                      'name', coalesce(nullif(application_name, ''), 'walreceiver') || '@'
                              || coalesce(client_addr::text, 'local'),
                      'lagBytes', pg_wal_lsn_diff(pg_current_wal_insert_lsn(), replay_lsn)::float8,
                      'lagSeconds', extract(epoch FROM replay_lag)::float8,
                      'starting', NOT (state IS NULL OR state IN ('streaming', 'catchup') AND write_lsn IS NOT NULL))
                      ORDER BY application_name), '[]')
               FROM pg_stat_replication r
              WHERE state IS DISTINCT FROM 'backup'
                AND NOT (replay_lsn IS NULL AND write_lsn IS NOT NULL)
                AND (SELECT a.datid FROM pg_stat_get_activity(r.pid) a) IS NULL)
            AS standbys,
            (SELECT coalesce(json_agg(json_build_object(
                      'name', slot_name,
                      'heldBytes', pg_wal_lsn_diff(pg_current_wal_insert_lsn(),
                                                   coalesce(confirmed_flush_lsn, restart_lsn))::float8)
                      ORDER BY slot_name), '[]')
               FROM pg_replication_slots) AS slots`,
  );
  const { wal, standbys, slots } = now.rows[0] as { wal: number; standbys: Standby[]; slots: Slot[] };
  const before = await known.load();
  const streaming = standbys.filter((r) => !r.starting).map((r) => r.name);
  const expected = [...new Set([...before, ...streaming])].sort();
  if (expected.length !== before.length) await known.save(expected);
  return { walInsert: wal, standbys, slots, expected };
}

export interface Throttled {
  bound: Hold['bound'];
  reason: string;
  /** when this hold began (ISO time) */
  since: string;
}

export type Lag = ReturnType<typeof worstLag>;

/**
 * Waits while a bound holds the copy back, until `deadline` (then the chunk ends and the workflow reports
 * it). Returns the hold still in force at the deadline, or null, and the last lag seen.
 */
export async function waitForReplicas(
  pool: Pool,
  what: { label: string; known: KnownStandbys },
  bounds: ReplicaBounds,
  deadline: number,
  held: Throttled | null,
  headroom = 0,
): Promise<{ held: Throttled | null; lag: Lag; walInsert: number; walAtFirstLook: number }> {
  const ctx = activityContext();
  let walAtFirstLook: number | null = null;
  for (;;) {
    const view = await observeReplicas(pool, what.known);
    walAtFirstLook ??= view.walInsert ?? 0;
    const lag = worstLag(view);
    const hold = replicaHold(bounds, view, headroom);
    metrics.replicaLag(what.label, lag.bytes, lag.seconds, hold?.bound ?? null);
    const walInsert = view.walInsert ?? 0;
    if (!hold) return { held: null, lag, walInsert, walAtFirstLook };
    held = held?.bound === hold.bound ? { ...held, reason: hold.reason } : { ...hold, since: new Date().toISOString() };
    ctx?.heartbeat({ throttledBy: held.bound });
    if (Date.now() >= deadline || ctx?.cancellationSignal.aborted) return { held, lag, walInsert, walAtFirstLook };
    await sleep(Math.min(200, Math.max(0, deadline - Date.now())));
  }
}

/** The WAL position now, as bytes since 0/0. */
export async function walPosition(pool: Pool): Promise<number> {
  return Number(
    (await pool.query(`SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::float8 AS b`)).rows[0].b,
  );
}

/** Sleeps so that the WAL written since `from` stays under the cap. */
export async function capWalRate(
  pool: Pool,
  bounds: ReplicaBounds,
  from: { bytes: number; at: number },
): Promise<void> {
  if (!bounds.maxWalBytesPerSecond) return;
  const wait = walRateWaitMs((await walPosition(pool)) - from.bytes, Date.now() - from.at, bounds.maxWalBytesPerSecond);
  if (wait > 0) await sleep(wait);
}

/**
 * One commit as an application makes it, timed: `SELECT txid_current()` alone takes an xid, so its commit
 * writes a commit record and waits as the server's synchronous_commit says, behind the same WAL, CPU and
 * I/O as the application's writes. Null when it fails (the bound then holds: fail closed). The probe of plans
 * made before the application-shaped one (AppProbe).
 */
export async function commitProbe(c: Pool | PoolClient): Promise<number | null> {
  const t0 = performance.now();
  try {
    await c.query('SELECT txid_current()');
  } catch {
    return null;
  }
  return performance.now() - t0;
}

/** Longest a probe waits for a lock: one stuck behind the application's DDL fails, and the bound holds. */
const PROBE_LOCK_TIMEOUT = '1s';
/** How often the probe reads a fresh set of the table's rows. */
const PROBE_KEYS_EVERY_MS = 30_000;

/**
 * The application-latency bound's probe on one connection: with the plan's AppProbeSql, a lookup of a row of
 * the table taken at random and a one-row upsert, committed (rows read again every PROBE_KEYS_EVERY_MS, not
 * timed); without it (plans made before it, or a table with no rows yet), commitProbe. A probe that fails
 * returns null (the bound then holds) and keeps its error in `lastError`.
 */
export class AppProbe {
  private tids: string[] = [];
  private tidsAt = 0;
  lastError: string | null = null;
  constructor(
    private readonly c: PoolClient,
    private readonly sql?: AppProbeSql,
  ) {}

  async once(): Promise<number | null> {
    if (!this.sql) return this.timed(() => this.c.query('SELECT txid_current()'));
    try {
      if (Date.now() - this.tidsAt > PROBE_KEYS_EVERY_MS) {
        await this.c.query(`SET lock_timeout = '${PROBE_LOCK_TIMEOUT}'`);
        this.tids = (await this.c.query(this.sql.keys)).rows.map((r) => r.tid);
        this.tidsAt = Date.now();
      }
    } catch (err) {
      this.lastError = (err as Error).message;
      return null;
    }
    if (!this.tids.length) return this.timed(() => this.c.query('SELECT txid_current()'));
    const i = Math.floor(Math.random() * this.tids.length);
    let found = true;
    const ms = await this.timed(async () => {
      found = (await this.c.query(this.sql!.read, [this.tids[i]])).rows[0]?.found !== false;
    });
    // a row updated since its TID was read is not there any more: its TID goes, and a short list is read again
    if (!found) {
      this.tids.splice(i, 1);
      if (this.tids.length < 32) this.tidsAt = 0;
    }
    return ms;
  }

  private async timed(work: () => Promise<unknown>): Promise<number | null> {
    const t0 = performance.now();
    try {
      await work();
    } catch (err) {
      this.lastError = (err as Error).message;
      return null;
    }
    return performance.now() - t0;
  }

  /** Before the connection goes back to its pool: the probe's row and lock_timeout go (else the connection). */
  async release(): Promise<void> {
    const ok = await this.c
      .query(
        this.sql
          ? 'RESET lock_timeout; ' +
              `DELETE FROM ${PROBE_TABLE} WHERE pid = pg_backend_pid() OR pid NOT IN (SELECT pid FROM pg_stat_activity)`
          : 'SELECT 1',
      )
      .then(
        () => true,
        () => false,
      );
    this.c.release(!ok);
  }
}

/** Probes of the baseline, PACE.probeEveryMs / 2 apart (about four seconds). */
const BASELINE_PROBES = 201;

/**
 * The probe with the copy idle: the quantile the pacer compares (PACE.quantile) of BASELINE_PROBES of them,
 * on a connection of its own. Plans made before the application-shaped probe: the 90th percentile of 21 bare
 * commits, as they were measured (their pacer, src/pacer.ts LEGACY_PACE, compares its 95th percentile).
 */
export async function probeBaseline(pool: Pool, sql?: AppProbeSql, client?: PoolClient): Promise<number> {
  const probe = new AppProbe(client ?? (await pool.connect()), sql);
  const [n, p] = sql ? [BASELINE_PROBES, PACE.quantile] : [21, 0.9];
  try {
    const xs: number[] = [];
    for (let i = 0, failedInARow = 0; i < n; i++) {
      const ms = await probe.once();
      if (ms !== null) xs.push(ms);
      failedInARow = ms === null ? failedInARow + 1 : 0;
      // retried by Temporal (the sync's install looks before it acts); the error is the activity's last failure
      if (failedInARow >= 5) {
        throw new Error(
          `The application-latency probe failed 5 times in a row with the copy idle (${probe.lastError}), ` +
            'for example behind a lock held on the table; partflow tries again.',
        );
      }
      await sleep(PACE.probeEveryMs / 2);
    }
    return quantile(xs, p);
  } finally {
    await probe.release();
  }
}

/**
 * The probe every PACE.probeEveryMs on a connection of its own, from `start` to `stop`, appending to
 * `samples` (kept short): while the copy's batches run as much as between them.
 */
export class CommitProber {
  private stopped = false;
  private loop: Promise<void> = Promise.resolve();
  private readonly probe: AppProbe;
  /** when the probe in flight started, 0 when none is */
  private inFlightSince = 0;
  constructor(
    c: PoolClient,
    readonly samples: Sample[],
    sql?: AppProbeSql,
  ) {
    this.probe = new AppProbe(c, sql);
  }

  start(): this {
    this.loop = (async () => {
      while (!this.stopped) {
        this.inFlightSince = Date.now();
        const ms = await this.probe.once();
        this.inFlightSince = 0;
        this.samples.push(
          ms === null ? { at: Date.now(), ms, error: this.probe.lastError ?? undefined } : { at: Date.now(), ms },
        );
        if (this.samples.length > 4 * PACE.window) this.samples.splice(0, this.samples.length - 2 * PACE.window);
        await sleep(PACE.probeEveryMs);
      }
    })();
    return this;
  }

  /**
   * A probe still waiting after `ms` (a commit waiting for a synchronous standby, a lock): a failed sample now,
   * so the bound holds as it does for a probe that failed, instead of deciding on older samples.
   */
  markStuck(ms = 1000): void {
    const now = Date.now();
    if (this.inFlightSince && now - this.inFlightSince > ms) {
      this.samples.push({ at: now, ms: null, error: `a probe has been waiting for ${now - this.inFlightSince} ms` });
    }
  }

  /** Stops the loop and gives the connection back. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
    await this.probe.release();
  }
}

/**
 * While the pacer holds the copy (its longest pause was not enough): a look every 100 ms at the prober's
 * samples since `after`, until the median of the last APP_PROBES is under the bound (appLatencyHold) or
 * `deadline`. Returns the hold still in force at the deadline, or null.
 */
export async function waitForAppLatency(
  samples: Sample[],
  after: number,
  ratio: number,
  baselineMs: number,
  deadline: number,
  held: Throttled,
): Promise<Throttled | null> {
  const ctx = activityContext();
  for (;;) {
    const recent = samples.filter((s) => s.at >= after).slice(-APP_PROBES);
    const hold =
      recent.length < APP_PROBES
        ? held
        : appLatencyHold(
            ratio,
            baselineMs,
            recent.map((s) => s.ms),
          );
    if (!hold) return null;
    held = held.bound === hold.bound ? { ...held, reason: hold.reason } : { ...hold, since: new Date().toISOString() };
    ctx?.heartbeat({ throttledBy: held.bound });
    if (Date.now() >= deadline || ctx?.cancellationSignal.aborted) return held;
    await sleep(Math.min(100, Math.max(0, deadline - Date.now())));
  }
}
