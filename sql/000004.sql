-- the tables a fixConstraints or createIndexes run holds (schema-qualified, quoted as PostgreSQL prints them)
-- and which workflow type it is: maintainPartitions leaves those tables alone while the run is active or undoing
ALTER TABLE partflow.fix_runs ADD COLUMN tables text[] NOT NULL DEFAULT '{}';
ALTER TABLE partflow.fix_runs ADD COLUMN kind text;
-- the workflow run that claimed a partitionTable run: a retried claim recognises its own claim by it, and a
-- later run of the same workflow id is another run
ALTER TABLE partflow.runs ADD COLUMN run_id text;
