/**
 * Identifier handling. Every name that reaches SQL text goes through `quoteIdent`; every table name from
 * an operator goes through `parseTableName` once, at validation, and travels on as a `TableRef`.
 */

/** PostgreSQL's NAMEDATALEN - 1: longer names are silently truncated by the server, so we refuse them. */
export const MAX_IDENT_BYTES = 63;

export interface TableRef {
  schema: string;
  name: string;
}

export class InputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InputError';
  }
}

/** Quotes an identifier the way PostgreSQL's quote_ident does (always quoted: simpler, never wrong). */
export function quoteIdent(name: string): string {
  if (name.includes('\u0000')) throw new InputError(`Identifier ${JSON.stringify(name)} contains a NUL byte.`);
  return '"' + name.replace(/"/g, '""') + '"';
}

/** A string literal for places where PostgreSQL does not take a parameter (DDL). */
export function quoteLiteral(value: string): string {
  if (value.includes('\u0000')) throw new InputError('A literal contains a NUL byte.');
  const escaped = value.replace(/'/g, "''");
  return value.includes('\\') ? `E'${escaped.replace(/\\/g, '\\\\')}'` : `'${escaped}'`;
}

/**
 * `body` between dollar quotes whose tag does not occur in it. Identifiers may contain `$`, so a name spliced
 * into a body (a table called `a$partflow$b`) would end a quote with a fixed tag and run the rest as SQL.
 */
export function dollarQuote(body: string, base = 'partflow'): string {
  let tag = `$${base}$`;
  for (let i = 1; body.includes(tag); i++) tag = `$${base}_${i}$`;
  return `${tag}${body}${tag}`;
}

export function qualified(ref: TableRef): string {
  return `${quoteIdent(ref.schema)}.${quoteIdent(ref.name)}`;
}

/** Human form, as pg_dump -t would accept it back. */
export function displayName(ref: TableRef): string {
  const part = (s: string) => (/^[a-z_][a-z0-9_$]*$/.test(s) ? s : quoteIdent(s));
  return `${part(ref.schema)}.${part(ref.name)}`;
}

export function byteLength(name: string): number {
  return new TextEncoder().encode(name).length;
}

/**
 * Parses `schema.table`, `table`, `"Mixed Case"."Table"` like pg_dump -t: unquoted parts fold to lower case,
 * quoted parts are exact, `""` inside quotes is a quote.
 */
export function parseTableName(input: string, field = 'table'): TableRef {
  if (typeof input !== 'string' || input.trim() === '') {
    throw new InputError(`Field "${field}" is required: name a table such as "public.generated_images".`);
  }
  const parts: string[] = [];
  let i = 0;
  const s = input.trim();
  while (i <= s.length) {
    let part = '';
    if (s[i] === '"') {
      i++;
      let closed = false;
      while (i < s.length) {
        if (s[i] === '"') {
          if (s[i + 1] === '"') {
            part += '"';
            i += 2;
            continue;
          }
          closed = true;
          i++;
          break;
        }
        part += s[i++];
      }
      if (!closed) throw new InputError(`Field "${field}" has an unterminated quote: ${JSON.stringify(input)}.`);
      if (part === '') throw new InputError(`Field "${field}" has an empty quoted name: ${JSON.stringify(input)}.`);
    } else {
      const start = i;
      while (i < s.length && s[i] !== '.') {
        if (s[i] === '"')
          throw new InputError(`Field "${field}" has a quote inside an unquoted name: ${JSON.stringify(input)}.`);
        i++;
      }
      part = s.slice(start, i).trim().toLowerCase();
      if (!/^[a-z_][a-z0-9_$]*$/.test(part)) {
        throw new InputError(
          `Field "${field}" has an invalid name part ${JSON.stringify(part)} in ${JSON.stringify(input)}; ` +
            'double-quote names with spaces or capitals, e.g. app."CreditTransactions".',
        );
      }
    }
    parts.push(part);
    if (i >= s.length) break;
    if (s[i] !== '.') throw new InputError(`Field "${field}" is not a valid table name: ${JSON.stringify(input)}.`);
    i++;
    if (i >= s.length) throw new InputError(`Field "${field}" ends with a dot: ${JSON.stringify(input)}.`);
  }
  if (parts.length > 2) {
    throw new InputError(`Field "${field}" has too many dots: ${JSON.stringify(input)}; use schema.table.`);
  }
  const ref = parts.length === 2 ? { schema: parts[0], name: parts[1] } : { schema: 'public', name: parts[0] };
  for (const p of [ref.schema, ref.name]) {
    if (byteLength(p) > MAX_IDENT_BYTES) {
      throw new InputError(
        `Field "${field}": name ${JSON.stringify(p)} is ${byteLength(p)} bytes; PostgreSQL names are at most 63 bytes.`,
      );
    }
  }
  return ref;
}

/** Column names are folded like table names. */
export function parseColumnName(input: string, field = 'column'): string {
  if (typeof input !== 'string' || input.trim() === '') throw new InputError(`Field "${field}" must be a column name.`);
  const s = input.trim();
  if (s.startsWith('"') && s.endsWith('"') && s.length > 2) return s.slice(1, -1).replace(/""/g, '"');
  if (!/^[A-Za-z_][A-Za-z0-9_$]*$/.test(s)) {
    throw new InputError(
      `Field "${field}" is not a valid column name: ${JSON.stringify(input)}; ` +
        'double-quote names with spaces or capitals.',
    );
  }
  return s.toLowerCase();
}

/** `parts` joined with `_`, cut from the end so that with `_suffix` it fits PostgreSQL's 63 bytes. */
export function shortIdent(parts: string[], suffix: string): string {
  let base = parts.join('_');
  while (byteLength(`${base}_${suffix}`) > MAX_IDENT_BYTES) base = base.slice(0, -1);
  return `${base}_${suffix}`;
}
