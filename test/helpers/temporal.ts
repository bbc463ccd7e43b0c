/** The real Temporal dev server (the temporal CLI built by scripts/env.sh), started per test file. */
import { TestWorkflowEnvironment } from '@temporalio/testing';
import * as os from 'os';
import * as path from 'path';
import { devServerFlags } from '../../src/fleet';

export function temporalBin(): string {
  return process.env.TEMPORAL_BIN ?? path.join(os.homedir(), '.cache', 'partflow', 'bin', 'temporal');
}

export async function startDevServer(
  extraArgs: string[] = [],
  opts: { uiPort?: number } = {},
): Promise<TestWorkflowEnvironment> {
  return TestWorkflowEnvironment.createLocal({
    server: {
      executable: { type: 'existing-path', path: temporalBin() },
      // the fleet's search attributes registered, as our scripts do (src/fleet.ts)
      extraArgs: ['--log-level', 'error', ...devServerFlags(), ...extraArgs],
      ...(opts.uiPort ? { ui: true, uiPort: opts.uiPort } : {}),
    },
  });
}
