#!/usr/bin/env bash
# Shared setup for the demo, the tests and CI: installs or starts what is missing, fast when all is there.
# Source it; then call the ensure_* functions you need.
set -euo pipefail

PARTFLOW_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PARTFLOW_HOME="${PARTFLOW_HOME:-$HOME/.cache/partflow}"
export PARTFLOW_PG_PORT="${PARTFLOW_PG_PORT:-54329}"
export PARTFLOW_PG_DATA="${PARTFLOW_PG_DATA:-$PARTFLOW_HOME/pgdata}"
export TEMPORAL_CLI_VERSION="${TEMPORAL_CLI_VERSION:-v1.5.1}"
export TEMPORAL_BIN="${TEMPORAL_BIN:-$PARTFLOW_HOME/bin/temporal}"
mkdir -p "$PARTFLOW_HOME/bin" "$PARTFLOW_HOME/logs"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

# A pid file names one process by its pid and its start time ("PID STARTED", written by pid_file_write): a pid
# file outlives its process, and on a machine whose state is kept between runs its pid comes back as some other
# process. CI once took such a pid for Temporal Server, did not start it, and waited for it in vain.

# The start time of process $1: /proc/PID/stat's 22nd field, clock ticks since boot (after the command's
# parenthesis, which may hold spaces).
proc_started() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  # shellcheck disable=SC2086 # the fields, split on purpose
  set -- $stat
  [ -n "${20:-}" ] && echo "${20}"
}

# The pid file $1 for process $2.
pid_file_write() { echo "$2 $(proc_started "$2" || echo 0)" > "$1"; }

# The pid named in file $1 (its first word), or nothing.
pid_file_pid() {
  local pid=""
  [ -s "$1" ] && read -r pid _ < "$1" || true
  [[ "$pid" =~ ^[1-9][0-9]*$ ]] && echo "$pid" || true
}

# Whether file $1 names a live process of program $2 (its argv[0]'s base name) that is the process it recorded
# (the same start time; a file without one, written before, is trusted on the name alone).
pid_file_runs() {
  local pid started exe
  pid="$(pid_file_pid "$1")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  read -r _ started _ < "$1" || true
  if [ -n "${started:-}" ] && [ "$started" != "$(proc_started "$pid" || echo none)" ]; then return 1; fi
  exe="$(tr '\0' '\n' 2>/dev/null < "/proc/$pid/cmdline" | head -1)"
  [ "$(basename -- "${exe:-?}")" = "$2" ]
}

pg_bindir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/postgres" ] && { echo "$d"; return 0; }; done
  return 1
}

ensure_postgres_installed() {
  if ! pg_bindir >/dev/null 2>&1; then
    say "installing Debian's postgresql"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq postgresql postgresql-contrib >/dev/null
  fi
}

# The settings of every cluster partflow's scripts create (the default one, the version matrix's): $1 the port.
pg_conf() {
  cat <<CONF
listen_addresses = '127.0.0.1'
port = $1
unix_socket_directories = '/tmp'
max_connections = 200
shared_buffers = 512MB
fsync = on
synchronous_commit = off
max_wal_size = 4GB
log_min_duration_statement = -1
CONF
}

# A server port inside the kernel's ephemeral range (ip_local_port_range, 32768-60999 by default; all of ours)
# can be held for a while by a client socket the kernel gave that local port: an open outgoing connection, or one
# closed less than a minute ago (TIME_WAIT). PostgreSQL then does not start ("could not bind IPv4 address
# "127.0.0.1": Address already in use"). The likely cause of CI's one failed start (PostgreSQL 16 on 54416, right
# after the 15 run's connections; its log was not kept): a closed client socket on that port blocks the bind.

# The sockets on local TCP port $1 other than listeners, a line each ("TIME_WAIT to port 7233"), read from
# /proc/net/tcp and tcp6 (no ss needed: minimal images lack iproute2).
port_holders() {
  local hex state remote
  hex="$(printf '%04X' "$1")"
  awk -v p=":$hex" '$2 ~ (p "$") && $4 != "0A" { print $4, $3 }' /proc/net/tcp /proc/net/tcp6 2>/dev/null |
    while read -r state remote; do
      case "$state" in 01) state=ESTABLISHED ;; 06) state=TIME_WAIT ;; 08) state=CLOSE_WAIT ;; *) state="state $state" ;; esac
      echo "$state to port $((16#${remote##*:}))"
    done || true
}

# Waits up to 75 s (a TIME_WAIT lasts 60) until no socket but a listener holds port $1; says what held it.
wait_port_free() {
  local port="$1" i held=""
  for i in $(seq 1 75); do
    held="$(port_holders "$port" | head -1)"
    [ -z "$held" ] && return 0
    [ "$i" = 1 ] && say "port $port is held by a socket ($held); waiting up to 75 s for it to go"
    sleep 1
  done
  say "port $port still held after 75 s ($held)"
  return 1
}

