/** Polling helpers over the `progress` query. */
import type { WorkflowHandle } from '@temporalio/client';
import type { Progress } from '../../workflows/definitions';

export async function progress(h: WorkflowHandle): Promise<Progress> {
  return h.query<Progress>('progress');
}

export async function waitFor(h: WorkflowHandle, pred: (p: Progress) => boolean, what: string, timeoutMs = 120_000): Promise<Progress> {
  const until = Date.now() + timeoutMs;
  let last: Progress | undefined;
  while (Date.now() < until) {
    try {
      last = await progress(h);
      if (pred(last)) return last;
      if (last.phase === 'failed') throw new Error(`workflow failed while waiting for ${what}: ${last.lastError}`);
    } catch (err) {
      if (/workflow failed/.test((err as Error).message)) throw err;
    }
    await new Promise((r) => setTimeout(r, 150));
  }
  throw new Error(`timed out waiting for ${what}; last progress ${JSON.stringify(last)}`);
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
