-- the application-latency bound's probe (issue 24): one row per probing backend, upserted by each probe so that
-- the probe's commit writes WAL and waits for its flush as an application's write does
CREATE TABLE IF NOT EXISTS partflow.probe (pid integer PRIMARY KEY, probes bigint NOT NULL DEFAULT 0);
