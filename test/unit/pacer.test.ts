import { LEGACY_PACE, latencyLimit, nextPace, PACE, quantile, Sample, startPace } from '../../src/pacer';

const at = (start: number, ms: number[]): Sample[] => ms.map((m, i) => ({ at: start + i * PACE.probeEveryMs, ms: m }));
const many = (ms: number, n = PACE.minSamples) => Array(n).fill(ms) as number[];

describe('the copy pacer under the application-latency bound', () => {
  it("the limit: ratio / the sync's share x the idle probe, with at least 0.2 ms of room", () => {
    // the probe does not write through the sync's trigger, the application does: 1.5 / 1.2 = 1.25
    expect(latencyLimit(1.5, 2)).toBe(2.5);
    expect(latencyLimit(1.5, 0.2)).toBeCloseTo(0.4);
    // plans made before the probe counted the sync keep their limit
    expect(latencyLimit(1.5, 2, LEGACY_PACE)).toBe(3);
    expect(latencyLimit(1.5, 0.2, LEGACY_PACE)).toBe(0.7);
    expect(quantile([5, 1, 4, 2, 3], 0.9)).toBe(5);
    expect(quantile([5, 1, 4, 2, 3], 0.5)).toBe(3);
  });

  it('decides nothing until enough samples taken since the pause last changed', () => {
    const pace = { pauseMs: 100, since: 1000 };
    // many slow samples, but before the change: they belong to the old pace
    const r = nextPace(pace, [...at(0, many(50, 20)), ...at(1000, many(50, PACE.quickSamples - 1))], 1.5, 2, 5000);
    expect(r).toEqual({ pace, hold: null });
    // with a median under the limit, nothing until the 99th percentile has its samples
    const fast = [...at(1000, many(1, PACE.minSamples - 2)), ...at(9000, [50])];
    expect(nextPace(pace, fast, 1.5, 2, 10000)).toEqual({ pace, hold: null });
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
      /a probe takes 3\.50 ms \(99th percentile .* over 2\.50 ms \(1\.5 \/ 1\.2 for the sync's own share x 2\.00 ms/,
    );
  });

  it('a run starts slow and relaxes from there, also where the probe shows nothing over its idle figure', () => {
    const start = startPace(10);
    expect(start).toEqual({ pauseMs: PACE.startPauseMs, since: 10, provisional: true });
    expect(PACE.startPauseMs).toBeGreaterThanOrEqual(1000);
    // the probe at its idle figure (2 ms; the limit 2.5, well under it 1.75): the pause halves
    expect(nextPace(start, at(10, many(2)), 1.5, 2, 5000).pace.pauseMs).toBe(PACE.startPauseMs / 2);
    expect(nextPace({ pauseMs: 400, since: 0 }, at(0, many(2)), 1.5, 2, 10).pace).toEqual({ pauseMs: 200, since: 10 });
    // a little over the idle figure and under the limit: the start pace still halves (a pause of 1 s meets the
    // application about as often as none, so the band under the limit would keep it for good)
    const halved = nextPace(start, at(10, many(2.2)), 1.5, 2, 5000).pace;
    expect(halved).toEqual({ pauseMs: PACE.startPauseMs / 2, since: 5000, provisional: true });
    // over the limit: up, and from then on the band under the limit keeps the pace
    const raised = nextPace(halved, at(5000, many(3)), 1.5, 2, 9000).pace;
    expect(raised).toEqual({ pauseMs: PACE.startPauseMs, since: 9000 });
    expect(nextPace(raised, at(9000, many(2.2)), 1.5, 2, 13000).pace).toEqual(raised);
    // halved down to nothing, it is an ordinary pace
    expect(nextPace({ pauseMs: 25, since: 0, provisional: true }, at(0, many(2.2)), 1.5, 2, 10).pace).toEqual({
      pauseMs: 0,
      since: 10,
    });
    // runs of the old probe start at 0, as they were measured
    expect(startPace(10, LEGACY_PACE).pauseMs).toBe(0);
  });

  it('fails closed: a recent failed probe holds the copy, with its error; an older one no longer does', () => {
    const failed = { at: 999, ms: null, error: 'canceling statement due to lock timeout' };
    const r = nextPace({ pauseMs: 0, since: 0 }, [...at(0, many(1)), failed], 1.5, 2, 1000);
    expect(r.hold?.reason).toMatch(/probe failed \(canceling statement due to lock timeout\)/);
    const later = [...at(0, many(1)), failed, ...at(1000, many(1, PACE.failedWithin))];
    expect(nextPace({ pauseMs: 0, since: 0 }, later, 1.5, 2, 5000).hold).toBeNull();
  });

  it('steps up at once when the median is over the limit, before it has the samples for the 99th percentile', () => {
    const r = nextPace({ pauseMs: 0, since: 0 }, at(0, many(3.5, PACE.quickSamples)), 1.5, 2, 10);
    expect(r.pace).toEqual({ pauseMs: PACE.firstPauseMs, since: 10 });
    // a few slow ones among fast ones wait for the 99th percentile
    const some = at(0, [...many(1, PACE.quickSamples), 9, 9]);
    expect(nextPace({ pauseMs: 0, since: 0 }, some, 1.5, 2, 10).pace).toEqual({ pauseMs: 0, since: 0 });
  });

  it('runs started before the application-shaped probe keep the rules they were measured with', () => {
    expect(LEGACY_PACE).toMatchObject({ quantile: 0.95, minSamples: 20, window: 75, maxPauseMs: 1000 });
    // 20 samples against a limit of 3: over at the 95th percentile (two of them at 9), as before
    const xs = at(0, [...many(2.5, 18), 9, 9]);
    expect(nextPace({ pauseMs: 400, since: 0 }, xs, 1.5, 2, 10, LEGACY_PACE).pace.pauseMs).toBe(800);
    const atLongest = nextPace({ pauseMs: 1000, since: 0 }, xs, 1.5, 2, 10, LEGACY_PACE);
    expect(atLongest.hold?.reason).toMatch(/95th percentile/);
  });
});
