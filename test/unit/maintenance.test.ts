import {
  expiredPartitions,
  monthCoverage,
  monthsToPremake,
  parseRetention,
  validateMaintainInput,
} from '../../src/maintenance';
import { parseMonth } from '../../src/partitions';

const r = (name: string, lo: string, hi: string) => ({ name, lo: `${lo} 00:00:00`, hi: `${hi} 00:00:00` });

describe('maintenance arithmetic', () => {
  const parts = [
    r('t_2024_12', '2024-12-01', '2025-01-01'),
    r('t_2025_01', '2025-01-01', '2025-02-01'),
    r('odd', '2025-03-15', '2025-04-15'),
  ];
  it('knows which months are covered, and which are only partly covered', () => {
    expect(monthCoverage(parts, parseMonth('2025-01'))).toEqual({ covered: true, overlaps: [] });
    expect(monthCoverage(parts, parseMonth('2025-02'))).toEqual({ covered: false, overlaps: [] });
    expect(monthCoverage(parts, parseMonth('2025-03'))).toEqual({ covered: false, overlaps: ['odd'] });
  });
  it('expires only partitions entirely before the first instant of (current - retention)', () => {
    const cur = parseMonth('2026-01');
    // cutoff 2025-01-01: December 2024 ends exactly there, January 2025 does not
    expect(expiredPartitions(parts, cur, 12).map((p) => p.name)).toEqual(['t_2024_12']);
    expect(expiredPartitions(parts, cur, 11).map((p) => p.name)).toEqual(['t_2024_12', 't_2025_01']);
    expect(expiredPartitions(parts, cur, 13).map((p) => p.name)).toEqual([]);
    // a range ending one second after the cutoff is not entirely older
    expect(expiredPartitions([{ name: 'x', lo: '2024-12-01 00:00:00', hi: '2025-01-01 00:00:01' }], cur, 12)).toEqual(
      [],
    );
  });
  it("retires the attach path's history partition (from MINVALUE) only once it has wholly expired", () => {
    const history = { name: 't_history', lo: '0000-01-01 00:00:00', hi: '2025-03-01 00:00:00' };
    expect(expiredPartitions([history], parseMonth('2026-02'), 12)).toEqual([]);
    expect(expiredPartitions([history], parseMonth('2026-03'), 12)).toEqual([history]);
  });
  it('premakes the current month and the next ones', () => {
    expect(monthsToPremake(parseMonth('2025-11'), 2)).toEqual([
      parseMonth('2025-11'),
      parseMonth('2025-12'),
      parseMonth('2026-01'),
    ]);
  });
  it('parses retention', () => {
    expect(parseRetention('12 months', 'r')).toBe(12);
    expect(parseRetention('2 years', 'r')).toBe(24);
    expect(() => parseRetention('a while', 'r')).toThrow(/"12 months"/);
  });
  it('validates input with one sentence naming the field', () => {
    expect(validateMaintainInput({ tables: [{ table: 'gi' }] })[0]).toMatchObject({
      premake: 3,
      retentionMonths: null,
      archive: 'detach',
      timeZone: 'UTC',
    });
    expect(() => validateMaintainInput({ tables: [] })).toThrow(/at least one table/);
    expect(() => validateMaintainInput({ tables: [{ table: 'gi', archive: 'burn' }] })).toThrow(
      /tables\[0\]\.archive must be/,
    );
    expect(() => validateMaintainInput({ tables: [{ table: 'gi', premake: -1 }] })).toThrow(/tables\[0\]\.premake/);
  });
  it('keeps where each table is in the input, for refusals of the activity (the time zone PostgreSQL knows)', () => {
    const specs = validateMaintainInput({ tables: [{ table: 'a' }, { table: 'b', timeZone: 'Asia/Tokyo' }] });
    expect(specs.map((s) => [s.at, s.timeZone])).toEqual([
      ['tables[0]', 'UTC'],
      ['tables[1]', 'Asia/Tokyo'],
    ]);
  });
  it.each([
    [{ timeZone: "UTC'; DROP TABLE public.canary; --" }, /^tables\[0\]\.timeZone must be a time zone name/],
    [{ timeZone: '$$UTC$$' }, /^tables\[0\]\.timeZone must be a time zone name/],
    [{ timeZone: 5 }, /^tables\[0\]\.timeZone must be a time zone name/],
    [{ retention: "12 months'; DROP TABLE public.canary; --" }, /^tables\[0\]\.retention must read like/],
    [{ retention: ['12 months'] }, /^tables\[0\]\.retention must read like/],
    [{ retention: '12 months /* x */' }, /^tables\[0\]\.retention must read like/],
    [{ archive: 'dump; DROP TABLE public.canary' }, /^tables\[0\]\.archive must be/],
    [{ archive: '/tmp/x' }, /^tables\[0\]\.archive must be/],
    [{ archivePath: '/etc/passwd' }, /^tables\[0\]: unknown field "archivePath"/],
  ])('refuses hostile text %j naming the field', (extra, msg) =>
    expect(() => validateMaintainInput({ tables: [{ table: 'gi', ...extra }] })).toThrow(msg),
  );
});

describe('the dump archive never puts the password on psql command line', () => {
  it('moves it from the URI to the environment', () => {
    const { withoutPassword } =
      require('../../activities/maintenance') as typeof import('../../activities/maintenance');
    expect(withoutPassword('postgres://app:s%40cret@db.internal:5432/prod?sslmode=require')).toEqual({
      url: 'postgres://app@db.internal:5432/prod?sslmode=require',
      password: 's@cret',
    });
    expect(withoutPassword('postgres://app@db/prod')).toEqual({ url: 'postgres://app@db/prod', password: null });
    expect(withoutPassword('host=db user=app')).toEqual({ url: 'host=db user=app', password: null });
  });
});

describe('the dump archive directory of a database', () => {
  it('stays inside PARTFLOW_ARCHIVE_DIR whatever the database is called', () => {
    const { archiveDatabaseDir } =
      require('../../activities/maintenance/archive') as typeof import('../../activities/maintenance/archive');
    const saved = process.env.PARTFLOW_ARCHIVE_DIR;
    process.env.PARTFLOW_ARCHIVE_DIR = '/srv/archive';
    try {
      expect(archiveDatabaseDir('prod_db-1')).toBe('/srv/archive/prod_db-1');
      for (const db of ['..', '../../etc', 'a/b', '.', 'x\\..\\y', "p'; DROP TABLE x; --"]) {
        const dir = archiveDatabaseDir(db);
        expect(dir).toMatch(/^\/srv\/archive\/[A-Za-z0-9_-]+-[0-9a-f]{10}$/);
      }
      expect(archiveDatabaseDir('a/b')).not.toBe(archiveDatabaseDir('a_b'));
    } finally {
      if (saved === undefined) delete process.env.PARTFLOW_ARCHIVE_DIR;
      else process.env.PARTFLOW_ARCHIVE_DIR = saved;
    }
  });
});

describe('dump archive file names', () => {
  it('keep plain names and make any other identifier safe and distinct', () => {
    const { archiveFileStem } =
      require('../../activities/maintenance') as typeof import('../../activities/maintenance');
    expect(archiveFileStem({ schema: 'public', name: 'audit_log_2025_01' })).toBe('public.audit_log_2025_01');
    const odd = archiveFileStem({ schema: '../etc', name: 'x/y z' });
    expect(odd).toMatch(/^___etc\.x_y_z-[0-9a-f]{10}$/);
    expect(archiveFileStem({ schema: '.._etc', name: 'x/y z' })).not.toBe(odd);
  });
});
