/**
 * `node dist/worker/bundle.js [out]`: builds the workflow bundle ahead of time (the Dockerfile does), so a
 * worker starts without webpack; worker/worker.ts uses it when PARTFLOW_WORKFLOW_BUNDLE names it.
 */
import * as fs from 'fs';
import { bundleWorkflowCode } from '@temporalio/worker';
import { workflowsPath } from './worker';

export async function writeBundle(out: string): Promise<number> {
  const { code } = await bundleWorkflowCode({ workflowsPath: workflowsPath() });
  fs.writeFileSync(out, code);
  return code.length;
}

if (require.main === module) {
  const out = process.argv[2] ?? 'dist/workflow-bundle.js';
  writeBundle(out).then(
    (n) => process.stdout.write(`wrote ${out} (${n} bytes)\n`),
    (err) => {
      process.stderr.write(`bundle failed: ${err?.message ?? err}\n`);
      process.exit(1);
    },
  );
}
