import { loadConfig } from '../../src/config';

test('defaults per CONTRACT.md', () => {
  expect(loadConfig({ HOME: '/nonexistent' })).toMatchObject({
    temporalAddress: 'localhost:7233',
    namespace: 'default',
    taskQueue: 'partflow',
    databaseUrl: undefined,
    connectionExtras: {},
  });
});

test("Temporal's standard environment configuration: address, namespace, API key, TLS", () => {
  const c = loadConfig({
    HOME: '/nonexistent',
    TEMPORAL_ADDRESS: 'ns.acct.tmprl.cloud:7233',
    TEMPORAL_NAMESPACE: 'ns.acct',
    TEMPORAL_API_KEY: 'k-123',
    PARTFLOW_TASK_QUEUE: 'pq',
    DATABASE_URL: 'postgres://u@h/db',
  });
  expect(c).toMatchObject({
    temporalAddress: 'ns.acct.tmprl.cloud:7233',
    namespace: 'ns.acct',
    taskQueue: 'pq',
    databaseUrl: 'postgres://u@h/db',
  });
  expect(c.connectionExtras.apiKey).toBe('k-123');
  expect(c.connectionExtras.tls).toBeTruthy(); // an API key turns TLS on
});
