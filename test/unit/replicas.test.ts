/** src/replicas.ts: which bound holds the copy back, and the input fields. */
import { validatePartitionInput, validateThrottle } from '../../src/input';
import {
  appLatencyHold,
  DEFAULT_REPLICA_BOUNDS,
  replicaBoundsFrom,
  replicaHold,
  ReplicaView,
  walRateWaitMs,
  worstLag,
} from '../../src/replicas';

const MiB = 1024 * 1024;
const b = { ...DEFAULT_REPLICA_BOUNDS, maxReplicaLagBytes: 8 * MiB, maxReplicaLagSeconds: 5 };
const view = (over: Partial<ReplicaView> = {}): ReplicaView => ({
  standbys: [{ name: 's1@10.0.0.2', lagBytes: MiB, lagSeconds: 0.5 }],
  slots: [],
  expected: ['s1@10.0.0.2'],
  ...over,
});

describe('replicaHold', () => {
  it('lets the copy go on while every standby and slot is within the bounds, or there are none', () => {
    expect(replicaHold(b, view())).toBeNull();
    expect(replicaHold(b, { standbys: [], slots: [], expected: [] })).toBeNull();
  });
  it('holds on replay lag in bytes, in seconds, and on WAL a slot holds', () => {
    expect(replicaHold(b, view({ standbys: [{ name: 's1@x', lagBytes: 9 * MiB, lagSeconds: 1 }] }))).toMatchObject({
      bound: 'maxReplicaLagBytes',
      reason: 'standby s1@x replays 9.0 MiB behind, over 8.0 MiB',
    });
    expect(replicaHold(b, view({ standbys: [{ name: 's1@x', lagBytes: 0, lagSeconds: 6 }] }))?.bound).toBe(
      'maxReplicaLagSeconds',
    );
    const slot = replicaHold(b, view({ slots: [{ name: 'cdc', heldBytes: 20 * MiB }] }));
    expect(slot).toMatchObject({ bound: 'maxReplicaLagBytes', reason: expect.stringMatching(/^replication slot cdc/) });
  });
  it('fails closed: an unreadable lag or a vanished standby holds, unless the operator opted out', () => {
    const unknown = view({ standbys: [{ name: 's1@x', lagBytes: null, lagSeconds: null }], expected: ['s1@x'] });
    expect(replicaHold(b, unknown)?.bound).toBe('lagUnknown');
    const gone = view({ standbys: [], expected: ['s1@10.0.0.2'] });
    expect(replicaHold(b, gone)).toMatchObject({ bound: 'standbyGone', reason: expect.stringMatching(/^standby s1@/) });
    const optOut = { ...b, ignoreUnknownReplicaLag: true };
    expect(replicaHold(optOut, unknown)).toBeNull();
    expect(replicaHold(optOut, gone)).toBeNull();
    // opting out never ignores a lag it can read
    expect(replicaHold(optOut, view({ standbys: [{ name: 's1@x', lagBytes: 9 * MiB, lagSeconds: 0 }] }))?.bound).toBe(
      'maxReplicaLagBytes',
    );
  });
  it("keeps room for the next batch: the last batch's WAL, at most half the bound", () => {
    const v = view({ standbys: [{ name: 's1@x', lagBytes: 6 * MiB, lagSeconds: 0 }], expected: [] });
    expect(replicaHold(b, v, MiB)).toBeNull();
    expect(replicaHold(b, v, 3 * MiB)?.reason).toBe(
      'standby s1@x replays 6.0 MiB behind (3.0 MiB more with the next batch), over 8.0 MiB',
    );
    // a batch bigger than the bound still gets its turn once the standby is within half of it
    expect(
      replicaHold(b, view({ standbys: [{ name: 's1@x', lagBytes: 3 * MiB, lagSeconds: 0 }], expected: [] }), 50 * MiB),
    ).toBeNull();
  });
  it('reports the worst lag', () => {
    const v = view({ slots: [{ name: 'cdc', heldBytes: 3 * MiB }] });
    expect(worstLag(v)).toEqual({ bytes: 3 * MiB, seconds: 0.5, standbys: 1 });
  });
});

