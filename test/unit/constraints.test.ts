import { seedCriticalFixes, validateFixInput } from '../../src/constraints';
import { auditSql, fkClause, orphanCondition, repairBatchSql, restoreSql } from '../../src/constraintSql';

describe('validateFixInput', () => {
  it("expands the seed preset: 10 foreign keys and 2 NOT NULLs with the plan's actions", () => {
    const o = validateFixInput({ preset: 'seed-critical-fixes' });
    expect(o.fixes).toHaveLength(12);
    expect(o.fixes.filter((f) => f.kind === 'foreignKey')).toHaveLength(10);
    const byName = Object.fromEntries(o.fixes.map((f) => [f.name, f]));
    expect(byName.fk_generated_images_user_id).toMatchObject({
      onDelete: 'SET NULL',
      onUpdate: 'CASCADE',
      orphans: 'fail',
    });
    expect(byName.fk_generated_images_ai_face_id).toMatchObject({
      onDelete: 'RESTRICT',
      references: { table: { schema: 'public', name: 'ai_faces' } },
    });
    expect(byName.fk_user_businesses_user_id).toMatchObject({ onDelete: 'CASCADE' });
    expect(byName.contact_forms_email_pf_not_null).toMatchObject({ kind: 'notNull', column: 'email', nulls: 'fail' });
    expect(seedCriticalFixes()).toHaveLength(12);
  });
  it('fills defaults and names', () => {
    const o = validateFixInput({
      fixes: [
        {
          kind: 'foreignKey',
          table: 'App."Images"',
          columns: ['User_Id'],
          references: { table: 'users', columns: ['id'] },
          onDelete: 'set_null',
        },
      ],
    });
    expect(o.fixes[0]).toMatchObject({
      table: { schema: 'app', name: 'Images' },
      columns: ['user_id'],
      onDelete: 'SET NULL',
      onUpdate: 'NO ACTION',
      orphans: 'fail',
      name: 'fk_Images_user_id',
    });
    expect(o).toMatchObject({ batchSize: 1000, lockTimeoutMs: 50, dryRun: false });
  });
  it.each([
    [{}, /"fixes" must be a non-empty list/],
    [{ preset: 'all' }, /"preset" must be "seed-critical-fixes"/],
    [{ preset: 'seed-critical-fixes', fixes: [] }, /either "preset" or "fixes"/],
    [
      { fixes: [{ kind: 'foreignKey', table: 't', columns: ['a', 'b'], references: { table: 'u', columns: ['id'] } }] },
      /as many columns/,
    ],
    [
      {
        fixes: [
          {
            kind: 'foreignKey',
            table: 't',
            columns: ['a'],
            references: { table: 'u', columns: ['id'] },
            onDelete: 'EXPLODE',
          },
        ],
      },
      /onDelete must be one of/,
    ],
    [
      {
        fixes: [
          {
            kind: 'foreignKey',
            table: 't',
            columns: ['a'],
            references: { table: 'u', columns: ['id'] },
            orphans: 'ignore',
          },
        ],
      },
      /orphans must be/,
    ],
    [
      { fixes: [{ kind: 'notNull', table: 't', column: 'a', nulls: { fill: null } }] },
      /nulls must be "fail" or \{"fill": <value>\}/,
    ],
    [{ fixes: [{ kind: 'notNull', table: 't', column: 'a', name: 'n'.repeat(64) }] }, /over PostgreSQL's 63 bytes/],
    [{ fixes: [{ kind: 'notNull', table: 't', column: 'a' }], batchSize: 0 }, /"batchSize"/],
    [
      { fixes: [{ kind: 'notNull', table: 't', column: 'a', name: 'a\u0000b' }] },
      /^fixes\[0\]\.name contains a NUL character/,
    ],
  ])('refuses %j', (input, msg) => expect(() => validateFixInput(input)).toThrow(msg));

  describe('overrides change only the policies of a preset fix, and a refusal names the override', () => {
    const preset = (overrides: unknown) => () => validateFixInput({ preset: 'seed-critical-fixes', overrides });
    it.each([
      [{ "x'; DROP TABLE public.canary; --": { orphans: 'delete' } }, /^overrides: the preset has no fix named/],
      [
        { fk_generated_images_user_id: { table: 'public.canary' } },
        /^overrides\["fk_generated_images_user_id"\]: unknown field "table"; an override sets only "orphans" or "nulls"\.$/,
      ],
      [
        { fk_generated_images_user_id: { name: 'x"; DROP TABLE public.canary; --' } },
        /^overrides\["fk_generated_images_user_id"\]: unknown field "name"/,
      ],
      [
        { fk_generated_images_user_id: { orphans: "delete'; DROP TABLE public.canary; --" } },
        /^overrides\["fk_generated_images_user_id"\]\.orphans must be "fail", "set-null" or "delete"\.$/,
      ],
      [
        { contact_forms_email_pf_not_null: { nulls: "x'; DROP TABLE public.canary; --" } },
        /^overrides\["contact_forms_email_pf_not_null"\]\.nulls must be "fail" or \{"fill": <value>\}\.$/,
      ],
      [
        { contact_forms_email_pf_not_null: 'delete' },
        /^overrides\["contact_forms_email_pf_not_null"\] must be an object/,
      ],
    ])('refuses %j', (overrides, msg) => expect(preset(overrides)).toThrow(msg));
    it('takes orphans and a fill value, which stays a value (PostgreSQL checks it against the column later)', () => {
      const fill = "x'; DROP TABLE public.canary; --";
      const o = validateFixInput({
        preset: 'seed-critical-fixes',
        overrides: {
          fk_generated_images_user_id: { orphans: 'set-null' },
          contact_forms_email_pf_not_null: { nulls: { fill } },
        },
      });
      const byName = Object.fromEntries(o.fixes.map((f) => [f.name, f]));
      expect(byName.fk_generated_images_user_id).toMatchObject({ orphans: 'set-null' });
      expect(byName.contact_forms_email_pf_not_null).toMatchObject({ nulls: { fill }, column: 'email' });
    });
  });
});

describe('SQL', () => {
  const fk = validateFixInput({
    fixes: [
      {
        kind: 'foreignKey',
        table: 'gi',
        columns: ['user_id'],
        references: { table: 'users', columns: ['id'] },
        onDelete: 'SET NULL',
        onUpdate: 'CASCADE',
        orphans: 'set-null',
      },
    ],
  }).fixes[0];
  it('builds the FK clause and the orphan condition', () => {
    expect(fkClause(fk as never)).toBe(
      'FOREIGN KEY ("user_id") REFERENCES "public"."users" ("id") ON DELETE SET NULL ON UPDATE CASCADE',
    );
    expect(orphanCondition(fk as never)).toBe(
      'c."user_id" IS NOT NULL AND NOT EXISTS (SELECT 1 FROM "public"."users" p WHERE p."id" = c."user_id")',
    );
  });
  it('audits with a count and a query that lists the rows (no row values in history)', () => {
    expect(auditSql(fk, ['id']).list).toBe(
      'SELECT c."id", c."user_id" FROM "public"."gi" c WHERE ' + orphanCondition(fk as never),
    );
  });
  it('records every repaired row in the same statement that changes it', () => {
    const sql = repairBatchSql(fk, ['id', 'created_at']);
    expect(sql).toMatch(
      /FOR UPDATE\),\na AS \(INSERT INTO partflow\.repairs .* 'set-null', v\.old FROM v\)\nUPDATE "public"\."gi" t SET "user_id" = NULL FROM v WHERE t\."id" = v\."id" AND t\."created_at" = v\."created_at"$/s,
    );
    const undo = restoreSql(fk, ['id'], ['id', 'user_id'], false);
    expect(undo[0]).toMatch(
      /^SELECT r\.id FROM partflow\.repairs r WHERE r\.workflow_id = \$1 AND r\.fix_no = \$2 AND r\.run_id IS NOT DISTINCT FROM \$3 AND r\.table_name = '"public"\."gi"' AND r\.restored_at IS NULL ORDER BY r\.id FOR UPDATE$/,
    );
    expect(undo[2]).toMatch(
      /SET "user_id" = \(jsonb_populate_record\(NULL::"public"\."gi", r\.old_values\)\)\."user_id"/,
    );
    expect(undo[2]).toMatch(/AND t\."user_id" IS NULL/); // only where the row still holds the repaired value
  });
});
