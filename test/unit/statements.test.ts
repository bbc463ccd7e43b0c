import { whyItBreaks } from '../../src/plan/statements';

const t = { schema: 'public', name: 'generated_images' };
const why = (q: string) => whyItBreaks(q, t, 'created_at', ['generated_images_pkey', 'gi_email_key']);

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
      /no longer checks/,
    ],
  ])('%s', (q, expected) => expect(why(q)).toMatch(expected));

  it.each([
    'INSERT INTO generated_images (id, created_at) VALUES ($1, $2) ON CONFLICT (id, created_at) DO NOTHING',
    'INSERT INTO generated_images (id) VALUES ($1) ON CONFLICT DO NOTHING',
    'INSERT INTO "public"."generated_images_pf_shadow" (id) VALUES ($1) ON CONFLICT (id) DO NOTHING',
    'INSERT INTO generated_images_old (id) VALUES ($1) ON CONFLICT (id) DO NOTHING',
    'INSERT INTO other.generated_images (id) VALUES ($1) ON CONFLICT (id) DO NOTHING',
    'INSERT INTO users (id) VALUES ($1) ON CONFLICT (id) DO NOTHING',
    'INSERT INTO generated_images VALUES ($1) ON CONFLICT ON CONSTRAINT gi_made_key DO NOTHING',
  ])('left alone: %s', (q) => expect(why(q)).toBeNull());
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
