"""The demo-size nightly runs on DuckDB and on PostgreSQL, as a ratio.

    .venv/bin/python benchmarks/bench_nightly.py [--users 2000] [--days 14] [--runs 3] [--workdir DIR]

Needs a PostgreSQL server: COHORTFLOW_TEST_PG_URL and COHORTFLOW_TEST_PG_PASSWORD
(``eval "$(scripts/pgcluster.sh env)"`` after ``scripts/pgcluster.sh start``).
Each engine runs ``cohortflow backfill`` over every arrival date of the same
generated logs in its own process, on a fresh warehouse (a new database on
PostgreSQL) each run, ``--runs`` times, the engines taking turns; the peak memory
is that process's (the PostgreSQL server's own memory is not included).
``--users`` takes comma-separated sizes (e.g. ``1000,2000,4000``) for a scaling
table at the end. The logs of each size are generated into ``--workdir`` and
reused by later runs (default: a temporary folder).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))
from _common import cleanup_on_sigterm, demo_logs, demo_project, measure_wait4, print_medians, print_ratio, print_scaling  # noqa: E402
from _common import size_arguments, take_turns  # noqa: E402


def _backfill(project: Path, logs: Path, argv: list[str], env: dict[str, str] | None = None) -> dict:
    """One run of ``cohortflow backfill`` on a fresh project (and, with ``env``, the warehouse it names)."""
    cli = str(Path(sys.executable).parent / "cohortflow")
    cfg_path = demo_project(project, logs)
    m = measure_wait4([cli, *argv, "--config", str(cfg_path)], env=env)
    return {"seconds": m["seconds"], "peak_rss_mb": m["peak_mib"]}


def _postgres_backfill(url: str, password: str, project: Path, logs: Path, argv: list[str]) -> dict:
    """One run on PostgreSQL, in a database of its own (dropped afterwards)."""
    db = "bench_" + uuid.uuid4().hex[:8]
    admin = sa.create_engine(sa.make_url(url).set(password=password), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'create database "{db}"'))
    env = {
        "COHORTFLOW_WAREHOUSE__URL": sa.make_url(url).set(database=db).render_as_string(hide_password=True),
        "COHORTFLOW_WAREHOUSE__PASSWORD": password,
    }
    try:
        return _backfill(project, logs, argv, env)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'drop database if exists "{db}" with (force)'))
        admin.dispose()


def _bench_size(workdir: Path, users: int, days: int, runs: int, url: str, password: str) -> tuple[int, int, dict[str, float]]:
    from cohortflow.demo_project import arrival_dates

    logs, counts = demo_logs(workdir / f"u{users}-d{days}", users, days)
    dates = arrival_dates(logs)
    argv = ["backfill", "--start", str(dates[0]), "--end", str(dates[-1])]
    print(f"== {users:,} users: nightly runs of {len(dates)} dates, {counts['events']:,} events (cohortflow backfill)", flush=True)
    results = take_turns(runs, {
        "duckdb": lambda: _backfill(workdir / "run-duckdb", logs, argv),
        "postgres": lambda: _postgres_backfill(url, password, workdir / "run-postgres", logs, argv),
    })
    times = print_medians(results)
    ratio = print_ratio(times, "postgres", "duckdb")
    medians = {name: statistics.median(t) for name, t in times.items()}
    peak = {name: max(r["peak_rss_mb"] for r in rs) for name, rs in results.items()}
    print(f"per night (median / {len(dates)} dates): duckdb {medians['duckdb'] / len(dates):.2f} s, "
          f"postgres {medians['postgres'] / len(dates):.2f} s")
    print(f"ratio postgres / duckdb: time {ratio:.2f}x, client peak memory {peak['postgres'] / peak['duckdb']:.2f}x")
    return users, counts["events"], medians


def main() -> int:
    ap = size_arguments(__doc__.splitlines()[0], 2000, 14, None, "keep the generated logs of each size here for later runs")
    args = ap.parse_args()
    cleanup_on_sigterm()
    url, password = os.environ.get("COHORTFLOW_TEST_PG_URL"), os.environ.get("COHORTFLOW_TEST_PG_PASSWORD")
    if not url or not password:
        raise SystemExit("set COHORTFLOW_TEST_PG_URL and COHORTFLOW_TEST_PG_PASSWORD (scripts/pgcluster.sh env)")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        rows = [_bench_size(workdir, users, args.days, args.runs, url, password) for users in args.users]
    if len(rows) > 1:
        print_scaling(rows, [("postgres", "duckdb")])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
