/**
 * The pid files of scripts/temporal-server.sh (scripts/env.sh pid_file_*): a pid file outlives its process,
 * and where a machine's state is kept between runs its pid comes back as another process. CI once took such a
 * pid for Temporal Server, did not start it, and waited for it in vain. No server is started here: the process
 * a file names is a `sleep` of the test's own.
 */
import { spawn, spawnSync, type ChildProcess } from 'child_process';
import fs from 'fs';
import os from 'os';
import path from 'path';

const ROOT = path.join(__dirname, '..', '..');
let home: string;
let sleeper: ChildProcess;
const pidFile = () => path.join(home, 'temporal-server', 'server.pid');
const bash = (script: string) =>
  spawnSync('bash', ['-c', script], { cwd: ROOT, env: { ...process.env, PARTFLOW_HOME: home }, encoding: 'utf8' });
const status = () => bash('bash scripts/temporal-server.sh status').status;
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

beforeEach(() => {
  home = fs.mkdtempSync(path.join(os.tmpdir(), 'pidfile-'));
  fs.mkdirSync(path.join(home, 'temporal-server'));
  sleeper = spawn('sleep', ['60'], { stdio: 'ignore' });
});
afterEach(() => {
  sleeper.kill('SIGKILL');
  fs.rmSync(home, { recursive: true, force: true });
});

test('a pid that another program now has is not the server: not running, and stop and kill leave it alone', () => {
  fs.writeFileSync(pidFile(), `${sleeper.pid}\n`);
  expect(status()).toBe(1);
  expect(bash('bash scripts/temporal-server.sh stop && bash scripts/temporal-server.sh kill').status).toBe(0);
  expect(alive(sleeper.pid!)).toBe(true);
  expect(fs.existsSync(pidFile())).toBe(false);
});

test('a file names its process by pid and start time: the same pid with another start time is not it', () => {
  const write = bash(`source scripts/env.sh; pid_file_write "$PARTFLOW_HOME/f" ${sleeper.pid}; cat "$PARTFLOW_HOME/f"`);
  const [pid, started] = write.stdout.trim().split(' ');
  expect(Number(pid)).toBe(sleeper.pid);
  expect(Number(started)).toBeGreaterThan(0);
  const runs = (text: string) =>
    bash(`source scripts/env.sh; echo '${text}' > "$PARTFLOW_HOME/f"; pid_file_runs "$PARTFLOW_HOME/f" sleep`).status;
  expect(runs(`${pid} ${started}`)).toBe(0);
  expect(runs(`${pid} ${Number(started) + 1}`)).toBe(1);
  expect(runs(`${pid}`)).toBe(0); // a file written before start times were recorded: the name alone
  expect(runs(`${pid} ${started}\nextra`)).toBe(0);
  for (const bad of ['', 'garbage', '-1', '0', `${pid}x`]) expect(runs(bad)).toBe(1);
  sleeper.kill('SIGKILL');
  spawnSync('sleep', ['0.2']);
  expect(runs(`${pid} ${started}`)).toBe(1);
});
