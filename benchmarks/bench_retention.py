"""Benchmark: the day-retention triangle of ``retention_cohorts`` on DuckDB vs ClickHouse (chdb), same data.

    .venv/bin/python benchmarks/bench_retention.py [--users 500000[,...]] [--days 30] [--horizon 30] [--runs 3] [--workdir DIR]

Prepares a DuckDB warehouse with synthetic activity (each user starts on a
random day, is active on 40 % of the later days, 1-5 events per active day:
about 21 events per user, ~10.5M for 500k users), then times, each in its
own process (peak memory is per process):

* duckdb: the ``retention_user_cohorts`` and ``retention_cohorts`` builds (first_time, mode on, any activity)
  exactly as the nightly job runs it, from the staged events view;
* chdb: ClickHouse's ``retention()`` aggregate on the same staged events,
  from a MergeTree table loaded beforehand (and, for reference, straight from
  the Parquet export).

Both triangles are compared cell by cell; the ratio duckdb / chdb is printed.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_config, engine_arguments, prepare_warehouse, run_engines, time_chdb_query, time_model_build  # noqa: E402

START = dt.date(2026, 1, 1)

EVENTS_SQL = """
                insert into raw.events
                with
                    people as (select u, hash(u) % :days as first_day from range(:users) as t(u)),
                    active as (
                        select u, first_day + d as day_no
                        from people, range(0, :days) as r(d)
                        where first_day + d < :days and (d = 0 or hash(u * 31 + d) % 100 < 40)
                    ),
                    events as (
                        select u, day_no, e
                        from active, range(0, 5) as r(e)
                        where e <= hash(u * 7 + day_no) % 5
                    )
                select
                    'e' || u || '-' || day_no || '-' || e,
                    'open',
                    'u' || u,
                    cast(:start as timestamp) + to_days(cast(day_no as integer)) + to_minutes(cast(60 + e * 97 as bigint)),
                    cast(:start as date) + cast(day_no as integer),
                    cast(:start as timestamp) + to_days(cast(day_no as integer)) + to_minutes(cast(60 + e * 97 as bigint)),
                    'canonical', null, null, null, null, null, '{}', true, null, null,
                    cast(:start as date) + cast(day_no as integer),
                    'bench', 0, 'app'
                from events
"""


def _config(workdir: Path, horizon: int):
    return bench_config(workdir, {"retention": [{"name": "day_all", "period": "day", "horizon": horizon}]})


def prepare(workdir: Path, users: int, days: int, horizon: int) -> None:
    prepare_warehouse(
        _config(workdir, horizon),
        EVENTS_SQL,
        {"users": users, "days": days, "start": START},
        START,
        START + dt.timedelta(days=days - 1),
        "select user_id, event_date, is_activity from models.stg_events",
        workdir / "stg_events.parquet",
    )


def run_duckdb(workdir: Path, days: int, horizon: int) -> dict:
    seconds, rows = time_model_build(
        _config(workdir, horizon),
        ("retention_user_cohorts", "retention_cohorts"),
        START,
        START + dt.timedelta(days=days - 1),
        "select cohort_date, period_number, cohort_users, retained_users from models.retention_cohorts",
    )
    return {"seconds": seconds, "cells": {f"{r[0]}|{r[1]}": [r[2], r[3]] for r in rows}}


def _clickhouse_sql(source: str, horizon: int, end: dt.date) -> str:
    conditions = ", ".join(f"event_date = cohort_date + {k}" for k in range(horizon + 1))
    return f"""
        with
            days as (
                select distinct user_id, event_date from {source}
                where is_activity and event_date <= toDate('{end.isoformat()}')
            ),
            per_user as (
                select user_id, min(event_date) over (partition by user_id) as cohort_date, event_date from days
            )
        select toString(cohort_date), count() as users, sumForEach(r) as retained
        from (select user_id, cohort_date, retention({conditions}) as r
              from per_user group by user_id, cohort_date)
        group by cohort_date
        format TSV
    """


def _cells(text: str, horizon: int, end: dt.date) -> dict:
    cells = {}
    for line in text.strip().splitlines():
        cohort, users, retained = line.split("\t")
        c = dt.date.fromisoformat(cohort)
        for k, n in enumerate(int(x) for x in retained.strip("[]").split(",")):
            if c + dt.timedelta(days=k) <= end:
                cells[f"{c}|{k}"] = [int(users), n]
    return cells


def run_chdb(workdir: Path, days: int, horizon: int, source: str) -> dict:
    end = START + dt.timedelta(days=days - 1)
    seconds, out = time_chdb_query(
        workdir,
        source,
        "(user_id String, event_date Date, is_activity Bool) engine = MergeTree order by (user_id, event_date)",
        lambda src: _clickhouse_sql(src, horizon, end),
    )
    return {"seconds": seconds, "cells": _cells(out, horizon, end)}


def main() -> int:
    p = engine_arguments(__doc__, 500_000, "target/bench_retention")
    p.add_argument("--horizon", type=int, default=30)
    args = p.parse_args()

    def child(workdir: Path) -> dict:
        if args.child == "duckdb":
            return run_duckdb(workdir, args.days, args.horizon)
        return run_chdb(workdir, args.days, args.horizon, args.child.split("-", 1)[1])

    child_args = ["--days", str(args.days), "--horizon", str(args.horizon)]
    return run_engines(
        __file__, args, lambda workdir, users: prepare(workdir, users, args.days, args.horizon), child,
        ["duckdb", "chdb-table", "chdb-parquet"], child_args, "triangles",
    )


if __name__ == "__main__":
    sys.exit(main())
