/** What the CLI's commands share: the output, the context each action gets, usage errors, option helpers. */
import type { Client } from '@temporalio/client';
import type { Command } from 'commander';
import type { PartflowConfig } from '../src/config';
import type { ReplicaBounds } from '../src/replicas';

export type Out = (s: string) => void;
export type Opts = Record<string, unknown>;

export class UsageError extends Error {}

export const num = (v: unknown, flag: string): number | undefined => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new UsageError(`--${flag} takes a number, not ${JSON.stringify(v)}.`);
  return n;
};

export const collect = (v: string, prev: string[] = []) => [...prev, v];

/** The replica bounds given as options. */
export function replicaFrom(v: Opts): Partial<ReplicaBounds> {
  const out: Partial<ReplicaBounds> = {};
  if (v.maxReplicaLagBytes) out.maxReplicaLagBytes = num(v.maxReplicaLagBytes, 'max-replica-lag-bytes');
  if (v.maxReplicaLagSeconds) out.maxReplicaLagSeconds = num(v.maxReplicaLagSeconds, 'max-replica-lag-seconds');
  if (v.maxWalBytesPerSecond) out.maxWalBytesPerSecond = num(v.maxWalBytesPerSecond, 'max-wal-bytes-per-second');
  if (v.ignoreUnknownReplicaLag) out.ignoreUnknownReplicaLag = true;
  return out;
}

export function replicaOptions(c: Command): Command {
  return c
    .option('--max-replica-lag-bytes <n>', 'the copy waits while a standby or slot is further behind (128 MiB)')
    .option('--max-replica-lag-seconds <s>', "the copy waits while a standby's replay_lag is longer (10)")
    .option('--max-wal-bytes-per-second <n>', 'cap on the WAL the copy writes per second (none)')
    .option('--ignore-unknown-replica-lag', 'go on when a standby vanished or its lag cannot be read');
}

/** What every command's action gets: the output, the configuration, a Temporal client made on first use. */
export interface Ctx {
  out: Out;
  config: () => PartflowConfig;
  client: () => Promise<Client>;
  code: number;
}
