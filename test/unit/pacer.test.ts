import { latencyLimit, nextPace, PACE, quantile, Sample } from '../../src/pacer';

const at = (start: number, ms: number[]): Sample[] => ms.map((m, i) => ({ at: start + i * PACE.probeEveryMs, ms: m }));
const many = (ms: number, n = PACE.minSamples) => Array(n).fill(ms) as number[];

describe('the copy pacer under the application-latency bound', () => {
  it('the limit: ratio x the idle probe, with at least half a millisecond of room', () => {
    expect(latencyLimit(1.5, 2)).toBe(3);
    expect(latencyLimit(1.5, 0.2)).toBe(0.7);
    expect(quantile([5, 1, 4, 2, 3], 0.9)).toBe(5);
    expect(quantile([5, 1, 4, 2, 3], 0.5)).toBe(3);
  });

  it('decides nothing until enough samples taken since the pause last changed', () => {
    const pace = { pauseMs: 100, since: 1000 };
    // many slow samples, but before the change: they belong to the old pace
    const r = nextPace(pace, [...at(0, many(50, 20)), ...at(1000, many(50, PACE.minSamples - 1))], 1.5, 2, 5000);
    expect(r).toEqual({ pace, hold: null });
  });

  it('doubles the pause while the quantile is over the limit, shrinks it when well under, holds at the longest', () => {
    const over = at(0, many(3.5));
    expect(nextPace({ pauseMs: 0, since: 0 }, over, 1.5, 2, 10).pace).toEqual({
      pauseMs: PACE.firstPauseMs,
      since: 10,
    });
    expect(nextPace({ pauseMs: 400, since: 0 }, over, 1.5, 2, 10).pace.pauseMs).toBe(800);
    // within the band: unchanged
    expect(nextPace({ pauseMs: 400, since: 0 }, at(0, many(2.5)), 1.5, 2, 10).pace).toEqual({ pauseMs: 400, since: 0 });
    // well under: a half, and nothing below 20 ms
    expect(nextPace({ pauseMs: 400, since: 0 }, at(0, many(1)), 1.5, 2, 10).pace).toEqual({ pauseMs: 200, since: 10 });
    expect(nextPace({ pauseMs: 25, since: 0 }, at(0, many(1)), 1.5, 2, 10).pace.pauseMs).toBe(0);
    // a few slow probes among fast ones: the quantile, not the worst, decides
    const mostlyFast = at(0, [...many(1, 150), 9]);
    expect(nextPace({ pauseMs: 0, since: 0 }, mostlyFast, 1.5, 2, 10).pace.pauseMs).toBe(0);
    const atLongest = nextPace({ pauseMs: PACE.maxPauseMs, since: 0 }, over, 1.5, 2, 10);
    expect(atLongest.hold?.bound).toBe('maxAppLatencyRatio');
    expect(atLongest.hold?.reason).toMatch(
      /a probe takes 3\.50 ms \(99th percentile .* over 3\.00 ms \(1\.5 x 2\.00 ms/,
    );
  });

  it('fails closed: a failed probe holds the copy', () => {
    const r = nextPace({ pauseMs: 0, since: 0 }, [...at(0, many(1)), { at: 999, ms: null }], 1.5, 2, 1000);
    expect(r.hold?.reason).toMatch(/probe failed/);
  });
});
