#!/usr/bin/env bash
# The whole test suite on a fresh machine: install, start a throwaway PostgreSQL and a
# single-node Trino on loopback, run pytest on DuckDB, PostgreSQL and Trino, stop the
# servers. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh test
scripts/pgcluster.sh start
trap 'scripts/pgcluster.sh stop' EXIT
scripts/trino.sh start
trap 'scripts/trino.sh stop; scripts/pgcluster.sh stop' EXIT
eval "$(scripts/pgcluster.sh env)"
eval "$(scripts/trino.sh env)"
.venv/bin/python -m pytest "$@"
