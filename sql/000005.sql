-- the new table's partitions at the cut-over and the file each had: a partition detached, dropped, truncated or
-- rewritten during the rollback window makes a rollback refuse (it would bring removed rows back)
ALTER TABLE partflow.runs ADD COLUMN cutover_partitions jsonb;
