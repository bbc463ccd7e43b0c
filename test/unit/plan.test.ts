import { compareChecksums } from '../../activities/partition';
import type { PublicationInfo, TableInfo } from '../../src/catalog';
import { validatePartitionInput } from '../../src/input';
import { backfillSql, buildPlan, pagesPerBatch, planStatements, planSummary, shapeDifferences } from '../../src/plan';

function fixture(over: Partial<TableInfo> = {}): TableInfo {
  return {
    table: { schema: 'public', name: 'gi' },
    oid: 4242,
    relkind: 'r',
    serverVersionNum: 150018,
    owner: 'app',
    currentUser: 'app',
    columns: [
      { name: 'id', type: 'bigint', notNull: true, generated: false, identity: '' },
      { name: 'created_at', type: 'timestamp with time zone', notNull: true, generated: false, identity: '' },
      { name: 'url', type: 'text', notNull: false, generated: false, identity: '' },
      { name: 'url_len', type: 'integer', notNull: false, generated: true, identity: '' },
    ],
    partitionColumn: { name: 'created_at', type: 'timestamptz', notNull: true },
    primaryKey: { name: 'gi_pkey', columns: ['id'] },
    indexes: [
      {
        name: 'gi_pkey',
        def: 'CREATE UNIQUE INDEX gi_pkey ON public.gi USING btree (id)',
        tail: 'USING btree (id)',
        isPrimary: true,
        isUnique: true,
        columns: ['id'],
        constraintName: 'gi_pkey',
        hasPredicate: false,
        keyColumns: ['id'],
        isValid: true,
        comment: null,
        constraintComment: null,
        constraintDef: 'PRIMARY KEY (id)',
        deferrable: false,
      },
      {
        name: 'gi_url',
        def: 'CREATE INDEX gi_url ON public.gi USING btree (url) WHERE (url IS NOT NULL)',
        tail: 'USING btree (url) WHERE (url IS NOT NULL)',
        isPrimary: false,
        isUnique: false,
        columns: ['url'],
        constraintName: null,
        hasPredicate: true,
        keyColumns: ['url'],
        isValid: true,
        comment: null,
        constraintComment: null,
        constraintDef: null,
        deferrable: false,
      },
      {
        name: 'gi_url_key',
        def: 'CREATE UNIQUE INDEX gi_url_key ON public.gi USING btree (url)',
        tail: 'USING btree (url)',
        isPrimary: false,
        isUnique: true,
        columns: ['url'],
        constraintName: 'gi_url_key',
        hasPredicate: false,
        keyColumns: ['url'],
        isValid: true,
        comment: null,
        constraintComment: null,
        constraintDef: 'UNIQUE (url)',
        deferrable: false,
      },
    ],
    outboundForeignKeys: [
      {
        name: 'gi_user_fk',
        def: 'FOREIGN KEY (user_id) REFERENCES users(id)',
        table: { schema: 'public', name: 'gi' },
      },
    ],
    inboundForeignKeys: [],
    sequences: [{ column: 'id', sequence: { schema: 'public', name: 'gi_id_seq' }, kind: 'serial' }],
    dependentViews: [],
    appStatements: [],
    publications: [],
    userTriggers: [],
    rules: [],
    rowSecurity: false,
    grants: [{ grantee: 'reader', privilege: 'SELECT', grantable: false }],
    columnGrants: [{ column: 'url', grantee: 'auditor', privilege: 'SELECT', grantable: false }],
    comment: "images' table",
    isSuperuser: false,
    storage: {
      reloptions: ['fillfactor=70', 'toast.autovacuum_enabled=false'],
      tablespace: null,
      replicaIdentity: 'f',
      replicaIdentityIndex: null,
      unlogged: false,
      statisticsTargets: [{ column: 'url', target: 500 }],
    },
    inheritance: { parents: [], children: [], partitionOf: null },
    implicitPublications: [],
    subscriptions: [],
    oidDependents: [],
    keyRange: { months: ['2024-11', '2024-12', '2025-01'], bodyStart: '2024-11', outsideRows: 0 },
    shape: ['column 1 id bigint NOT NULL'],
    estimatedRows: 1000,
    pages: 20,
    oldestMonth: '2024-11',
    currentMonth: '2025-01',
    nullKeyRows: 0,
    takenNames: [],
    activeRun: null,
    ...over,
  };
}

/** a history with a row every six months from 2010 on: no gap long enough to make outliers */
const everyHalfYear = Array.from({ length: 31 }, (_, i) => `${2010 + Math.floor(i / 2)}-${i % 2 ? '07' : '01'}`);
const opts = validatePartitionInput({ table: 'gi', premake: 2, acceptLostConstraints: ['gi_url_key'] });

