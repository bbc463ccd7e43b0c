/** What the backfill learns per table while it runs, in memory (another worker starts afresh). */
import type { Pace, Sample } from '../../src/pacer';
import type { Throttled } from '../runtime/replicas';

/**
 * What the backfill learns per table, in memory (another worker starts afresh and adapts within a batch or
 * two): `size`, the batch size (pages, or keys in key mode) under the time budget — a batch that took
 * longer shrinks the next one in proportion, a quick one lets it grow back towards the operator's batchSize;
 * `mergeLeft`, how many more batches use ON CONFLICT because a recent one met rows the applier had written.
 */
export interface Tuning {
  size?: number;
  mergeLeft: number;
  /**
   * the WAL of the last batches (with what else wrote meanwhile): the replica check keeps the largest as
   * headroom (a batch after a checkpoint writes full-page images, more than the one before it)
   */
  batchWal?: number[];
  /** the commit prober's samples (src/pacer.ts), the pause after each batch, and the hold when pausing was
   *  not enough: the copy waits from `after` until the application's latency is back under the bound */
  samples: Sample[];
  pace: Pace;
  /** the run (backfill.ts baselineKey) the pace and samples were learnt in: another run of the table starts afresh */
  paceOf?: string;
  holding?: { after: number; held: Throttled };
}
const tuning = new Map<string, Tuning>();
export function tuningOf(key: string): Tuning {
  let t = tuning.get(key);
  if (!t) tuning.set(key, (t = { mergeLeft: 0, samples: [], pace: { pauseMs: 0, since: 0 } }));
  return t;
}
