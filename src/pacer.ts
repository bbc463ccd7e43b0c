/**
 * The copy's pace under the application-latency bound (`maxAppLatencyRatio`), as pure decisions. A probe
 * runs every PACE.probeEveryMs on a connection of its own while the copy works, during its batches as much as
 * between them, so its samples see what an application transaction arriving at any moment sees (CPU, WAL
 * flushes and I/O shared with the copy). After each batch the copy takes a pause; the pause grows while the
 * probes' 99th percentile is over the bound and shrinks while it is well under, and only samples taken since
 * the pause last changed decide (the copy's pace has to show in them first). A pause already at its longest
 * that is still not enough holds the copy, as the replica bounds do; a probe that failed holds it too.
 */
import type { Hold } from './replicas';

export const PACE = {
  probeEveryMs: 40,
  /** samples since the last change needed to decide (4 s); at most the last `window` of them count (10 s) */
  minSamples: 100,
  window: 250,
  firstPauseMs: 50,
  /**
   * the pause a run's copy starts with, halved every 4 s while the probes stay within the limit (0 after about
   * 25 s where the copy keeps the bound without it) until it first has to go up (Pace.provisional).
   * bench:impact: a copy that started at 0 ran nearly free for the first 30 s while the pause doubled its way up
   * (19,000 to 30,000 rows/s at 2.7 to 2.8x, against 2,000 to 4,000 rows/s at 1.0 to 1.5x once paced), and a
   * worker restart started it over
   */
  startPauseMs: 1000,
  /** ... on a table of at least these pages, TOAST included (80 MB of 8 kB pages); a smaller one starts at 0 */
  startSlowPages: 10_000,
  /** relax also when the percentile is no higher than the idle figure: the copy's pace shows nothing there */
  relaxAtIdle: true,
  /**
   * the longest pause after a batch: a copy that runs 50 ms in every 5 s still meets about one application
   * transaction in a hundred (bench/impact.ts: the p99 follows the share of time a batch runs, not its pace)
   */
  maxPauseMs: 5000,
  /** the probes' quantile compared with the limit: the promise is about the application's p99 */
  quantile: 0.99,
  /**
   * what the sync's trigger itself adds to the application's p99, which the probe (it writes partflow.probe, not
   * the table) does not pay: the copy is held to ratio / syncShare of the idle probe, so that the two together
   * stay within the ratio of no migration. bench:impact, pgbench with its connections kept: the sync alone
   * 1.17/1.19/1.24x, and with the copy held to 1.5x of the probe the application was at 1.63/1.84/2.08x
   */
  syncShare: 1.2,
  /** the limit is at least this far above the idle probe (ms): below it the probe's own noise decides */
  roomMs: 0.2,
  /** shrink when the percentile is under this share of the limit */
  relaxBelow: 0.7,
  /**
   * with fewer samples than minSamples, but at least these, a median already over the limit steps up at once:
   * the copy does not wait 4 s to react to a probe that is slow most of the time
   */
  quickSamples: 20,
  /** a failed probe among the last these holds the copy (fail closed), older ones no longer do */
  failedWithin: 25,
  /**
   * the idle probe measured again after this much copying (the copy and the applier held for its ~4 s), the
   * first time after `rebaselineFirstMs`: a baseline measured at a busy moment (bench:impact: during the
   * table's first autovacuum after its load) let the copy run unthrottled at 3.4x. The figure only goes down:
   * measured again mid-copy it also counts the copy's after-effects (dirty pages, autovacuum of the new
   * partitions; bench:impact with the figure free to rise: 2.3x at 8 times the rate)
   */
  rebaselineEveryMs: 60_000,
  /**
   * the first time after 5 s, then after `rebaselineEarlyMs` (none longer than `rebaselineEveryMs`): the copy
   * starts slow (startPauseMs), so the first minute's measurements meet a machine the copy has barely touched.
   * bench:impact: a figure measured at install during the previous round's clean-up (4.24 ms against the 1.3 ms
   * the same probe met idle) let the copy relax to nearly free (225,556 rows in 30 s at 1.85x)
   */
  rebaselineFirstMs: 5_000,
  rebaselineEarlyMs: [15_000, 30_000],
};

export type PaceRules = typeof PACE;

/**
 * The pacer of plans made before the application-shaped probe (a bare commit, its baseline the 90th percentile
 * of 21): the rules it was measured with, so a run in flight keeps its behaviour.
 */
