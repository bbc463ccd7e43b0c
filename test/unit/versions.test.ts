/** What differs between PostgreSQL 13 and 18, one test per difference (src/versions.ts). */
import {
  attachedPartitionSql,
  detachMode,
  explicitStatisticsTarget,
  hasDetachConcurrently,
  hasTidRangeScan,
  majorOf,
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
});
