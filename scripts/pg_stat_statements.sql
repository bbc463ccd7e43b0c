-- docker-compose's target database (docker-entrypoint-initdb.d), like template1 of the tested clusters
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