export const LEGACY_PACE: PaceRules = {
  ...PACE,
  minSamples: 20,
  window: 75,
  maxPauseMs: 1000,
  quantile: 0.95,
  quickSamples: 20,
  failedWithin: 75,
  rebaselineEveryMs: 0,
  rebaselineFirstMs: 0,
  rebaselineEarlyMs: [],
  syncShare: 1,
  roomMs: 0.5,
  startPauseMs: 0,
  startSlowPages: 0,
  relaxAtIdle: false,
};

export interface Sample {
  at: number;
  /** ms; null: the probe failed */
  ms: number | null;
  /** why the probe failed */
  error?: string;
}

export interface Pace {
  /** the pause after each batch, ms */
  pauseMs: number;
  /** when it last changed (ms since the epoch) */
  since: number;
  /**
   * the run's start pace, never raised since: it halves whenever the probes are within the limit (a pause of 1 s
   * after a 50 ms batch still meets the application about as often as none, so the band below the limit would
   * otherwise keep it for good); the first step up ends it
   */
  provisional?: boolean;
}

/** The pace a run's copy starts with (a run's first chunk in this worker). */
export function startPace(now: number, rules: PaceRules = PACE): Pace {
  return rules.startPauseMs
    ? { pauseMs: rules.startPauseMs, since: now, provisional: true }
    : { pauseMs: 0, since: now };
}

/** The `p` quantile (0..1) of `xs`, nearest rank. */
export function quantile(xs: number[], p: number): number {
  const s = xs.slice().sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))];
}

/** The probe's limit: `ratio` / the sync's share × its idle figure, with at least `roomMs` of room. */
export function latencyLimit(ratio: number, baselineMs: number, rules: PaceRules = PACE): number {
  return Math.max((baselineMs * ratio) / rules.syncShare, baselineMs + rules.roomMs);
}

/**
 * After a batch: the pause before the next one, and the hold when even the longest pause keeps the probes
 * over the limit (or a probe failed). `samples` in time order.
 */
export function nextPace(
  pace: Pace,
  samples: Sample[],
  ratio: number,
  baselineMs: number,
  now: number,
  rules: PaceRules = PACE,
): { pace: Pace; hold: Hold | null; seen?: number } {
  const recent = samples.filter((s) => s.at >= pace.since).slice(-rules.window);
  const failed = recent
    .slice(-rules.failedWithin)
    .filter((s) => s.ms === null)
    .pop();
  if (failed) {
    const why = failed.error ? ` (${failed.error})` : '';
    return {
      pace,
      hold: { bound: 'maxAppLatencyRatio', reason: `the probe failed${why}, so the application latency is unknown` },
    };
  }
  const limit = latencyLimit(ratio, baselineMs, rules);
  const ms = recent.map((s) => s.ms as number);
  const quick = ms.length >= rules.quickSamples && ms.length < rules.minSamples && quantile(ms, 0.5) > limit;
  if (ms.length < rules.minSamples && !quick) return { pace, hold: null };
  const seen = quick ? quantile(ms, 0.5) : quantile(ms, rules.quantile);
  const which = quick ? 'median' : `${Math.round(rules.quantile * 100)}th percentile`;
  if (seen > limit) {
    if (pace.pauseMs >= rules.maxPauseMs) {
      return {
        pace,
        seen,
        hold: {
          bound: 'maxAppLatencyRatio',
          reason:
            `a probe takes ${seen.toFixed(2)} ms (${which} of the last ${recent.length} probes) with the copy ` +
            `pausing ${rules.maxPauseMs} ms after each batch, over ${limit.toFixed(2)} ms ` +
            `(${ratio}${rules.syncShare === 1 ? '' : ` / ${rules.syncShare} for the sync's own share`} x ` +
            `${baselineMs.toFixed(2)} ms with the copy idle)`,
        },
      };
    }
    const pauseMs = Math.min(rules.maxPauseMs, pace.pauseMs ? pace.pauseMs * 2 : rules.firstPauseMs);
    return { pace: { pauseMs, since: now }, hold: null, seen };
  }
  const relax = pace.provisional || seen < limit * rules.relaxBelow || (rules.relaxAtIdle && seen <= baselineMs);
  if (relax && pace.pauseMs > 0) {
    const shorter = Math.floor(pace.pauseMs / 2);
    const pauseMs = shorter < 20 ? 0 : shorter;
    return {
      pace: { pauseMs, since: now, ...(pace.provisional && pauseMs ? { provisional: true } : {}) },
      hold: null,
      seen,
    };
  }
  return { pace, hold: null, seen };
}
