#!/usr/bin/env bash
# npm run bench [-- --rows N --runs N]: the benchmark, with the same setup as the demo.
source "$(dirname "$0")/env.sh"
ensure_node_modules
ensure_postgres
# the peer: pg_partman 4.7 from Debian
if ! ls /usr/share/postgresql/*/extension/pg_partman.control >/dev/null 2>&1; then
  say "installing Debian's pg_partman for the peer measurement"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-$(ls /usr/lib/postgresql | sort -n | tail -1)-partman" >/dev/null || say "pg_partman not installed; the peer is skipped"
fi
ensure_temporal_server
ensure_build
cd "$PARTFLOW_ROOT"
# npm run bench:replica / bench:waits / bench:ops: one of the benchmarks, with its flags
if [ "${1:-}" = "--replica" ]; then shift; exec node dist/bench/replica.js "$@"; fi
if [ "${1:-}" = "--waits" ]; then shift; exec node dist/bench/waits.js "$@"; fi
if [ "${1:-}" = "--ops" ]; then shift; exec node dist/bench/ops.js "$@"; fi
if [ "${1:-}" = "--attach" ]; then shift; exec node dist/bench/attach.js "$@"; fi
if [ "${1:-}" = "--impact" ]; then shift; exec node dist/bench/impact.js "$@"; fi
# npm run bench: the copy benchmark (bench/bench.ts, with the flags given), then the longest application
# wait per workflow (bench/waits.ts), the key log's cost per statement (bench/ops.ts) and the replica trade-off
# (bench/replica.ts) with their defaults
node dist/bench/bench.js "$@"
node dist/bench/ops.js
node dist/bench/waits.js
exec node dist/bench/replica.js
