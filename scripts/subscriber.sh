#!/usr/bin/env bash
# A logical-replication subscriber: a second cluster of its own (wal_level = logical), for the publication test
# (issue 29, item 5). The publisher is partflow's test cluster.
#   scripts/subscriber.sh create PORT    initdb and start it (data in $PARTFLOW_HOME/subscriber-PORT)
#   scripts/subscriber.sh remove PORT    stop it immediately and delete its data
source "$(dirname "$0")/env.sh"
verb="${1:?create|remove}"
port="${2:?port}"
dir="$PARTFLOW_HOME/subscriber-$port"
bin="$(pg_bindir)"
runas=()
if [ "$(id -u)" = 0 ]; then runas=(runuser -u postgres --); fi
ctl() { "${runas[@]}" "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" "$@" >/dev/null; }

case "$verb" in
  create)
    "$0" remove "$port" || true
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir" && chmod 700 "$dir"
    "${runas[@]}" "$bin/initdb" -D "$dir" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
    { pg_conf "$port"; echo "shared_buffers = 64MB"; echo "wal_level = logical"; } \
      | "${runas[@]}" tee -a "$dir/postgresql.conf" >/dev/null
    start_cluster "$port" "$dir/server.log" ctl -w start
    ;;
  remove)
    if [ -s "$dir/postmaster.pid" ]; then ctl -w -m immediate stop || true; fi
    rm -rf "$dir"
    ;;
  *) echo "usage: $0 create|remove PORT" >&2; exit 2 ;;
esac