describe('buildPlan', () => {
  const plan = buildPlan(fixture(), opts);

  it('creates the partitioned copy, one partition per month and a default', () => {
    expect(plan.sql.shadow[0]).toBe(
      'CREATE TABLE "public"."gi_pf_shadow" (LIKE "public"."gi" INCLUDING ALL EXCLUDING INDEXES) PARTITION BY RANGE ("created_at")',
    );
    expect(plan.partitions.map((p) => p.name)).toEqual([
      'gi_2024_11',
      'gi_2024_12',
      'gi_2025_01',
      'gi_2025_02',
      'gi_2025_03',
    ]);
    expect(plan.sql.shadow[1]).toMatch(
      /^CREATE TABLE "public"."gi_2024_11" PARTITION OF "public"."gi_pf_shadow" FOR VALUES FROM \('2024-11-01 00:00:00 UTC'::timestamptz\) TO \('2024-12-01 00:00:00 UTC'::timestamptz\)/,
    );
    expect(
      plan.sql.shadow.some((x) =>
        x.startsWith('CREATE TABLE "public"."gi_default" PARTITION OF "public"."gi_pf_shadow" DEFAULT'),
      ),
    ).toBe(true);
  });

  it('widens the primary key with the partition column and says so', () => {
    expect(plan.shadowKey).toEqual(['id', 'created_at']);
    expect(plan.sql.shadow).toContain(
      'ALTER TABLE "public"."gi_pf_shadow" ADD CONSTRAINT "gi_pfi_0" PRIMARY KEY ("id", "created_at")',
    );
    expect(plan.warnings.join(' ')).toMatch(
      /primary key gi_pkey becomes \(id, created_at\): .*ON CONFLICT \(id\) fail after the cut-over/,
    );
  });

  it('keeps partial indexes; a unique constraint without the partition key only when accepted, and lists it', () => {
    expect(plan.sql.shadow).toContain(
      'CREATE INDEX "gi_pfi_1" ON "public"."gi_pf_shadow" USING btree (url) WHERE (url IS NOT NULL)',
    );
    expect(plan.sql.shadow).toContain('CREATE INDEX "gi_pfi_2" ON "public"."gi_pf_shadow" USING btree (url)');
    expect(plan.givenUp.join(' ')).toMatch(
      /Unique constraint gi_url_key becomes a plain index: uniqueness of \(url\) is no longer enforced/,
    );
    expect(() => buildPlan(fixture(), { ...opts, acceptLostConstraints: [] })).toThrow(
      /gi_url_key \(unique without created_at\), which a table partitioned by created_at cannot enforce .*"acceptLostConstraints"/,
    );
    expect(() => buildPlan(fixture(), { ...opts, acceptLostConstraints: ['gi_url_key', 'nope'] })).toThrow(
      /names nope, which is not a unique index/,
    );
  });

  it('keeps a UNIQUE constraint that contains the partition key a constraint', () => {
    const uniq = {
      ...fixture().indexes[2],
      name: 'gi_url_ts_key',
      constraintName: 'gi_url_ts_key',
      keyColumns: ['url', 'created_at'],
      columns: ['url', 'created_at'],
      constraintDef: 'UNIQUE (url, created_at)',
      constraintComment: 'one per month',
    };
    const p = buildPlan(fixture({ indexes: [fixture().indexes[0], uniq] }), { ...opts, acceptLostConstraints: [] });
    expect(p.sql.shadow).toContain(
      'ALTER TABLE "public"."gi_pf_shadow" ADD CONSTRAINT "gi_pfi_1" UNIQUE (url, created_at)',
    );
    expect(p.sql.shadow).toContain(`COMMENT ON CONSTRAINT "gi_pfi_1" ON "public"."gi_pf_shadow" IS 'one per month'`);
    // the swap back has its handover, also with a uniqueness given up (since 2026-12-06's fifth session: the old
    // table's row goes in with ON CONFLICT DO NOTHING, a writer that is not READ COMMITTED in a subtransaction)
    expect(p.sql.reverseHandover?.on).toMatch(/INSERT INTO "public"."gi_old"/);
    expect(p.sql.handover?.on).toMatch(/INSERT INTO "public"."gi_pf_shadow"/);
    const lost = buildPlan(fixture(), opts);
    expect(lost.sql.reverseHandover?.on).toMatch(/ON CONFLICT DO NOTHING/);
    expect(lost.sql.reverseHandover?.on).toMatch(/EXCEPTION WHEN serialization_failure OR unique_violation THEN/);
    expect(lost.sql.handover).toBeDefined();
    expect(lost.sql.swapBackGuard?.length).toBeGreaterThan(0);
  });

  it('records what the old table cannot hold from the reverse log only: one id twice, a uniqueness given up', () => {
    const p = buildPlan(fixture(), opts);
    const rev = p.sql.reverseKeyLog!;
    // the primary key (id) widened to (id, created_at): the old table's key is looked for twice in the new table
    expect(rev.duplicates).toMatch(/GROUP BY \(s\.a\d+\) HAVING count\(\*\) > 1/);
    expect(rev.lost).toMatch(/^UPDATE partflow\.runs SET rollback_lost = .* table_name = 'gi'$/);
    expect(rev.copyKept).toMatch(/ON CONFLICT DO NOTHING$/);
    expect(rev.copy).toMatch(/SELECT DISTINCT ON \(s\.a\d+\) /);
    const fwd = p.sql.keyLog!;
    expect([fwd.duplicates, fwd.lost, fwd.copyKept]).toEqual([undefined, undefined, undefined]);
  });

  it('parks the keys a reverse round could not apply, and applies them again in rounds over the parked table', () => {
    const p = buildPlan(fixture(), opts);
    const rev = p.sql.reverseKeyLog!;
    // each key once (the attack review's P1: the cap counted entries)
    expect(rev.park).toMatch(
      /^INSERT INTO "public"\."gi_pf_rlost" \("id", "created_at"\) SELECT DISTINCT k1, k2 FROM unnest.* ON CONFLICT DO NOTHING$/,
    );
    expect(rev.parkDuplicates).toMatch(/ON CONFLICT DO NOTHING$/);
    // every row of the old key held twice, not only the round's
    expect(rev.parkDuplicates).toMatch(/^INSERT INTO "public"\."gi_pf_rlost" .* GROUP BY \(s\.a\d+\) HAVING count/);
    const rc = rev.recheck!;
    expect(rc.sql.take).toMatch(/DELETE FROM "public"\."gi_pf_rlost"/);
    expect(rc.sql.copy).toBe(rev.copy);
    expect(rc.sql.park).toBe(rev.park);
    expect(rc.sql.recheck).toBeUndefined();
    expect(rc.forget).toMatch(/^UPDATE partflow\.runs SET rollback_lost = NULL WHERE .* table_name = 'gi'$/);
    // created with the reverse log at the cut-over, dropped with it
    expect(p.sql.cutover).toContain(
      'CREATE TABLE IF NOT EXISTS "public"."gi_pf_rlost" (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, ' +
        '"id" bigint, "created_at" timestamp with time zone, UNIQUE ("id", "created_at"))',
    );
    expect(p.sql.swapBack).toContain('DROP TABLE IF EXISTS "public"."gi_pf_rlost"');
    expect(p.sql.finalize).toContain('DROP TABLE IF EXISTS "public"."gi_pf_rlost"');
    expect(p.sql.keyLog!.recheck).toBeUndefined();
  });

  it('refuses a unique index with the partition column only in INCLUDE', () => {
    const inc = {
      ...fixture().indexes[2],
      name: 'gi_url_inc',
      constraintName: null,
      constraintDef: null,
      keyColumns: ['url'],
      columns: ['url', 'created_at'],
    };
    expect(() =>
      buildPlan(fixture({ indexes: [fixture().indexes[0], inc] }), { ...opts, acceptLostConstraints: [] }),
    ).toThrow(/gi_url_inc \(unique without created_at in its key, only in INCLUDE\)/);
  });

  it('carries storage parameters, replica identity, statistics targets and column grants', () => {
    expect(plan.sql.shadow).toContain(
      `CREATE TABLE "public"."gi_2024_11" PARTITION OF "public"."gi_pf_shadow" FOR VALUES FROM ('2024-11-01 00:00:00 UTC'::timestamptz) TO ('2024-12-01 00:00:00 UTC'::timestamptz) WITH (fillfactor = '70', toast.autovacuum_enabled = 'false')`,
    );
    expect(plan.sql.shadow).toContain('ALTER TABLE "public"."gi_pf_shadow" REPLICA IDENTITY FULL');
    expect(plan.sql.shadow).toContain('ALTER TABLE "public"."gi_default" REPLICA IDENTITY FULL');
    expect(plan.sql.shadow).toContain('ALTER TABLE "public"."gi_pf_shadow" ALTER COLUMN "url" SET STATISTICS 500');
    expect(plan.sql.shadow).toContain('GRANT SELECT ("url") ON "public"."gi_pf_shadow" TO "auditor"');
    const u = buildPlan(fixture({ storage: { ...fixture().storage, unlogged: true, tablespace: 'fast' } }), opts);
    expect(u.sql.shadow).toContain(
      'CREATE UNLOGGED TABLE "public"."gi_default" PARTITION OF "public"."gi_pf_shadow" DEFAULT WITH (fillfactor = \'70\', toast.autovacuum_enabled = \'false\') TABLESPACE "fast"',
    );
  });

  it('copies grants, comment and outbound foreign keys', () => {
    expect(plan.sql.shadow).toContain('GRANT SELECT ON "public"."gi_pf_shadow" TO "reader"');
    expect(plan.sql.shadow).toContain(`COMMENT ON TABLE "public"."gi_pf_shadow" IS 'images'' table'`);
    expect(plan.sql.shadowForeignKeys).toEqual([
      'ALTER TABLE "public"."gi_pf_shadow" ADD CONSTRAINT "gi_user_fk" FOREIGN KEY (user_id) REFERENCES users(id)',
    ]);
  });

  it('copies generated columns by recomputing them, not inserting them', () => {
    expect(plan.columns).toEqual(['id', 'created_at', 'url']);
  });

  it('backfills page ranges without row locks and with ON CONFLICT DO NOTHING', () => {
    expect(plan.sql.backfillBatch).toMatch(/WHERE ctid >= \$1::tid AND ctid < \$2::tid\) AS s/);
    expect(plan.sql.backfillBatch).not.toMatch(/FOR SHARE/);
    expect(plan.sql.backfillBatch).toMatch(/ON CONFLICT DO NOTHING$/);
    // the fast form is the same copy without ON CONFLICT: a row the trigger wrote makes it fail with 23505
    expect(plan.sql.backfillBatchFast).toBe(plan.sql.backfillBatch.replace(/ ON CONFLICT DO NOTHING$/, ''));
    expect(plan.sql.backfillBatchFast).not.toMatch(/ON CONFLICT/);
  });

  it('cuts over in order: lock, drop triggers and guard, renames, sequence ownership, reverse triggers and guard', () => {
    const c = plan.sql.cutover;
    expect(c[0]).toBe(
      'LOCK TABLE "public"."gi", "public"."gi_pf_shadow", "public"."gi_pf_log" IN ACCESS EXCLUSIVE MODE',
    );
    expect(c[1]).toBe('DROP TRIGGER IF EXISTS "partflow_sync_fwd" ON "public"."gi"');
    const i = (s: string) => c.indexOf(s);
    expect(i('ALTER TABLE "public"."gi" RENAME TO "gi_old"')).toBeLessThan(
      i('ALTER TABLE "public"."gi_pf_shadow" RENAME TO "gi"'),
    );
    expect(c).toContain('ALTER INDEX "public"."gi_pkey" RENAME TO "gi_pfo_0"');
    expect(c).toContain('ALTER INDEX "public"."gi_pfi_0" RENAME TO "gi_pkey"');
    expect(c).toContain('ALTER SEQUENCE "public"."gi_id_seq" OWNED BY "public"."gi"."id"');
    expect(c).toContain(
      'CREATE TRIGGER "partflow_sync_rev" AFTER INSERT OR UPDATE OR DELETE ON "public"."gi" FOR EACH ROW EXECUTE FUNCTION "partflow"."rev_4242"()',
    );
    expect(c).toContain('ALTER TABLE "public"."gi" ENABLE ALWAYS TRIGGER "partflow_sync_rev"');
    expect(c).toContain(
      'CREATE TRIGGER "partflow_sync_rev_truncate" AFTER TRUNCATE ON "public"."gi" FOR EACH STATEMENT EXECUTE FUNCTION "partflow"."rev_truncate_4242"()',
    );
    expect(i('DROP VIEW IF EXISTS "partflow"."guard_4242"')).toBeLessThan(
      i('CREATE VIEW "partflow"."guard_4242" AS SELECT "id", "created_at", "url", "url_len" FROM "public"."gi"'),
    );
  });

  it('installs row and TRUNCATE triggers that fire in every session_replication_role, and the guard view', () => {
    const s = plan.sql.syncTrigger;
    expect(s).toContain('ALTER TABLE "public"."gi" ENABLE ALWAYS TRIGGER "partflow_sync_fwd"');
    expect(s).toContain('ALTER TABLE "public"."gi" ENABLE ALWAYS TRIGGER "partflow_sync_fwd_truncate"');
    expect(s).toContain('REVOKE ALL ON FUNCTION "partflow"."fwd_4242"() FROM PUBLIC');
    expect(s.join('\n')).toMatch(/TRUNCATE "public"\."gi_pf_shadow";/);
    expect(s).toContain(
      'CREATE VIEW "partflow"."guard_4242" AS SELECT "id", "created_at", "url", "url_len" FROM "public"."gi"',
    );
  });

  it('swaps back with the inverse renames', () => {
    expect(plan.sql.swapBack).toContain('ALTER TABLE "public"."gi" RENAME TO "gi_pf_shadow"');
    expect(plan.sql.swapBack).toContain('ALTER TABLE "public"."gi_old" RENAME TO "gi"');
    expect(plan.sql.swapBack).toContain('ALTER INDEX "public"."gi_pfo_0" RENAME TO "gi_pkey"');
  });

  it('finalizes by locking the partitioned table first (parent, then partitions: the order of the application)', () => {
    // DROP TRIGGER alone would lock the partitions' clones before the parent: a deadlock with any writer
    expect(plan.sql.finalize[0]).toBe('LOCK TABLE "public"."gi" IN ACCESS EXCLUSIVE MODE');
    expect(plan.sql.finalize.slice(1).every((s) => s.startsWith('DROP '))).toBe(true);
    expect(plan.sql.finalize).toContain('DROP TRIGGER IF EXISTS "partflow_sync_rev" ON "public"."gi"');
  });

  it('lists every statement for a dry run', () => {
    const steps = planStatements(plan).map((s) => s.step);
    expect([...new Set(steps)]).toEqual(['shadow', 'sync', 'backfill', 'verify', 'handover', 'cutover', 'finalize']);
  });
});

