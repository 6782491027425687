"""Benchmark: the day-retention triangle of ``retention_cohorts`` on DuckDB vs ClickHouse (chdb), same data.

    .venv/bin/python benchmarks/bench_retention.py [--users 500000] [--days 30] [--horizon 30] [--workdir DIR]

Prepares a DuckDB warehouse with synthetic activity (each user starts on a
random day, is active on 40 % of the later days, 1-5 events per active day:
about 21 events per user, ~10.5M for 500k users), then times, each in its
own process (peak memory is per process):

* duckdb: the ``retention_cohorts`` build (first_time, mode on, any activity)
  exactly as the nightly job runs it, from the staged events view;
* chdb: ClickHouse's ``retention()`` aggregate on the same staged events,
  from a MergeTree table loaded beforehand (and, for reference, straight from
  the Parquet export).

Both triangles are compared cell by cell; the ratio duckdb / chdb is printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

START = dt.date(2026, 1, 1)


def _config(workdir: Path, horizon: int):
    from cohortflow.config import load_config

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.conftest import write_config

    path = write_config(
        workdir / "proj",
        sources=[{"name": "app", "format": "canonical", "path": "events"}],
        analyses={"retention": [{"name": "day_all", "period": "day", "horizon": horizon}]},
    )
    return load_config(path, environ={})


def prepare(workdir: Path, users: int, days: int, horizon: int) -> None:
    import sqlalchemy as sa

    from cohortflow.analyses import load_definitions, model_params
    from cohortflow.models import load_models, model_statements
    from cohortflow.warehouse import Warehouse

    cfg = _config(workdir, horizon)
    wh = Warehouse(cfg)
    wh.bootstrap()
    end = START + dt.timedelta(days=days - 1)
    t0 = time.monotonic()
    with wh.begin() as conn:
        conn.execute(sa.text("delete from raw.events"))
        conn.execute(
            sa.text(
                """
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
                    'bench', 0
                from events
                """
            ),
            {"users": users, "days": days, "start": START},
        )
        n = conn.execute(sa.text("select count(*) from raw.events")).scalar()
        load_definitions(wh, conn, cfg)
        models = load_models()
        params = {**model_params(cfg), "start_date": START, "end_date": end}
        for name in ("stg_identities", "stg_events", "segment_membership_daily"):
            for stmt in model_statements(models[name], wh.dialect):
                conn.execute(sa.text(stmt), params if ":" in stmt else {})
        conn.connection.driver_connection.execute(
            f"copy (select user_id, event_date, is_activity from models.stg_events) "
            f"to '{workdir / 'stg_events.parquet'}' (format parquet)"
        )
    wh.dispose()
    print(f"prepared {n:,} events for {users:,} users over {days} days in {time.monotonic() - t0:.1f}s")


def run_duckdb(workdir: Path, days: int, horizon: int) -> dict:
    import sqlalchemy as sa

    from cohortflow.analyses import model_params
    from cohortflow.models import load_models, model_statements
    from cohortflow.warehouse import Warehouse

    cfg = _config(workdir, horizon)
    wh = Warehouse(cfg)
    end = START + dt.timedelta(days=days - 1)
    model = load_models()["retention_cohorts"]
    params = {**model_params(cfg), "start_date": START, "end_date": end}
    with wh.begin() as conn:
        conn.execute(sa.text("drop table if exists models.retention_cohorts"))
    t0 = time.monotonic()
    with wh.begin() as conn:
        for stmt in model_statements(model, wh.dialect):
            conn.execute(sa.text(stmt), params if ":" in stmt else {})
    seconds = time.monotonic() - t0
    with wh.begin() as conn:
        rows = conn.execute(
            sa.text("select cohort_date, period_number, cohort_users, retained_users from models.retention_cohorts")
        ).fetchall()
    wh.dispose()
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
    from chdb import session

    end = START + dt.timedelta(days=days - 1)
    parquet = workdir / "stg_events.parquet"
    sess = session.Session(str(workdir / "chdb"))
    if source == "table":
        sess.query("drop table if exists default.stg_events")
        sess.query(
            "create table default.stg_events (user_id String, event_date Date, is_activity Bool) "
            "engine = MergeTree order by (user_id, event_date)"
        )
        sess.query(f"insert into default.stg_events select user_id, event_date, is_activity from file('{parquet}', Parquet)")
        src = "default.stg_events"
    else:
        src = f"file('{parquet}', Parquet)"
    t0 = time.monotonic()
    out = str(sess.query(_clickhouse_sql(src, horizon, end)))
    seconds = time.monotonic() - t0
    sess.close()
    return {"seconds": seconds, "cells": _cells(out, horizon, end)}


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it does not carry over the parent's across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(args) -> None:
    workdir = Path(args.workdir)
    if args.child == "duckdb":
        result = run_duckdb(workdir, args.days, args.horizon)
    else:
        result = run_chdb(workdir, args.days, args.horizon, args.child.split("-", 1)[1])
    result["peak_rss_mb"] = _peak_rss_mb()
    (workdir / f"result-{args.child}.json").write_text(json.dumps(result))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=500_000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--horizon", type=int, default=30)
    p.add_argument("--workdir", default="target/bench_retention")
    p.add_argument("--skip-prepare", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if args.child:
        _child(args)
        return 0
    if not args.skip_prepare:
        prepare(workdir, args.users, args.days, args.horizon)
    results = {}
    for child in ("duckdb", "chdb-table", "chdb-parquet"):
        cmd = [sys.executable, __file__, "--child", child, "--workdir", str(workdir),
               "--days", str(args.days), "--horizon", str(args.horizon)]
        subprocess.run(cmd, check=True)
        results[child] = json.loads((workdir / f"result-{child}.json").read_text())
        print(f"{child:13s} {results[child]['seconds']:7.2f}s  peak RSS {results[child]['peak_rss_mb']:,.0f} MB")
    same = results["duckdb"]["cells"] == results["chdb-table"]["cells"] == results["chdb-parquet"]["cells"]
    print(f"triangles equal: {same} ({len(results['duckdb']['cells'])} cells)")
    for ref in ("chdb-table", "chdb-parquet"):
        print(f"duckdb / {ref}: {results['duckdb']['seconds'] / results[ref]['seconds']:.2f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
