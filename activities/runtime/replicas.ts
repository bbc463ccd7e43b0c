/**
 * What the primary shows of its standbys and replication slots, and the wait of a bulk step while one of
 * the operator's bounds holds it back (src/replicas.ts decides).
 */
import type { Pool, PoolClient } from 'pg';
import type { TableRef } from '../../src/ident';
import type { AppProbeSql } from '../../src/plan/backfill';
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
import { RUNS } from './deps';

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
 * The standbys and slots now, and the standbys seen before (these recorded with them). Lags are measured from
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
                      'lagSeconds', extract(epoch FROM replay_lag)::float8) ORDER BY application_name), '[]')
               FROM pg_stat_replication) AS standbys,
            (SELECT coalesce(json_agg(json_build_object(
                      'name', slot_name,
                      'heldBytes', pg_wal_lsn_diff(pg_current_wal_insert_lsn(),
                                                   coalesce(confirmed_flush_lsn, restart_lsn))::float8)
                      ORDER BY slot_name), '[]')
               FROM pg_replication_slots) AS slots`,
  );
  const { wal, standbys, slots } = now.rows[0] as { wal: number; standbys: Standby[]; slots: Slot[] };
  const before = await known.load();
  const expected = [...new Set([...before, ...standbys.map((r) => r.name)])].sort();
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
/** How often the probe reads a fresh set of the table's keys. */
const PROBE_KEYS_EVERY_MS = 30_000;

/**
 * The application-latency bound's probe on one connection: with the plan's AppProbeSql, a primary-key lookup
 * of a row of the table taken at random (keys read again every PROBE_KEYS_EVERY_MS, not timed) in a statement
 * that also commits a transaction ID; without it (plans made before it, or a table with no rows yet),
 * commitProbe. Null when a probe fails.
 */
export class AppProbe {
  private keys: string[][] = [];
  private keysAt = 0;
  constructor(
    private readonly c: Pool | PoolClient,
    private readonly sql?: AppProbeSql,
  ) {}

  async once(): Promise<number | null> {
    if (!this.sql) return commitProbe(this.c);
    try {
      if (Date.now() - this.keysAt > PROBE_KEYS_EVERY_MS) {
        await this.c.query(`SET lock_timeout = '${PROBE_LOCK_TIMEOUT}'`);
        this.keys = (await this.c.query({ text: this.sql.keys, rowMode: 'array' })).rows;
        this.keysAt = Date.now();
      }
    } catch {
      return null;
    }
    if (!this.keys.length) return commitProbe(this.c);
    const key = this.keys[Math.floor(Math.random() * this.keys.length)];
    const t0 = performance.now();
    try {
      await this.c.query(this.sql.read, key);
    } catch {
      return null;
    }
    return performance.now() - t0;
  }

  /** Before the connection goes back to its pool: the probe's lock_timeout goes (a connection that fails goes too). */
  async release(c: PoolClient): Promise<void> {
    const ok = await c.query('RESET lock_timeout').then(
      () => true,
      () => false,
    );
    c.release(!ok);
  }
}

/** Probes of the baseline, PACE.probeEveryMs / 2 apart: enough for the quantile the pacer compares. */
const BASELINE_PROBES = 101;

/**
 * The probe with the copy idle: the quantile the pacer compares (PACE.quantile) of BASELINE_PROBES of them,
 * on a connection of its own (about three seconds).
 */
export async function probeBaseline(pool: Pool, sql?: AppProbeSql): Promise<number> {
  const c = await pool.connect();
  const probe = new AppProbe(c, sql);
  try {
    const xs: number[] = [];
    for (let i = 0; i < BASELINE_PROBES; i++) {
      const p = await probe.once();
      if (p !== null) xs.push(p);
      await sleep(PACE.probeEveryMs / 2);
    }
    return xs.length ? quantile(xs, PACE.quantile) : 0;
  } finally {
    await probe.release(c);
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
  constructor(
    private readonly c: PoolClient,
    readonly samples: Sample[],
    sql?: AppProbeSql,
  ) {
    this.probe = new AppProbe(c, sql);
  }

  start(): this {
    this.loop = (async () => {
      while (!this.stopped) {
        const ms = await this.probe.once();
        this.samples.push({ at: Date.now(), ms });
        if (this.samples.length > 4 * PACE.window) this.samples.splice(0, this.samples.length - 2 * PACE.window);
        await sleep(PACE.probeEveryMs);
      }
    })();
    return this;
  }

  /** Stops the loop and gives the connection back. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
    await this.probe.release(this.c);
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
