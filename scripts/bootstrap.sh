#!/usr/bin/env bash
# Create a virtualenv (if missing) and install cohortflow into it.
#   scripts/bootstrap.sh          .venv: runtime dependencies
#   scripts/bootstrap.sh ds31     .venv: plus the PyDolphinScheduler SDK for DolphinScheduler 3.1.x
#   scripts/bootstrap.sh ds32     .venv: plus the PyDolphinScheduler SDK for DolphinScheduler 3.2.x
#   scripts/bootstrap.sh test     .venv: plus pytest, hypothesis, chdb and the 3.1.x SDK (the server the tests run)
#   scripts/bootstrap.sh test-ds32  .venv-ds32: the tests' environment with the 3.2.x SDK (its offline tests)
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
[ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
log=$venv/pip-install.log
if ! "$venv/bin/python" -m pip install --disable-pip-version-check -e ".$extra" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "pip install failed; full log in $log" >&2
    exit 1
fi
if [ "$venv" = .venv-ds32 ]; then
    pytest_pin=$("$venv/bin/python" -c 'import tomllib; print(next(r for r in tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["test"] if r.startswith("pytest")))')
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "$pytest_pin" >>"$log" 2>&1
fi
"$venv/bin/cohortflow" --version >/dev/null