# CI only (.ci/run, as root, best effort): the kernel never hands these ports (comma-separated, ranges a-b) to
# client sockets, so no test's connection can take a cluster's port before it starts (ip_local_reserved_ports,
# merged with what is there; stays until the machine restarts).
reserve_ports() {
  local f=/proc/sys/net/ipv4/ip_local_reserved_ports cur IFS=,
  [ "$(id -u)" = 0 ] && [ -w "$f" ] && [ $# -gt 0 ] || { say "ports $* not reserved (not root, or read-only)"; return 0; }
  cur="$(cat "$f")"
  echo "${cur:+$cur,}$*" > "$f" 2>/dev/null || say "could not reserve ports $* (ip_local_reserved_ports); going on"
}

# start_cluster PORT LOG COMMAND...: runs COMMAND (a pg_ctl start writing LOG) for a cluster on PORT. When it fails
# because the port was taken (the log says so), waits for the port and runs it once more; any other failure (a bad
# setting, a server already running, a slow start) fails at once, the log's end printed either way.
start_cluster() {
  local port="$1" log="$2" try from end
  shift 2
  # no wait before the first try: a server's own closed connections also sit in TIME_WAIT on its port after a
  # stop, and PostgreSQL (SO_REUSEADDR) binds over those. The log is appended to: only this try's lines count.
  for try in 1 2; do
    from=$(($(stat -c %s "$log" 2>/dev/null || echo 0) + 1))
    if "$@" >/dev/null; then return 0; fi
    end="$(tail -c +"$from" "$log" 2>/dev/null | tail -n 15 || true)"
    say "PostgreSQL on port $port did not start (try $try of 2); what it wrote to $log:"
    echo "$end" >&2
    [ "$try" = 1 ] || return 1
    case "$end" in *"could not bind IPv"*) ;; *) return 1 ;; esac
    wait_port_free "$port" || true
    say "starting PostgreSQL on port $port again"
  done
}

