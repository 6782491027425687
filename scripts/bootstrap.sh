#!/usr/bin/env bash
# Create a virtualenv (if missing) and install cohortflow into it.
#   scripts/bootstrap.sh          .venv: runtime dependencies
#   scripts/bootstrap.sh ds31     .venv: plus the PyDolphinScheduler SDK for DolphinScheduler 3.1.x
#   scripts/bootstrap.sh ds32     .venv: plus the PyDolphinScheduler SDK for DolphinScheduler 3.2.x
#   scripts/bootstrap.sh test     .venv: plus pytest, hypothesis, chdb and the 3.1.x SDK (the server the tests run)
#   scripts/bootstrap.sh test-ds32  .venv-ds32: the tests' environment with the 3.2.x SDK (its offline tests)
# A first install takes a minute or two: it prints what pip is doing every few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 13)))'; then
    echo "cohortflow needs Python 3.11 or 3.12 (found $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
    exit 2
fi
venv=.venv
case "${1:-}" in
    "") extra="" ;;
    ds31) extra="[ds31]" ;;
    ds32) extra="[ds32]" ;;
    test) extra="[test,ds31]" ;;
    test-ds32) extra="[ds32]"; venv=.venv-ds32 ;;  # plus pytest below (its offline tests need no more)
    *) echo "usage: $0 [ds31|ds32|test|test-ds32]" >&2; exit 2 ;;
esac
if [ ! -x "$venv/bin/python" ]; then
    echo "creating $venv with $("$PY" --version 2>&1)" >&2
    "$PY" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
log=$venv/pip-install.log
echo "installing cohortflow$extra and its dependencies into $venv (log: $log)" >&2
start=$SECONDS
"$venv/bin/python" -m pip install --disable-pip-version-check -e ".$extra" >"$log" 2>&1 &
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
if [ "$venv" = .venv-ds32 ]; then
    pytest_pin=$("$venv/bin/python" -c 'import tomllib; print(next(r for r in tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["test"] if r.startswith("pytest")))')
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "$pytest_pin" >>"$log" 2>&1
fi
echo "installed in $((SECONDS - start))s: $("$venv/bin/cohortflow" --version)" >&2
