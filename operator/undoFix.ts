/**
 * `partflow undo-fix <workflowId>`: undoes a fixConstraints run that has ended `done` (issue 28 item 4), by
 * starting undoFixConstraints and waiting for it. The Temporal CLI and tctl lines that do the same are in the
 * README.
 */
import type { Command } from 'commander';
import type { undoFixConstraints } from '../workflows/undoFixConstraints';
import type { Ctx } from './options';

async function undoFix(ctx: Ctx, workflowId: string, v: Record<string, unknown>): Promise<number> {
  const h = await (
    await ctx.client()
  ).workflow.start<typeof undoFixConstraints>('undoFixConstraints', {
    taskQueue: ctx.config().taskQueue,
    // one undo per run: Temporal refuses a second start while this one runs; started again after a terminate it goes on
    workflowId: `undo-${workflowId}`,
    args: [{ workflowId, ...(typeof v.runId === 'string' ? { runId: v.runId } : {}) }],
  });
  ctx.out(`started ${h.workflowId}`);
  const r = await h.result();
  if (v.json) ctx.out(JSON.stringify(r, null, 2));
  else {
    ctx.out(`undone ${r.workflowId} (run ${r.runId}):`);
    for (const s of r.undone) ctx.out(`  ${s.step.padEnd(10)} ${s.fix}`);
  }
  return 0;
}

export function undoFixCommand(p: Command, ctx: Ctx): void {
  p.command('undo-fix <workflowId>')
    .description('undo a fixConstraints run that has ended, from its workflow id (while its repair records exist)')
    .option('--run-id <id>', 'that run of the workflow id (default: its latest)')
    .option('--json', 'the result as JSON')
    .action(async (id: string, v: Record<string, unknown>) => void (ctx.code = await undoFix(ctx, id, v)));
}
