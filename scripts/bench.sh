#!/usr/bin/env bash
# npm run bench [-- --rows N --runs N]: the benchmark, with the same setup as the demo.
source "$(dirname "$0")/env.sh"
ensure_node_modules
ensure_postgres
ensure_temporal_server
ensure_build
cd "$PARTFLOW_ROOT"
exec node dist/bench/bench.js "$@"
