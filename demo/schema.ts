/**
 * The seed plan's schema (an AI-image SaaS) and a data generator: users, the seven admin lookup tables,
 * user_businesses, user_addresses, contact_forms, generated_images (uuid key) and credit_transactions
 * (bigserial key), with rows spread over `months` months back from now.
 */
import type { Pool } from 'pg';

export const LOOKUP_TABLES = [
  'industries',
  'categories',
  'product_types',
  'product_poses',
  'product_themes',
  'product_backgrounds',
  'ai_faces',
];

/** With `seedIndexes` false, the seed plan's section 1 indexes are left for createIndexes to build (the demo). */
export function schemaSql(opts: { seedIndexes?: boolean } = {}): string[] {
  const seed = opts.seedIndexes !== false;
  const lookups = LOOKUP_TABLES.map(
    (t) =>
      `CREATE TABLE ${t} (id serial PRIMARY KEY, name varchar(100) NOT NULL, is_active boolean NOT NULL DEFAULT true, created_at timestamptz NOT NULL DEFAULT now())`,
  );
  return [
    `CREATE TABLE users (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), email varchar(150) NOT NULL UNIQUE, name varchar(100),
       credits integer NOT NULL DEFAULT 0, role varchar(20) NOT NULL DEFAULT 'user', created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now())`,
    ...lookups,
    `CREATE TABLE user_businesses (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), user_id uuid NOT NULL UNIQUE, business_name varchar(200), created_at timestamptz NOT NULL DEFAULT now())`,
    `CREATE TABLE user_addresses (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), user_id uuid, line1 varchar(200), city varchar(100), country varchar(2), created_at timestamptz NOT NULL DEFAULT now())`,
    `CREATE TABLE contact_forms (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), email varchar(150), message text NOT NULL, read_by uuid, read_at timestamptz, created_at timestamptz NOT NULL DEFAULT now())`,
    `CREATE TABLE generated_images (
       id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
       user_id uuid,
       industry_id integer, category_id integer, product_type_id integer, product_pose_id integer,
       product_theme_id integer, product_background_id integer, ai_face_id integer,
       generation_type varchar(30) NOT NULL DEFAULT 'product',
       generation_status varchar(20) NOT NULL DEFAULT 'pending' CHECK (generation_status IN ('pending', 'processing', 'completed', 'failed')),
       prompt text,
       image_url text,
       credits_used integer NOT NULL DEFAULT 1,
       expires_at timestamptz,
       created_at timestamptz NOT NULL DEFAULT now(),
       updated_at timestamptz NOT NULL DEFAULT now())`,
    ...(seed
      ? [
          `CREATE INDEX idx_generated_images_user_status ON generated_images (user_id, generation_status) WHERE user_id IS NOT NULL`,
          `CREATE INDEX idx_generated_images_expires_at ON generated_images (expires_at)`,
          `CREATE INDEX idx_generated_images_type_status_created ON generated_images (generation_type, generation_status, created_at)`,
        ]
      : []),
    `CREATE INDEX idx_generated_images_created_at ON generated_images (created_at)`,
    `CREATE TABLE credit_transactions (
       id bigserial PRIMARY KEY,
       user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
       amount integer NOT NULL,
       balance_after integer NOT NULL,
       operation_type varchar(30) NOT NULL,
       description text,
       created_at timestamptz NOT NULL DEFAULT now())`,
    ...(seed
      ? [
          `CREATE INDEX idx_credit_transactions_user_created ON credit_transactions (user_id, created_at)`,
          `CREATE INDEX idx_credit_transactions_operation_type ON credit_transactions (operation_type)`,
        ]
      : []),
    `CREATE INDEX idx_credit_transactions_created_at ON credit_transactions (created_at)`,
  ];
}

