/** Test tables shaped like generated_images, with awkward names where asked, and their writer specs. */
import type { Pool } from 'pg';
import { qualified, quoteIdent as q, TableRef } from '../../src/ident';
import type { WriterSpec } from '../../demo/writer';

export type KeyKind = 'uuid' | 'bigserial' | 'identity';

export interface TestTable {
  ref: TableRef;
  column: string;
  spec: WriterSpec;
}

/** Creates and fills a table: `rows` rows spread over 14 months back and 1 month ahead, three indexes, a grant. */
export async function createTable(
  pool: Pool,
  ref: TableRef,
  rows: number,
  key: KeyKind = 'uuid',
  column = 'created_at',
): Promise<TestTable> {
  const t = qualified(ref);
  const c = q(column);
  await pool.query(`CREATE SCHEMA IF NOT EXISTS ${q(ref.schema)}`);
  const idDef =
    key === 'uuid'
      ? 'uuid PRIMARY KEY DEFAULT gen_random_uuid()'
      : key === 'bigserial'
        ? 'bigserial PRIMARY KEY'
        : 'bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY';
  await pool.query(`CREATE TABLE ${t} (id ${idDef}, user_id uuid, status text NOT NULL DEFAULT 'new' CHECK (status <> ''), payload text,
    n integer NOT NULL DEFAULT 0, ${c} timestamptz NOT NULL DEFAULT now())`);
  const base = ref.name
    .replace(/[^a-zA-Z0-9]/g, '')
    .slice(0, 20)
    .toLowerCase();
  await pool.query(`CREATE INDEX ${q(`${base}_user_status`)} ON ${t} (user_id, status) WHERE user_id IS NOT NULL`);
  await pool.query(`CREATE INDEX ${q(`${base}_ts`)} ON ${t} (${c})`);
  await pool.query(`CREATE INDEX ${q(`${base}_lower_payload`)} ON ${t} (lower(payload))`);
  await pool.query(`DO $$ BEGIN CREATE ROLE pf_reader; EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
  await pool.query(`GRANT SELECT ON ${t} TO pf_reader`);
  await pool.query(
    `INSERT INTO ${t} (user_id, status, payload, n, ${c})
     SELECT CASE WHEN g % 7 = 0 THEN NULL ELSE gen_random_uuid() END, (ARRAY['new','done','failed'])[1 + g % 3], md5(g::text), g,
            now() - interval '14 months' + (g::float / $1) * interval '15 months'
       FROM generate_series(1, $1::int) g ORDER BY random()`,
    [rows],
  );
  await pool.query(`ANALYZE ${t}`);
  // an ALWAYS identity can only be re-keyed to DEFAULT
  const newId =
    key === 'uuid'
      ? 'gen_random_uuid()'
      : key === 'identity'
        ? 'DEFAULT'
        : `nextval(pg_get_serial_sequence(${quoteLit(t)}, 'id'))`;
  return {
    ref,
    column,
    spec: {
      table: t,
      id: 'id',
      ts: c,
      payload: 'payload',
      newIdExpr: newId,
      insertSql: `INSERT INTO ${t} AS t (user_id, payload, n, ${c}) VALUES (gen_random_uuid(), 'w', 1, $1)`,
    },
  };
}

function quoteLit(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}
