#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests of capecontrol-store.
#
#   eval "$(scripts/pg.sh start)"   # starts a cluster; prints `export DATABASE_URL=… CAPECONTROL_PG_DIR=…`
#   scripts/pg.sh stop [dir]        # stops it and removes its directory (default: $CAPECONTROL_PG_DIR)
#   scripts/pg.sh restart [dir]     # restarts it (fast shutdown), same port; returns once it accepts
#                                   # connections again (the fault tests use it)
#
# The cluster lives in a temporary directory (data, unix socket, log), listens on 127.0.0.1 on a
# free port with `trust` authentication, and belongs to the `postgres` user when run as root
# (`initdb` refuses root). Settings: only `max_connections` is raised (every test opens its own
# pools); fsync, synchronous_commit and full_page_writes keep their durable defaults, so the
# numbers measured against this cluster are those of a normally configured server.
set -euo pipefail

pg_bin() {
    if [[ -n "${PG_BIN:-}" ]]; then echo "$PG_BIN"; return; fi
    if command -v pg_config >/dev/null 2>&1 && [[ -x "$(pg_config --bindir)/initdb" ]]; then
        pg_config --bindir; return
    fi
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -z "$d" ]]; then echo "pg.sh: no PostgreSQL server binaries found (set PG_BIN)" >&2; exit 1; fi
    echo "$d"
}

as_owner() {
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 - <<'PY' 2>/dev/null || echo $(( 20000 + RANDOM % 20000 ))
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

start() {
    local bin dir port
    bin=$(pg_bin)
    dir=$(mktemp -d "${TMPDIR:-/tmp}/capecontrol-pg.XXXXXX")
    chmod 755 "$dir"
    if [[ "$(id -u)" == 0 ]]; then chown postgres:postgres "$dir"; fi
    as_owner "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2; exit 1; }
    for _ in 1 2 3 4 5; do
        port=$(free_port)
        if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
            -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=400" start >/dev/null; then
            echo "pg.sh: PostgreSQL started on 127.0.0.1:$port in $dir" >&2
            echo "export DATABASE_URL=postgres://postgres@127.0.0.1:$port/postgres"
            echo "export CAPECONTROL_PG_DIR=$dir"
            return 0
        fi
    done
    cat "$dir/server.log" >&2
    echo "pg.sh: could not start PostgreSQL" >&2
    exit 1
}

stop() {
    local dir="${1:-${CAPECONTROL_PG_DIR:-}}"
    if [[ -z "$dir" || ! -d "$dir" ]]; then echo "pg.sh stop: no cluster directory given" >&2; exit 1; fi
    case "$dir" in *capecontrol-pg.*) ;; *) echo "pg.sh stop: $dir is not a pg.sh cluster" >&2; exit 1;; esac
    if [[ -d "$dir/data" ]]; then
        as_owner "$(pg_bin)/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    echo "pg.sh: stopped and removed $dir" >&2
}

restart() {
    local dir="${1:-${CAPECONTROL_PG_DIR:-}}"
    if [[ -z "$dir" || ! -d "$dir/data" ]]; then echo "pg.sh restart: no cluster directory given" >&2; exit 1; fi
    case "$dir" in *capecontrol-pg.*) ;; *) echo "pg.sh restart: $dir is not a pg.sh cluster" >&2; exit 1;; esac
    # `restart` reuses the options the server was started with (postmaster.opts).
    as_owner "$(pg_bin)/pg_ctl" -D "$dir/data" -l "$dir/server.log" -m fast -w -t 60 restart >/dev/null
}

case "${1:-}" in
    start) start ;;
    stop) shift; stop "$@" ;;
    restart) shift; restart "$@" ;;
    *) echo "usage: $0 start | stop [dir] | restart [dir]" >&2; exit 2 ;;
esac