/** Fills the schema; `images` generated_images rows and as many credit_transactions, over `months` months. */
export async function fillDemoData(
  pool: Pool,
  images: number,
  months: number,
  onProgress: (msg: string) => void,
): Promise<void> {
  const users = Math.max(10, Math.round(images / 100));
  const span = `interval '${months} months'`;
  await pool.query(`INSERT INTO users (email, name, credits, created_at)
    SELECT 'user' || i || '@example.com', 'User ' || i, (random() * 500)::int, now() - random() * ${span} FROM generate_series(1, ${users}) i`);
  for (const t of LOOKUP_TABLES)
    await pool.query(`INSERT INTO ${t} (name) SELECT '${t} ' || i FROM generate_series(1, 20) i`);
  await pool.query(
    `INSERT INTO user_businesses (user_id, business_name) SELECT id, 'Business of ' || name FROM users WHERE random() < 0.3`,
  );
  await pool.query(
    `INSERT INTO user_addresses (user_id, line1, city, country) SELECT id, 'Street 1', 'Lisbon', 'PT' FROM users`,
  );
  await pool.query(
    `INSERT INTO contact_forms (email, message, read_by) SELECT CASE WHEN random() < 0.05 THEN NULL ELSE 'c' || i || '@example.com' END, 'hello', NULL FROM generate_series(1, 200) i`,
  );
  const step = 250_000;
  for (let done = 0; done < images; done += step) {
    const n = Math.min(step, images - done);
    // users.id sampled by row number so every image points at a real user (or none)
    await pool.query(`
      WITH u AS (SELECT array_agg(id) AS ids FROM users)
      INSERT INTO generated_images (user_id, industry_id, category_id, product_type_id, product_pose_id, product_theme_id,
                                    product_background_id, ai_face_id, generation_type, generation_status, prompt, image_url,
                                    credits_used, expires_at, created_at, updated_at)
      SELECT CASE WHEN g % 50 = 0 THEN NULL ELSE u.ids[(1 + (g::bigint * 7919) % ${users})::int] END,
             1 + g % 20, 1 + (g / 3) % 20, 1 + (g / 7) % 20, 1 + (g / 11) % 20, 1 + (g / 13) % 20, 1 + (g / 17) % 20, 1 + (g / 19) % 20,
             (ARRAY['product', 'lifestyle', 'model', 'background'])[1 + g % 4],
             (ARRAY['completed', 'completed', 'completed', 'failed', 'pending'])[1 + g % 5],
             'A photo of product ' || g || ' on a wooden table, soft light',
             'https://cdn.example.com/img/' || md5(g::text) || '.png',
             1 + g % 3, ts + interval '6 hours', ts, ts
        FROM u, (SELECT g, now() - random() * ${span} AS ts FROM generate_series(${done + 1}, ${done + n}) g) s`);
    await pool.query(`
      WITH u AS (SELECT array_agg(id) AS ids FROM users)
      INSERT INTO credit_transactions (user_id, amount, balance_after, operation_type, description, created_at)
      SELECT u.ids[(1 + (g::bigint * 104729) % ${users})::int], CASE WHEN g % 4 = 0 THEN 50 ELSE -1 END, (g % 500),
             (ARRAY['purchase', 'generation', 'refund', 'bonus'])[1 + g % 4], 'op ' || g, now() - random() * ${span}
        FROM u, generate_series(${done + 1}, ${done + n}) g`);
    onProgress(`generated ${done + n} of ${images} images and credit transactions`);
  }
  // As in the seed's database: users deleted by hand left images and businesses pointing at nobody
  // (there are no foreign keys yet); their credit transactions went with them.
  const gone = (
    await pool.query(`SELECT id FROM users WHERE id IN (SELECT user_id FROM user_businesses) ORDER BY id LIMIT 3`)
  ).rows.map((r) => r.id);
  await pool.query(`DELETE FROM credit_transactions WHERE user_id = ANY($1::uuid[])`, [gone]);
  await pool.query(`DELETE FROM users WHERE id = ANY($1::uuid[])`, [gone]);
  await pool.query('ANALYZE');
}
