#!/usr/bin/env bash
# The whole test suite on a fresh machine: install (with Debian's Chromium for the report's
# browser tests), start a throwaway PostgreSQL, a single-node Trino and a DolphinScheduler
# 3.1.1 server on loopback, run pytest, stop them all. Arguments go to pytest.
#
#   1. the suite on DuckDB, PostgreSQL and Trino in .venv (SDK 3.1.1), while the
#      DolphinScheduler server starts, and beside it the slow Trino tests (the lane);
#   2. the offline tests of the 3.2.x definitions in .venv-ds32 (SDK 4.1.0; the two SDKs
#      cannot share an environment);
#   3. the DolphinScheduler integration tests, inside the server's network namespace
#      (where the PostgreSQL cluster's Unix socket is forwarded to the same 127.0.0.1 port).
# Each pytest run may select nothing (exit 5) when arguments narrow the suite; not all three.
set -euo pipefail
cd "$(dirname "$0")/.."
export COHORTFLOW_PG_DIR=${COHORTFLOW_PG_DIR:-/tmp/cohortflow-pgtest}
export COHORTFLOW_PG_PORT=${COHORTFLOW_PG_PORT:-55432}
export DS_STATE_DIR=${DS_STATE_DIR:-/tmp/cohortflow-dolphinscheduler}
t0=$SECONDS
scripts/bootstrap.sh test
scripts/bootstrap.sh test-ds32
scripts/chromium.sh
scripts/pgcluster.sh start
ds_starter=""
lane="" lane_tmp="${TMPDIR:-/tmp}/cohortflow-trino-lane"
cleanup() {
    [ -n "$ds_starter" ] && kill "$ds_starter" 2>/dev/null || true
    if [ -n "$lane" ]; then
        kill "$lane" 2>/dev/null && wait "$lane" 2>/dev/null
        # a killed lane does not stop the two-node cluster of tests/integration/test_trino_cluster.py
        for dir in "$lane_tmp"/trino-two-nodes*; do
            [ -d "$dir" ] && COHORTFLOW_TRINO_DIR=$dir scripts/trino.sh stop
        done
    fi || true
    scripts/dolphinscheduler.sh stop || true
    scripts/trino.sh stop || true
    scripts/pgcluster.sh stop
}
trap cleanup EXIT
scripts/dolphinscheduler.sh build
mkdir -p target
DS_FORWARD="$COHORTFLOW_PG_PORT=$COHORTFLOW_PG_DIR/.s.PGSQL.$COHORTFLOW_PG_PORT" \
    scripts/dolphinscheduler.sh start >target/dolphinscheduler-start.log 2>&1 &
ds_starter=$!
echo "set-up took $((SECONDS - t0)) s (the DolphinScheduler server starts while the suite runs)" >&2
scripts/trino.sh start
eval "$(scripts/pgcluster.sh env)"
eval "$(scripts/trino.sh env)"

codes=()
run() { local rc=0; "$@" || rc=$?; codes+=("$rc"); }
# The Trino lane (TRINO_LANE in tests/conftest.py: the nightly comparison with DuckDB, the property
# tests, the two-node cluster) runs in a second pytest process beside the main run, in its own temporary folder; its
# output is printed at the end.
lane_log=target/trino-lane.log
COHORTFLOW_TEST_TRINO_SCOPE=lane .venv/bin/python -m pytest -m "not dolphinscheduler and not sdk32" \
    --basetemp="$lane_tmp" -p no:cacheprovider --durations=15 "$@" >"$lane_log" 2>&1 &
lane=$!
lane_started=$SECONDS
run env COHORTFLOW_TEST_TRINO_SCOPE=main .venv/bin/python -m pytest -m "not dolphinscheduler and not sdk32" --durations=25 "$@"
run .venv-ds32/bin/python -m pytest -m sdk32 "$@" tests/unit/test_register.py
if ! wait "$ds_starter"; then
    ds_starter=""
    cat target/dolphinscheduler-start.log >&2
    echo "the DolphinScheduler server did not start: its integration tests did not run" >&2
    exit 1
fi
ds_starter=""
cat target/dolphinscheduler-start.log >&2
eval "$(scripts/dolphinscheduler.sh env)"
run scripts/dolphinscheduler.sh exec .venv/bin/python -m pytest -m dolphinscheduler "$@"
scripts/dolphinscheduler.sh status >&2 || true
echo "waiting for the Trino lane" >&2
lane_rc=0
wait "$lane" || lane_rc=$?
lane=""
codes+=("$lane_rc")
echo "---- Trino lane (exit $lane_rc, $((SECONDS - lane_started)) s): $lane_log" >&2
cat "$lane_log" >&2

status=0 selected=0
for rc in "${codes[@]}"; do
    case "$rc" in
        0) selected=1 ;;
        5) ;;
        *) selected=1; status=$rc ;;
    esac
done
[ "$selected" = 1 ] || status=5
echo "test runs exited ${codes[*]} (DuckDB/PostgreSQL/Trino, SDK 4.1.0 offline, DolphinScheduler, Trino lane); whole run $((SECONDS - t0)) s" >&2
exit "$status"
