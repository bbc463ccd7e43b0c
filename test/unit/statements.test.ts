import type { TableInfo } from '../../src/catalog';
import { everyPartitionStatements, whyItBreaks } from '../../src/plan/statements';

const t = { schema: 'public', name: 'generated_images' };
const view = { schema: 'api', name: 'images' };
const why = (q: string) =>
  whyItBreaks(q, [t, view], 'created_at', ['gi_email_key'], 'generated_images_pkey')?.why ?? null;
const kind = (q: string) =>
  whyItBreaks(q, [t, view], 'created_at', ['gi_email_key'], 'generated_images_pkey')?.kind ?? null;

describe("the application's statements that partitioning breaks", () => {
  it.each([
    [
      'INSERT INTO generated_images (id, v) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET v = excluded.v',
      /ON CONFLICT \(id\)/,
    ],
    ['insert into "public"."generated_images" as g ("id") values ($1) on conflict ("id") do nothing', /42P10/],
    [
      'INSERT INTO generated_images (email) VALUES ($1) ON CONFLICT (email COLLATE "C") DO NOTHING',
      /ON CONFLICT \(email\)/,
    ],
    [
      'INSERT INTO generated_images VALUES ($1) ON CONFLICT ON CONSTRAINT generated_images_pkey DO NOTHING',
      /checks \(\.\.\., created_at\) instead of the key/,
    ],
    ['INSERT INTO generated_images VALUES ($1) ON CONFLICT ON CONSTRAINT gi_email_key DO NOTHING', /given up/],
    // attack on item 6 (helper-8): a parenthesised element is still read as its column
    ['INSERT INTO generated_images (id) VALUES ($1) ON CONFLICT ((id)) DO NOTHING', /ON CONFLICT \(id\)/],
    ['INSERT INTO generated_images (e) VALUES ($1) ON CONFLICT ((lower(e))) DO NOTHING', /42P10/],
    // through a view of the table
    ['INSERT INTO api.images (id) VALUES ($1) ON CONFLICT (id) DO NOTHING', /42P10/],
    ['INSERT INTO generated_images (id) VALUES ($1) ON CONFLICT DO NOTHING', /without a target/],
  ])('%s', (q, expected) => expect(why(q)).toMatch(expected));

  it('tells failing statements from ones that check a wider key', () => {
    expect(kind('INSERT INTO generated_images (id) VALUES ($1) ON CONFLICT (id) DO NOTHING')).toBe('fails');
    expect(kind('INSERT INTO generated_images (id) VALUES ($1) ON CONFLICT DO NOTHING')).toBe('changes');
    expect(
      kind('INSERT INTO generated_images VALUES ($1) ON CONFLICT ON CONSTRAINT generated_images_pkey DO NOTHING'),
    ).toBe('changes');
  });

  it.each([
    'INSERT INTO generated_images (id, created_at) VALUES ($1, $2) ON CONFLICT (id, created_at) DO NOTHING',
    // attack on item 6 (helper-8): parentheses inside the target no longer make it look keyless
    'INSERT INTO generated_images (id, created_at) VALUES ($1, $2) ON CONFLICT ((id), created_at) DO NOTHING',
    'INSERT INTO generated_images (e, created_at) VALUES ($1, $2) ON CONFLICT ((lower(e)), "created_at") WHERE (e IS NOT NULL) DO NOTHING',
    'INSERT INTO generated_images (id, created_at) VALUES ($1, $2) ON CONFLICT (id int4_ops, created_at COLLATE "C") DO NOTHING',
    'INSERT INTO generated_images (id) VALUES ($1)',
    'INSERT INTO "public"."generated_images_pf_shadow" (id) VALUES ($1) ON CONFLICT (id) DO NOTHING',
    'INSERT INTO generated_images_old (id) VALUES ($1) ON CONFLICT (id) DO NOTHING',
    'INSERT INTO other.generated_images (id) VALUES ($1) ON CONFLICT (id) DO NOTHING',
    'INSERT INTO users (id) VALUES ($1) ON CONFLICT (id) DO NOTHING',
    'INSERT INTO generated_images VALUES ($1) ON CONFLICT ON CONSTRAINT gi_made_key DO NOTHING',
  ])('left alone: %s', (q) => expect(why(q)).toBeNull());

  it('a table whose key already holds the partition column keeps ON CONFLICT without a target', () => {
    const q = 'INSERT INTO generated_images (id) VALUES ($1) ON CONFLICT DO NOTHING';
    expect(whyItBreaks(q, [t], 'created_at', [], null)).toBeNull();
  });
});

describe('the ON CONFLICT of the insert it follows, comments ignored (attack on item 6)', () => {
  it.each([
    'WITH a AS (INSERT INTO users (id) VALUES ($1) RETURNING id) INSERT INTO generated_images (id) SELECT id FROM a ON CONFLICT (id) DO NOTHING',
    '/* insert into users */ INSERT INTO generated_images (id) VALUES ($1) ON CONFLICT (id) DO NOTHING',
    'INSERT /*c*/ INTO generated_images (id) VALUES ($1) ON /*c*/ CONFLICT /*c*/ (id) DO NOTHING',
  ])('refused: %s', (q) => expect(why(q)).toMatch(/42P10/));

  it.each([
    'WITH a AS (INSERT INTO generated_images (id, created_at) VALUES ($1, $2) RETURNING id) INSERT INTO users (id) SELECT id FROM a ON CONFLICT (id) DO NOTHING',
    '/* insert into generated_images */ INSERT INTO users (id) VALUES ($1) ON CONFLICT (id) DO NOTHING',
  ])('left alone: %s', (q) => expect(why(q)).toBeNull());
});

describe('the hot statements that visit every partition', () => {
  const info = {
    table: t,
    views: [{ ...view, kind: 'v', def: '', options: [] }],
    appStatements: [
      { query: 'SELECT * FROM generated_images WHERE id = $1', calls: 900 },
      { query: 'UPDATE public.generated_images SET v = $1 WHERE id = $2', calls: 300 },
      { query: 'SELECT * FROM api.images WHERE id = $1', calls: 50 },
      { query: 'SELECT * FROM generated_images WHERE id = $1 AND created_at >= $2', calls: 5000 },
      { query: 'DELETE FROM generated_images WHERE "created_at" < $1', calls: 10 },
      { query: 'INSERT INTO generated_images (id) VALUES ($1)', calls: 8000 },
      { query: 'SELECT * FROM generated_images_archive WHERE id = $1', calls: 7000 },
      { query: 'SELECT count(*) FROM generated_images', calls: 3 },
    ],
  } as unknown as TableInfo;

  it('lists the ones that do not name the partition column, hottest first', () => {
    expect(everyPartitionStatements(info, 'created_at').map((s) => s.calls)).toEqual([900, 300, 50]);
  });
});
