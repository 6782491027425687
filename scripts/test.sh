#!/usr/bin/env bash
# The whole test suite on a fresh machine: install (with Debian's Chromium for the report's
# browser tests), start a throwaway PostgreSQL on loopback, run pytest on DuckDB and PostgreSQL,
# stop the server. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh test
scripts/chromium.sh
scripts/pgcluster.sh start
trap 'scripts/pgcluster.sh stop' EXIT
eval "$(scripts/pgcluster.sh env)"
.venv/bin/python -m pytest "$@"
