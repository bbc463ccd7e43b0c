import { checkPredicate, indexBuild, indexShape, seedIndexes, validateIndexInput } from '../../src/indexes';

describe('validateIndexInput', () => {
  it('fills defaults and names; DESC columns', () => {
    const o = validateIndexInput({ indexes: [{ table: 'images', columns: ['user_id', 'created_at DESC'] }] });
    expect(o).toMatchObject({ dryRun: false, lockTimeoutMs: 50 });
    expect(o.indexes[0]).toEqual({
      table: { schema: 'public', name: 'images' },
      columns: [
        { name: 'user_id', desc: false },
        { name: 'created_at', desc: true },
      ],
      where: null,
      unique: false,
      name: 'idx_images_user_id_created_at_pf',
    });
  });
  it.each([
    [{}, /"indexes" must be a non-empty list/],
    [{ preset: 'x' }, /"preset" must be "seed-indexes"/],
    [{ indexes: [{ table: 't', columns: [] }] }, /columns must list from 1 to 32/],
    [{ indexes: [{ table: 't', columns: ['a'], bogus: 1 }] }, /unknown field "bogus"/],
    [{ indexes: [{ table: 't', columns: ['a; drop'] }] }, /columns\[0\]/],
    [
      {
        indexes: [
          { table: 't', columns: ['a'] },
          { table: 't', columns: ['a'] },
        ],
      },
      /Two indexes are named/,
    ],
    [{ indexes: [{ table: 't', columns: ['a'] }], lockTimeoutMs: 5 }, /lockTimeoutMs/],
  ])('refuses %j', (input, msg) => {
    expect(() => validateIndexInput(input)).toThrow(msg);
  });
  it("has the seed's indexes as a preset, expires_at as a plain index", () => {
    const o = validateIndexInput({ preset: 'seed-indexes' });
    expect(o.indexes.map((x) => x.name)).toEqual(seedIndexes().map((x) => x.name));
    expect(o.indexes.find((x) => x.name === 'idx_generated_images_expires_at')!.where).toBeNull();
    expect(o.indexes.find((x) => x.name === 'idx_generated_images_user_status')!.where).toBe('user_id IS NOT NULL');
  });
});

describe('checkPredicate', () => {
  it('takes one condition, string literals with anything inside', () => {
    expect(checkPredicate(" status <> 'a;b--c' AND (x IS NULL) ", 'w')).toBe("status <> 'a;b--c' AND (x IS NULL)");
  });
  it.each([
    ['', /must be an SQL condition/],
    ['   ', /must be an SQL condition/],
    ['x'.repeat(1001), /longer than 1000/],
    ['true\0', /NUL/],
  ])('refuses what cannot be a condition before PostgreSQL parses it: %#', (where, msg) => {
    expect(() => checkPredicate(where, 'w')).toThrow(msg);
  });
  it('leaves the parsing to PostgreSQL (the integration tests feed it the hostile text)', () => {
    expect(checkPredicate("t <> E'\\''; COMMIT; DROP TABLE v; -- '", 'w')).toBe(
      "t <> E'\\''; COMMIT; DROP TABLE v; -- '",
    );
  });
});

describe('indexBuild', () => {
  const x = validateIndexInput({
    indexes: [{ table: 'gi', columns: ['user_id'], where: 'user_id IS NOT NULL', name: 'gi_user' }],
  }).indexes[0];
  it('on a plain table: one CONCURRENTLY build, dropped CONCURRENTLY', () => {
    expect(indexBuild(indexShape(x), 'r', [])).toEqual({
      each: [
        {
          table: x.table,
          name: 'gi_user',
          sql: 'CREATE INDEX CONCURRENTLY IF NOT EXISTS "gi_user" ON "public"."gi" ("user_id") WHERE user_id IS NOT NULL',
        },
      ],
      drop: ['DROP INDEX CONCURRENTLY IF EXISTS "public"."gi_user"'],
    });
  });
  it('on a partitioned table: ON ONLY the parent, CONCURRENTLY per partition, attached; names differ per index', () => {
    const parts = [{ schema: 'public', name: 'gi_p2026_01' }];
    const b = indexBuild(indexShape(x), 'p', parts);
    expect(b.parent!.sql).toBe(
      'CREATE INDEX IF NOT EXISTS "gi_user" ON ONLY "public"."gi" ("user_id") WHERE user_id IS NOT NULL',
    );
    const child = b.each[0].name;
    expect(child).toMatch(/^gi_p2026_01_user_id_[0-9a-f]{6}_idx$/);
    expect(b.each[0].attach).toBe(`ALTER INDEX "public"."gi_user" ATTACH PARTITION "public"."${child}"`);
    expect(b.drop[0]).toBe('DROP INDEX IF EXISTS "public"."gi_user"');
    const other = indexShape({ ...x, name: 'gi_user_2' }).childName(parts[0]);
    expect(other).not.toBe(child);
  });
});
