#!/usr/bin/env bash
# The main job on the embedded default: install, generate realistic logs, run every night on DuckDB.
# Extra arguments go to `cohortflow demo` (e.g. --users 20000 --days 30 --format segment).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/cohortflow demo --dir demo --force "$@"
