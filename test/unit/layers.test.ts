/**
 * The layers, bottom to top: src/ (the pure core: plans, statements, validation), activities/runtime/ (what every
 * operation's activities share: the database, the run's facts, the throttles), activities/<operation>/ (the
 * executors), workflows/ (orchestration; activities only as types), worker/ and operator/ (the processes an
 * operator starts). No file imports from a layer above its own. `npx jest --selectProjects unit -t layers`
 * prints every import that crosses from one operation's activities into another's.
 */
import * as fs from 'fs';
import * as path from 'path';

const ROOT = path.join(__dirname, '..', '..');

function files(dir: string): string[] {
  return fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true }).flatMap((e) => {
    const rel = path.join(dir, e.name);
    if (e.isDirectory()) return files(rel);
    return e.name.endsWith('.ts') ? [rel] : [];
  });
}

/** Each relative import of a file: the module it names (relative to the root) and whether it is type-only. */
function imports(file: string): { to: string; typeOnly: boolean }[] {
  const text = fs.readFileSync(path.join(ROOT, file), 'utf8');
  const found = [...text.matchAll(/^(import|export)( type)?[^'"]*?from '(\.[^']+)';/gms)];
  return found.map((m) => ({
    to: path.normalize(path.join(path.dirname(file), m[3])),
    typeOnly: !!m[2],
  }));
}

function layer(module: string): number {
  if (module.startsWith('src/') || module === 'src') return 0;
  if (module.startsWith('activities/runtime')) return 1;
  if (module.startsWith('activities')) return 2;
  if (module.startsWith('workflows')) return 3;
  if (module.startsWith('worker') || module.startsWith('operator')) return 4;
  throw new Error(`${module} is in no layer`);
}

const CODE = ['src', 'activities', 'workflows', 'worker', 'operator'].flatMap(files);

test('layers: no import points upward, and workflows take activities as types only', () => {
  const upward: string[] = [];
  for (const file of CODE) {
    for (const { to, typeOnly } of imports(file)) {
      const [from, into] = [layer(file), layer(to)];
      if (into > from) upward.push(`${file} -> ${to}`);
      if (from === 3 && into === 2 && !typeOnly) upward.push(`${file} -> ${to} (a value, not a type)`);
    }
  }
  expect(upward).toEqual([]);
});

test('layers: the imports from one operation into another are these, and may only get fewer', () => {
  const operation = (m: string) => m.split('/')[1]?.replace(/\.ts$/, '');
  const across = new Set<string>();
  for (const file of CODE.filter((f) => layer(f) === 2)) {
    for (const { to } of imports(file)) {
      if (layer(to) !== 2 || operation(to) === operation(file) || operation(file) === 'index') continue;
      across.add(`${operation(file)} -> ${operation(to)}`);
    }
  }
  console.log(`imports across operations: ${[...across].sort().join('; ') || 'none'}`);
  expect([...across].sort()).toEqual(KNOWN_ACROSS);
});

/** What is left of issue 27's debt: cleanup reads partitionTable's copy check (cleanup is partitionTable's companion). */
const KNOWN_ACROSS = ['cleanup -> partition'];
