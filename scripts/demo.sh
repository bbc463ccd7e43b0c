#!/usr/bin/env bash
# npm run demo [-- --rows N]: everything the demo needs, then the demo itself.
source "$(dirname "$0")/env.sh"
ensure_node_modules
ensure_postgres
ensure_temporal_server
ensure_build
cd "$PARTFLOW_ROOT"
exec node dist/demo/run.js "$@"
