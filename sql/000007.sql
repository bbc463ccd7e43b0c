-- the undoFixConstraints workflow that owns the undo of a finished run: a second undo started meanwhile is refused
-- (the same workflow id, started again after a terminate, goes on)
ALTER TABLE partflow.fix_runs ADD COLUMN undo_by text;
