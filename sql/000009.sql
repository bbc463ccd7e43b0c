-- what the application wrote in the rollback window that the old table cannot hold (one id twice once the key
-- has the partition column, a value a uniqueness given up with acceptLostConstraints rejects), recorded by the
-- reverse key log's applier in the round that met it: a rollback is refused from then on (issue 24)
ALTER TABLE partflow.runs ADD COLUMN IF NOT EXISTS rollback_lost text;