# A cluster that partflow's scripts own: trust auth on localhost, its own port, run as the postgres user.
ensure_postgres() {
  ensure_postgres_installed
  local bin; bin="$(pg_bindir)"
  local runas=()
  if [ "$(id -u)" = 0 ]; then runas=(runuser -u postgres --); fi
  if [ ! -s "$PARTFLOW_PG_DATA/PG_VERSION" ]; then
    say "creating PostgreSQL cluster in $PARTFLOW_PG_DATA"
    mkdir -p "$PARTFLOW_PG_DATA"
    [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$PARTFLOW_PG_DATA" && chmod 700 "$PARTFLOW_PG_DATA"
    [ "$(id -u)" = 0 ] && chmod o+x "$HOME" "$HOME/.cache" "$PARTFLOW_HOME" 2>/dev/null || true
    "${runas[@]}" "$bin/initdb" -D "$PARTFLOW_PG_DATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
    pg_conf "$PARTFLOW_PG_PORT" >> "$PARTFLOW_PG_DATA/postgresql.conf"
  fi
  # prepared transactions stand in for an application's open write in the cancellation tests
  if ! grep -q '^max_prepared_transactions' "$PARTFLOW_PG_DATA/postgresql.conf"; then
    echo "max_prepared_transactions = 20" | "${runas[@]}" tee -a "$PARTFLOW_PG_DATA/postgresql.conf" >/dev/null
    if "$bin/pg_isready" -q -h 127.0.0.1 -p "$PARTFLOW_PG_PORT"; then
      say "restarting PostgreSQL for max_prepared_transactions"
      "${runas[@]}" "$bin/pg_ctl" -D "$PARTFLOW_PG_DATA" -l "$PARTFLOW_PG_DATA/server.log" -w restart >/dev/null
    fi
  fi
  # pg_stat_statements: preflight reads the application's ON CONFLICT statements from it (issue 29, item 6)
  if ! grep -q '^shared_preload_libraries' "$PARTFLOW_PG_DATA/postgresql.conf"; then
    echo "shared_preload_libraries = 'pg_stat_statements'" | "${runas[@]}" tee -a "$PARTFLOW_PG_DATA/postgresql.conf" >/dev/null
    if "$bin/pg_isready" -q -h 127.0.0.1 -p "$PARTFLOW_PG_PORT"; then
      say "restarting PostgreSQL for pg_stat_statements"
      "${runas[@]}" "$bin/pg_ctl" -D "$PARTFLOW_PG_DATA" -l "$PARTFLOW_PG_DATA/server.log" -w restart >/dev/null
    fi
  fi
  # wal_level = logical: the publication test replicates a partitioned table to a subscriber (issue 29, item 5),
  # as a production database with CDC or logical replicas runs
  if ! grep -q '^wal_level' "$PARTFLOW_PG_DATA/postgresql.conf"; then
    echo "wal_level = logical" | "${runas[@]}" tee -a "$PARTFLOW_PG_DATA/postgresql.conf" >/dev/null
    if "$bin/pg_isready" -q -h 127.0.0.1 -p "$PARTFLOW_PG_PORT"; then
      say "restarting PostgreSQL for wal_level = logical"
      "${runas[@]}" "$bin/pg_ctl" -D "$PARTFLOW_PG_DATA" -l "$PARTFLOW_PG_DATA/server.log" -w restart >/dev/null
    fi
  fi
  if ! "$bin/pg_isready" -q -h 127.0.0.1 -p "$PARTFLOW_PG_PORT"; then
    say "starting PostgreSQL on port $PARTFLOW_PG_PORT"
    start_cluster "$PARTFLOW_PG_PORT" "$PARTFLOW_PG_DATA/server.log" \
      "${runas[@]}" "$bin/pg_ctl" -D "$PARTFLOW_PG_DATA" -l "$PARTFLOW_PG_DATA/server.log" -w start
  fi
  export PGHOST=127.0.0.1 PGPORT="$PARTFLOW_PG_PORT" PGUSER=postgres
  # every database the tests and the demo create has it, as a production database usually does; without it the
  # primary key's widening needs "acceptLostConstraints" (test/integration/carried.test.ts drops it to see that)
  PGOPTIONS='-c client_min_messages=warning' "$bin/psql" -X -q -d template1 -c 'CREATE EXTENSION IF NOT EXISTS pg_stat_statements' >/dev/null
}

ensure_temporal_bin() {
  if [ ! -x "$TEMPORAL_BIN" ]; then
    say "building the temporal CLI $TEMPORAL_CLI_VERSION (dev server + Web UI) into $TEMPORAL_BIN; takes a few minutes once"
    GOBIN="$(dirname "$TEMPORAL_BIN")" go install "github.com/temporalio/cli/cmd/temporal@$TEMPORAL_CLI_VERSION" \
      || GOBIN="$(dirname "$TEMPORAL_BIN")" go install "github.com/temporalio/cli/cmd/temporal@v1.4.1"
  fi
}

# Debian's chromium for the Web UI browser test (playwright-core drives it; no browser download)
ensure_chromium() {
  if [ ! -x /usr/bin/chromium ]; then
    say "installing Debian's chromium for the Web UI test"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  fi
}

ensure_node_modules() {
  cd "$PARTFLOW_ROOT"
  local stamp="node_modules/.partflow-lock-hash" want
  want="$(sha256sum package-lock.json | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    say "npm ci"
    npm ci --no-audit --no-fund >/dev/null
    echo "$want" > "$stamp"
  fi
}

ensure_build() {
  cd "$PARTFLOW_ROOT"
  say "compiling TypeScript"
  # from scratch: tsc leaves the output of a deleted or moved source behind (a stale dist/activities/partition.js
  # would shadow dist/activities/partition/index.js)
  rm -rf dist
  npx tsc -p tsconfig.json
}

# The Temporal dev server for the demo: SQLite file, gRPC 7233, Web UI 8233.
ensure_temporal_server() {
  ensure_temporal_bin
  export TEMPORAL_ADDRESS="${TEMPORAL_ADDRESS:-127.0.0.1:7233}"
  if ! (exec 3<>"/dev/tcp/${TEMPORAL_ADDRESS%:*}/${TEMPORAL_ADDRESS#*:}") 2>/dev/null; then
    say "starting the Temporal dev server (state in $PARTFLOW_HOME/temporal.db, Web UI http://localhost:8233)"
    nohup "$TEMPORAL_BIN" server start-dev --ip 127.0.0.1 --port "${TEMPORAL_ADDRESS#*:}" --ui-port 8233 \
      --db-filename "$PARTFLOW_HOME/temporal.db" --log-level warn \
      > "$PARTFLOW_HOME/logs/temporal.log" 2>&1 &
    for _ in $(seq 1 120); do
      (exec 3<>"/dev/tcp/${TEMPORAL_ADDRESS%:*}/${TEMPORAL_ADDRESS#*:}") 2>/dev/null && break
      sleep 0.5
    done
    sleep 2
  fi
  ensure_search_attributes
}

# The fleet's custom search attributes (src/fleet.ts; README "A fleet of tables"): registered once per
# namespace, on a server started by an earlier run too (create fails harmlessly when one exists).
ensure_search_attributes() {
  local name type
  for pair in PartflowTable=Keyword PartflowPhase=Keyword PartflowAwaitingApproval=Bool PartflowThrottled=Bool; do
    name="${pair%=*}" type="${pair#*=}"
    "$TEMPORAL_BIN" operator search-attribute create --address "$TEMPORAL_ADDRESS" --name "$name" --type "$type" \
      >/dev/null 2>&1 || true
  done
}
