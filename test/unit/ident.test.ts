import { displayName, parseColumnName, parseTableName, qualified, quoteIdent, quoteLiteral } from '../../src/ident';

describe('parseTableName (pg_dump -t rules)', () => {
  it.each([
    ['generated_images', { schema: 'public', name: 'generated_images' }],
    ['Public.Generated_Images', { schema: 'public', name: 'generated_images' }],
    ['app."CreditTransactions"', { schema: 'app', name: 'CreditTransactions' }],
    ['"App Schema"."my ""odd"" table"', { schema: 'App Schema', name: 'my "odd" table' }],
    ['"a.b"', { schema: 'public', name: 'a.b' }],
  ])('%s', (input, want) => expect(parseTableName(input)).toEqual(want));

  it.each([
    ['', /required/],
    ['a.b.c', /too many dots/],
    ['"unterminated', /unterminated quote/],
    ['bad name', /invalid name part/],
    ['schema.', /ends with a dot/],
    ['x'.repeat(64), /63 bytes/],
  ])('refuses %j', (input, msg) => expect(() => parseTableName(input)).toThrow(msg));

  it('round-trips through displayName', () => {
    for (const s of ['public.t', 'app."CreditTransactions"', '"App Schema"."x y"']) {
      expect(parseTableName(displayName(parseTableName(s)))).toEqual(parseTableName(s));
    }
  });
});

describe('quoting', () => {
  it('quotes identifiers and doubles quotes', () => {
    expect(quoteIdent('a"b')).toBe('"a""b"');
    expect(qualified({ schema: 'S', name: 't x' })).toBe('"S"."t x"');
  });
  it('quotes literals, with E-strings for backslashes', () => {
    expect(quoteLiteral("it's")).toBe("'it''s'");
    expect(quoteLiteral('a\\b')).toBe("E'a\\\\b'");
  });
  it('folds unquoted column names and keeps quoted ones', () => {
    expect(parseColumnName('Created_At')).toBe('created_at');
    expect(parseColumnName('"Created At"')).toBe('Created At');
    expect(() => parseColumnName('created at')).toThrow(/not a valid column name/);
  });
});
