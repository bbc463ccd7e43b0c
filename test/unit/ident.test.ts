import {
  displayName,
  dollarQuote,
  parseColumnName,
  parseTableName,
  qualified,
  quoteIdent,
  quoteLiteral,
} from '../../src/ident';
import { keyLogFunctionSql } from '../../src/plan/keylog';
import { truncateFunctionSql } from '../../src/plan/sync';

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

describe('function bodies between dollar quotes: a name cannot end the quote', () => {
  // identifiers may contain `$`, so a table or column called `a$partflow$b` (or `a$partflow_owner$b`) is legal;
  // spliced into a body quoted with that tag it would end the body early and run the rest as SQL
  const evil = 'x$partflow$; DROP TABLE users; --';
  const tagCount = (sql: string, tag: string) => sql.split(tag).length - 1;

  it('the key log trigger function', () => {
    const sql = keyLogFunctionSql({
      source: { schema: 'public', name: evil },
      target: { schema: 'public', name: `${evil}_pf_shadow` },
      log: { schema: 'public', name: `${evil}_pf_log` },
      fn: { schema: 'partflow', name: 'kl_1' },
      key: [{ name: 'id', type: 'bigint' }],
      columns: ['id'],
      lockKey: 1,
    });
    const tag = sql.match(/AS (\$[a-z_0-9]*\$)\n/)![1];
    expect(tagCount(sql, tag)).toBe(2);
  });

  it('the TRUNCATE companion and the guard view of the sync', () => {
    const sql = truncateFunctionSql(
      { schema: 'partflow', name: 'tr_1' },
      { schema: 'public', name: `${evil}_pf_shadow` },
      { schema: 'public', name: `${evil}_pf_trunc` },
    );
    const tag = sql.match(/AS (\$[a-z_0-9]*\$)\n/)![1];
    expect(tagCount(sql, tag)).toBe(2);
  });

  it('dollarQuote picks a tag the body does not contain', () => {
    expect(dollarQuote('BEGIN END')).toBe('$partflow$BEGIN END$partflow$');
    const q = dollarQuote('a $partflow$ b $partflow_1$ c');
    expect(q).toBe('$partflow_2$a $partflow$ b $partflow_1$ c$partflow_2$');
  });
});
