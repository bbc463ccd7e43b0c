/** What the benchmarks share: the generated_images-like table, its pgbench write workload, history timing. */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Client as TemporalClient, Connection, WorkflowHandle } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, Worker } from '@temporalio/worker';
import { createActivities } from '../activities';
import { createPool } from '../activities/runtime/db';
import { createLogger } from '../src/logger';
import { Client, Pool } from 'pg';
import { activitySpans, epochMs } from '../demo/history';
import { temporal } from '@temporalio/proto';
import { PgbenchOptions, PgbenchTx, pgbenchWhile } from './pgbench';

/** min/median/max of a list. */
export const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return { min: s[0], median: s[Math.floor(s.length / 2)], max: s[s.length - 1] };
};

/** The p-quantile (0..1) of a list, 0 when empty. */
export const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(s.length * p))] : 0;
};

/** A database of the benchmark's own, dropped and created again, on the cluster the PG* variables name. */
export async function freshDatabase(name: string) {
  const admin = new Client({ database: 'postgres' });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const conn = { host: process.env.PGHOST, port: Number(process.env.PGPORT), user: process.env.PGUSER, database: name };
  const url = `postgres://${conn.user}@${conn.host}:${conn.port}/${name}`;
  return { conn, url, pool: new Pool({ ...conn, max: 4 }) };
}

/**
 * A worker with partflow's workflows and real activities on `taskQueue`, in this process, and a client:
 * the benchmarks drive runs through it and call the activities directly where they time one alone.
 */
export async function benchWorker(url: string, taskQueue: string) {
  Runtime.install({ logger: new DefaultLogger('WARN') });
  const actPool = createPool(url);
  const acts = createActivities({
    pool: actPool,
    log: createLogger({ component: 'bench' }).child({}, { level: process.env.PARTFLOW_BENCH_LOG ?? 'warn' }),
  });
  const address = process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233';
  const worker = await Worker.create({
    connection: await NativeConnection.connect({ address }),
    taskQueue,
    workflowsPath: require.resolve('../workflows'),
    activities: acts,
  });
  const running = worker.run();
  const connection = await Connection.connect({ address });
  return {
    acts,
    client: new TemporalClient({ connection }),
    async stop() {
      worker.shutdown();
      await running;
      await connection.close();
      await actPool.end();
    },
  };
}

/** generated_images' secondary indexes, on the source and on pg_partman's partition set alike */
export const SECONDARY_INDEXES = [
  '(user_id, status) WHERE user_id IS NOT NULL',
  '(expires_at)',
  '(generation_type, status, created_at)',
  '(created_at)',
];

/** The table `images`: uuid key, 4 secondary indexes, `months` of rows in time order (or random order). */
export async function createImages(pool: Pool, rows: number, order: string, months = 14): Promise<void> {
  await pool.query(`CREATE TABLE images (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), user_id uuid, status varchar(20) NOT NULL DEFAULT 'done',
    generation_type varchar(30) NOT NULL DEFAULT 'product', prompt text, image_url text, expires_at timestamptz, created_at timestamptz NOT NULL DEFAULT now())`);
  // ids are md5(g)::uuid: random-looking like gen_random_uuid(), and pgbench can address row g
  await pool.query(`INSERT INTO images (id, user_id, status, generation_type, prompt, image_url, expires_at, created_at)
    SELECT md5(g::text)::uuid, gen_random_uuid(), (ARRAY['done','failed','pending'])[1 + g % 3], (ARRAY['product','model'])[1 + g % 2], 'prompt ' || g,
           'https://cdn.example.com/' || md5(g::text) || '.png', ts + interval '6 hours', ts
      FROM (SELECT g, ${order === 'time' ? `now() - interval '${months} months' + (g::float / ${rows}) * interval '${months} months' - random() * interval '1 day'` : `now() - random() * interval '${months} months'`} AS ts
              FROM generate_series(1, ${rows}) g) s ORDER BY g`);
  for (const idx of SECONDARY_INDEXES) await pool.query(`CREATE INDEX ON images ${idx}`);
  await pool.query('VACUUM ANALYZE images');
}

/** From one fetch of the history: per activity type, first scheduled → last completed (epoch ms). */
export async function historySpans(h: WorkflowHandle): Promise<(activity: string) => [number, number]> {
  const spans = await activitySpans(h);
  return (activity) => {
    const of = spans.filter((s) => s.name === activity && !Number.isNaN(s.end));
    if (!of.length) throw new Error(`no completed ${activity} activity in the history of ${h.workflowId}`);
    return [Math.min(...of.map((s) => s.start)), Math.max(...of.map((s) => s.end))];
  };
}

/**
 * The benchmark's write workload on `images`: insert 5 : update 4 : delete 1, ids addressable as md5(g)::uuid.
 * With `users` (a `users` table whose ids are md5('u' || g)::uuid, g from 1 to users): inserts name an existing
 * user, and one transaction in eleven updates a user, so a lock on `users` shows too.
 */
