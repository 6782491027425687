#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback for the tests (and for trying cohortflow on PostgreSQL).
#
#   scripts/pgcluster.sh start   install PostgreSQL from Debian if absent, init and start a cluster
#   scripts/pgcluster.sh env     print the environment the tests read (export lines)
#   scripts/pgcluster.sh stop    stop the cluster and delete its files
#   scripts/pgcluster.sh halt    stop the server at once (as a crash would), keeping its files
#   scripts/pgcluster.sh resume  start a halted cluster again
#
# Settings: COHORTFLOW_PG_DIR (default /tmp/cohortflow-pgtest), COHORTFLOW_PG_PORT (55432).
# The cluster uses scram-sha-256 password authentication on 127.0.0.1 only; the
# password is generated at init and kept in the cluster folder (mode 600).
set -euo pipefail

STATE_DIR=${COHORTFLOW_PG_DIR:-/tmp/cohortflow-pgtest}
PORT=${COHORTFLOW_PG_PORT:-55432}
DATA="$STATE_DIR/data"
DB_USER=cohortflow
DB_NAME=cohortflow

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

as_owner() {
    # initdb and postgres refuse to run as root: run them as the 'postgres' system user then.
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

install() {
    if [ -z "$(pg_bin)" ]; then
        echo "installing PostgreSQL from Debian packages..." >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq postgresql >/dev/null
    fi
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fi
}

server_start() {
    as_owner "$1/pg_ctl" -D "$DATA" -l "$STATE_DIR/server.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $STATE_DIR -c max_connections=50 -c fsync=off -c shared_buffers=256MB" >/dev/null
}

start() {
    install
    local bin; bin=$(pg_bin)
    if [ -f "$DATA/postmaster.pid" ] && as_owner "$bin/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
        echo "cluster already running on 127.0.0.1:$PORT" >&2
        return 0
    fi
    rm -rf "$STATE_DIR"
    mkdir -p "$STATE_DIR"
    [ "$(id -u)" = 0 ] && chown postgres: "$STATE_DIR"
    local pw; pw=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
    umask 077
    printf '%s\n' "$pw" > "$STATE_DIR/superuser.pw"
    printf '%s\n' "$pw" > "$STATE_DIR/password"
    [ "$(id -u)" = 0 ] && chown postgres: "$STATE_DIR/superuser.pw"
    as_owner "$bin/initdb" -D "$DATA" -U postgres --auth=scram-sha-256 --pwfile="$STATE_DIR/superuser.pw" \
        --encoding=UTF8 --locale=C.UTF-8 >"$STATE_DIR/initdb.log" 2>&1 || { cat "$STATE_DIR/initdb.log" >&2; exit 1; }
    server_start "$bin"
    PGPASSWORD="$pw" "$bin/psql" -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
        -v pw="$pw" <<'SQL'
select format('create role cohortflow login createrole createdb password %L', :'pw') \gexec
create database cohortflow owner cohortflow;
-- The tests drop their databases "with (force)", which must be able to stop an autovacuum worker there.
grant pg_signal_backend to cohortflow;
SQL
    echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') running on 127.0.0.1:$PORT (data in $DATA)" >&2
}

print_env() {
    [ -f "$STATE_DIR/password" ] || { echo "no cluster: run '$0 start' first" >&2; exit 1; }
    echo "export COHORTFLOW_TEST_PG_URL=postgresql+psycopg://$DB_USER@127.0.0.1:$PORT/$DB_NAME"
    echo "export COHORTFLOW_TEST_PG_PASSWORD=$(cat "$STATE_DIR/password")"
    # The server's log: the secret tests read it.
    echo "export COHORTFLOW_TEST_PG_LOG=$STATE_DIR/server.log"
}

halt() {
    as_owner "$(pg_bin)/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null
}

resume() {
    server_start "$(pg_bin)"
}

stop() {
    local bin; bin=$(pg_bin)
    if [ -n "$bin" ] && [ -d "$DATA" ]; then
        as_owner "$bin/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$STATE_DIR"
}

case "${1:-}" in
    start) start ;;
    env) print_env ;;
    stop) stop ;;
    halt) halt ;;
    resume) resume ;;
    *) echo "usage: $0 start|env|stop|halt|resume" >&2; exit 2 ;;
esac
