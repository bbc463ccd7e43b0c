import { compareChecksums } from '../../activities/partition';
import type { TableInfo } from '../../src/catalog';
import { validatePartitionInput } from '../../src/input';
import { buildPlan, mirrorFunctionSql, pagesPerBatch, planStatements } from '../../src/plan';

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
      { name: 'gi_pkey', def: 'CREATE UNIQUE INDEX gi_pkey ON public.gi USING btree (id)', tail: 'USING btree (id)', isPrimary: true, isUnique: true, columns: ['id'], constraintName: 'gi_pkey', hasPredicate: false },
      { name: 'gi_url', def: 'CREATE INDEX gi_url ON public.gi USING btree (url) WHERE (url IS NOT NULL)', tail: 'USING btree (url) WHERE (url IS NOT NULL)', isPrimary: false, isUnique: false, columns: ['url'], constraintName: null, hasPredicate: true },
      { name: 'gi_url_key', def: 'CREATE UNIQUE INDEX gi_url_key ON public.gi USING btree (url)', tail: 'USING btree (url)', isPrimary: false, isUnique: true, columns: ['url'], constraintName: 'gi_url_key', hasPredicate: false },
    ],
    outboundForeignKeys: [{ name: 'gi_user_fk', def: 'FOREIGN KEY (user_id) REFERENCES users(id)', table: { schema: 'public', name: 'gi' } }],
    inboundForeignKeys: [],
    sequences: [{ column: 'id', sequence: { schema: 'public', name: 'gi_id_seq' }, kind: 'serial' }],
    dependentViews: [],
    publications: [],
    userTriggers: [],
    rules: [],
    rowSecurity: false,
    grants: [{ grantee: 'reader', privilege: 'SELECT', grantable: false }],
    comment: "images' table",
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

const opts = validatePartitionInput({ table: 'gi', premake: 2 });

