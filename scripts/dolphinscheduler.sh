#!/usr/bin/env bash
# A DolphinScheduler 3.1.1 standalone server on this machine, for trying and testing cohortflow on it.
#
#   scripts/dolphinscheduler.sh build    assemble the server from Maven Central into build/dolphinscheduler
#   scripts/dolphinscheduler.sh start    start it on 127.0.0.1 and wait until a master and a worker are registered
#   scripts/dolphinscheduler.sh status   is it running, and what is registered
#   scripts/dolphinscheduler.sh env      print the environment cohortflow needs to talk to it (export lines)
#   scripts/dolphinscheduler.sh exec CMD run CMD where the server's ports are reachable (its network namespace)
#   scripts/dolphinscheduler.sh stop     stop it (by PID) and delete its state
#
# The server keeps its metadata in memory: every start is empty. It listens on 127.0.0.1 only;
# 3.1.1 binds its RPC ports and the embedded ZooKeeper on every interface, so when run as root
# it runs in a network namespace of its own (DS_NETNS=auto|1|0) where only its loopback exists:
# reach it with `exec` (e.g. `scripts/dolphinscheduler.sh exec .venv/bin/cohortflow status --server`).
# Services of the machine that tasks need, such as a PostgreSQL warehouse, are reached there
# through their Unix sockets: DS_FORWARD="5432=/var/run/postgresql/.s.PGSQL.5432 ..." makes each
# reachable at 127.0.0.1:PORT inside the namespace (scripts/dolphinscheduler/forward.py).
#
# Tasks run `cohortflow` by the absolute path that `cohortflow register` writes into them;
# they source $DS_STATE_DIR/task-env.sh first: put secrets such as COHORTFLOW_WAREHOUSE__PASSWORD
# there (export lines; mode 600), never in the workflow definitions.
#
# Settings: DS_STATE_DIR (default /tmp/cohortflow-dolphinscheduler), DS_API_PORT (12345),
# DS_GATEWAY_PORT (25333), DS_MASTER_PORT (5678), DS_WORKER_PORT (1234), DS_ALERT_PORT (50052),
# DS_NETNS (auto), DS_FORWARD (none), DS_READY_TIMEOUT (240 s), DS_MAVEN_ARGS for the build.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SRC="$ROOT/scripts/dolphinscheduler"
DS_HOME=${DS_HOME:-$ROOT/build/dolphinscheduler}
STATE=${DS_STATE_DIR:-/tmp/cohortflow-dolphinscheduler}
API_PORT=${DS_API_PORT:-12345}
GATEWAY_PORT=${DS_GATEWAY_PORT:-25333}
READY_TIMEOUT=${DS_READY_TIMEOUT:-240}
ADMIN_USER=admin
ADMIN_PASSWORD=dolphinscheduler123   # seeded by the H2 schema; the server is loopback-only and in memory
API="http://127.0.0.1:$API_PORT/dolphinscheduler"
DS_VERSION=3.1.1

die() { echo "dolphinscheduler.sh: $*" >&2; exit "${2:-1}"; }

pid_alive() { [ -f "$STATE/server.pid" ] && kill -0 "$(cat "$STATE/server.pid")" 2>/dev/null; }

use_netns() {
    case "${DS_NETNS:-auto}" in
        0|no|false) return 1 ;;
        1|yes|true) return 0 ;;
        auto) [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && command -v nsenter >/dev/null && unshare -n true 2>/dev/null ;;
        *) die "DS_NETNS must be auto, 1 or 0 (got '${DS_NETNS}')" 2 ;;
    esac
}

# Run a command where the server's loopback is (its network namespace, when it has one).
in_server_net() {
    if [ -f "$STATE/netns" ] && pid_alive; then
        nsenter -t "$(cat "$STATE/server.pid")" -n -- "$@"
    else
        "$@"
    fi
}

install_tools() {
    local missing=()
    command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null || missing+=(maven)
    command -v curl >/dev/null || missing+=(curl)
    command -v ip >/dev/null || missing+=(iproute2)
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" = 0 ] || die "missing: ${missing[*]}; on Debian: sudo apt-get install ${missing[*]}" 2
    echo "installing ${missing[*]} from Debian packages..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
}

build() {
    install_tools
    local t0=$SECONDS
    # shellcheck disable=SC2086
    mvn -B -q ${DS_MAVEN_ARGS:-} -f "$SRC/pom.xml" -Dds.out="$DS_HOME" package \
        || die "the Maven build failed (see its output above)"
    [ -f "$DS_HOME/sql/dolphinscheduler_h2.sql" ] || die "the H2 schema was not unpacked into $DS_HOME/sql"
    echo "DolphinScheduler $DS_VERSION assembled in $DS_HOME: $(find "$DS_HOME/lib" -name '*.jar' | wc -l) jars, $((SECONDS - t0)) s" >&2
}

