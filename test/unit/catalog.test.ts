import { referencedColumns, referencesItself } from '../../src/catalog';

describe('the foreign keys a table has on itself (issue 29 item 4)', () => {
  it('reads the referenced columns of pg_get_constraintdef, quoted names and actions included', () => {
    expect(referencedColumns('FOREIGN KEY (parent_id, parent_at) REFERENCES tk(id, created_at)')).toEqual([
      'id',
      'created_at',
    ]);
    expect(
      referencedColumns('FOREIGN KEY (a) REFERENCES "we(ird"."t.x"("i,d", "cre""ated") ON DELETE CASCADE'),
    ).toEqual(['i,d', 'cre"ated']);
    expect(referencedColumns('FOREIGN KEY (a) REFERENCES app.t(id) NOT VALID')).toEqual(['id']);
    expect(referencedColumns('CHECK (a > 0)')).toEqual([]);
  });

  it('tells the table itself from another table of the same name in another schema', () => {
    const info = { table: { schema: 'app', name: 't' } };
    const fk = (schema: string) => ({ name: 'f', def: '', table: { schema, name: 't' } });
    expect(referencesItself(info, fk('app'))).toBe(true);
    expect(referencesItself(info, fk('other'))).toBe(false);
  });
});
