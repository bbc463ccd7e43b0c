/**
 * Replica-aware throttling, the pure part: the operator's bounds and the decision whether the copy may
 * write now. The copy (and every other bulk write of partflow) waits while a standby it can see from the
 * primary (`pg_stat_replication`) replays more than `maxReplicaLagBytes` or `maxReplicaLagSeconds` behind,
 * while a replication slot holds more than `maxReplicaLagBytes` of WAL, or while partflow's own WAL rate is
 * over `maxWalBytesPerSecond`. It fails closed: a standby seen earlier in the run that is gone, or a lag that
 * cannot be read (a role without pg_monitor sees NULL), holds the copy too, unless `ignoreUnknownReplicaLag`.
 */
import { InputError } from './ident';

export interface ReplicaBounds {
  maxReplicaLagBytes: number;
  maxReplicaLagSeconds: number;
  /** null: no cap on the WAL rate */
  maxWalBytesPerSecond: number | null;
  /** true: a standby that vanished or whose lag cannot be read does not hold the copy */
  ignoreUnknownReplicaLag: boolean;
  /**
   * the application-latency bound: the copy holds while partflow's probe of a commit (what every application
   * write waits for) takes longer than this multiple of the same probe with the copy idle; null: no bound.
   * Absent in bounds from before it (no bound).
   */
  maxAppLatencyRatio?: number | null;
}

/** 128 MiB of WAL (a few seconds of a standby's replay) and 10 s. */
export const DEFAULT_REPLICA_BOUNDS: ReplicaBounds = {
  maxReplicaLagBytes: 128 * 1024 * 1024,
  maxReplicaLagSeconds: 10,
  maxWalBytesPerSecond: null,
  ignoreUnknownReplicaLag: false,
  maxAppLatencyRatio: 1.5,
};

export const REPLICA_FIELDS = [
  'maxReplicaLagBytes',
  'maxReplicaLagSeconds',
  'maxWalBytesPerSecond',
  'ignoreUnknownReplicaLag',
  'maxAppLatencyRatio',
] as const;

/** The bounds given in an input (partitionTable's or the `throttle` update's): only the fields present. */
export function replicaBoundsFrom(raw: Record<string, unknown>, where: string): Partial<ReplicaBounds> {
  const out: Partial<ReplicaBounds> = {};
  const positive = (k: string, max: number) => {
    const v = raw[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0 || v > max) {
      throw new InputError(`${where}"${k}" must be a number above 0 and at most ${max}, not ${JSON.stringify(v)}.`);
    }
    return v;
  };
  if (raw.maxReplicaLagBytes !== undefined)
    out.maxReplicaLagBytes = Math.floor(positive('maxReplicaLagBytes', 2 ** 50));
  if (raw.maxReplicaLagSeconds !== undefined) out.maxReplicaLagSeconds = positive('maxReplicaLagSeconds', 86_400);
  if (raw.maxWalBytesPerSecond === null) out.maxWalBytesPerSecond = null;
  else if (raw.maxWalBytesPerSecond !== undefined) {
    out.maxWalBytesPerSecond = Math.floor(positive('maxWalBytesPerSecond', 2 ** 40));
  }
  if (raw.maxAppLatencyRatio === null) out.maxAppLatencyRatio = null;
  else if (raw.maxAppLatencyRatio !== undefined) {
    const v = raw.maxAppLatencyRatio;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 1.05 || v > 100) {
      throw new InputError(
        `${where}"maxAppLatencyRatio" must be a number from 1.05 to 100, or null for no bound, ` +
          `not ${JSON.stringify(v)}.`,
      );
    }
    out.maxAppLatencyRatio = v;
  }
  if (raw.ignoreUnknownReplicaLag !== undefined) {
    if (typeof raw.ignoreUnknownReplicaLag !== 'boolean') {
      throw new InputError(`${where}"ignoreUnknownReplicaLag" must be true or false.`);
    }
    out.ignoreUnknownReplicaLag = raw.ignoreUnknownReplicaLag;
  }
  return out;
}

/** What the primary shows of one standby (`application_name@client_addr`) or one replication slot. */
export interface Standby {
  name: string;
  /** bytes of WAL written but not replayed; null when it cannot be read */
  lagBytes: number | null;
  /** replay_lag; null when idle (caught up) or unreadable */
  lagSeconds: number | null;
  /** not streaming with positions yet (state startup, or before its first report): recorded once it is */
  starting?: boolean;
}

export interface Slot {
  name: string;
  /** WAL the slot keeps from being removed; null when it cannot be read */
  heldBytes: number | null;
}

export interface ReplicaView {
  /** the primary's WAL insert position, bytes since 0/0 */
  walInsert?: number;
  standbys: Standby[];
  slots: Slot[];
  /** standbys seen earlier in the run */
  expected: string[];
}

