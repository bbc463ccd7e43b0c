/**
 * Issue 29, item 7: what an ORM's schema sync does to a table partflow converted. TypeORM (the seed's ORM,
 * 0.3.31) reads the database and the entities and builds the statements that would make them agree: with the
 * unchanged entities (primary key `id` alone) it would re-add `PRIMARY KEY ("id")`, which PostgreSQL refuses on
 * a partitioned table, so an application started with `synchronize: true` fails; with the partition-aware
 * entities the README gives (the partition column in the primary key, the indexes and foreign keys declared
 * under their names) it builds nothing.
 */
import 'reflect-metadata';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { DataSource, EntitySchema } from 'typeorm';
import type { TestDb } from '../helpers/pg';
import { startStack, Stack } from '../helpers/stack';

const TQ = 'partflow-orm';
let stack: Stack;
let env: TestWorkflowEnvironment;
let db: TestDb;

beforeAll(async () => {
  stack = await startStack('orm', TQ);
  ({ env, db } = stack);
});

afterAll(async () => {
  await stack?.teardown();
});

const User = new EntitySchema<{ id: string; email: string }>({
  name: 'User',
  tableName: 'users',
  columns: {
    id: { type: 'bigint', primary: true, generated: 'increment' },
    email: { type: 'text' },
  },
});

/** The seed's generated_images as its entity reads before the conversion, or after it (partition-aware). */
function images(partitionAware: boolean) {
  return new EntitySchema<{ id: string; user_id: string; prompt: string; created_at: Date; user: unknown }>({
    name: 'GeneratedImage',
    tableName: 'generated_images',
    columns: {
      id: { type: 'bigint', primary: true, generated: 'increment' },
      user_id: { type: 'bigint' },
      prompt: { type: 'text', nullable: true },
      // partition-aware: the partition column is part of the primary key, as on the partitioned table
      created_at: { type: 'timestamptz', primary: partitionAware, default: () => 'now()' },
    },
    relations: {
      user: {
        type: 'many-to-one',
        target: 'User',
        joinColumn: { name: 'user_id', foreignKeyConstraintName: 'generated_images_user_id_fkey' },
      },
    },
    indices: [{ name: 'idx_generated_images_user_id', columns: ['user_id'] }],
  });
}

async function pendingSchemaChanges(partitionAware: boolean): Promise<string[]> {
  const ds = new DataSource({
    type: 'postgres',
    host: db.conn.host,
    port: db.conn.port,
    username: db.conn.user,
    database: db.conn.database,
    entities: [User, images(partitionAware)],
    synchronize: false,
  });
  await ds.initialize();
  try {
    const sql = await ds.driver.createSchemaBuilder().log();
    return sql.upQueries.map((x) => x.query);
  } finally {
    await ds.destroy();
  }
}

test("TypeORM's schema builder on a converted table: nothing to change with partition-aware entities", async () => {
  await db.pool.query(`CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL)`);
  await db.pool.query(
    `CREATE TABLE generated_images (id bigserial PRIMARY KEY, user_id bigint NOT NULL REFERENCES users (id),
       prompt text, created_at timestamptz NOT NULL DEFAULT now())`,
  );
  await db.pool.query(`CREATE INDEX idx_generated_images_user_id ON generated_images (user_id)`);
  await db.pool.query(`INSERT INTO users (email) SELECT 'u' || g || '@x' FROM generate_series(1, 20) g`);
  await db.pool.query(
    `INSERT INTO generated_images (user_id, prompt, created_at)
       SELECT 1 + g % 20, 'p' || g, now() - (g % 90) * interval '1 day' FROM generate_series(1, 2000) g`,
  );
  // before: the application's own entities agree with the table
  expect(await pendingSchemaChanges(false)).toEqual([]);
  const h = await env.client.workflow.start('partitionTable', {
    taskQueue: TQ,
    workflowId: `orm-${Date.now()}`,
    args: [{ table: 'generated_images', approval: 'auto', rollbackWindow: '0s' }],
  });
  expect((await h.result()).status).toBe('done');
  // after: the unchanged entities would re-add the old primary key, which PostgreSQL refuses
  const unchanged = await pendingSchemaChanges(false);
  expect(unchanged.join('\n')).toMatch(/PRIMARY KEY \("id"\)/);
  await expect(db.pool.query(unchanged.find((q) => /ADD CONSTRAINT .* PRIMARY KEY/.test(q))!)).rejects.toThrow();
  // the partition-aware entities: nothing to change
  expect(await pendingSchemaChanges(true)).toEqual([]);
});