describe('buildPlan', () => {
  const plan = buildPlan(fixture(), opts);

  it('creates the partitioned copy, one partition per month and a default', () => {
    expect(plan.sql.shadow[0]).toBe('CREATE TABLE "public"."gi_pf_shadow" (LIKE "public"."gi" INCLUDING ALL EXCLUDING INDEXES) PARTITION BY RANGE ("created_at")');
    expect(plan.partitions.map((p) => p.name)).toEqual(['gi_2024_11', 'gi_2024_12', 'gi_2025_01', 'gi_2025_02', 'gi_2025_03']);
    expect(plan.sql.shadow[1]).toBe(
      `CREATE TABLE "public"."gi_2024_11" PARTITION OF "public"."gi_pf_shadow" FOR VALUES FROM ('2024-11-01 00:00:00 UTC'::timestamptz) TO ('2024-12-01 00:00:00 UTC'::timestamptz)`,
    );
    expect(plan.sql.shadow).toContain('CREATE TABLE "public"."gi_default" PARTITION OF "public"."gi_pf_shadow" DEFAULT');
  });

  it('widens the primary key with the partition column and says so', () => {
    expect(plan.shadowKey).toEqual(['id', 'created_at']);
    expect(plan.sql.shadow).toContain('ALTER TABLE "public"."gi_pf_shadow" ADD CONSTRAINT "gi_pfi_0" PRIMARY KEY ("id", "created_at")');
    expect(plan.warnings.join(' ')).toMatch(/primary key becomes \(id, created_at\)/);
  });

  it('keeps partial indexes and reports a unique index it cannot enforce', () => {
    expect(plan.sql.shadow).toContain('CREATE INDEX "gi_pfi_1" ON "public"."gi_pf_shadow" USING btree (url) WHERE (url IS NOT NULL)');
    expect(plan.sql.shadow).toContain('CREATE INDEX "gi_pfi_2" ON "public"."gi_pf_shadow" USING btree (url)');
    expect(plan.warnings.join(' ')).toMatch(/Unique index gi_url_key does not contain created_at/);
  });

  it('copies grants, comment and outbound foreign keys', () => {
    expect(plan.sql.shadow).toContain('GRANT SELECT ON "public"."gi_pf_shadow" TO "reader"');
    expect(plan.sql.shadow).toContain(`COMMENT ON TABLE "public"."gi_pf_shadow" IS 'images'' table'`);
    expect(plan.sql.shadowForeignKeys).toEqual(['ALTER TABLE "public"."gi_pf_shadow" ADD CONSTRAINT "gi_user_fk" FOREIGN KEY (user_id) REFERENCES users(id)']);
  });

  it('copies generated columns by recomputing them, not inserting them', () => {
    expect(plan.columns).toEqual(['id', 'created_at', 'url']);
  });

  it('backfills page ranges with FOR SHARE and ON CONFLICT DO NOTHING', () => {
    expect(plan.sql.backfillBatch).toMatch(/WHERE ctid >= \$1::tid AND ctid < \$2::tid FOR SHARE/);
    expect(plan.sql.backfillBatch).toMatch(/ON CONFLICT DO NOTHING$/);
    // the fast form is the same copy without ON CONFLICT: a row the trigger wrote makes it fail with 23505
    expect(plan.sql.backfillBatchFast).toBe(plan.sql.backfillBatch.replace(/ ON CONFLICT DO NOTHING$/, ''));
    expect(plan.sql.backfillBatchFast).not.toMatch(/ON CONFLICT/);
  });

  it('cuts over in order: lock, drop trigger, renames, sequence ownership, reverse trigger', () => {
    const c = plan.sql.cutover;
    expect(c[0]).toBe('LOCK TABLE "public"."gi", "public"."gi_pf_shadow" IN ACCESS EXCLUSIVE MODE');
    expect(c[1]).toBe('DROP TRIGGER IF EXISTS "partflow_sync_fwd" ON "public"."gi"');
    const i = (s: string) => c.indexOf(s);
    expect(i('ALTER TABLE "public"."gi" RENAME TO "gi_old"')).toBeLessThan(i('ALTER TABLE "public"."gi_pf_shadow" RENAME TO "gi"'));
    expect(c).toContain('ALTER INDEX "public"."gi_pkey" RENAME TO "gi_pfo_0"');
    expect(c).toContain('ALTER INDEX "public"."gi_pfi_0" RENAME TO "gi_pkey"');
    expect(c).toContain('ALTER SEQUENCE "public"."gi_id_seq" OWNED BY "public"."gi"."id"');
    expect(c[c.length - 1]).toBe('CREATE TRIGGER "partflow_sync_rev" AFTER INSERT OR UPDATE OR DELETE ON "public"."gi" FOR EACH ROW EXECUTE FUNCTION "partflow"."rev_4242"()');
  });

  it('swaps back with the inverse renames', () => {
    expect(plan.sql.swapBack).toContain('ALTER TABLE "public"."gi" RENAME TO "gi_pf_shadow"');
    expect(plan.sql.swapBack).toContain('ALTER TABLE "public"."gi_old" RENAME TO "gi"');
    expect(plan.sql.swapBack).toContain('ALTER INDEX "public"."gi_pfo_0" RENAME TO "gi_pkey"');
  });

  it('lists every statement for a dry run', () => {
    const steps = planStatements(plan).map((s) => s.step);
    expect([...new Set(steps)]).toEqual(['shadow', 'sync', 'backfill', 'verify', 'cutover', 'finalize']);
  });
});

describe('key-range mode', () => {
  it('is chosen on PostgreSQL 13 and walks bounds first, then copies exactly the range under FOR SHARE', () => {
    const p = buildPlan(fixture({ serverVersionNum: 130011 }), opts);
    expect(p.copyMode).toBe('keys');
    expect(p.sql.keyBound).toBe('SELECT ARRAY["id"::text] AS k FROM "public"."gi" WHERE ("id") > ($1::bigint) AND ("id") <= ($2::bigint) ORDER BY "id" OFFSET $3::int - 1 LIMIT 1');
    expect(p.sql.keyCopy).toMatch(/WHERE \("id"\) > \(\$1::bigint\) AND \("id"\) <= \(\$2::bigint\) FOR SHARE/);
    expect(p.sql.maxKey).toBe('SELECT ARRAY["id"::text] AS k FROM "public"."gi" ORDER BY "id" DESC LIMIT 1');
    expect(planStatements(p).filter((s) => s.step === 'backfill')).toHaveLength(2);
  });
  it('refuses page mode where there are no TID range scans', () => {
    expect(() => buildPlan(fixture({ serverVersionNum: 130011 }), { ...opts, copyMode: 'pages' })).toThrow(/no TID range scans/);
  });
});

