/** What differs between PostgreSQL 13 and 18, one test per difference (src/versions.ts). */
import { validateFixInput } from '../../src/constraints';
import { fixSteps, plannedFixSql } from '../../src/fixSteps';
import {
  attachedPartitionSql,
  detachMode,
  explicitStatisticsTarget,
  hasDetachConcurrently,
  hasTidRangeScan,
  hasForeignKeyNotValidOnPartitioned,
  hasNotNullNotValid,
  majorOf,
  provenNotNullSql,
} from '../../src/versions';

const V = { 13: 130023, 14: 140023, 15: 150018, 16: 160014, 17: 170010, 18: 180004 } as const;

describe('PostgreSQL versions', () => {
  it('reads the major from server_version_num', () => {
    expect(Object.values(V).map(majorOf)).toEqual([13, 14, 15, 16, 17, 18]);
  });

  it('13 has no TID range scan: the copy walks keys there, pages from 14', () => {
    expect(hasTidRangeScan(V[13])).toBe(false);
    expect([V[14], V[15], V[16], V[17], V[18]].every(hasTidRangeScan)).toBe(true);
  });

  it('13 has no DETACH CONCURRENTLY and no pg_inherits.inhdetachpending', () => {
    expect(hasDetachConcurrently(V[13])).toBe(false);
    expect(hasDetachConcurrently(V[14])).toBe(true);
    expect(attachedPartitionSql(V[13])).toBe('true');
    expect(attachedPartitionSql(V[14])).toBe('NOT i.inhdetachpending');
    expect(attachedPartitionSql(V[18], 'inh')).toBe('NOT inh.inhdetachpending');
  });

  it('maintenance detaches CONCURRENTLY from 14 without a default partition, plainly on 13 and beside a default', () => {
    expect(detachMode(V[14], false)).toEqual({ concurrently: true, note: 'DETACH CONCURRENTLY' });
    expect(detachMode(V[18], false).concurrently).toBe(true);
    expect(detachMode(V[13], false)).toEqual({
      concurrently: false,
      note: 'plain DETACH (a brief exclusive lock on the parent): PostgreSQL 13 has no DETACH CONCURRENTLY (14+)',
    });
    expect(detachMode(V[16], true).note).toMatch(/refused while a default partition exists/);
    expect(detachMode(V[13], true).concurrently).toBe(false);
  });

  it('a default statistics target is -1 up to 16 and NULL from 17: neither becomes SET STATISTICS', () => {
    expect(explicitStatisticsTarget(-1)).toBeNull(); // 13 to 16
    expect(explicitStatisticsTarget(null)).toBeNull(); // 17, 18 (was "SET STATISTICS null", a syntax error)
    expect(explicitStatisticsTarget(0)).toBe(0);
    expect(explicitStatisticsTarget(500)).toBe(500);
    expect(explicitStatisticsTarget('250')).toBe(250);
  });

  describe('NOT NULL', () => {
    const [nn] = validateFixInput({
      fixes: [{ kind: 'notNull', table: 'users', column: 'email', nulls: { fill: 'x@example.invalid' } }],
    }).fixes;
    const info = { tableOid: 1, relkind: 'r', partitions: [], pk: ['id'], alreadyDone: false, hasIndex: false };
    const sql = (v?: number) => {
      const s = fixSteps(nn, { ...info, serverVersionNum: v });
      return [...s.addNotValid, ...s.validate].map((x) => x.sql);
    };

    it('18 adds NOT NULL itself NOT VALID and validates it; 13 to 17 go by a CHECK', () => {
      expect(hasNotNullNotValid(V[17])).toBe(false);
      expect(hasNotNullNotValid(V[18])).toBe(true);
      expect(sql(V[18])).toEqual([
        `ALTER TABLE "public"."users" ADD CONSTRAINT "${nn.name}" NOT NULL "email" NOT VALID`,
        `ALTER TABLE "public"."users" VALIDATE CONSTRAINT "${nn.name}"`,
      ]);
      const detour = [
        `ALTER TABLE "public"."users" ADD CONSTRAINT "${nn.name}" CHECK ("email" IS NOT NULL) NOT VALID`,
        `ALTER TABLE "public"."users" VALIDATE CONSTRAINT "${nn.name}"`,
        'ALTER TABLE "public"."users" ALTER COLUMN "email" SET NOT NULL',
        `ALTER TABLE "public"."users" DROP CONSTRAINT "${nn.name}"`,
      ];
      for (const v of [V[13], V[14], V[15], V[16], V[17], undefined]) expect(sql(v)).toEqual(detour);
      // VALIDATE lets writes go on (SHARE UPDATE EXCLUSIVE, measured on 18); the undo is the same on both
      const s18 = fixSteps(nn, { ...info, serverVersionNum: V[18] });
      expect(s18.validate[0].locks).toEqual(['LOCK TABLE "public"."users" IN SHARE UPDATE EXCLUSIVE MODE']);
      expect(s18.dropConstraint.map((x) => x.sql)).toEqual(
        fixSteps(nn, { ...info, serverVersionNum: V[17] }).dropConstraint.map((x) => x.sql),
      );
      expect(plannedFixSql(nn, { ...info, serverVersionNum: V[18] }, 100).notes.join(' ')).toMatch(
        /PostgreSQL 18: NOT NULL added NOT VALID and validated, no CHECK detour/,
      );
    });

    it('18 adds a foreign key to a partitioned table NOT VALID: a key of the table on itself is kept from 18 on', () => {
      for (const v of [V[13], V[14], V[15], V[16], V[17]]) expect(hasForeignKeyNotValidOnPartitioned(v)).toBe(false);
      expect(hasForeignKeyNotValidOnPartitioned(V[18])).toBe(true);
    });

    it('18 sets attnotnull for a NOT VALID not-null constraint too: proven only without an unvalidated one', () => {
      expect(provenNotNullSql('a')).toBe(
        "(a.attnotnull AND NOT EXISTS (SELECT FROM pg_constraint nn WHERE nn.conrelid = a.attrelid AND nn.contype = 'n' " +
          'AND NOT nn.convalidated AND nn.conkey = ARRAY[a.attnum]))',
      );
    });
  });
});