export class PgBench {
  private scripts: string[];
  /** pgbench's -T per round; each round opens its clients' connections anew (pgbenchWhile's default: 5 s) */
  private roundSeconds?: number;
  constructor(
    private conn: PgbenchOptions['conn'],
    rows: number,
    private rate: number,
    opts: { users?: number; roundSeconds?: number } = {},
  ) {
    this.roundSeconds = opts.roundSeconds;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pf-bench-'));
    const w = (name: string, weight: number, text: string) => {
      fs.writeFileSync(path.join(dir, name), text + '\n');
      return `${path.join(dir, name)}@${weight}`;
    };
    const user = opts.users ? `md5('u' || :u)::uuid` : 'gen_random_uuid()';
    const pickUser = opts.users ? `\\set u random(1, ${opts.users})\n` : '';
    this.scripts = [
      w(
        'insert.sql',
        5,
        `${pickUser}INSERT INTO images (user_id, prompt, image_url, created_at) VALUES (${user}, 'pgbench', 'https://cdn.example.com/new.png', now() - random() * interval '20 days');`,
      ),
      w(
        'update.sql',
        4,
        `\\set g random(1, ${rows})\nUPDATE images SET prompt = 'updated ' || :g, status = 'done' WHERE id = md5(CAST(:g AS text))::uuid;`,
      ),
      w('delete.sql', 1, `\\set g random(1, ${rows})\nDELETE FROM images WHERE id = md5(CAST(:g AS text))::uuid;`),
    ];
    if (opts.users)
      this.scripts.push(
        w('user.sql', 1, `${pickUser}UPDATE users SET seen_at = now() WHERE id = md5('u' || :u)::uuid;`),
      );
  }

  async run(during: () => Promise<void>): Promise<{ tx: PgbenchTx[]; latencies: number[]; failed: number }> {
    const r = await pgbenchWhile(
      { conn: this.conn, scripts: this.scripts, clients: 4, rate: this.rate, roundSeconds: this.roundSeconds },
      during,
    );
    return { tx: r.tx, latencies: r.tx.map((t) => t.latencyMs), failed: r.failed + r.abortedRounds };
  }
}

/** A workflow's size as Temporal keeps it, over its continue-as-new chain: what the per-history limits apply to. */
export interface HistorySize {
  runs: number;
  /** the largest single run's events and encoded bytes (the limits are per run: 51,200 events, 50 MB) */
  events: number;
  bytes: number;
  /** over the whole chain */
  totalEvents: number;
  totalBytes: number;
  /** (epoch ms, rows copied over the whole copy) at every backfill chunk's completion */
  copied: [number, number][];
}

export async function historySize(
  client: TemporalClient,
  workflowId: string,
  firstRunId: string,
): Promise<HistorySize> {
  const out: HistorySize = { runs: 0, events: 0, bytes: 0, totalEvents: 0, totalBytes: 0, copied: [] };
  let runId: string | undefined = firstRunId;
  while (runId) {
    const history: temporal.api.history.v1.IHistory = await client.workflow.getHandle(workflowId, runId).fetchHistory();
    const events: temporal.api.history.v1.IHistoryEvent[] = history.events ?? [];
    const bytes = temporal.api.history.v1.History.encode(history).finish().length;
    out.runs++;
    out.events = Math.max(out.events, events.length);
    out.bytes = Math.max(out.bytes, bytes);
    out.totalEvents += events.length;
    out.totalBytes += bytes;
    const backfill = new Set<string>();
    for (const e of events) {
      if (e.activityTaskScheduledEventAttributes?.activityType?.name === 'copyChunk') backfill.add(String(e.eventId));
      const done = e.activityTaskCompletedEventAttributes;
      if (done && backfill.has(String(done.scheduledEventId))) {
        const data = done.result?.payloads?.[0]?.data;
        const r = data ? JSON.parse(Buffer.from(data).toString('utf8')) : null;
        if (r && typeof r.rowsCopied === 'number') out.copied.push([epochMs(e.eventTime), r.rowsCopied]);
      }
    }
    const next = events.at(-1)?.workflowExecutionContinuedAsNewEventAttributes?.newExecutionRunId;
    runId = next ?? undefined;
  }
  out.copied.sort((a, b) => a[0] - b[0]);
  return out;
}

/**
 * Rows per second over each million rows copied, from the chunks' completions (`copied`, from the copy's
 * start at `startMs`): when the count passed each million is interpolated between two completions.
 */
export function ratePerMillion(startMs: number, copied: [number, number][]): number[] {
  const points: [number, number][] = [[startMs, 0], ...copied];
  const passed = (m: number): number | null => {
    for (let i = 1; i < points.length; i++) {
      const [[t0, r0], [t1, r1]] = [points[i - 1], points[i]];
      if (r1 >= m && r1 > r0) return t0 + ((m - r0) / (r1 - r0)) * (t1 - t0);
    }
    return null;
  };
  const rates: number[] = [];
  let prev = startMs;
  for (let m = 1_000_000; ; m += 1_000_000) {
    const at = passed(m);
    if (at === null) break;
    rates.push(Math.round(1_000_000 / Math.max(0.001, (at - prev) / 1000)));
    prev = at;
  }
  return rates;
}

/** Samples this process's resident set size while `work` runs (the benchmark's worker runs in this process). */
export async function peakRss<T>(work: () => Promise<T>, everyMs = 250): Promise<{ result: T; peakMb: number }> {
  let peak = process.memoryUsage().rss;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), everyMs);
  try {
    const result = await work();
    return { result, peakMb: Math.round(Math.max(peak, process.memoryUsage().rss) / 2 ** 20) };
  } finally {
    clearInterval(timer);
  }
}
