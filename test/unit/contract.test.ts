/** docs/contract.md documents every input field, signal, query, update and failure type the code has. */
import * as fs from 'fs';
import * as path from 'path';
import { FIX_INPUT_FIELDS } from '../../src/constraints';
import { FAILURE_TYPES } from '../../src/failures';
import { INDEX_FIELDS, INDEX_INPUT_FIELDS } from '../../src/indexes';
import { PARTITION_INPUT_FIELDS } from '../../src/input';
import { MAINTAIN_INPUT_FIELDS, MAINTAIN_TABLE_FIELDS } from '../../src/maintenance';

const ROOT = path.join(__dirname, '..', '..');
const doc = fs.readFileSync(path.join(ROOT, 'docs', 'contract.md'), 'utf8');
const section = (title: string) => {
  const start = doc.indexOf(`## ${title}`);
  if (start < 0) throw new Error(`docs/contract.md has no section "${title}"`);
  const end = doc.indexOf('\n## ', start + 3);
  return doc.slice(start, end < 0 ? undefined : end);
};
const named = (text: string, names: readonly string[]) => names.filter((n) => !text.includes(`\`${n}\``));

test('every input field of each workflow is documented in its section', () => {
  expect(named(section('Workflow `partitionTable`'), PARTITION_INPUT_FIELDS)).toEqual([]);
  expect(named(section('Workflow `fixConstraints`'), FIX_INPUT_FIELDS)).toEqual([]);
  expect(named(section('Workflow `createIndexes`'), [...INDEX_INPUT_FIELDS, ...INDEX_FIELDS])).toEqual([]);
  expect(named(section('Workflow `maintainPartitions`'), [...MAINTAIN_INPUT_FIELDS, ...MAINTAIN_TABLE_FIELDS])).toEqual(
    [],
  );
});

test('every signal, query and update defined in workflows/ is documented, and every progress field', () => {
  const sources = fs
    .readdirSync(path.join(ROOT, 'workflows'))
    .map((f) => fs.readFileSync(path.join(ROOT, 'workflows', f), 'utf8'))
    .join('\n');
  const defined = [...sources.matchAll(/define(?:Signal|Query|Update)(?:<[^(]*>)?\(\s*'([^']+)'/g)].map((m) => m[1]);
  expect(defined).toEqual(expect.arrayContaining(['pause', 'approveCutover', 'throttle', 'progress']));
  expect(named(doc, defined)).toEqual([]);
  const definitions = fs.readFileSync(path.join(ROOT, 'workflows', 'definitions.ts'), 'utf8');
  const progress = definitions.slice(definitions.indexOf('export interface Progress'));
  const fields = [...progress.slice(0, progress.indexOf('\n}')).matchAll(/^ {2}(\w+)\??:/gm)].map((m) => m[1]);
  expect(fields.length).toBeGreaterThan(20);
  expect(named(section('Workflow `partitionTable`'), fields)).toEqual([]);
  const indexes = fs.readFileSync(path.join(ROOT, 'workflows', 'createIndexes.ts'), 'utf8');
  const ip = indexes.slice(indexes.indexOf('export interface IndexProgress'));
  const ipFields = [...ip.slice(0, ip.indexOf('\n}')).matchAll(/^ {2}(\w+)\??:/gm)].map((m) => m[1]);
  expect(ipFields.length).toBeGreaterThan(5);
  expect(named(section('Workflow `createIndexes`'), ipFields)).toEqual([]);
});

test('every failure type is documented, and the docs link nothing outside the project', () => {
  expect(named(section('Failure types'), Object.keys(FAILURE_TYPES))).toEqual([]);
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  expect([...readme.matchAll(/\]\((\.\.\/[^)]*)\)/g)].map((m) => m[1])).toEqual([]);
});