describe('the WAL rate cap', () => {
  it('waits just long enough to stay under the cap', () => {
    expect(walRateWaitMs(10 * MiB, 1000, 5 * MiB)).toBe(1000);
    expect(walRateWaitMs(10 * MiB, 3000, 5 * MiB)).toBe(0);
    expect(walRateWaitMs(10 * MiB, 0, null)).toBe(0);
  });
});

describe('replica bounds in the inputs', () => {
  it('have safe defaults and take the operator values by name', () => {
    expect(validatePartitionInput({ table: 't' }).replica).toEqual(DEFAULT_REPLICA_BOUNDS);
    expect(
      validatePartitionInput({
        table: 't',
        maxReplicaLagBytes: 1e6,
        maxReplicaLagSeconds: 2.5,
        maxWalBytesPerSecond: 5e6,
      }).replica,
    ).toEqual({
      ...DEFAULT_REPLICA_BOUNDS,
      maxReplicaLagBytes: 1e6,
      maxReplicaLagSeconds: 2.5,
      maxWalBytesPerSecond: 5e6,
    });
    expect(() => validatePartitionInput({ table: 't', maxReplicaLagBytes: 0 })).toThrow(
      /Field "maxReplicaLagBytes" must be a number above 0/,
    );
    expect(() => validatePartitionInput({ table: 't', ignoreUnknownReplicaLag: 'yes' })).toThrow(
      /"ignoreUnknownReplicaLag" must be true or false/,
    );
  });
  it('can be changed by the throttle update', () => {
    expect(validateThrottle({ maxReplicaLagSeconds: 30 })).toEqual({ maxReplicaLagSeconds: 30 });
    expect(() => validateThrottle({ maxReplicaLagSeconds: -1 })).toThrow(/throttle: "maxReplicaLagSeconds"/);
  });
});

describe('the application-latency bound', () => {
  it('holds while the median of the recent commit probes is over ratio x the idle probe, with 0.5 ms of room', () => {
    expect(appLatencyHold(1.5, 2, [2.5, 2.9, 3.1])).toBeNull(); // median 2.9 <= 3.0
    expect(appLatencyHold(1.5, 2, [3.2, 2.9, 3.1])).toMatchObject({ bound: 'maxAppLatencyRatio' });
    expect(appLatencyHold(1.5, 2, [3.2, 2.9, 3.1])!.reason).toMatch(/a commit takes 3\.10 ms .* over 3\.00 ms/);
    // a probe of 0.2 ms idle: 1.5x would be 0.3 ms, noise; the room is 0.5 ms
    expect(appLatencyHold(1.5, 0.2, [0.6, 0.65, 0.7])).toBeNull();
    expect(appLatencyHold(1.5, 0.2, [0.8, 0.75, 0.9])).not.toBeNull();
  });
  it('fails closed on a failed probe, and is off without a ratio or an idle probe', () => {
    expect(appLatencyHold(1.5, 2, [1, null, 1])!.reason).toMatch(/probe failed/);
    expect(appLatencyHold(null, 2, [100])).toBeNull();
    expect(appLatencyHold(1.5, undefined, [100])).toBeNull();
  });
  it('is an input and a throttle field, validated', () => {
    expect(replicaBoundsFrom({ maxAppLatencyRatio: 1.2 }, 'Field ')).toEqual({ maxAppLatencyRatio: 1.2 });
    expect(replicaBoundsFrom({ maxAppLatencyRatio: null }, 'Field ')).toEqual({ maxAppLatencyRatio: null });
    expect(() => replicaBoundsFrom({ maxAppLatencyRatio: 1 }, 'Field ')).toThrow(/from 1\.05 to 100/);
    expect(() => replicaBoundsFrom({ maxAppLatencyRatio: '2' }, 'Field ')).toThrow(/maxAppLatencyRatio/);
    expect(validateThrottle({ maxAppLatencyRatio: 2 })).toEqual({ maxAppLatencyRatio: 2 });
    expect(DEFAULT_REPLICA_BOUNDS.maxAppLatencyRatio).toBe(1.5);
  });
});
