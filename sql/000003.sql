-- parallel copy ("parallelism" > 1): the table's pages split into one range per stream, recorded with the
-- sync trigger; each stream's checkpoint commits with its batch, guarded by the page it started from, the
-- range and the table file the split was made on
CREATE TABLE partflow.backfill_streams (
  table_schema text NOT NULL,
  table_name text NOT NULL,
  stream int NOT NULL,
  start_page bigint NOT NULL,
  next_page bigint NOT NULL,
  end_page bigint NOT NULL,
  filenode bigint NOT NULL,
  rows_copied bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (table_schema, table_name, stream)
);
