import { referencedColumns } from '../src/catalog';
console.log(referencedColumns('FOREIGN KEY (parent_id, parent_at) REFERENCES tk(id, created_at)'));
console.log(referencedColumns('FOREIGN KEY (a) REFERENCES "we(ird"."t.x"("i,d", "cre""ated") ON DELETE CASCADE'));
console.log(referencedColumns('FOREIGN KEY (a) REFERENCES app.t(id) NOT VALID'));
