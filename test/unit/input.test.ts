import { parseDuration, validatePartitionInput, validateThrottle } from '../../src/input';
import { nextBatchSize } from '../../src/plan';

describe('validatePartitionInput', () => {
  it('fills the documented defaults', () => {
    const o = validatePartitionInput({ table: 'generated_images' });
    expect(o).toMatchObject({
      table: { schema: 'public', name: 'generated_images' },
      column: 'created_at',
      premake: 3,
      batchSize: 5000,
      maxBatchMs: 50,
      approval: 'signal',
      rollbackWindowMs: 86_400_000,
      inboundForeignKeys: 'refuse',
      dryRun: false,
      olderSnapshots: 'wait',
    });
    expect(validatePartitionInput({ table: 't', olderSnapshots: 'guard' }).olderSnapshots).toBe('guard');
  });
  it.each([
    [{}, /"table" is required/],
    [{ table: 't', premake: -1 }, /"premake"/],
    [{ table: 't', batchSize: 0 }, /"batchSize"/],
    [{ table: 't', maxBatchMs: 1 }, /"maxBatchMs"/],
    [{ table: 't', approval: 'yes' }, /"approval" must be one of/],
    [{ table: 't', olderSnapshots: 'never' }, /"olderSnapshots" must be one of "wait", "guard", not "never"/],
    [{ table: 't', rollbackWindow: 'soon' }, /"rollbackWindow"/],
    [{ table: 't', interval: 'week' }, /"interval"/],
    [{ table: 't', bogus: 1 }, /Unknown field "bogus"/],
    [{ table: 't', timeZone: "x'y" }, /timeZone/],
    [[], /JSON object/],
  ])('refuses %j with one sentence naming the field', (input, msg) =>
    expect(() => validatePartitionInput(input)).toThrow(msg),
  );
});

describe('durations and throttle', () => {
  it('parses durations', () => {
    expect(parseDuration('24h', 'x')).toBe(86_400_000);
    expect(parseDuration('90s', 'x')).toBe(90_000);
    expect(parseDuration('0', 'x')).toBe(0);
    expect(() => parseDuration('5', 'x')).toThrow(/unit/);
  });
  it('validates throttle', () => {
    expect(validateThrottle({ batchSize: 100 })).toEqual({ batchSize: 100 });
    expect(() => validateThrottle({})).toThrow(/needs batchSize or sleepMs/);
    expect(() => validateThrottle({ batchSize: -5 })).toThrow(/batchSize/);
    expect(() => validateThrottle({ speed: 1 })).toThrow(/unknown field "speed"/);
  });
});

describe('batch size under a time budget', () => {
  it('shrinks a slow batch in proportion, grows a quick one back, never past the cap', () => {
    expect(nextBatchSize(100, 100, 200, 50)).toBe(20); // 100 pages took 200 ms: 100 * 50 * 0.8 / 200
    expect(nextBatchSize(20, 100, 10, 50)).toBe(24);
    expect(nextBatchSize(90, 100, 5, 50)).toBe(100);
    expect(nextBatchSize(40, 100, 45, 50)).toBe(40);
    expect(nextBatchSize(1, 100, 5000, 50)).toBe(1);
    expect(nextBatchSize(1, 100, 1, 50)).toBe(2);
  });
});

describe("the attach path's input fields take no hostile text (issue 25)", () => {
  it.each([
    ["2027-02'; DROP TABLE users; --", /Field "cutoffMonth" must be a month such as "2027-02"/],
    ['2027-13', /Field "cutoffMonth" must be a month/],
    [{ toString: (): string => '2027-02' }, /Field "cutoffMonth" must be a month/],
  ])('cutoffMonth %p is refused', (cutoffMonth, expected) => {
    expect(() => validatePartitionInput({ table: 't', method: 'attach', cutoffMonth } as never)).toThrow(expected);
  });
  it('method is one of copy and attach only', () => {
    expect(() => validatePartitionInput({ table: 't', method: "attach'; --" } as never)).toThrow(/Field "method"/);
  });
});
