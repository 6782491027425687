#!/usr/bin/env bash
# The whole test suite on a fresh machine: install (with Debian's Chromium for the report's
# browser tests), start a throwaway PostgreSQL, a single-node Trino and a DolphinScheduler
# 3.1.1 server on loopback, run pytest, stop them all. Arguments go to pytest.
#
# Two halves run side by side, each a sequence:
#   in the foreground
#     1. the suite on DuckDB, PostgreSQL and Trino in .venv (SDK 3.1.1);
#     2. the offline tests of the 3.2.x definitions in .venv-ds32 (SDK 4.1.0; the two SDKs
#        cannot share an environment);
#     3. the DolphinScheduler integration tests, inside the server's network namespace
#        (where the PostgreSQL cluster's Unix socket is forwarded to the same 127.0.0.1 port);
#        the server starts at the beginning, beside 1;
#   in the background (a process group of its own, stopped whole on exit)
#     4. the slow Trino tests (the lane: TRINO_LANE in tests/conftest.py).
# The lane is sized so that the two halves end together. Measured in one CI run on 2 cores (0725d91, 4,053 s in
# all; set-up 103 s): 1 took 53 minutes, 2 11 s and 3 12 minutes, while 4 took 60 minutes (with 58 fixture cases).
# The background half's output is printed at the end. Each pytest run may select nothing (exit 5) when arguments
# narrow the suite; not all four.
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
background="" lane_tmp="${TMPDIR:-/tmp}/cohortflow-trino-lane"
cleanup() {
    [ -n "${ds_starter:-}" ] && kill "$ds_starter" 2>/dev/null || true
    if [ -n "$background" ]; then
        kill -TERM -- "-$background" 2>/dev/null && wait "$background" 2>/dev/null
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
rm -f target/trino-lane.* target/dolphinscheduler-*.log
echo "set-up took $((SECONDS - t0)) s (the DolphinScheduler server starts beside the test runs)" >&2
scripts/trino.sh start
eval "$(scripts/pgcluster.sh env)"
eval "$(scripts/trino.sh env)"

lane_log=target/trino-lane.log
# The background half (4 above). Its exit code and time go to a file the foreground reads at the end.
background_half() {
    local started=$SECONDS rc=0
    COHORTFLOW_TEST_TRINO_SCOPE=lane .venv/bin/python -m pytest -m "not dolphinscheduler and not sdk32" \
        --basetemp="$lane_tmp" -p no:cacheprovider --durations=15 "$@" >"$lane_log" 2>&1 || rc=$?
    echo "$rc $((SECONDS - started))" >target/trino-lane.rc
}
# (job control on while it starts: the background half gets a process group of its own, which cleanup stops whole)
set -m
background_half "$@" &
background=$!
set +m
DS_FORWARD="$COHORTFLOW_PG_PORT=$COHORTFLOW_PG_DIR/.s.PGSQL.$COHORTFLOW_PG_PORT" \
    scripts/dolphinscheduler.sh start >target/dolphinscheduler-start.log 2>&1 &
ds_starter=$!

codes=()
run() { local rc=0; "$@" || rc=$?; codes+=("$rc"); }
run env COHORTFLOW_TEST_TRINO_SCOPE=main .venv/bin/python -m pytest -m "not dolphinscheduler and not sdk32" --durations=25 "$@"
run .venv-ds32/bin/python -m pytest -m sdk32 "$@" tests/unit/test_register.py
ds_rc=0 ds_up=1
wait "$ds_starter" || ds_up=0
ds_starter=""
cat target/dolphinscheduler-start.log >&2
if [ "$ds_up" = 1 ]; then
    started=$SECONDS
    (
        eval "$(scripts/dolphinscheduler.sh env)"
        scripts/dolphinscheduler.sh status
        scripts/dolphinscheduler.sh exec .venv/bin/python -m pytest -m dolphinscheduler --durations=5 "$@"
    ) || ds_rc=$?
    scripts/dolphinscheduler.sh status || true
    echo "---- DolphinScheduler integration tests: exit $ds_rc, $((SECONDS - started)) s" >&2
    scripts/dolphinscheduler.sh stop || true
else
    ds_rc=1
    echo "the DolphinScheduler server did not start: its integration tests did not run (the lane's results follow)" >&2
fi
echo "waiting for the background half (the Trino lane)" >&2
wait "$background" || true
background=""
read -r lane_rc lane_seconds <target/trino-lane.rc || { lane_rc=1 lane_seconds=0; }
echo "---- Trino lane (exit $lane_rc, $lane_seconds s): $lane_log" >&2
cat "$lane_log" >&2
codes+=("$ds_rc" "$lane_rc")

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
