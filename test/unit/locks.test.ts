import { DEFAULT_LOCK_TIMEOUT_MS, lockTimeoutAcross, lockTimeoutField } from '../../src/locks';

describe('the lock wait left to a statement that visits every partition', () => {
  it('a plain table keeps the lock timeout', () => {
    expect(lockTimeoutAcross(DEFAULT_LOCK_TIMEOUT_MS, 0)).toBe(50);
    expect(lockTimeoutAcross(20, 0)).toBe(20);
  });
  it('each partition takes its share of the hold out of the wait, down to 10 ms', () => {
    expect(lockTimeoutAcross(50, 40)).toBe(30);
    expect(lockTimeoutAcross(50, 121)).toBe(10);
    expect(lockTimeoutAcross(500, 121)).toBe(440); // an operator's longer timeout keeps what the hold leaves
  });
  it('never more than the operator allows', () => {
    expect(lockTimeoutAcross(10, 200)).toBe(10);
  });
  it('lockTimeoutMs is a whole number from 10 to 60000, 50 when absent', () => {
    expect(lockTimeoutField(undefined)).toBe(50);
    expect(() => lockTimeoutField(5)).toThrow(/from 10 to 60000/);
  });
});