describe('the mirror trigger', () => {
  const sql = mirrorFunctionSql({ schema: 'partflow', name: 'f' }, { schema: 's', name: 't' }, ['id', 'ts', 'v'], ['id', 'ts'], false, []);
  it('deletes the old key on DELETE and on an UPDATE that changes the key', () => {
    expect(sql).toMatch(/IF TG_OP = 'DELETE' OR \(TG_OP = 'UPDATE' AND \(OLD\."id" IS DISTINCT FROM NEW\."id" OR OLD\."ts" IS DISTINCT FROM NEW\."ts"\)\) THEN\s+DELETE FROM "s"\."t" t WHERE t\."id" = OLD\."id" AND t\."ts" = OLD\."ts";/);
  });
  it('upserts the new row on INSERT and UPDATE', () => {
    expect(sql).toMatch(/ON CONFLICT \("id", "ts"\) DO UPDATE SET "v" = EXCLUDED\."v"/);
  });
  it('uses OVERRIDING SYSTEM VALUE and never updates an ALWAYS identity column', () => {
    const s2 = mirrorFunctionSql({ schema: 'partflow', name: 'f' }, { schema: 's', name: 't' }, ['id', 'k', 'v'], ['k'], true, ['id']);
    expect(s2).toMatch(/OVERRIDING SYSTEM VALUE/);
    expect(s2).toMatch(/DO UPDATE SET "v" = EXCLUDED\."v";/);
  });
});

describe('preflight refusals', () => {
  it.each<[string, Partial<TableInfo>, RegExp]>([
    ['already partitioned', { relkind: 'p' }, /already partitioned/],
    ['a view', { relkind: 'v' }, /not an ordinary table/],
    ['missing column', { partitionColumn: null }, /has no column "created_at"/],
    ['wrong column type', { partitionColumn: { name: 'created_at', type: 'text', notNull: true } }, /must be timestamp, timestamptz or date/],
    ['no primary key', { primaryKey: null }, /no primary key/],
    ['nullable key', { partitionColumn: { name: 'created_at', type: 'timestamptz', notNull: false } }, /allows NULL/],
    ['inbound foreign keys', { inboundForeignKeys: [{ name: 'fk_x', def: 'FOREIGN KEY (gi_id) REFERENCES gi(id)', table: { schema: 'public', name: 'likes' } }] }, /public\.likes\.fk_x.*"inboundForeignKeys": "drop"/],
    ['old server', { serverVersionNum: 120011 }, /PostgreSQL 12 is too old/],
    ['an active run', { activeRun: { workflowId: 'wf-1', state: 'active' } }, /already has a partflow run in progress \(workflow wf-1\)/],
    ['dependent views', { dependentViews: ['v_recent'] }, /Views depend on .*v_recent/],
    ['taken names', { takenNames: ['gi_old'] }, /already taken .*gi_old/],
    ['long names', { table: { schema: 'public', name: 'x'.repeat(60) } }, /over PostgreSQL's 63/],
  ])('%s', (_label, over, msg) => {
    expect(() => buildPlan(fixture(over), opts)).toThrow(msg);
  });

  it('goes on with inboundForeignKeys "drop" and plans to drop and restore them', () => {
    const fk = { name: 'fk_x', def: 'FOREIGN KEY (gi_id) REFERENCES gi(id)', table: { schema: 'public', name: 'likes' } };
    const p = buildPlan(fixture({ inboundForeignKeys: [fk] }), { ...opts, inboundForeignKeys: 'drop' });
    expect(p.sql.cutover).toContain('ALTER TABLE "public"."likes" DROP CONSTRAINT "fk_x"');
    expect(p.sql.swapBack).toContain('ALTER TABLE "public"."likes" ADD CONSTRAINT "fk_x" FOREIGN KEY (gi_id) REFERENCES gi(id) NOT VALID');
    expect(p.sql.validateInbound).toEqual(['ALTER TABLE "public"."likes" VALIDATE CONSTRAINT "fk_x"']);
  });
});

describe('pagesPerBatch and compareChecksums', () => {
  it('turns rows into pages by density', () => {
    expect(pagesPerBatch(5000, 1_000_000, 20_000)).toBe(100);
    expect(pagesPerBatch(10, 0, 0)).toBe(1);
  });
  it('maps months to partitions, out-of-range months to the default, and names differing ranges', () => {
    const plan = { partitions: [{ name: 'p1', from: '2025-01', to: '2025-02' }], defaultPartition: 'pd' };
    const same = compareChecksums(plan, [{ bucket: '2025-01', n: '2', checksum: '10' }, { bucket: '2030-01', n: '1', checksum: '-5' }], [{ bucket: '2030-01', n: '1', checksum: '-5' }, { bucket: '2025-01', n: '2', checksum: '10' }], 1);
    expect(same.ok).toBe(true);
    expect(same.rows).toBe(3);
    const diff = compareChecksums(plan, [{ bucket: '2025-01', n: '2', checksum: '10' }], [{ bucket: '2025-01', n: '2', checksum: '11' }], 1);
    expect(diff.ok).toBe(false);
    expect(diff.mismatches).toEqual(['p1 (source 2 rows, copy 2)']);
  });
});