# A REST call inside the server's network: api METHOD PATH [curl args...]; prints the JSON answer.
api() {
    local method=$1 path=$2; shift 2
    in_server_net curl -sS --max-time 20 -X "$method" "$API$path" "$@"
}

json_get() { python3 -c 'import json,sys
d=json.load(sys.stdin)
for k in sys.argv[1].split("."):
    d = d[int(k)] if isinstance(d, list) else (d or {}).get(k)
print("" if d is None else d)' "$1"; }

login() {
    api POST /login --data-urlencode "userName=$ADMIN_USER" --data-urlencode "userPassword=$ADMIN_PASSWORD" 2>/dev/null \
        | json_get data.sessionId 2>/dev/null || true
}

registered() {  # registered SESSION masters|workers -> number of servers
    api GET "/monitor/$2" -H "sessionId: $1" 2>/dev/null \
        | python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("data") or []))' 2>/dev/null || echo 0
}

start() {
    [ -f "$DS_HOME/sql/dolphinscheduler_h2.sql" ] || die "not built: run '$0 build' first" 2
    if pid_alive; then
        echo "DolphinScheduler already running (pid $(cat "$STATE/server.pid"))" >&2
        return 0
    fi
    rm -rf "$STATE"
    mkdir -p "$STATE/logs" "$STATE/data" "$STATE/tmp" "$STATE/bin"
    cp "$SRC/bin/sudo" "$STATE/bin/sudo"
    ( umask 077; : > "$STATE/task-env.sh" )
    local user; user=$(id -un)
    local java_cmd=(
        java -Xms256m -Xmx1g -XX:+UseSerialGC
        --add-opens java.base/java.lang=ALL-UNNAMED --add-opens java.base/java.lang.invoke=ALL-UNNAMED
        --add-opens java.base/java.util=ALL-UNNAMED --add-opens java.base/java.nio=ALL-UNNAMED
        -Duser.timezone=UTC -Dfile.encoding=UTF-8
        -Djava.io.tmpdir="$STATE/tmp"
        -Dsudo.enable=false
        -Ddata.basedir.path="$STATE/data"
        -Dresource.storage.type=NONE
        -Ddolphinscheduler.env.path="$STATE/task-env.sh"
        # an unknown strategy makes master and worker advertise 127.0.0.1 instead of the first non-loopback address
        -Ddolphin.scheduler.network.priority.strategy=loopback
        -DDS_LOGS="$STATE/logs" -Dlogging.config="$SRC/conf/logback-spring.xml"
        -cp "$SRC/conf:$DS_HOME/lib/*"
        org.apache.dolphinscheduler.StandaloneServer
    )
    local netns=0
    use_netns && netns=1
    local t0; t0=$(date +%s.%N)
    (
        cd "$STATE"
        export DS_HOME PATH="$STATE/bin:$PATH"
        if [ "$netns" = 1 ]; then
            # a new network namespace whose only interface is its own loopback; the forwarder (if any)
            # starts in it, and the shell then becomes java (the forwarder stays in its process group)
            export DS_FORWARD="${DS_FORWARD:-}" DS_FORWARDER="$SRC/forward.py"
            exec setsid unshare -n sh -c '
                ip link set lo up || exit 1
                if [ -n "$DS_FORWARD" ]; then python3 "$DS_FORWARDER" $DS_FORWARD >>logs/forward.log 2>&1 & fi
                exec "$@"' sh "${java_cmd[@]}"
        else
            exec setsid "${java_cmd[@]}"
        fi
    ) >"$STATE/logs/stdout.log" 2>&1 </dev/null &
    echo $! > "$STATE/server.pid"
    [ "$netns" = 1 ] && echo "own network namespace" > "$STATE/netns"
    [ "$netns" = 1 ] || echo "warning: no network namespace (not root or no unshare): DolphinScheduler $DS_VERSION binds its RPC ports (5678, 1234, 50052) and ZooKeeper on every interface" >&2
    echo "starting DolphinScheduler $DS_VERSION (pid $(cat "$STATE/server.pid"), logs in $STATE/logs)..." >&2
    local session="" masters=0 workers=0 deadline=$((SECONDS + READY_TIMEOUT))
    while [ $SECONDS -lt $deadline ]; do
        if grep -q "Application run failed" "$STATE/logs/dolphinscheduler-standalone.log" 2>/dev/null; then
            grep -A3 "Application run failed" "$STATE/logs/dolphinscheduler-standalone.log" | grep -m1 -i exception >&2 || true
            kill_server
            die "the server failed to start (logs in $STATE/logs)"
        fi
        pid_alive || { tail -n 30 "$STATE/logs/stdout.log" "$STATE/logs/dolphinscheduler-standalone.log" >&2 2>/dev/null; die "the server exited during start-up (logs in $STATE/logs)"; }
        [ -n "$session" ] || session=$(login)
        if [ -n "$session" ]; then
            masters=$(registered "$session" masters)
            workers=$(registered "$session" workers)
            [ "$masters" -ge 1 ] && [ "$workers" -ge 1 ] && break
        fi
        sleep 2
    done
    if [ "$masters" -lt 1 ] || [ "$workers" -lt 1 ]; then
        kill_server
        die "not ready after ${READY_TIMEOUT}s (masters: $masters, workers: $workers); stopped it (logs in $STATE/logs)"
    fi
    local ready; ready=$(python3 -c "import time; print(f'{time.time() - $t0:.1f}')")
    # An access token for cohortflow's REST client (COHORTFLOW_DS_TOKEN), valid for a year.
    local uid expire token
    uid=$(api GET /users/get-user-info -H "sessionId: $session" | json_get data.id)
    expire=$(date -u -d '+365 days' '+%Y-%m-%d %H:%M:%S')
    token=$(api POST /access-tokens/generate -H "sessionId: $session" --data-urlencode "userId=$uid" \
        --data-urlencode "expireTime=$expire" | json_get data)
    api POST /access-tokens -H "sessionId: $session" --data-urlencode "userId=$uid" --data-urlencode "expireTime=$expire" \
        --data-urlencode "token=$token" | json_get code | grep -qx 0 || die "could not create an access token"
    ( umask 077; printf '%s\n' "$token" > "$STATE/token" )
    # The tenant the workflows run under must be an existing OS user; the server runs as $user.
    echo "$user" > "$STATE/tenant"
    echo "$ready" > "$STATE/ready_seconds"
    echo "DolphinScheduler $DS_VERSION ready in ${ready}s: $masters master, $workers worker; REST $API (user $ADMIN_USER), Python gateway 127.0.0.1:$GATEWAY_PORT$( [ "$netns" = 1 ] && echo ', in its own network namespace')" >&2
}

