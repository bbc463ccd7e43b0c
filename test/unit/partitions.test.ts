import { addMonths, boundLiteral, compareMonths, monthlyPartitions, parseMonth } from '../../src/partitions';

describe('month arithmetic', () => {
  it('crosses year edges both ways', () => {
    expect(addMonths({ year: 2024, month: 12 }, 1)).toEqual({ year: 2025, month: 1 });
    expect(addMonths({ year: 2025, month: 1 }, -1)).toEqual({ year: 2024, month: 12 });
    expect(addMonths({ year: 2024, month: 2 }, 23)).toEqual({ year: 2026, month: 1 });
    expect(compareMonths(parseMonth('2025-01'), parseMonth('2024-12'))).toBeGreaterThan(0);
  });
  it('refuses non-months', () => {
    expect(() => parseMonth('2025-13')).toThrow();
    expect(() => parseMonth('2025-1')).toThrow();
  });
});

describe('bounds per column type', () => {
  const m = { year: 2025, month: 3 };
  it('date', () => expect(boundLiteral(m, 'date')).toBe("'2025-03-01'::date"));
  it('timestamp without time zone', () =>
    expect(boundLiteral(m, 'timestamp')).toBe("'2025-03-01 00:00:00'::timestamp"));
  it('timestamptz at midnight in the chosen zone', () => {
    expect(boundLiteral(m, 'timestamptz')).toBe("'2025-03-01 00:00:00 UTC'::timestamptz");
    expect(boundLiteral(m, 'timestamptz', 'Europe/Berlin')).toBe("'2025-03-01 00:00:00 Europe/Berlin'::timestamptz");
  });
  it('refuses a zone that could inject SQL', () =>
    expect(() => boundLiteral(m, 'timestamptz', "UTC'; DROP")).toThrow(/time zone/));
});

describe('monthlyPartitions', () => {
  it('covers the oldest month to premake months ahead, contiguous', () => {
    const p = monthlyPartitions('gi', parseMonth('2024-11'), parseMonth('2025-02'), 3);
    expect(p.map((x) => x.name)).toEqual([
      'gi_2024_11',
      'gi_2024_12',
      'gi_2025_01',
      'gi_2025_02',
      'gi_2025_03',
      'gi_2025_04',
      'gi_2025_05',
    ]);
    for (let i = 1; i < p.length; i++) expect(p[i].from).toEqual(p[i - 1].to);
  });
  it('starts at the current month for an empty table or future-only rows', () => {
    expect(monthlyPartitions('t', null, parseMonth('2025-12'), 1).map((x) => x.name)).toEqual([
      't_2025_12',
      't_2026_01',
    ]);
    expect(monthlyPartitions('t', parseMonth('2026-05'), parseMonth('2025-12'), 0).map((x) => x.name)).toEqual([
      't_2025_12',
    ]);
  });
  it('refuses a bad premake', () =>
    expect(() => monthlyPartitions('t', null, parseMonth('2025-01'), -1)).toThrow(/premake/));
});
