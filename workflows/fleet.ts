/**
 * The fleet's search attributes (src/fleet.ts) kept current by partitionTable: set only where the run found
 * them registered (`fleet` in its state), and only when a value changed (each upsert is an event).
 */
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';
import { upsertSearchAttributes } from '@temporalio/workflow';
import { FLEET_ATTRIBUTES as A } from '../src/fleet';
import type { Progress } from './definitions';

const KEYS = {
  table: defineSearchAttributeKey(A.table.name, SearchAttributeType.KEYWORD),
  phase: defineSearchAttributeKey(A.phase.name, SearchAttributeType.KEYWORD),
  awaitingApproval: defineSearchAttributeKey(A.awaitingApproval.name, SearchAttributeType.BOOL),
  throttled: defineSearchAttributeKey(A.throttled.name, SearchAttributeType.BOOL),
};

/** Upserts what changed since `last` (the values as one string); returns the values now. */
export function upsertFleet(p: Progress, last: string | undefined): string {
  const throttled = !!p.throttledBy || !!p.appPauseMs;
  const now = JSON.stringify([p.table, p.phase, p.awaitingApproval, throttled]);
  if (now === last) return now;
  upsertSearchAttributes([
    { key: KEYS.table, value: p.table },
    { key: KEYS.phase, value: p.phase },
    { key: KEYS.awaitingApproval, value: p.awaitingApproval },
    { key: KEYS.throttled, value: throttled },
  ]);
  return now;
}