describe('key-range mode', () => {
  it('is chosen on PostgreSQL 13 and walks bounds first, then copies exactly the range without row locks', () => {
    const p = buildPlan(fixture({ serverVersionNum: 130011 }), opts);
    expect(p.copyMode).toBe('keys');
    expect(p.sql.keyBound).toBe(
      'SELECT ARRAY["id"::text] AS k FROM "public"."gi" WHERE ("id") > ($1::bigint) AND ("id") <= ($2::bigint) ORDER BY "id" OFFSET $3::int - 1 LIMIT 1',
    );
    expect(p.sql.keyCopy).toMatch(/WHERE \("id"\) > \(\$1::bigint\) AND \("id"\) <= \(\$2::bigint\)\),/);
    expect(p.sql.maxKey).toBe('SELECT ARRAY["id"::text] AS k FROM "public"."gi" ORDER BY "id" DESC LIMIT 1');
    expect(planStatements(p).filter((s) => s.step === 'backfill')).toHaveLength(2);
  });
  it('refuses page mode where there are no TID range scans', () => {
    expect(() => buildPlan(fixture({ serverVersionNum: 130011 }), { ...opts, copyMode: 'pages' })).toThrow(
      /no TID range scans/,
    );
  });
  it('refuses a parallel copy, which splits pages, with the key walk (PostgreSQL 13 or asked for)', () => {
    expect(() => buildPlan(fixture({ serverVersionNum: 130011 }), { ...opts, parallelism: 2 })).toThrow(
      /"parallelism": 2 splits the table's pages among streams.*use "parallelism": 1 with "copyMode": "keys"/,
    );
    expect(() => buildPlan(fixture(), { ...opts, copyMode: 'keys', parallelism: 3 })).toThrow(/needs the page walk/);
  });
});

describe('parallel copy', () => {
  it('the plan carries the streams and the dry run says so', () => {
    const p = buildPlan(fixture(), { ...opts, parallelism: 3 });
    expect(p.parallelism).toBe(3);
    expect(planSummary(p)).toMatch(/backfill by page ranges, 3 streams at once/);
    expect(planSummary(buildPlan(fixture(), opts))).toMatch(/backfill by page ranges, one stream/);
  });
  it('parallelism is a whole number from 1 to 16, 1 when absent', () => {
    expect(validatePartitionInput({ table: 'gi' }).parallelism).toBe(1);
    expect(() => validatePartitionInput({ table: 'gi', parallelism: 0 })).toThrow(/"parallelism" must be/);
    expect(() => validatePartitionInput({ table: 'gi', parallelism: 2.5 })).toThrow(/"parallelism" must be/);
  });
});

