/** What an operator should read of a failure: the ApplicationFailure at the root of an activity's failure. */
export function rootFailure(err: unknown): { message: string; details: unknown[]; type?: string } {
  let e = err as { message?: string; cause?: unknown; name?: string; details?: unknown[]; type?: string } | undefined;
  while (e && e.cause && e.name !== 'ApplicationFailure') e = e.cause as typeof e;
  return { message: e?.message ?? String(err), details: e?.details ?? [], type: e?.type };
}
