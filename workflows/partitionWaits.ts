/**
 * partitionTable's waits (paused, awaiting approval, the rollback window): the workflow waits on a condition
 * while the key log's applier runs beside it, and, awaiting approval, the verification passes again.
 */
import { CancellationScope, condition, isCancellation, sleep } from '@temporalio/workflow';
import { displayName } from '../src/ident';
import { failure } from '../src/failures';
import { refOf, type Plan } from '../src/plan';
import { act, follow, LONG } from './partitionRun';
import { Run, showDetails } from './partitionState';

/**
 * `work` until `until` holds (or `timeoutMs` passed), then cancelled and waited for: nothing of it runs after
 * this returns. With a plan that has the key log of `direction`, `followKeyLog` runs beside it the whole time,
 * so the log stays short while the run waits.
 */
async function untilThen(
  plan: Plan,
  until: () => boolean,
  work: () => Promise<unknown>,
  direction: 'forward' | 'reverse' = 'forward',
  timeoutMs?: number,
): Promise<void> {
  const log = direction === 'forward' ? plan.sql.keyLog : plan.sql.reverseKeyLog;
  const scope = new CancellationScope();
  let ended = false;
  const end = timeoutMs === undefined ? condition(until) : condition(until, timeoutMs);
  // a cancellation of the workflow rejects `end` too (and cancels the scope, its child): nothing to do here
  void end.then(
    () => {
      ended = true;
      scope.cancel();
    },
    () => undefined,
  );
  await scope
    .run(async () => {
      // allSettled: a verification in flight (WAIT_CANCELLATION_COMPLETED) has stopped before the next step
      // begins; either one ending ends the other: a failed verification stops the applier, a failed applier
      // the wait
      // the applier ends on its own only when its log is gone: while the run still waits, that is a failure,
      // not the end of the wait
      const applier = async () => {
        await follow.followKeyLog(refOf(plan), direction);
        if (!ended)
          throw failure(`The key log of ${displayName(plan.table)} is gone while the run waits.`, 'TableChanged');
      };
      const both = [work(), ...(log ? [applier()] : [])].map((p) => p.finally(() => scope.cancel()));
      const failed = (await Promise.allSettled(both))
        .filter((x): x is PromiseRejectedResult => x.status === 'rejected')
        .map((x) => x.reason);
      if (failed.length) throw failed.find((e) => !isCancellation(e)) ?? failed[0];
    })
    .catch((err) => {
      if (!isCancellation(err) || !ended) throw err;
    });
}

/** Waits until `until` holds (at most `timeoutMs`); plans with the key log of `direction` apply it meanwhile. */
export async function followingKeyLog(
  plan: Plan,
  until: () => boolean,
  direction: 'forward' | 'reverse' = 'forward',
  timeoutMs?: number,
): Promise<void> {
  const log = direction === 'forward' ? plan.sql.keyLog : plan.sql.reverseKeyLog;
  if (!log) return void (timeoutMs === undefined ? await condition(until) : await condition(until, timeoutMs));
  await untilThen(plan, until, () => condition(until), direction, timeoutMs);
}

/**
 * While the run waits for approval: verification again `reverifyEvery` after the last pass ended (what the
 * application wrote meanwhile is checked too); a difference fails the run, naming the range. A decision
 * (approval or rollback) cancels a pass in flight: the cut-over does not wait for it.
 */
export async function reverifyUntilDecided(run: Run, plan: Plan): Promise<void> {
  const { state, opts } = run;
  const decided = () => state.approved || state.rollbackRequested;
  if (opts.reverifyEveryMs <= 0) return followingKeyLog(plan, decided);
  await untilThen(plan, decided, async () => {
    for (;;) {
      await sleep(opts.reverifyEveryMs);
      state.verify = await act(LONG, 'verify again while waiting for approval').verify(refOf(plan), {
        analyze: false,
        chunkRows: opts.verifyChunkRows,
      });
      showDetails(run);
    }
  });
}
