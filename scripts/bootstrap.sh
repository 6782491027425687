#!/usr/bin/env bash
# Create .venv (if missing) and install cohortflow into it, with the test extras when asked.
#   scripts/bootstrap.sh          runtime dependencies
#   scripts/bootstrap.sh test     plus pytest, hypothesis, chdb
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 13)))'; then
    echo "cohortflow needs Python 3.11 or 3.12 (found $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
    exit 2
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
extra=""
[ "${1:-}" = test ] && extra="[test]"
log=.venv/pip-install.log
if ! .venv/bin/python -m pip install --disable-pip-version-check -e ".$extra" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "pip install failed; full log in $log" >&2
    exit 1
fi
.venv/bin/cohortflow --version >/dev/null
