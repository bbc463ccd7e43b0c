-- what a finished fixConstraints run did, in order, each step with its fix and the catalog facts its undo needs:
-- undoFixConstraints reads it to undo the run after it ended (while its repair records exist)
ALTER TABLE partflow.fix_runs ADD COLUMN undo jsonb;
