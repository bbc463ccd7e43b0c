import { parseDuration, validatePartitionInput, validateThrottle } from '../../src/input';

describe('validatePartitionInput', () => {
  it('fills the documented defaults', () => {
    const o = validatePartitionInput({ table: 'generated_images' });
    expect(o).toMatchObject({ table: { schema: 'public', name: 'generated_images' }, column: 'created_at', premake: 3, batchSize: 5000, approval: 'signal', rollbackWindowMs: 86_400_000, inboundForeignKeys: 'refuse', dryRun: false });
  });
  it.each([
    [{}, /"table" is required/],
    [{ table: 't', premake: -1 }, /"premake"/],
    [{ table: 't', batchSize: 0 }, /"batchSize"/],
    [{ table: 't', approval: 'yes' }, /"approval" must be one of/],
    [{ table: 't', rollbackWindow: 'soon' }, /"rollbackWindow"/],
    [{ table: 't', interval: 'week' }, /"interval"/],
    [{ table: 't', bogus: 1 }, /Unknown field "bogus"/],
    [{ table: 't', timeZone: "x'y" }, /timeZone/],
    [[], /JSON object/],
  ])('refuses %j with one sentence naming the field', (input, msg) => expect(() => validatePartitionInput(input)).toThrow(msg));
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
