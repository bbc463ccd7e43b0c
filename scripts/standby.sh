#!/usr/bin/env bash
# A streaming standby of partflow's test cluster, for the replica-throttling tests:
#   scripts/standby.sh create PORT [APPLY_DELAY]   pg_basebackup -R from the primary, then start it
#   scripts/standby.sh start|stop|remove PORT
#   scripts/standby.sh delay PORT APPLY_DELAY     recovery_min_apply_delay (e.g. 3s, 0) and reload
# The standby's data lives in $PARTFLOW_HOME/standby-PORT; it streams as application_name partflow_standby_PORT.
source "$(dirname "$0")/env.sh"
verb="${1:?create|start|stop|remove|delay}"
port="${2:?port}"
dir="$PARTFLOW_HOME/standby-$port"
bin="$(pg_bindir)"
runas=()
if [ "$(id -u)" = 0 ]; then runas=(runuser -u postgres --); fi
ctl() { "${runas[@]}" "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" "$@" >/dev/null; }

set_delay() {
  "${runas[@]}" sed -i '/^recovery_min_apply_delay/d' "$dir/postgresql.auto.conf"
  echo "recovery_min_apply_delay = '$1'" | "${runas[@]}" tee -a "$dir/postgresql.auto.conf" >/dev/null
}

case "$verb" in
  create)
    "$0" remove "$port" || true
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir" && chmod 700 "$dir"
    "${runas[@]}" "$bin/pg_basebackup" -h 127.0.0.1 -p "$PARTFLOW_PG_PORT" -U postgres -D "$dir" -R -X stream -c fast
    cat <<CONF | "${runas[@]}" tee -a "$dir/postgresql.auto.conf" >/dev/null
port = $port
hot_standby = on
primary_conninfo = 'host=127.0.0.1 port=$PARTFLOW_PG_PORT user=postgres application_name=partflow_standby_$port'
CONF
    set_delay "${3:-0}"
    start_cluster "$port" "$dir/server.log" ctl -w start
    ;;
  start) start_cluster "$port" "$dir/server.log" ctl -w start ;;
  stop) ctl -w -m fast stop ;;
  remove)
    if [ -s "$dir/postmaster.pid" ]; then ctl -w -m immediate stop || true; fi
    rm -rf "$dir"
    ;;
  delay)
    set_delay "${3:?delay}"
    ctl reload
    ;;
  *) echo "usage: $0 create|start|stop|remove|delay PORT [APPLY_DELAY]" >&2; exit 2 ;;
esac