/** Which bound holds the copy back now, and why; null when it may go on. */
export interface Hold {
  bound: 'maxReplicaLagBytes' | 'maxReplicaLagSeconds' | 'standbyGone' | 'lagUnknown' | 'maxAppLatencyRatio';
  reason: string;
}

const mb = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;

/**
 * `headroom`: the WAL the next batch is expected to write (the last one's), so that the lag stays under the
 * bound after it too; at most half the bound, so that a batch bigger than the bound still gets its turn.
 */
export function replicaHold(b: ReplicaBounds, v: ReplicaView, headroom = 0): Hold | null {
  const room = Math.min(Math.max(0, headroom), b.maxReplicaLagBytes / 2);
  for (const s of v.standbys) {
    if (s.lagBytes === null) {
      if (b.ignoreUnknownReplicaLag) continue;
      return {
        bound: 'lagUnknown',
        reason:
          `the replay lag of standby ${s.name} cannot be read; grant pg_monitor to partflow's role, ` +
          'or set "ignoreUnknownReplicaLag"',
      };
    }
    if (s.lagBytes + room > b.maxReplicaLagBytes) {
      return {
        bound: 'maxReplicaLagBytes',
        reason:
          `standby ${s.name} replays ${mb(s.lagBytes)} behind` +
          `${room ? ` (${mb(room)} more with the next batch)` : ''}, over ${mb(b.maxReplicaLagBytes)}`,
      };
    }
    if (s.lagSeconds !== null && s.lagSeconds > b.maxReplicaLagSeconds) {
      return {
        bound: 'maxReplicaLagSeconds',
        reason: `standby ${s.name} replays ${s.lagSeconds.toFixed(1)} s behind, over ${b.maxReplicaLagSeconds} s`,
      };
    }
  }
  for (const s of v.slots) {
    if (s.heldBytes === null) continue; // a slot never used holds nothing yet
    if (s.heldBytes + room > b.maxReplicaLagBytes) {
      return {
        bound: 'maxReplicaLagBytes',
        reason: `replication slot ${s.name} holds ${mb(s.heldBytes)} of WAL, over ${mb(b.maxReplicaLagBytes)}`,
      };
    }
  }
  const seen = new Set(v.standbys.map((s) => s.name));
  const gone = v.expected.filter((n) => !seen.has(n));
  if (gone.length && !b.ignoreUnknownReplicaLag) {
    return {
      bound: 'standbyGone',
      reason:
        `standby ${gone.join(', ')} was streaming earlier in the run and is gone, so its lag cannot be known; ` +
        'the copy waits for it (set "ignoreUnknownReplicaLag" to go on without it)',
    };
  }
  return null;
}

/** The worst lag now, for progress and metrics. */
export function worstLag(v: ReplicaView): { bytes: number | null; seconds: number | null; standbys: number } {
  const bytes = [...v.standbys.map((s) => s.lagBytes), ...v.slots.map((s) => s.heldBytes)].filter(
    (x): x is number => x !== null,
  );
  const seconds = v.standbys.map((s) => s.lagSeconds).filter((x): x is number => x !== null);
  return {
    bytes: bytes.length ? Math.max(...bytes) : null,
    seconds: seconds.length ? Math.max(...seconds) : null,
    standbys: v.standbys.length,
  };
}

/** How long to wait after writing `walBytes` in `elapsedMs` so that the rate stays under the cap. */
export function walRateWaitMs(walBytes: number, elapsedMs: number, maxWalBytesPerSecond: number | null): number {
  if (!maxWalBytesPerSecond || walBytes <= 0) return 0;
  return Math.max(0, Math.ceil((walBytes / maxWalBytesPerSecond) * 1000 - elapsedMs));
}

/** Probes kept for the application-latency bound: the median of the last ones decides. */
export const APP_PROBES = 5;

/**
 * Whether the application-latency bound holds the copy: the median of the recent commit probes against
 * `ratio` × the probe with the copy idle (`baselineMs`), with at least half a millisecond of room (a probe of
 * 0.2 ms doubles on any noise). A probe that failed (null) holds: the bound fails closed.
 */
export function appLatencyHold(
  ratio: number | null | undefined,
  baselineMs: number | undefined,
  recent: (number | null)[],
): Hold | null {
  if (!ratio || baselineMs === undefined || !recent.length) return null;
  if (recent.includes(null)) {
    return { bound: 'maxAppLatencyRatio', reason: 'the commit probe failed, so the application latency is unknown' };
  }
  const sorted = (recent as number[]).slice().sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)];
  const limit = Math.max(baselineMs * ratio, baselineMs + 0.5);
  if (median <= limit) return null;
  return {
    bound: 'maxAppLatencyRatio',
    reason:
      `a commit takes ${median.toFixed(2)} ms (median of the last ${sorted.length} probes), ` +
      `over ${limit.toFixed(2)} ms ` +
      `(${ratio} x ${baselineMs.toFixed(2)} ms with the copy idle)`,
  };
}
