/**
 * partflow's own metrics, recorded through the activity's metric meter so that they come out of the same
 * Prometheus endpoint as the SDK's (worker/telemetry.ts). Outside an activity they are no-ops.
 */
import { Context } from '@temporalio/activity';
import type { MetricMeter } from '@temporalio/common';

type Instruments = ReturnType<typeof instruments>;
const cache = new WeakMap<MetricMeter, Instruments>();

function instruments(m: MetricMeter) {
  return {
    rowsCopied: m.createCounter('partflow_rows_copied', 'rows', 'Rows copied by the backfill'),
    batchDuration: m.createHistogram(
      'partflow_batch_duration',
      'int',
      'ms',
      "Duration of one backfill batch transaction, its waits for the key log's lock left out",
    ),
    lockWaitRetries: m.createCounter(
      'partflow_lock_wait_retries',
      'retries',
      'DDL attempts that hit lock_timeout and were retried',
    ),
    verifyMismatches: m.createCounter(
      'partflow_verification_mismatches',
      'ranges',
      'Partition ranges whose count or checksum differed',
    ),
    partitionsCreated: m.createCounter(
      'partflow_partitions_created',
      'partitions',
      'Partitions created by maintenance',
    ),
    partitionsArchived: m.createCounter(
      'partflow_partitions_archived',
      'partitions',
      'Partitions archived by maintenance',
    ),
    replicaLagBytes: m.createGauge(
      'partflow_replica_lag_bytes',
      'int',
      'bytes',
      'Worst standby replay lag or slot WAL',
    ),
    replicaLagSeconds: m.createGauge('partflow_replica_lag_seconds', 'float', 's', 'Worst standby replay_lag'),
    throttled: m.createGauge('partflow_throttled', 'int', '', '1 while a replica bound holds the copy back'),
    defaultRows: m.createGauge(
      'partflow_default_partition_rows',
      'int',
      'rows',
      'Rows in the default partition at the last maintenance run',
    ),
  };
}

function get(): Instruments | null {
  let meter: MetricMeter;
  try {
    meter = Context.current().metricMeter;
  } catch {
    return null;
  }
  let i = cache.get(meter);
  if (!i) cache.set(meter, (i = instruments(meter)));
  return i;
}

export const metrics = {
  rowsCopied: (table: string, n: number) => get()?.rowsCopied.add(n, { table }),
  batchDuration: (table: string, ms: number) => get()?.batchDuration.record(Math.round(ms), { table }),
  lockWaitRetry: (step: string) => get()?.lockWaitRetries.add(1, { step }),
  verifyMismatches: (table: string, n: number) => get()?.verifyMismatches.add(n, { table }),
  partitionsCreated: (table: string, n: number) => get()?.partitionsCreated.add(n, { table }),
  partitionsArchived: (table: string, n: number) => get()?.partitionsArchived.add(n, { table }),
  defaultRows: (table: string, n: number) => get()?.defaultRows.set(n, { table }),
  replicaLag: (table: string, bytes: number | null, seconds: number | null, holdBound: string | null) => {
    const i = get();
    if (!i) return;
    if (bytes !== null) i.replicaLagBytes.set(Math.round(bytes), { table });
    if (seconds !== null) i.replicaLagSeconds.set(seconds, { table });
    i.throttled.set(holdBound ? 1 : 0, { table });
  },
};
