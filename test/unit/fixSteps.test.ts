/** src/fixSteps.ts: each fix's statements by step, built once for the dry run and the executors. */
import { validateFixInput } from '../../src/constraints';
import { FixInfo, fixSteps, plannedFixSql } from '../../src/fixSteps';

const [fk, nn] = validateFixInput({
  fixes: [
    {
      kind: 'foreignKey',
      table: 'gi',
      columns: ['user_id'],
      references: { table: 'users', columns: ['id'] },
      orphans: 'set-null',
    },
    { kind: 'notNull', table: 'users', column: 'email', nulls: { fill: 'x@example.invalid' } },
  ],
}).fixes;

const plain: FixInfo = { tableOid: 1, relkind: 'r', partitions: [], pk: ['id'], alreadyDone: false, hasIndex: false };
const parted: FixInfo = {
  ...plain,
  relkind: 'p',
  partitions: [
    { schema: 'public', name: 'gi_2025_01' },
    { schema: 'public', name: 'gi_default' },
  ],
};

describe('a foreign key on a plain table', () => {
  const s = fixSteps(fk, plain);
  it('creates its supporting index concurrently, adds the key NOT VALID, validates it; the undo drops both', () => {
    expect(s.index?.parent).toBeUndefined();
    expect(s.index?.each.map((e) => e.sql)).toEqual([
      expect.stringMatching(/^CREATE INDEX CONCURRENTLY IF NOT EXISTS "\w+" ON "public"\."gi" \("user_id"\)$/),
    ]);
    expect(s.index?.drop).toEqual([expect.stringMatching(/^DROP INDEX CONCURRENTLY IF EXISTS "public"\."\w+"$/)]);
    expect(s.addNotValid.map((x) => x.sql)).toEqual([
      `ALTER TABLE "public"."gi" ADD CONSTRAINT "${fk.name}" FOREIGN KEY ("user_id") REFERENCES "public"."users" ("id") ON DELETE NO ACTION ON UPDATE NO ACTION NOT VALID`,
    ]);
    expect(s.validate).toEqual([
      {
        what: 'validate',
        table: fk.table,
        sql: `ALTER TABLE "public"."gi" VALIDATE CONSTRAINT "${fk.name}"`,
        locks: [
          'LOCK TABLE "public"."users" IN ROW SHARE MODE',
          'LOCK TABLE "public"."gi" IN SHARE UPDATE EXCLUSIVE MODE',
        ],
        only: 'if-unvalidated',
      },
    ]);
    expect(s.dropConstraint.map((x) => x.sql)).toEqual([
      `ALTER TABLE "public"."gi" DROP CONSTRAINT IF EXISTS "${fk.name}"`,
    ]);
    expect(s.repair).toMatch(/UPDATE "public"\."gi" t SET "user_id" = NULL FROM v/);
  });
  it('needs no index when one supports it', () => {
    expect(fixSteps(fk, { ...plain, hasIndex: true }).index).toBeNull();
  });
});

describe('a foreign key on a partitioned table', () => {
  const s = fixSteps(fk, parted);
  it('indexes ON ONLY the parent and each partition, attached; NOT VALID and VALIDATE per partition, then the parent', () => {
    expect(s.index?.parent?.sql).toMatch(/^CREATE INDEX IF NOT EXISTS "\w+" ON ONLY "public"\."gi" \("user_id"\)$/);
    expect(s.index?.each.map((e) => e.table.name)).toEqual(['gi_2025_01', 'gi_default']);
    expect(s.index?.each[0].attach).toMatch(/^ALTER INDEX "public"\."\w+" ATTACH PARTITION "public"\."\w+"$/);
    expect(s.addNotValid.map((x) => x.table.name)).toEqual(['gi_2025_01', 'gi_default']);
    expect(s.validate.map((x) => [x.what, x.table.name, x.only])).toEqual([
      ['validate', 'gi_2025_01', 'if-unvalidated'],
      ['validate', 'gi_default', 'if-unvalidated'],
      ['parent constraint', 'gi', 'if-absent'],
    ]);
    expect(s.dropConstraint.map((x) => x.table.name)).toEqual(['gi', 'gi_2025_01', 'gi_default']);
  });
  it('is listed by the dry run in the order the steps run', () => {
    const { sql, notes } = plannedFixSql(fk, parted, 1000);
    const kinds = sql.map((x) => x.split(' ').slice(0, 3).join(' '));
    expect(kinds).toEqual([
      'CREATE INDEX IF',
      'CREATE INDEX CONCURRENTLY',
      expect.stringMatching(/^ALTER INDEX /),
      'CREATE INDEX CONCURRENTLY',
      expect.stringMatching(/^ALTER INDEX /),
      'ALTER TABLE "public"."gi_2025_01"',
      'ALTER TABLE "public"."gi_default"',
      '-- in batches',
      'ALTER TABLE "public"."gi_2025_01"',
      'ALTER TABLE "public"."gi_default"',
      'ALTER TABLE "public"."gi"',
    ]);
    expect(notes.join(' ')).toMatch(/partitioned: NOT VALID \+ VALIDATE per partition/);
  });
});

describe('NOT NULL', () => {
  const s = fixSteps(nn, { ...plain, fill: "'x@example.invalid'::text" });
  it('checks NOT VALID, fills, validates, sets NOT NULL and drops the check; the undo drops NOT NULL', () => {
    expect(s.addNotValid.map((x) => x.sql)).toEqual([
      `ALTER TABLE "public"."users" ADD CONSTRAINT "${nn.name}" CHECK ("email" IS NOT NULL) NOT VALID`,
    ]);
    expect(s.repair).toMatch(/SET "email" = 'x@example\.invalid'::text FROM v/);
    expect(s.validate.map((x) => x.what)).toEqual(['validate', 'set not null', 'drop check']);
    expect(s.validate[1].sql).toBe('ALTER TABLE "public"."users" ALTER COLUMN "email" SET NOT NULL');
    expect(s.dropNotNull).toBe('ALTER TABLE "public"."users" ALTER COLUMN "email" DROP NOT NULL');
  });
  it('lists nothing when the column is NOT NULL already', () => {
    expect(plannedFixSql(nn, { ...plain, alreadyDone: true }, 1000)).toEqual({
      sql: [],
      notes: ['already in place: skipped'],
    });
  });
});
