#!/usr/bin/env bash
# Temporal Server itself (not the dev server), as production runs it: built from its Go module, persistence
# and visibility in PostgreSQL databases of its own (temporal, temporal_visibility on partflow's cluster).
#   scripts/temporal-server.sh build   go install temporal-server and temporal-sql-tool v1.29.1 (once, ~3 min)
#   scripts/temporal-server.sh start   create and migrate its databases, start it on 127.0.0.1:$PORT
#   scripts/temporal-server.sh stop    stop it (kill -TERM), its databases stay
#   scripts/temporal-server.sh kill    kill -KILL, as a crash would
#   scripts/temporal-server.sh status  exit 0 when the server its pid file names runs
# PORT is $PARTFLOW_TEMPORAL_SERVER_PORT (default 7333; its other services take PORT+1..PORT+9).
source "$(dirname "$0")/env.sh"
VERSION="${TEMPORAL_SERVER_VERSION:-v1.29.1}"
BIN="$PARTFLOW_HOME/bin"
ROOT="$PARTFLOW_HOME/temporal-server"
PORT="${PARTFLOW_TEMPORAL_SERVER_PORT:-7333}"
PIDFILE="$ROOT/server.pid"
MOD="$(go env GOMODCACHE 2>/dev/null || echo "$HOME/go/pkg/mod")/go.temporal.io/server@$VERSION"

build() {
  if [ ! -x "$BIN/temporal-server" ] || [ ! -x "$BIN/temporal-sql-tool" ]; then
    say "building Temporal Server $VERSION and its SQL tool into $BIN (a few minutes, once)"
    GOBIN="$BIN" go install "go.temporal.io/server/cmd/server@$VERSION"
    mv "$BIN/server" "$BIN/temporal-server"
    GOBIN="$BIN" go install "go.temporal.io/server/cmd/tools/sql@$VERSION"
    mv "$BIN/sql" "$BIN/temporal-sql-tool"
  fi
}

schema() {
  local db="$1" dir="$2" sql=("$BIN/temporal-sql-tool" --plugin postgres12 --ep 127.0.0.1 -p "$PARTFLOW_PG_PORT" -u postgres --db "$1")
  if ! psql -h 127.0.0.1 -p "$PARTFLOW_PG_PORT" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
    "${sql[@]}" create-database >/dev/null 2>&1
    "${sql[@]}" setup-schema -v 0.0 >/dev/null 2>&1
  fi
  "${sql[@]}" update-schema -d "$MOD/schema/postgresql/v12/$dir/versioned" >/dev/null 2>&1
}

config() {
  mkdir -p "$ROOT/config/dynamicconfig"
  cat > "$ROOT/config/dynamicconfig/development.yaml" <<'YAML'
frontend.enableUpdateWorkflowExecution:
  - value: true
frontend.enableUpdateWorkflowExecutionAsyncAccepted:
  - value: true
system.forceSearchAttributesCacheRefreshOnRead:
  - value: true
YAML
  local store
  store() {
    cat <<YAML
      sql:
        pluginName: "postgres12"
        databaseName: "$1"
        connectAddr: "127.0.0.1:$PARTFLOW_PG_PORT"
        connectProtocol: "tcp"
        user: "postgres"
        password: ""
        maxConns: 20
        maxIdleConns: 20
        maxConnLifetime: "1h"
YAML
  }
  cat > "$ROOT/config/development.yaml" <<YAML
log:
  stdout: true
  level: warn
persistence:
  defaultStore: postgres-default
  visibilityStore: postgres-visibility
  numHistoryShards: 4
  datastores:
    postgres-default:
$(store temporal)
    postgres-visibility:
$(store temporal_visibility)
global:
  membership:
    maxJoinDuration: 30s
    broadcastAddress: "127.0.0.1"
services:
  frontend:
    rpc: { grpcPort: $PORT, membershipPort: $((PORT + 1)), bindOnLocalHost: true, httpPort: $((PORT + 2)) }
  matching:
    rpc: { grpcPort: $((PORT + 3)), membershipPort: $((PORT + 4)), bindOnLocalHost: true }
  history:
    rpc: { grpcPort: $((PORT + 5)), membershipPort: $((PORT + 6)), bindOnLocalHost: true }
  worker:
    rpc: { grpcPort: $((PORT + 7)), membershipPort: $((PORT + 8)), bindOnLocalHost: true }
clusterMetadata:
  enableGlobalNamespace: false
  failoverVersionIncrement: 10
  masterClusterName: "active"
  currentClusterName: "active"
  clusterInformation:
    active:
      enabled: true
      initialFailoverVersion: 1
      rpcName: "frontend"
      rpcAddress: "127.0.0.1:$PORT"
dcRedirectionPolicy:
  policy: "noop"
dynamicConfigClient:
  filepath: "$ROOT/config/dynamicconfig/development.yaml"
  pollInterval: "10s"
YAML
}

running() { pid_file_runs "$PIDFILE" temporal-server; }

start() {
  build
  ensure_postgres
  ensure_temporal_bin
  schema temporal temporal
  schema temporal_visibility visibility
  config
  if ! running; then
    say "starting Temporal Server $VERSION on 127.0.0.1:$PORT (PostgreSQL persistence, log $ROOT/server.log)"
    # exec: the pid recorded is the server's own; setsid and no inherited descriptors: it outlives this script
    (cd "$ROOT" && exec setsid "$BIN/temporal-server" --root "$ROOT" --config config --env development \
      --allow-no-auth start < /dev/null >> "$ROOT/server.log" 2>&1) &
    pid_file_write "$PIDFILE" $!
  fi
  for _ in $(seq 1 120); do
    if "$TEMPORAL_BIN" operator namespace describe --namespace default --address "127.0.0.1:$PORT" >/dev/null 2>&1; then
      # the fleet's search attributes (src/fleet.ts), as on the dev server
      TEMPORAL_ADDRESS="127.0.0.1:$PORT" ensure_search_attributes
      return 0
    fi
    "$TEMPORAL_BIN" operator namespace create --namespace default --retention 72h --address "127.0.0.1:$PORT" \
      >/dev/null 2>&1 || sleep 1
  done
  say "Temporal Server did not come up; the end of $ROOT/server.log:"
  tail -20 "$ROOT/server.log" >&2
  return 1
}

stop() {
  local sig="$1"
  if running; then
    kill "-$sig" "$(pid_file_pid "$PIDFILE")" 2>/dev/null || true
    for _ in $(seq 1 100); do running || break; sleep 0.2; done
    # not gone in 20 s: killed, so that the pid file is never removed while its server still runs
    if running; then
      say "Temporal Server did not stop in 20 s: killing it"
      kill -KILL "$(pid_file_pid "$PIDFILE")" 2>/dev/null || true
      for _ in $(seq 1 50); do running || break; sleep 0.2; done
    fi
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  build) build ;;
  start) start ;;
  stop) stop TERM ;;
  kill) stop KILL ;;
  status) running ;;
  *) echo "usage: $0 build|start|stop|kill|status" >&2; exit 2 ;;
esac
