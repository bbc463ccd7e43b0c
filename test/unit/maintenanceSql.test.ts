import { archiveStep, detachStep, finishDetachSql, monthStep, PartedTable } from '../../src/maintenanceSql';

const parted: PartedTable = {
  table: { schema: 'app', name: 'ev' },
  oid: 4242,
  column: 'created_at',
  type: 'timestamptz',
  def: { schema: 'app', name: 'ev_default' },
  referenced: ['app.users'],
  columns: '"id", "created_at", "payload"',
};

describe('maintainPartitions statements', () => {
  it("a new partition gets the parent's replica identity FULL or NOTHING (a published table's row filter needs it)", () => {
    const full = monthStep({ ...parted, replicaIdentity: 'f' }, { year: 2026, month: 3 }, 'UTC');
    expect(full.forward[2]).toBe('ALTER TABLE "app"."ev_2026_03" REPLICA IDENTITY FULL');
    const nothing = monthStep({ ...parted, replicaIdentity: 'n' }, { year: 2026, month: 3 }, 'UTC');
    expect(nothing.forward[2]).toBe('ALTER TABLE "app"."ev_2026_03" REPLICA IDENTITY NOTHING');
    const dflt = monthStep({ ...parted, replicaIdentity: 'd' }, { year: 2026, month: 3 }, 'UTC');
    expect(dflt.forward.join(';')).not.toContain('REPLICA IDENTITY');
  });

  it("a month's partition: locks first, created like the parent, the month's rows moved out of the default, attached; undone", () => {
    const s = monthStep(parted, { year: 2026, month: 3 }, 'Europe/Berlin');
    const range =
      `"created_at" >= '2026-03-01 00:00:00 Europe/Berlin'::timestamptz AND ` +
      `"created_at" < '2026-04-01 00:00:00 Europe/Berlin'::timestamptz`;
    expect(s.partition).toBe('ev_2026_03');
    expect(s.locks).toEqual([
      'LOCK TABLE app.users IN SHARE ROW EXCLUSIVE MODE',
      'LOCK TABLE ONLY "app"."ev" IN SHARE ROW EXCLUSIVE MODE',
      'LOCK TABLE "app"."ev_default" IN ACCESS EXCLUSIVE MODE',
    ]);
    expect(s.forward[0]).toBe(
      'CREATE TABLE "app"."ev_2026_03" (LIKE "app"."ev" INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE ' +
        'INCLUDING COMMENTS INCLUDING GENERATED)',
    );
    expect(s.forward[1]).toContain(`'"app"."ev_2026_03"'::regclass`);
    // a table named a$$b cannot end the owner check's body
    expect(s.forward[1]).toMatch(/^DO \$partflow_owner\$ [\s\S]* END \$partflow_owner\$$/);
    expect(s.forward.slice(2)).toEqual([
      `INSERT INTO "app"."ev_2026_03" ("id", "created_at", "payload") SELECT "id", "created_at", "payload" FROM "app"."ev_default" WHERE ${range}`,
      `DELETE FROM "app"."ev_default" WHERE ${range}`,
      `ALTER TABLE "app"."ev" ATTACH PARTITION "app"."ev_2026_03" FOR VALUES FROM ` +
        `('2026-03-01 00:00:00 Europe/Berlin'::timestamptz) TO ('2026-04-01 00:00:00 Europe/Berlin'::timestamptz)`,
    ]);
    expect(s.undo).toEqual([
      'ALTER TABLE "app"."ev" DETACH PARTITION "app"."ev_2026_03"',
      'INSERT INTO "app"."ev" ("id", "created_at", "payload") SELECT "id", "created_at", "payload" FROM "app"."ev_2026_03"',
      'DROP TABLE "app"."ev_2026_03"',
    ]);
  });

  it('without a default partition nothing moves and the default is not locked', () => {
    const s = monthStep({ ...parted, def: null, referenced: [] }, { year: 2026, month: 12 }, 'UTC');
    expect(s.locks).toEqual(['LOCK TABLE ONLY "app"."ev" IN SHARE ROW EXCLUSIVE MODE']);
    expect(s.forward).toHaveLength(3);
    expect(s.forward[2]).toContain(`TO ('2027-01-01 00:00:00 UTC'::timestamptz)`);
  });

  it('a detach, concurrently or with its locks first; undone by attaching the same bound', () => {
    const part = { schema: 'app', name: 'ev_2020_01' };
    const bound = "FOR VALUES FROM ('2020-01-01 00:00:00+00') TO ('2020-02-01 00:00:00+00')";
    expect(detachStep(parted, part, bound, true)).toEqual({
      step: 'detach',
      partition: 'ev_2020_01',
      locks: [],
      forward: ['ALTER TABLE "app"."ev" DETACH PARTITION "app"."ev_2020_01" CONCURRENTLY'],
      undo: [`ALTER TABLE "app"."ev" ATTACH PARTITION "app"."ev_2020_01" ${bound}`],
      note: expect.stringMatching(/rows of that range wait in the default partition/),
    });
    expect(detachStep(parted, part, bound, false).locks).toEqual([
      'LOCK TABLE app.users IN SHARE ROW EXCLUSIVE MODE',
      'LOCK TABLE ONLY "app"."ev" IN ACCESS EXCLUSIVE MODE',
      'LOCK TABLE "app"."ev_2020_01" IN ACCESS EXCLUSIVE MODE',
      'LOCK TABLE "app"."ev_default" IN ACCESS EXCLUSIVE MODE',
    ]);
    expect(finishDetachSql(parted.table, part)).toBe(
      'ALTER TABLE "app"."ev" DETACH PARTITION "app"."ev_2020_01" FINALIZE',
    );
  });

  it('archiving by mode: moved to the archive schema and back, dropped with no undo, left in place', () => {
    const part = { schema: 'app', name: 'ev_2020_01' };
    expect(archiveStep(part, 'detach', 'app_archive')).toMatchObject({
      forward: ['CREATE SCHEMA IF NOT EXISTS "app_archive"', 'ALTER TABLE "app"."ev_2020_01" SET SCHEMA "app_archive"'],
      undo: ['ALTER TABLE "app_archive"."ev_2020_01" SET SCHEMA "app"'],
    });
    expect(archiveStep(part, 'drop', 'x')).toMatchObject({ forward: ['DROP TABLE "app"."ev_2020_01"'], undo: [] });
    expect(archiveStep(part, 'dump', 'x').note).toMatch(/after its dump .* is verified/);
    expect(archiveStep(part, 'none', 'x')).toMatchObject({ forward: [], undo: [] });
  });

  it("the detached partition's foreign keys dropped first where it is kept (detach, none): no live DELETE reaches it", () => {
    const part = { schema: 'app', name: 'ev_2020_01' };
    const drops = ['ALTER TABLE "app"."ev_2020_01" DROP CONSTRAINT IF EXISTS "ev_user_fk"'];
    expect(archiveStep(part, 'detach', 'app_archive', ['ev_user_fk'])).toMatchObject({
      forward: [
        ...drops,
        'CREATE SCHEMA IF NOT EXISTS "app_archive"',
        'ALTER TABLE "app"."ev_2020_01" SET SCHEMA "app_archive"',
      ],
      note: 'moved to app_archive; its foreign keys ev_user_fk dropped first',
    });
    expect(archiveStep(part, 'none', 'x', ['ev_user_fk'])).toMatchObject({ forward: drops, undo: [] });
    expect(archiveStep(part, 'drop', 'x', ['ev_user_fk']).forward).toEqual(['DROP TABLE "app"."ev_2020_01"']);
  });
});
