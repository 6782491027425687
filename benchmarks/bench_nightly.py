"""The demo-size nightly runs on DuckDB and on PostgreSQL, as a ratio.

    .venv/bin/python benchmarks/bench_nightly.py [--users 2000] [--days 14]

Needs a PostgreSQL server: COHORTFLOW_TEST_PG_URL and COHORTFLOW_TEST_PG_PASSWORD
(``eval "$(scripts/pgcluster.sh env)"`` after ``scripts/pgcluster.sh start``).
Each engine runs ``cohortflow backfill`` over every arrival date of the same
generated logs in its own process; the peak memory is that process's (the
PostgreSQL server's own memory is not included).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))
from _common import measure_wait4  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--days", type=int, default=14)
    args = ap.parse_args()
    url, password = os.environ.get("COHORTFLOW_TEST_PG_URL"), os.environ.get("COHORTFLOW_TEST_PG_PASSWORD")
    if not url or not password:
        raise SystemExit("set COHORTFLOW_TEST_PG_URL and COHORTFLOW_TEST_PG_PASSWORD (scripts/pgcluster.sh env)")

    from cohortflow.demo import DemoSpec, generate
    from cohortflow.demo_project import arrival_dates, write_demo_config

    cli = str(Path(sys.executable).parent / "cohortflow")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = root / "duckdb"
        cfg_path = write_demo_config(base)
        landing = base / "landing" / "ark"
        generate(DemoSpec(users=args.users, days=args.days, start_date=dt.date(2026, 11, 1), seed=7), landing)
        dates = arrival_dates(landing)
        pg_dir = root / "postgres"
        shutil.copytree(base, pg_dir)
        db = "bench_" + uuid.uuid4().hex[:8]
        admin = sa.create_engine(sa.make_url(url).set(password=password), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'create database "{db}"'))
        pg_env = {
            "COHORTFLOW_WAREHOUSE__URL": sa.make_url(url).set(database=db).render_as_string(hide_password=True),
            "COHORTFLOW_WAREHOUSE__PASSWORD": password,
        }
        try:
            argv = ["backfill", "--start", str(dates[0]), "--end", str(dates[-1])]
            results["duckdb"] = measure_wait4([cli, *argv, "--config", str(cfg_path)])
            results["postgres"] = measure_wait4([cli, *argv, "--config", str(pg_dir / "cohortflow.yml")], env=pg_env)
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'drop database if exists "{db}" with (force)'))
            admin.dispose()
    print(f"nightly runs of {len(dates)} dates, {args.users:,} users (cohortflow backfill)")
    print(f"{'engine':10} {'wall s':>8} {'s/night':>8} {'peak MiB':>9}")
    for name, m in results.items():
        print(f"{name:10} {m['seconds']:8.1f} {m['seconds'] / len(dates):8.2f} {m['peak_mib']:9.0f}")
    d, p = results["duckdb"], results["postgres"]
    print(f"ratio postgres / duckdb: time {p['seconds'] / d['seconds']:.2f}x, client peak memory {p['peak_mib'] / d['peak_mib']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
