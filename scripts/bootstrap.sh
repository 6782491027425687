#!/usr/bin/env bash
# Create .venv (if missing) and install cohortflow into it, with the test extras when asked.
#   scripts/bootstrap.sh          runtime dependencies
#   scripts/bootstrap.sh test     plus pytest, hypothesis, chdb, playwright
# A first install takes a minute or two: it prints what pip is doing every few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 13)))'; then
    echo "cohortflow needs Python 3.11 or 3.12 (found $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
    exit 2
fi
if [ ! -x .venv/bin/python ]; then
    echo "creating .venv with $("$PY" --version 2>&1)" >&2
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
extra=""
[ "${1:-}" = test ] && extra="[test]"
log=.venv/pip-install.log
echo "installing cohortflow$extra and its dependencies into .venv (log: $log)" >&2
start=$SECONDS
.venv/bin/python -m pip install --disable-pip-version-check -e ".$extra" >"$log" 2>&1 &
pip_pid=$!
# Progress while pip works: elapsed time, packages collected so far, and pip's latest step.
while kill -0 "$pip_pid" 2>/dev/null; do
    sleep 5
    kill -0 "$pip_pid" 2>/dev/null || break
    collected=$(grep -c '^Collecting ' "$log" 2>/dev/null || true)
    step=$(grep -E '^(Collecting|Downloading|Building|Installing|Requirement already satisfied)' "$log" 2>/dev/null | tail -n 1 | cut -c1-90 || true)
    printf '  %3ds: %s packages collected; %s\n' "$((SECONDS - start))" "${collected:-0}" "${step:-starting}" >&2
done
if ! wait "$pip_pid"; then
    tail -n 40 "$log" >&2
    echo "pip install failed; full log in $log" >&2
    exit 1
fi
echo "installed in $((SECONDS - start))s: $(.venv/bin/cohortflow --version)" >&2
