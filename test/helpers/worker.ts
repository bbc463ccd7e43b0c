/** partflow's compiled worker (dist/worker/main.js) as its own process, as an operator runs it. */
import { ChildProcess, spawn } from 'child_process';
import * as path from 'path';

export function spawnWorker(env: Record<string, string>, stdout: 'pipe' | 'ignore'): ChildProcess {
  return spawn(process.execPath, [path.join(__dirname, '..', '..', 'dist', 'worker', 'main.js')], {
    env: { ...process.env, ...env },
    stdio: ['ignore', stdout, 'inherit'],
  });
}
