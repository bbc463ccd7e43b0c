/**
 * Histories recorded from real runs of every workflow (test/integration/record-histories.test.ts) replayed on
 * today's workflow code: a change that would break the runs in flight fails here (a nondeterminism error).
 */
import * as fs from 'fs';
import * as path from 'path';
import { Worker } from '@temporalio/worker';

const DIR = path.join(__dirname, 'histories');
const files = fs.readdirSync(DIR).filter((f) => f.endsWith('.json'));

test('there is a recorded history of each workflow', () => {
  const types = files.map((f) => f.split('-')[0].replace(/\.json$/, ''));
  expect([...new Set(types)].sort()).toEqual([
    'cleanupTable',
    'createIndexes',
    'fixConstraints',
    'maintainPartitions',
    'partitionTable',
    'undoFixConstraints',
  ]);
});

test.each(files)('%s replays on the current workflow code', async (file) => {
  const history = JSON.parse(fs.readFileSync(path.join(DIR, file), 'utf8'));
  await Worker.runReplayHistory({ workflowsPath: require.resolve('../../workflows') }, history, file);
});
