/**
 * `npm run bench:replica [-- --rows 200000 --runs 3 --delay 2s --rate 100]`: the operator's trade-off of
 * replica-aware throttling. A streaming standby of the cluster (scripts/standby.sh) replays `--delay` behind;
 * for each `maxReplicaLagBytes` setting (unthrottled first) a partitionTable run copies the table up to the
 * approval gate while pgbench writes at a fixed rate, and the standby's lag is sampled every 100 ms. Prints,
 * min/median/max over the runs: the standby's peak lag, the copy's speed, and the application's p99 during
 * the backfill next to the same workload's p99 with no migration. Writes bench-replica.json. Never asserts.
 */
import * as fs from 'fs';
import { parseArgs } from 'util';
import { sleep } from '../activities/runtime/db';
import type { Progress } from '../workflows/definitions';
import { peakLagWhile, standby as runStandby } from '../demo/standby';
import { benchWorker, createImages, freshDatabase, historySpans, pct, PgBench, stats } from './common';

const { values: args } = parseArgs({
  options: {
    rows: { type: 'string', default: '200000' },
    runs: { type: 'string', default: '3' },
    rate: { type: 'string', default: '100' },
    delay: { type: 'string', default: '2s' },
    port: { type: 'string', default: '54359' },
    db: { type: 'string', default: 'partflow_bench_replica' },
  },
});
const ROWS = Number(args.rows);
const RUNS = Number(args.runs);
const MiB = 1024 * 1024;
const TQ = 'partflow-bench-replica';
/** the settings compared; the unthrottled one has bounds no copy reaches */
const SETTINGS = [
  { label: 'unthrottled', bytes: 2 ** 50 },
  { label: '64 MiB', bytes: 64 * MiB },
  { label: '16 MiB', bytes: 16 * MiB },
  { label: '4 MiB', bytes: 4 * MiB },
];
const line = (s: string) => process.stdout.write(s + '\n');
const mmm = (xs: number[], f: (n: number) => string) => {
  const s = stats(xs);
  return `${f(s.min)}/${f(s.median)}/${f(s.max)}`;
};
const standby = (verb: string, ...a: string[]) => runStandby(args.port, verb, ...a);

async function main(): Promise<void> {
  const { conn, url, pool } = await freshDatabase(args.db);
  line(`generating ${ROWS.toLocaleString('en-US')} rows; standby on port ${args.port} replaying ${args.delay} behind`);
  await createImages(pool, ROWS, 'time');
  await standby('create', args.delay);

  const { client, stop } = await benchWorker(url, TQ);
  const pgbench = new PgBench(conn, ROWS, Number(args.rate));
  const out: Record<string, { peak: number[]; seconds: number[]; p99: number[]; held: number[] }> = {};
  const baseP99: number[] = [];
  try {
    for (let r = 1; r <= RUNS; r++) {
      const base = await pgbench.run(() => sleep(10_000));
      baseP99.push(pct(base.latencies, 0.99));
      for (const s of SETTINGS) {
        const o = (out[s.label] ??= { peak: [], seconds: [], p99: [], held: [] });
        let fill: [number, number] = [0, 0];
        let held = 0;
        const load = await pgbench.run(async () => {
          const peak = await peakLagWhile(pool, async () => {
            const h = await client.workflow.start('partitionTable', {
              taskQueue: TQ,
              workflowId: `bench-replica-${Date.now()}`,
              args: [
                { table: 'images', approval: 'signal', maxReplicaLagBytes: s.bytes, maxReplicaLagSeconds: 86_400 },
              ],
            });
            for (;;) {
              const p = await h.query<Progress>('progress').catch(() => null);
              if (p?.throttledBy) held++;
              if (p?.awaitingApproval) break;
              await sleep(500);
            }
            fill = (await historySpans(h))('copyChunk');
            await h.signal('rollback');
            await h.result();
          });
          o.peak.push(peak);
        });
        o.seconds.push((fill[1] - fill[0]) / 1000);
        o.p99.push(
          pct(
            load.tx.filter((t) => t.startMs < fill[1] && t.endMs > fill[0]).map((t) => t.latencyMs),
            0.99,
          ),
        );
        o.held.push(held);
        line(
          `run ${r} ${s.label}: peak lag ${(o.peak.at(-1)! / MiB).toFixed(1)} MiB, copy ${o.seconds.at(-1)!.toFixed(1)} s, ` +
            `p99 ${o.p99.at(-1)} ms (no migration ${baseP99.at(-1)} ms)`,
        );
        await sleep(5000); // the standby catches up before the next setting
      }
    }
  } finally {
    await standby('remove');
  }
  line('');
  line(
    `${ROWS.toLocaleString('en-US')} rows, standby ${args.delay} behind, pgbench -R ${args.rate}; min/median/max over ${RUNS} runs`,
  );
  line(
    `${'maxReplicaLagBytes'.padEnd(20)} ${'standby peak lag MiB'.padEnd(22)} ${'copy rows/s'.padEnd(24)} backfill p99 ms`,
  );
  for (const s of SETTINGS) {
    const o = out[s.label];
    line(
      `${s.label.padEnd(20)} ${mmm(o.peak, (x) => (x / MiB).toFixed(1)).padEnd(22)} ` +
        `${mmm(
          o.seconds.map((x) => ROWS / x),
          (x) => String(Math.round(x)),
        ).padEnd(24)} ${mmm(o.p99, String)}`,
    );
  }
  line(`${'no migration'.padEnd(20)} ${''.padEnd(22)} ${''.padEnd(24)} ${mmm(baseP99, String)}`);
  fs.writeFileSync(
    'bench-replica.json',
    JSON.stringify({ rows: ROWS, runs: RUNS, delay: args.delay, out, baseP99 }, null, 2),
  );
  await stop();
  await pool.end();
}

main().catch((err) => {
  process.stderr.write(`bench failed: ${err?.stack ?? err}\n`);
  void standby('remove')
    .catch(() => undefined)
    .then(() => process.exit(1));
});
