/**
 * Workflows must stay deterministic: no Node built-ins, no pg, no clock or randomness outside the SDK.
 * Checks the import graph of workflows/ (transitively through src/) by reading the sources.
 */
import * as fs from 'fs';
import * as path from 'path';

const ROOT = path.join(__dirname, '..', '..');
const FORBIDDEN =
  /^(fs|path|os|child_process|crypto|net|http|https|pg|pino|@temporalio\/(worker|client|activity))$|^node:/;

function imports(file: string): string[] {
  const src = fs.readFileSync(file, 'utf8');
  return [...src.matchAll(/^\s*(?:import|export)\s+(type\s+)?[^'";]*from\s+'([^']+)'/gm)]
    .filter((m) => !m[1])
    .map((m) => m[2]);
}

function resolveLocal(from: string, spec: string): string | null {
  if (!spec.startsWith('.')) return null;
  const base = path.resolve(path.dirname(from), spec);
  for (const c of [`${base}.ts`, path.join(base, 'index.ts')]) if (fs.existsSync(c)) return c;
  return null;
}

test('workflows import no I/O modules, directly or through src/', () => {
  const seen = new Set<string>();
  const bad: string[] = [];
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    for (const spec of imports(file)) {
      if (FORBIDDEN.test(spec)) bad.push(`${path.relative(ROOT, file)} imports ${spec}`);
      const local = resolveLocal(file, spec);
      if (local) visit(local);
    }
  };
  visit(path.join(ROOT, 'workflows', 'index.ts'));
  expect(seen.size).toBeGreaterThan(3);
  expect(bad).toEqual([]);
});

test('workflow sources do not read the clock or randomness directly', () => {
  for (const f of fs.readdirSync(path.join(ROOT, 'workflows'))) {
    const src = fs.readFileSync(path.join(ROOT, 'workflows', f), 'utf8');
    expect(src).not.toMatch(/Math\.random|setTimeout|process\./);
  }
});