describe('the key log (forward sync)', () => {
  const plan = buildPlan(fixture(), opts);
  it('installs a trigger that only appends keys to the log beside the table, read by position', () => {
    const s = plan.sql.syncTrigger.join('\n');
    expect(s).toContain(
      'CREATE TABLE IF NOT EXISTS "public"."gi_pf_log" (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, ' +
        '"id" bigint, "created_at" timestamp with time zone)',
    );
    expect(s).toMatch(
      /IF TG_OP = 'INSERT' THEN\s+INSERT INTO "public"\."gi_pf_log" \("id", "created_at"\) SELECT n\.a1, n\.a2 FROM \(SELECT NEW\.\*\) AS n\(a1, a2, a3, a4\);/,
    );
    // an update logs the old key, and the new one only when the key changed (by = or by its text)
    expect(s).toMatch(
      /UNION ALL SELECT n\.a1, n\.a2 FROM .* WHERE o\.a1 IS DISTINCT FROM n\.a1 OR \(o\.a1\)::text COLLATE "C" IS DISTINCT FROM \(n\.a1\)::text COLLATE "C" OR/,
    );
    // it writes nothing into the copy: no statement of the function names it
    const fn = plan.sql.syncTrigger.find((x) => x.includes('"partflow"."fwd_4242"() RETURNS trigger'))!;
    expect(fn).not.toMatch(/gi_pf_shadow/);
    expect(fn).not.toMatch(/NEW\."|OLD\."/);
    expect(fn).toMatch(/nextval\('"public"\."gi_pf_moves"'::regclass\)/);
    expect(plan.sql.dropSyncTrigger).toContain('DROP TABLE IF EXISTS "public"."gi_pf_log"');
  });

  it('applies under an exclusive advisory lock that each batch holds shared, re-copying by key', () => {
    const k = plan.sql.keyLog!;
    expect(k.lock).toMatch(/^SELECT pg_advisory_xact_lock\(\d+\)$/);
    expect(k.batchLock).toBe(k.lock.replace('pg_advisory_xact_lock', 'pg_advisory_xact_lock_shared'));
    expect(backfillSql(plan).keyLog).toEqual(k);
    // only entries committed before the statement: by seq in a subquery, never "seq <= max"
    expect(k.take).toMatch(
      /DELETE FROM "public"\."gi_pf_log" WHERE seq IN \(SELECT seq FROM "public"\."gi_pf_log" ORDER BY seq LIMIT \$1\)/,
    );
    expect(k.clear).toBe(
      'DELETE FROM "public"."gi_pf_shadow" t USING unnest($1::bigint[], $2::timestamp with time zone[]) AS u(k1, k2) ' +
        'WHERE t."id" = u.k1 AND t."created_at" = u.k2',
    );
    expect(k.copy).toMatch(
      /^INSERT INTO "public"\."gi_pf_shadow" \("id", "created_at", "url"\) SELECT s\.a1, s\.a2, s\.a3 FROM \(SELECT \* FROM "public"\."gi"\) AS s\(a1, a2, a3, a4\) WHERE \(s\.a1, s\.a2\) IN \(SELECT k1, k2 FROM unnest/,
    );
  });

  it('keeps the old table through the rollback window with a reverse log, upserting by its primary key', () => {
    const c = plan.sql.cutover.join('\n');
    expect(c).toContain('CREATE TABLE IF NOT EXISTS "public"."gi_pf_rlog"');
    expect(c).toMatch(/"partflow"\."rev_4242"\(\) RETURNS trigger[\s\S]*INSERT INTO "public"\."gi_pf_rlog"/);
    expect(c).not.toMatch(/INSERT INTO "public"\."gi_old"/);
    const r = plan.sql.reverseKeyLog!;
    expect(r.lock).not.toBe(plan.sql.keyLog!.lock);
    expect(r.copy).toMatch(/^INSERT INTO "public"\."gi_old" /);
    expect(r.copy).toMatch(
      /ON CONFLICT \("id"\) DO UPDATE SET "created_at" = EXCLUDED\."created_at", "url" = EXCLUDED\."url"$/,
    );
    expect(plan.sql.swapBack[0]).toBe(
      'LOCK TABLE "public"."gi", "public"."gi_old", "public"."gi_pf_rlog" IN ACCESS EXCLUSIVE MODE',
    );
    expect(plan.sql.swapBack).toContain('DROP TABLE IF EXISTS "public"."gi_pf_rlog"');
    expect(plan.sql.finalize).toContain('DROP TABLE IF EXISTS "public"."gi_pf_rlog"');
  });

  it('records the keys it applies, and the cut-over compares their rows on both sides before the swap', () => {
    const k = plan.sql.keyLog!;
    expect(plan.sql.syncTrigger).toContain(
      'CREATE TABLE IF NOT EXISTS "public"."gi_pf_seen" (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, ' +
        '"id" bigint, "created_at" timestamp with time zone)',
    );
    expect(plan.sql.dropSyncTrigger).toContain('DROP TABLE IF EXISTS "public"."gi_pf_seen"');
    // the applier's take records each distinct key it takes, in the same statement
    expect(k.take).toContain(
      ', r AS (INSERT INTO "public"."gi_pf_seen" ("id", "created_at") SELECT * FROM x) SELECT count(*)::int AS n',
    );
    const seen = k.seen!;
    expect(seen.reset).toBe('DELETE FROM "public"."gi_pf_seen"');
    expect(seen.requeue).toBe(
      'INSERT INTO "public"."gi_pf_log" ("id", "created_at") SELECT DISTINCT "id", "created_at" ' +
        'FROM "public"."gi_pf_seen" WHERE seq > $1 AND seq <= $2',
    );
    // a slice's distinct keys as arrays, then both sides read by those keys as constants: a set of (key columns,
    // key text, row hash) each; the rows that differ either way, keys waiting in the log left out
    expect(seen.slice).toBe(
      'SELECT count(*)::int AS n, array_agg("id")::text AS a1, array_agg("created_at")::text AS a2 FROM ' +
        '(SELECT DISTINCT "id", "created_at" FROM "public"."gi_pf_seen" WHERE seq > $1 AND seq <= $2) x',
    );
    const side = (rel: string) =>
      'SELECT s.a1 AS c1, s.a2 AS c2, ROW(s.a1, s.a2)::text AS k, hashtextextended(ROW(s.a1, s.a2, s.a3)::text, 0) ' +
      `AS h FROM (SELECT * FROM "public"."${rel}") AS s(a1, a2, a3, a4) WHERE (s.a1, s.a2) IN ` +
      '(SELECT k1, k2 FROM unnest($1::bigint[], $2::timestamp with time zone[]) AS u(k1, k2))';
    expect(seen.sliceCompare).toBe(
      `WITH a AS (${side('gi')}), b AS (${side('gi_pf_shadow')}), ` +
        'd AS ((SELECT * FROM a EXCEPT SELECT * FROM b) UNION ALL (SELECT * FROM b EXCEPT SELECT * FROM a)) ' +
        "SELECT count(DISTINCT k)::int AS n, coalesce((array_agg(DISTINCT k))[1:5], '{}') AS keys FROM d " +
        'WHERE NOT EXISTS (SELECT 1 FROM "public"."gi_pf_log" l WHERE l."id" = d.c1 AND l."created_at" = d.c2)',
    );
    // the rollback window's log records nothing: the swap back has no last check
    expect(plan.sql.reverseKeyLog!.seen).toBeUndefined();
    expect(plan.sql.reverseKeyLog!.take).not.toContain('_pf_seen');
  });

  it('leaves logged keys out of both sides of the verification', () => {
    const notLogged = 'NOT EXISTS (SELECT 1 FROM "public"."gi_pf_log" l WHERE l."id" = s.a1 AND l."created_at" = s.a2)';
    expect(plan.sql.verifyChunk!.source.between).toContain(notLogged);
    expect(plan.sql.verifyChunk!.shadow.between).toContain(notLogged);
    expect(plan.sql.verifySource).toContain(notLogged);
  });
});

describe('preflight refusals', () => {
  it.each<[string, Partial<TableInfo>, RegExp]>([
    ['already partitioned', { relkind: 'p' }, /already partitioned/],
    ['a view', { relkind: 'v' }, /not an ordinary table/],
    ['missing column', { partitionColumn: null }, /has no column "created_at"/],
    [
      'wrong column type',
      { partitionColumn: { name: 'created_at', type: 'text', notNull: true } },
      /must be timestamp, timestamptz or date/,
    ],
    ['no primary key', { primaryKey: null }, /no primary key/],
    ['nullable key', { partitionColumn: { name: 'created_at', type: 'timestamptz', notNull: false } }, /allows NULL/],
    [
      'inbound foreign keys',
      {
        inboundForeignKeys: [
          { name: 'fk_x', def: 'FOREIGN KEY (gi_id) REFERENCES gi(id)', table: { schema: 'public', name: 'likes' } },
        ],
      },
      /public\.likes\.fk_x.*"inboundForeignKeys": "drop"/,
    ],
    ['old server', { serverVersionNum: 120011 }, /PostgreSQL 12 is too old/],
    [
      'an active run',
      { activeRun: { workflowId: 'wf-1', state: 'active' } },
      /already has a partflow run in progress \(workflow wf-1\)/,
    ],
    ['dependent views', { dependentViews: ['v_recent'] }, /Views depend on .*v_recent/],
    ['taken names', { takenNames: ['gi_old'] }, /already taken .*gi_old/],
    ['long names', { table: { schema: 'public', name: 'x'.repeat(60) } }, /over PostgreSQL's 63/],
    [
      'a partition',
      { inheritance: { parents: [], children: [], partitionOf: 'public.events' } },
      /is itself a partition of public\.events/,
    ],
    [
      'an inheritance child',
      { inheritance: { parents: ['public.base'], children: [], partitionOf: null } },
      /inherits from public\.base .*NO INHERIT/,
    ],
    [
      'an inheritance parent',
      { inheritance: { parents: [], children: ['public.gi_2019'], partitionOf: null } },
      /inheritance children \(public\.gi_2019\)/,
    ],
    [
      'a FOR ALL TABLES publication',
      { implicitPublications: ['everything'] },
      /Publication\(s\) everything publish every table/,
    ],
    ['a subscription target', { subscriptions: ['sub1'] }, /target of logical replication subscription\(s\) sub1/],
    [
      'OID-bound dependents',
      { oidDependents: ['function count_gi()', 'column g of table other'] },
      /function count_gi\(\), column g of table other are bound to public\.gi by OID/,
    ],
    [
      'a generated partition column',
      { columns: [{ name: 'created_at', type: 'timestamptz', notNull: true, generated: true, identity: '' }] },
      /is GENERATED; partition by a plain column/,
    ],
    [
      'a deferrable primary key',
      { indexes: [{ ...fixture().indexes[0], deferrable: true }] },
      /gi_pkey of public\.gi are DEFERRABLE.*NOT DEFERRABLE first/,
    ],
    [
      'an invalid index',
      { indexes: [fixture().indexes[0], { ...fixture().indexes[1], isValid: false }] },
      /gi_url of public\.gi are INVALID/,
    ],
    [
      'too many months',
      { keyRange: { months: everyHalfYear, bodyStart: null, outsideRows: 0 } },
      /span 183 months from 2010-01, more than 120 .*"startMonth" \(e\.g\. "2015-04"\)/,
    ],
  ])('%s', (_label, over, msg) => {
    expect(() => buildPlan(fixture(over), opts)).toThrow(msg);
  });

  it('goes on with inboundForeignKeys "drop" and plans to drop and restore them', () => {
    const fk = {
      name: 'fk_x',
      def: 'FOREIGN KEY (gi_id) REFERENCES gi(id)',
      table: { schema: 'public', name: 'likes' },
    };
    const p = buildPlan(fixture({ inboundForeignKeys: [fk] }), { ...opts, inboundForeignKeys: 'drop' });
    expect(p.sql.cutover).toContain('ALTER TABLE "public"."likes" DROP CONSTRAINT "fk_x"');
    expect(p.sql.swapBack).toContain(
      'ALTER TABLE "public"."likes" ADD CONSTRAINT "fk_x" FOREIGN KEY (gi_id) REFERENCES gi(id) NOT VALID',
    );
    expect(p.sql.validateInbound).toEqual(['ALTER TABLE "public"."likes" VALIDATE CONSTRAINT "fk_x"']);
  });
});

describe('a foreign key of the table on itself that carries the partition column (issue 29, item 4)', () => {
  const fk = {
    name: 'gi_parent_fk',
    def: 'FOREIGN KEY (parent_id, parent_at) REFERENCES gi(id, created_at) ON DELETE CASCADE',
    table: { schema: 'public', name: 'gi' },
  };

  it('is kept on PostgreSQL 18: added NOT VALID in the cut-over after the swap, validated after it, dropped first by the swap back', () => {
    for (const method of [undefined, 'attach' as const]) {
      const accept = method ? [] : ['gi_url_key'];
      const o = validatePartitionInput({ table: 'gi', premake: 2, acceptLostConstraints: accept, method });
      const attach = { attach: { beyond: 0, newest: null, notValidChecks: [] } };
      const f = fixture({ serverVersionNum: 180004, inboundForeignKeys: [fk], ...(method ? attach : {}) });
      // the attach path takes no unique index without the partition column
      const p = buildPlan(method ? { ...f, indexes: f.indexes.filter((i) => i.name !== 'gi_url_key') } : f, o);
      expect(p.sql.keptKeys).toEqual({
        names: ['gi_parent_fk'],
        add: [
          'ALTER TABLE "public"."gi" ADD CONSTRAINT "gi_parent_fk" FOREIGN KEY (parent_id, parent_at) ' +
            'REFERENCES gi(id, created_at) ON DELETE CASCADE NOT VALID',
        ],
        validate: ['ALTER TABLE "public"."gi" VALIDATE CONSTRAINT "gi_parent_fk"'],
        drop: ['ALTER TABLE "public"."gi" DROP CONSTRAINT IF EXISTS "gi_parent_fk"'],
      });
      const swapBack = method ? p.sql.attach!.swapBack : p.sql.swapBack;
      // right after the LOCK TABLE, while the new table has the name; the old table's own back at the end
      expect(swapBack[1]).toBe('ALTER TABLE "public"."gi" DROP CONSTRAINT IF EXISTS "gi_parent_fk"');
      expect(swapBack.at(-1)).toBe(
        'ALTER TABLE "public"."gi" ADD CONSTRAINT "gi_parent_fk" FOREIGN KEY (parent_id, parent_at) ' +
          'REFERENCES gi(id, created_at) ON DELETE CASCADE NOT VALID',
      );
      const cutover = method ? p.sql.attach!.cutover : p.sql.cutover;
      expect(cutover).toContain('ALTER TABLE "public"."gi" DROP CONSTRAINT "gi_parent_fk"');
      expect(p.givenUp.join(' ')).not.toMatch(/gi_parent_fk/);
      expect(p.warnings.join(' ')).toMatch(/Foreign key gi_parent_fk of public\.gi on itself is kept/);
      const steps = planStatements(p).map((x) => `${x.step}: ${x.sql}`);
      expect(steps).toContain('validate kept keys: ALTER TABLE "public"."gi" VALIDATE CONSTRAINT "gi_parent_fk"');
    }
  });

  it('a key the source holds NOT VALID or NOT ENFORCED comes back so and is not validated, inbound keys alike', () => {
    const ne = { ...fk, def: 'FOREIGN KEY (parent_id, parent_at) REFERENCES gi(id, created_at) NOT ENFORCED' };
    const p = buildPlan(fixture({ serverVersionNum: 180004, inboundForeignKeys: [ne] }), opts);
    expect(p.sql.keptKeys!.add).toEqual([`ALTER TABLE "public"."gi" ADD CONSTRAINT "gi_parent_fk" ${ne.def}`]);
    expect(p.sql.keptKeys!.validate).toEqual([]);
    expect(p.warnings.join(' ')).toMatch(/gi_parent_fk of public\.gi on itself is kept: .* NOT ENFORCED as the source/);
    const other = {
      name: 'fk_x',
      def: 'FOREIGN KEY (gi_id) REFERENCES gi(id) NOT VALID',
      table: { schema: 'public', name: 'likes' },
    };
    const q = buildPlan(fixture({ inboundForeignKeys: [other] }), { ...opts, inboundForeignKeys: 'drop' });
    expect(q.sql.swapBack).toContain(`ALTER TABLE "public"."likes" ADD CONSTRAINT "fk_x" ${other.def}`);
    expect(q.sql.validateInbound).toEqual([]);
  });

  it('keys named like the clones of another (x, x_1, x_1_1; a 63-byte name cut to 61 + _1) are added before it', () => {
    const named = (...names: string[]) =>
      buildPlan(fixture({ serverVersionNum: 180004, inboundForeignKeys: names.map((name) => ({ ...fk, name })) }), opts)
        .sql.keptKeys!.names;
    expect(named('x', 'x_1', 'x_1_1')).toEqual(['x_1_1', 'x_1', 'x']);
    expect(named('k'.repeat(63), `${'k'.repeat(61)}_1`)).toEqual([`${'k'.repeat(61)}_1`, 'k'.repeat(63)]);
  });

  it('stays NOT VALID when the source holds it so; refused before 18, and when it names the id alone', () => {
    const nv = { ...fk, def: `${fk.def} NOT VALID` };
    const p = buildPlan(fixture({ serverVersionNum: 180004, inboundForeignKeys: [nv] }), opts);
    expect(p.sql.keptKeys!.add).toEqual([`ALTER TABLE "public"."gi" ADD CONSTRAINT "gi_parent_fk" ${nv.def}`]);
    expect(p.sql.keptKeys!.validate).toEqual([]);
    expect(() => buildPlan(fixture({ serverVersionNum: 170006, inboundForeignKeys: [fk] }), opts)).toThrow(
      /public\.gi references itself by foreign key gi_parent_fk .*keeps it only on 18/,
    );
    const byId = { ...fk, def: 'FOREIGN KEY (parent_id) REFERENCES gi(id)' };
    expect(() => buildPlan(fixture({ serverVersionNum: 180004, inboundForeignKeys: [byId] }), opts)).toThrow(
      /unique only together with created_at, so it cannot be kept/,
    );
    const dropped = buildPlan(fixture({ serverVersionNum: 170006, inboundForeignKeys: [fk] }), {
      ...opts,
      inboundForeignKeys: 'drop',
    });
    expect(dropped.sql.keptKeys).toBeUndefined();
    expect(dropped.givenUp.join(' ')).toMatch(/foreign key gi_parent_fk of public\.gi on itself: dropped/);
  });
});

describe("the primary key's widening (issue 29, item 6)", () => {
  it('is refused when pg_stat_statements could not show the statements, naming the way to accept it', () => {
    expect(() => buildPlan(fixture({ appStatements: null }), opts)).toThrow(
      /The primary key gi_pkey of public\.gi becomes \(id, created_at\).*pg_stat_statements is not installed.*list "gi_pkey" in "acceptLostConstraints"/,
    );
    expect(() => buildPlan(fixture({ appStatements: [], appStatementsHidden: 2 }), opts)).toThrow(
      /2 statement\(s\) of other roles are hidden/,
    );
  });

  it('is accepted with the key in acceptLostConstraints, and listed as given up either way', () => {
    const accepted = validatePartitionInput({
      table: 'gi',
      premake: 2,
      acceptLostConstraints: ['gi_url_key', 'gi_pkey'],
    });
    expect(buildPlan(fixture({ appStatements: null }), accepted).givenUp).toContainEqual(
      expect.stringMatching(/^\(id\) is unique per partition only.*statements were not checked, accepted/),
    );
    expect(buildPlan(fixture(), opts).givenUp).toContainEqual(
      '(id) is unique per partition only, not across the table (primary key gi_pkey widened).',
    );
  });

  it('refuses a statement that checks the wider key unless the widening is accepted, and one that fails always', () => {
    const upsert = { query: 'INSERT INTO gi (id) VALUES ($1) ON CONFLICT DO NOTHING', calls: 7 };
    const failing = { query: 'INSERT INTO gi (id) VALUES ($1) ON CONFLICT (id) DO NOTHING', calls: 3 };
    const accepted = validatePartitionInput({
      table: 'gi',
      premake: 2,
      acceptLostConstraints: ['gi_url_key', 'gi_pkey'],
    });
    expect(() => buildPlan(fixture({ appStatements: [upsert] }), opts)).toThrow(
      /7 calls: ON CONFLICT without a target.*accepted with "gi_pkey" in "acceptLostConstraints"/,
    );
    expect(() => buildPlan(fixture({ appStatements: [upsert] }), accepted)).not.toThrow();
    expect(() => buildPlan(fixture({ appStatements: [failing] }), accepted)).toThrow(/3 calls: ON CONFLICT \(id\)/);
  });

  it('lists the hot statements that will visit every partition', () => {
    const plan = buildPlan(fixture({ appStatements: [{ query: 'SELECT * FROM gi WHERE id = $1', calls: 42 }] }), opts);
    expect(plan.warnings).toContainEqual(
      expect.stringMatching(/^"SELECT \* FROM gi WHERE id = \$1" \(42 calls\).*every partition/),
    );
  });
});

describe('the attach path (issue 25)', () => {
  const attachOpts = validatePartitionInput({ table: 'gi', premake: 2, method: 'attach' });
  const facts = { attach: { beyond: 0, newest: null, notValidChecks: [] } };
  const noUrl = (i: TableInfo['indexes'][number]) => i.name !== 'gi_url_key';
  const info = (over: Partial<TableInfo> = {}) => {
    const f = fixture({ ...facts, ...over });
    return { ...f, indexes: f.indexes.filter(noUrl), ...over };
  };
  const plan = buildPlan(info(), attachOpts);
  const a = plan.sql.attach!;

  it('keeps the rows: the history partition below the month after next, monthly partitions from it', () => {
    expect(plan.method).toBe('attach');
    expect(a.cutoff).toBe('2025-03');
    expect(plan.partitions.map((p) => p.name)).toEqual(['gi_2025_03']);
    expect(a.buildKey).toBe('CREATE UNIQUE INDEX CONCURRENTLY "gi_pfa_key" ON "public"."gi" ("id", "created_at")');
    expect(a.addCheck).toBe(
      `ALTER TABLE "public"."gi" ADD CONSTRAINT "gi_pfa_bound" CHECK ("created_at" < '2025-03-01 00:00:00 UTC'::timestamptz) NOT VALID`,
    );
    expect(a.validateCheck).toBe('ALTER TABLE "public"."gi" VALIDATE CONSTRAINT "gi_pfa_bound"');
  });

  it('cuts over in one transaction: the key swapped to the new index, renames, the ATTACH, the sequence', () => {
    expect(a.cutover).toEqual([
      'LOCK TABLE "public"."gi", "public"."gi_pf_shadow" IN ACCESS EXCLUSIVE MODE',
      'ALTER TABLE "public"."gi" DROP CONSTRAINT "gi_pkey"',
      'ALTER TABLE "public"."gi" ADD CONSTRAINT "gi_pfo_0" PRIMARY KEY USING INDEX "gi_pfa_key"',
      'ALTER TABLE "public"."gi" RENAME TO "gi_history"',
      ...plan.indexRenames.slice(1).map((r) => `ALTER INDEX "public"."${r.original}" RENAME TO "${r.oldParked}"`),
      'ALTER TABLE "public"."gi_pf_shadow" RENAME TO "gi"',
      ...plan.indexRenames.map((r) => `ALTER INDEX "public"."${r.shadowTemp}" RENAME TO "${r.original}"`),
      `ALTER TABLE "public"."gi" ATTACH PARTITION "public"."gi_history" FOR VALUES FROM (MINVALUE) TO ('2025-03-01 00:00:00 UTC'::timestamptz)`,
      'ALTER SEQUENCE "public"."gi_id_seq" OWNED BY "public"."gi"."id"',
    ]);
  });

  it('swaps back: detach, the rows since the cut-over moved back, the original key on its rebuilt index', () => {
    expect(a.buildBack).toBe('CREATE UNIQUE INDEX CONCURRENTLY "gi_pfa_back" ON "public"."gi_history" ("id")');
    expect(a.swapBack.slice(0, 4)).toEqual([
      'LOCK TABLE "public"."gi" IN ACCESS EXCLUSIVE MODE',
      'ALTER TABLE "public"."gi" DETACH PARTITION "public"."gi_history"',
      'ALTER TABLE "public"."gi_history" DROP CONSTRAINT IF EXISTS "gi_pfa_bound"',
      `INSERT INTO "public"."gi_history" (${plan.columns.map((c) => `"${c}"`).join(', ')}) SELECT ${plan.columns.map((c) => `"${c}"`).join(', ')} FROM "public"."gi"`,
    ]);
    expect(a.swapBack).toContain(
      'ALTER TABLE "public"."gi_history" ADD CONSTRAINT "gi_pkey" PRIMARY KEY USING INDEX "gi_pfa_back"',
    );
    expect(a.swapBack).toContain('ALTER TABLE "public"."gi_history" RENAME TO "gi"');
  });

  it.each<[string, Partial<TableInfo>, RegExp]>([
    [
      'rows past the cut-off',
      { attach: { beyond: 3, newest: '9999-12-31', notValidChecks: [] } },
      /^3 row\(s\) of public\.gi are dated on or after the cut-off \(the newest 9999-12-31\)/,
    ],
    [
      'a NOT VALID check',
      { attach: { beyond: 0, newest: null, notValidChecks: ['gi_len'] } },
      /CHECK constraint\(s\) gi_len of public\.gi are NOT VALID/,
    ],
    ['a trigger', { userTriggers: ['audit'] }, /Trigger\(s\) audit of public\.gi: .*use "method": "copy"/],
  ])('refuses %s', (_, over, expected) => {
    expect(() => buildPlan(info(over), attachOpts)).toThrow(expected);
  });

  it('refuses a unique index without the partition column, and a cutoffMonth too near', () => {
    expect(() => buildPlan(fixture(facts), attachOpts)).toThrow(/gi_url_key of public\.gi would lose its uniqueness/);
    const near = validatePartitionInput({ table: 'gi', method: 'attach', cutoffMonth: '2025-02' });
    expect(() => buildPlan(info(), near)).toThrow(/must be at least two months after the current month 2025-01/);
    expect(() => validatePartitionInput({ table: 'gi', cutoffMonth: '2025-09' })).toThrow(
      /belongs to "method": "attach"/,
    );
  });
});

describe('partition layout', () => {
  it('leaves outliers (a sentinel year, decades-old strays) to the default partition and says how many', () => {
    const p = buildPlan(
      fixture({ keyRange: { months: ['1900-01', '2024-12', '2025-01'], bodyStart: '2024-12', outsideRows: 3 } }),
      opts,
    );
    expect(p.partitions[0].name).toBe('gi_2024_12');
    expect(p.outsideRows).toBe(3);
    expect(p.warnings.join(' ')).toMatch(
      /3 row\(s\) of public\.gi fall outside the monthly partitions 2024-12 … 2025-03 and go to gi_default: .*list them with: SELECT \* FROM "public"\."gi" WHERE "created_at" < '2024-12-01 00:00:00 UTC'::timestamptz OR "created_at" >= '2025-04-01 00:00:00 UTC'::timestamptz/,
    );
    expect(p.warnings.join(' ')).not.toMatch(/1900-01-01/); // row values stay out of the plan (and so of history)
  });
  it('with startMonth keeps everything older in one partition', () => {
    const p = buildPlan(fixture({ keyRange: { months: everyHalfYear, bodyStart: null, outsideRows: 0 } }), {
      ...opts,
      startMonth: '2024-06',
    });
    expect(p.partitions[0]).toEqual({ name: 'gi_older', from: '2010-01', to: '2024-06' });
    expect(p.partitions[1].name).toBe('gi_2024_06');
    expect(p.partitions).toHaveLength(1 + 10);
    expect(planSummary(p)).toMatch(/12 partitions in all/);
  });
});

describe('pagesPerBatch and compareChecksums', () => {
  it('turns rows into pages by density', () => {
    expect(pagesPerBatch(5000, 1_000_000, 20_000)).toBe(100);
    expect(pagesPerBatch(10, 0, 0)).toBe(1);
  });
  it('maps months to partitions, out-of-range months to the default, and names differing ranges', () => {
    const plan = { partitions: [{ name: 'p1', from: '2025-01', to: '2025-02' }], defaultPartition: 'pd' };
    const same = compareChecksums(
      plan,
      [
        { bucket: '2025-01', n: '2', checksum: '10' },
        { bucket: '2030-01', n: '1', checksum: '-5' },
      ],
      [
        { bucket: '2030-01', n: '1', checksum: '-5' },
        { bucket: '2025-01', n: '2', checksum: '10' },
      ],
      1,
    );
    expect(same.ok).toBe(true);
    expect(same.rows).toBe(3);
    const diff = compareChecksums(
      plan,
      [{ bucket: '2025-01', n: '2', checksum: '10' }],
      [{ bucket: '2025-01', n: '2', checksum: '11' }],
      1,
    );
    expect(diff.ok).toBe(false);
    expect(diff.mismatches).toEqual(['p1 (source 2 rows, copy 2)']);
  });
  it('maps a multi-month partition, infinities (null buckets) and years past 9999 by range', () => {
    const plan = {
      partitions: [
        { name: 'older', from: '2010-01', to: '2024-06' },
        { name: 'p6', from: '2024-06', to: '2024-07' },
      ],
      defaultPartition: 'pd',
    };
    const r = compareChecksums(
      plan,
      [
        { bucket: '2012-05', n: '1', checksum: '1' },
        { bucket: null, n: '2', checksum: '3' },
        { bucket: '10000-01', n: '1', checksum: '4' },
        { bucket: '2024-06', n: '1', checksum: '5' },
      ],
      [],
      1,
    );
    expect(r.ranges.map((x) => [x.partition, x.sourceRows])).toEqual([
      ['older', 1],
      ['p6', 1],
      ['pd', 3],
    ]);
  });
  it('names what changed in a shape', () => {
    expect(
      shapeDifferences(
        ['column 1 id bigint', 'column 2 v text'],
        ['column 1 id bigint', 'column 2 w text', 'column 3 x integer'],
      ),
    ).toEqual(['column 2 v text is gone', 'column 2 w text is new', 'column 3 x integer is new']);
  });
});

describe('publications carried (issue 29 item 5)', () => {
  const pub = (over: Partial<PublicationInfo> = {}): PublicationInfo => ({
    name: 'cdc',
    viaRoot: false,
    alterable: true,
    owner: 'postgres',
    partitionedTables: [],
    columns: null,
    rowFilter: null,
    updatesOrDeletes: true,
    ...over,
  });
  const withPubs = (pubs: PublicationInfo[], input: Record<string, unknown> = {}, identity = 'd') => {
    const f = fixture({ attach: { beyond: 0, newest: null, notValidChecks: [] } });
    const info = {
      ...f,
      indexes: f.indexes.filter((i) => i.name !== 'gi_url_key'),
      storage: { ...f.storage, replicaIdentity: identity as TableInfo['storage']['replicaIdentity'] },
    };
    return buildPlan(
      { ...info, publications: pubs.map((p) => p.name), publicationDetails: pubs },
      validatePartitionInput({ table: 'gi', ...input }),
    );
  };

  it('the cut-over moves each publication to the new table, the swap back moves it home', () => {
    const plan = withPubs([
      pub(),
      pub({ name: 'lake', viaRoot: true, columns: ['id', 'created_at'], rowFilter: "(status <> 'x'::text)" }),
    ]);
    expect(plan.sql.cutover.filter((s) => s.includes('PUBLICATION'))).toEqual([
      'ALTER PUBLICATION "cdc" DROP TABLE "public"."gi_old"',
      // on before the ADD: PostgreSQL takes a column list or row filter on a partitioned table only then
      'ALTER PUBLICATION "cdc" SET (publish_via_partition_root = true)',
      'ALTER PUBLICATION "cdc" ADD TABLE "public"."gi"',
      'ALTER PUBLICATION "lake" DROP TABLE "public"."gi_old"',
      `ALTER PUBLICATION "lake" ADD TABLE "public"."gi" ("id", "created_at") WHERE ((status <> 'x'::text))`,
    ]);
    expect(plan.sql.swapBack.filter((s) => s.includes('PUBLICATION'))).toEqual([
      'ALTER PUBLICATION "cdc" DROP TABLE "public"."gi_pf_shadow"',
      'ALTER PUBLICATION "cdc" ADD TABLE "public"."gi"',
      'ALTER PUBLICATION "cdc" SET (publish_via_partition_root = false)',
      'ALTER PUBLICATION "lake" DROP TABLE "public"."gi_pf_shadow"',
      `ALTER PUBLICATION "lake" ADD TABLE "public"."gi" ("id", "created_at") WHERE ((status <> 'x'::text))`,
    ]);
    expect(plan.warnings.join(' ')).toMatch(/Publication cdc: public\.gi leaves it and the new table joins it/);
  });

  it('the attach path moves it from the table that becomes the history partition to the new parent', () => {
    const a = withPubs([pub()], { method: 'attach' }).sql.attach!;
    expect(a.cutover.slice(-3)).toEqual([
      'ALTER PUBLICATION "cdc" DROP TABLE "public"."gi_history"',
      'ALTER PUBLICATION "cdc" SET (publish_via_partition_root = true)',
      'ALTER PUBLICATION "cdc" ADD TABLE "public"."gi"',
    ]);
    expect(a.swapBack.filter((s) => s.includes('PUBLICATION'))).toEqual([
      'ALTER PUBLICATION "cdc" DROP TABLE "public"."gi_pf_shadow"',
      'ALTER PUBLICATION "cdc" ADD TABLE "public"."gi"',
      'ALTER PUBLICATION "cdc" SET (publish_via_partition_root = false)',
    ]);
  });

  it.each<[string, Partial<PublicationInfo>, RegExp]>([
    ['not alterable', { alterable: false, owner: 'cdc_admin' }, /owned by cdc_admin, which partflow's role/],
    [
      'partitioned tables by partition',
      { partitionedTables: ['public.events'] },
      /publishes partitioned table\(s\) public\.events by their partitions/,
    ],
    [
      'a column list without the column',
      { columns: ['id', 'url'] },
      /publishes only columns id, url of public\.gi;.*created_at/,
    ],
  ])('refused: %s', (_what, over, message) => {
    expect(() => withPubs([pub(over)])).toThrow(message);
  });

  it('a column list without the column is fine when the publication publishes no UPDATE or DELETE', () => {
    expect(() => withPubs([pub({ columns: ['id', 'url'], updatesOrDeletes: false })])).not.toThrow();
  });

  it('the new replica identity (id, created_at) must be covered by a column list and a row filter (attack 2)', () => {
    expect(() => withPubs([pub({ columns: ['url', 'created_at'] })])).toThrow(
      /publishes only columns url, created_at of public\.gi; .*\(id, created_at\).*add id to the list/,
    );
    expect(() => withPubs([pub({ rowFilter: "(url <> 'x'::text)" })], {}, 'i')).toThrow(
      /filters public\.gi's rows \(WHERE \(url <> 'x'::text\)\) by its replica identity index/,
    );
    // FULL is carried to every partition: a list of every column and any filter keep working
    expect(() => withPubs([pub({ rowFilter: "(url <> 'x'::text)" })], {}, 'f')).not.toThrow();
    expect(() => withPubs([pub({ rowFilter: '(id > 0)' })], {}, 'd')).not.toThrow();
  });
});
