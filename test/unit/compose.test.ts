/**
 * Docker cannot run on our machines, so the compose file is checked against the code: the services exist,
 * the worker's environment is what src/config.ts reads, and addresses and ports agree across services.
 */
import * as fs from 'fs';
import * as path from 'path';
import { parse } from 'yaml';
import { loadConfig } from '../../src/config';
import { metricsAddress } from '../../worker/telemetry';
import { FLEET_ATTRIBUTES } from '../../src/fleet';

const ROOT = path.join(__dirname, '..', '..');
const compose = parse(fs.readFileSync(path.join(ROOT, 'docker-compose.yml'), 'utf8'));
const svc = compose.services;

test('has the target database, Temporal with PostgreSQL persistence, the Web UI and the worker', () => {
  expect(Object.keys(svc).sort()).toEqual([
    'postgres',
    'temporal',
    'temporal-db',
    'temporal-search-attributes',
    'temporal-ui',
    'worker',
  ]);
  expect(svc.temporal.environment.DB).toBe('postgres12');
  expect(svc.temporal.environment.POSTGRES_SEEDS).toBe('temporal-db');
  expect(svc['temporal-db'].environment.POSTGRES_USER).toBe(svc.temporal.environment.POSTGRES_USER);
  expect(svc['temporal-db'].environment.POSTGRES_PASSWORD).toBe(svc.temporal.environment.POSTGRES_PWD);
});

test("the worker's environment is the configuration the code reads, pointing at the other services", () => {
  const env = svc.worker.environment as Record<string, string>;
  const known = [
    'TEMPORAL_ADDRESS',
    'TEMPORAL_NAMESPACE',
    'PARTFLOW_TASK_QUEUE',
    'DATABASE_URL',
    'PARTFLOW_LOG_LEVEL',
    'PARTFLOW_ARCHIVE_DIR',
    'PARTFLOW_METRICS_ADDRESS',
  ];
  for (const k of Object.keys(env)) expect(known).toContain(k);
  const config = loadConfig(env);
  const [host, port] = config.temporalAddress.split(':');
  expect(host).toBe('temporal');
  expect(svc.temporal.ports).toContain(`${port}:${port}`);
  expect(config.taskQueue).toBe('partflow');
  expect(config.namespace).toBe('default');
  const db = new URL(config.databaseUrl!);
  expect(db.hostname).toBe('postgres');
  expect(db.username).toBe(svc.postgres.environment.POSTGRES_USER);
  expect(db.password).toBe(svc.postgres.environment.POSTGRES_PASSWORD);
  expect(db.pathname.slice(1)).toBe(svc.postgres.environment.POSTGRES_DB);
  expect(svc['temporal-ui'].environment.TEMPORAL_ADDRESS).toBe(config.temporalAddress);
  // the metrics port the worker listens on is published, one host port per replica (three, as test/production)
  const metricsPort = Number(metricsAddress(env).split(':')[1]);
  const replicas = svc.worker.deploy.replicas;
  expect(replicas).toBe(3);
  expect(svc.worker.ports).toContain(`${metricsPort}-${metricsPort + replicas - 1}:${metricsPort}`);
  expect(env.PARTFLOW_ARCHIVE_DIR).toBe('/archive');
  expect(svc.worker.volumes).toContain('archive:/archive');
});

test('the Dockerfile builds and starts what npm run worker starts', () => {
  const dockerfile = fs.readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  const cmd = /^CMD \["node", "([^"]+)"\]$/m.exec(dockerfile)![1];
  expect(pkg.scripts.worker).toBe(`node ${cmd}`);
  expect(fs.existsSync(path.join(ROOT, cmd.replace(/^dist\//, '').replace(/\.js$/, '.ts')))).toBe(true);
  // everything tsconfig.json compiles must be in the build stage, or `tsc` fails there
  const tsconfig = JSON.parse(fs.readFileSync(path.join(ROOT, 'tsconfig.json'), 'utf8'));
  for (const dir of tsconfig.include as string[]) expect(dockerfile).toContain(`COPY ${dir} ${dir}`);
  expect(dockerfile).toMatch(/postgresql-client/);
  // the workflow bundle is built in the image and the worker is pointed at it
  const bundle = /node dist\/worker\/bundle\.js (\S+)/.exec(dockerfile)![1];
  expect(dockerfile).toContain(`ENV PARTFLOW_WORKFLOW_BUNDLE=/app/${bundle}`);
});

test('the ahead-of-time workflow bundle holds every workflow', async () => {
  const { writeBundle } = await import('../../worker/bundle');
  const out = path.join(require('os').tmpdir(), `pf-bundle-${process.pid}.js`);
  expect(await writeBundle(out)).toBeGreaterThan(100_000);
  const code = fs.readFileSync(out, 'utf8');
  for (const wf of ['partitionTable', 'fixConstraints', 'maintainPartitions']) expect(code).toContain(wf);
  fs.unlinkSync(out);
});

test('the target database loads pg_stat_statements and creates it, as the tested clusters do', () => {
  expect(svc.postgres.command).toEqual(['postgres', '-c', 'shared_preload_libraries=pg_stat_statements']);
  const [file, target] = (svc.postgres.volumes[0] as string).split(':');
  expect(target).toBe('/docker-entrypoint-initdb.d/pg_stat_statements.sql');
  expect(fs.readFileSync(path.join(ROOT, file), 'utf8')).toMatch(
    /^CREATE EXTENSION IF NOT EXISTS pg_stat_statements;$/m,
  );
});

test("the fleet's search attributes are registered, the same names and types as src/fleet.ts", () => {
  const sa = svc['temporal-search-attributes'];
  expect(sa.environment.TEMPORAL_ADDRESS).toBe(svc.worker.environment.TEMPORAL_ADDRESS);
  const pairs = Object.values(FLEET_ATTRIBUTES).map((a) => `${a.name}=${a.type}`);
  expect(sa.command[0]).toContain(`for a in ${pairs.join(' ')};`);
});
