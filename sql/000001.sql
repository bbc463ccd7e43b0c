-- partflow's own bookkeeping, as the ad-hoc blocks of partflow 0.1 left it. Written with IF NOT EXISTS so
-- that a database those blocks set up adopts it unchanged; every later file is plain DDL.

CREATE SCHEMA IF NOT EXISTS partflow;

-- one row per table partitionTable has claimed: the run's state, the backfill checkpoint, the frozen plan
CREATE TABLE IF NOT EXISTS partflow.runs (
  table_schema text NOT NULL,
  table_name text NOT NULL,
  workflow_id text NOT NULL,
  run_state text NOT NULL,
  next_page bigint NOT NULL DEFAULT 0,
  total_pages bigint,
  rows_copied bigint NOT NULL DEFAULT 0,
  cutover_done boolean NOT NULL DEFAULT false,
  started_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (table_schema, table_name)
);
ALTER TABLE partflow.runs
  ADD COLUMN IF NOT EXISTS last_key text[],
  ADD COLUMN IF NOT EXISTS max_key text[],
  ADD COLUMN IF NOT EXISTS trigger_fence text,
  ADD COLUMN IF NOT EXISTS filenode bigint,
  ADD COLUMN IF NOT EXISTS rewrites int NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS plan text,
  ADD COLUMN IF NOT EXISTS cutover_columns text[];

-- what fixConstraints repaired, so that its undo can restore exactly that
CREATE TABLE IF NOT EXISTS partflow.repairs (
  id bigserial PRIMARY KEY,
  workflow_id text NOT NULL,
  fix_no int NOT NULL,
  table_name text NOT NULL,
  pk jsonb NOT NULL,
  action text NOT NULL,
  old_values jsonb,
  old_row jsonb,
  repaired_at timestamptz NOT NULL DEFAULT now(),
  restored_at timestamptz
);
ALTER TABLE partflow.repairs ADD COLUMN IF NOT EXISTS run_id text;

-- the fence of a fixConstraints run: forward steps commit only while it is active
CREATE TABLE IF NOT EXISTS partflow.fix_runs (
  workflow_id text NOT NULL,
  run_id text NOT NULL,
  state text NOT NULL,
  started_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (workflow_id, run_id)
);

-- what maintainPartitions archived, and how far each archive got
CREATE TABLE IF NOT EXISTS partflow.archive_log (
  table_schema text NOT NULL,
  table_name text NOT NULL,
  partition text NOT NULL,
  mode text NOT NULL,
  state text NOT NULL,
  detail jsonb NOT NULL DEFAULT '{}',
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (table_schema, partition)
);
