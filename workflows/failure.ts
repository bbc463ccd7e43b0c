import { failure } from '../src/failures';

/** What an operator should read of a failure: the ApplicationFailure at the root of an activity's failure. */
export function rootFailure(err: unknown): { message: string; details: unknown[]; type?: string } {
  let e = err as { message?: string; cause?: unknown; name?: string; details?: unknown[]; type?: string } | undefined;
  while (e && e.cause && e.name !== 'ApplicationFailure') e = e.cause as typeof e;
  return { message: e?.message ?? String(err), details: e?.details ?? [], type: e?.type };
}

/** The workflow's input validated; what is wrong with it fails the run as `InvalidInput`, changing nothing. */
export function validInput<T>(validate: () => T): T {
  try {
    return validate();
  } catch (err) {
    throw failure((err as Error).message, 'InvalidInput');
  }
}
