"""Day retention against ClickHouse's ``retention()`` function (chdb) on a realistic demo data set.

The demo generator writes 14 days of canonical logs for 3,000 people (with
retries, late uploads, late identity links, malformed lines, local midnight
events) in Asia/Shanghai; the ingest loads them, and ``retention_cohorts``
is built for the whole range (first_time, mode on, any activity). The staged
events are exported to Parquet, and ClickHouse computes the same triangle
from them with its own ``retention(cond_0, ..., cond_H)`` aggregate: one
condition per day after the user's first active day. Both must be equal.
"""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from cohortflow.analyses import load_definitions, model_params
from cohortflow.config import load_config
from cohortflow.demo import DemoSpec, generate
from cohortflow.ingest import load_day
from cohortflow.warehouse import Warehouse, date_range
from tests.conftest import build_fresh, write_config

chdb = pytest.importorskip("chdb")

TZ = "Asia/Shanghai"
START = dt.date(2026, 11, 1)
DAYS = 14
HORIZON = 13
MODELS = ("stg_identities", "stg_events", "segment_membership_daily", "retention_cohorts")


def clickhouse_day_retention(parquet: str, end: dt.date) -> dict[tuple[dt.date, int], tuple[int, int]]:
    """(cohort_date, k) -> (cohort users, retained users), by ClickHouse's retention() aggregate."""
    conditions = ", ".join(f"d.event_date = f.cohort_date + {k}" for k in range(HORIZON + 1))
    sql = f"""
        with
            days as (
                select distinct user_id, event_date
                from file('{parquet}', Parquet)
                where is_activity and event_date <= toDate('{end.isoformat()}')
            ),
            firsts as (
                select user_id, min(event_date) as cohort_date from days group by user_id
            ),
            per_user as (
                select f.user_id as user_id, f.cohort_date as cohort_date, retention({conditions}) as r
                from days as d
                inner join firsts as f on d.user_id = f.user_id
                group by f.user_id, f.cohort_date
            )
        select toString(cohort_date), count() as users, sumForEach(r) as retained
        from per_user
        group by cohort_date
        order by cohort_date
        format TSV
    """
    out = {}
    for line in str(chdb.query(sql)).strip().splitlines():
        cohort, users, retained = line.split("\t")
        cohort_date = dt.date.fromisoformat(cohort)
        for k, n in enumerate(int(x) for x in retained.strip("[]").split(",")):
            out[(cohort_date, k)] = (int(users), n)
    return out


def test_day_retention_equals_clickhouse(tmp_path):
    project = tmp_path / "proj"
    cfg_path = write_config(
        project,
        timezone=TZ,
        sources=[{"name": "app", "format": "canonical", "path": "events"}],
        analyses={"retention": [{"name": "day_all", "period": "day", "horizon": HORIZON}]},
    )
    cfg = load_config(cfg_path, environ={})
    generate(DemoSpec(users=3000, days=DAYS, start_date=START, timezone=TZ, fmt="canonical"), project / "landing" / "events")
    wh = Warehouse(cfg)
    try:
        wh.bootstrap()
        dates = date_range(START, START + dt.timedelta(days=DAYS - 1))
        for d in dates:
            load_day(wh, cfg, d, run_id=f"chdb-{d}")
        start, end = dates[0], dates[-1]
        params = {**model_params(cfg), "start_date": start, "end_date": end}
        with wh.begin() as conn:
            load_definitions(wh, conn, cfg)
            build_fresh(wh, conn, params, MODELS)
            staged = wh.scalar(conn, "select count(*) from models.stg_events")
            parquet = str(tmp_path / "stg_events.parquet")
            conn.connection.driver_connection.execute(
                f"copy (select user_id, event_date, is_activity from models.stg_events) to '{parquet}' (format parquet)"
            )
            rows = wh.execute(
                conn,
                "select cohort_date, period_number, cohort_users, retained_users, is_complete "
                "from models.retention_cohorts where retention_name = 'day_all' and breakdown_value = 'all'",
            ).fetchall()
    finally:
        wh.dispose()
    assert staged >= 100_000, f"only {staged} staged events: the cross-check wants at least 100,000"

    reference = clickhouse_day_retention(parquet, end)
    ours = {(r[0], r[1]): (r[2], r[3]) for r in rows}
    # ClickHouse gives every k up to the horizon; the model has the periods begun by the as-of date.
    expected = {key: v for key, v in reference.items() if start <= key[0] and key[0] + dt.timedelta(days=key[1]) <= end}
    assert ours == expected
    assert len(ours) == sum(min(HORIZON, (end - c).days) + 1 for c in date_range(start, end))
    # Completeness follows the as-of date: period k of cohort c is final once c + k + late_arrival_days <= end.
    late = dt.timedelta(days=cfg.ingest.late_arrival_days)
    flags = {(r[0], r[1]): r[4] for r in rows}
    assert flags == {(c, k): c + dt.timedelta(days=k) + late <= end for c, k in flags}
    assert any(flags.values()) and not all(flags.values())