print_env() {
    pid_alive || die "not running: run '$0 start' first"
    echo "export COHORTFLOW_DOLPHINSCHEDULER__API_URL=$API"
    echo "export COHORTFLOW_DOLPHINSCHEDULER__GATEWAY_ADDRESS=127.0.0.1"
    echo "export COHORTFLOW_DOLPHINSCHEDULER__GATEWAY_PORT=$GATEWAY_PORT"
    echo "export COHORTFLOW_DOLPHINSCHEDULER__TENANT=$(cat "$STATE/tenant")"
    echo "export COHORTFLOW_DS_TOKEN=$(cat "$STATE/token")"
    echo "export COHORTFLOW_DS_TASK_ENV=$STATE/task-env.sh"
    echo "export COHORTFLOW_DS_PID=$(cat "$STATE/server.pid")"
}

status() {
    if ! pid_alive; then
        echo "DolphinScheduler is not running" >&2
        return 3
    fi
    local pid; pid=$(cat "$STATE/server.pid")
    local session; session=$(login)
    local rss peak
    rss=$(awk '/VmRSS/ {print int($2/1024)}' "/proc/$pid/status" 2>/dev/null || echo '?')
    peak=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$pid/status" 2>/dev/null || echo '?')
    echo "DolphinScheduler $DS_VERSION running: pid $pid, RSS ${rss} MiB (peak ${peak} MiB), up $(ps -o etimes= -p "$pid" | tr -d ' ') s, masters $(registered "$session" masters), workers $(registered "$session" workers), REST $API$( [ -f "$STATE/netns" ] && echo ' (own network namespace)')"
}

kill_server() {
    if [ -f "$STATE/server.pid" ]; then
        local pid; pid=$(cat "$STATE/server.pid")
        if kill -0 "$pid" 2>/dev/null; then
            # the server leads its own process group (setsid): task processes it started go with it
            kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
            for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
            if kill -0 "$pid" 2>/dev/null; then
                echo "DolphinScheduler (pid $pid) did not stop in 30 s; killing it" >&2
                kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
        echo "DolphinScheduler stopped (pid $pid)" >&2
    fi
}

stop() {
    kill_server
    rm -rf "$STATE"
}

case "${1:-}" in
    build) build ;;
    start) start ;;
    status) status ;;
    env) print_env ;;
    exec) shift; [ $# -gt 0 ] || die "usage: $0 exec COMMAND [ARGS...]" 2; in_server_net "$@" ;;
    stop) stop ;;
    *) echo "usage: $0 build|start|status|env|exec COMMAND|stop" >&2; exit 2 ;;
esac
