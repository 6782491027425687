"""Benchmark: ``funnel_conversion_daily`` on DuckDB vs ClickHouse windowFunnel (chdb), same data.

    .venv/bin/python benchmarks/bench_funnel.py [--users 1000000[,...]] [--days 30] [--runs 3] [--workdir DIR]

Prepares a DuckDB warehouse with synthetic sessions written directly with SQL
(each user is active on ~30 % of the days, 1-9 events per active day, about
1.5 events per user and day: ~45M events for 1M users x 30 days; the day
opens with ``app_start``, then a mix of ``view_item``, ``add_to_cart``,
``checkout``, ``pay_order``, ``search``, ``share`` and more ``app_start``;
about 3 % of the events share their millisecond with the previous one), then
times, each in its own process (peak memory is per process):

* duckdb: the ``funnel_user_steps`` and ``funnel_conversion_daily`` builds of the 5-step funnel
  app_start -> view_item -> add_to_cart -> checkout -> pay_order with a
  1-day window, for every date, exactly as the nightly job runs it, from the
  staged events view;
* chdb: ``windowFunnel(86400000, 'strict_once')`` over the same staged events,
  once per (user, entry date): each event is repeated for the entry dates
  whose window it can reach (``arrayJoin``) and the first condition is
  restricted to E, from a MergeTree table loaded beforehand (and, for
  reference, straight from the Parquet export).

The users reaching each step per entry date are compared; the ratio
duckdb / chdb is printed.

With ``--only postgres --only postgres-chains --only duckdb`` (and ``scripts/pgcluster.sh start``;
``eval "$(scripts/pgcluster.sh env)"``), the same two builds on PostgreSQL, on a fresh database holding a copy of
the DuckDB warehouse's ``raw.events`` (copied and analysed before the clock starts): ``postgres`` as it runs
(the pass of ``funnel_user_steps.postgres.sql`` for this funnel of distinct step events), ``postgres-chains``
with that override switched off (the chain CTEs every engine shares).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_config, engine_arguments, prepare_warehouse, run_engines, time_chdb_query, time_model_build  # noqa: E402

START = dt.date(2026, 11, 1)
STEPS = ["app_start", "view_item", "add_to_cart", "checkout", "pay_order"]
WINDOW_SECONDS = 86400

EVENTS_SQL = """
                insert into raw.events
                with
                    active as (
                        select u, d, 1 + hash(u * 7919 + d) % 9 as n, hash(u * 104729 + d) % 80000000 as base_ms
                        from range(:users) as t(u), range(0, :days) as r(d)
                        where hash(u * 31 + d) % 100 < 30
                    ),
                    events as (
                        select u, d, j, base_ms, hash(u * 131 + d * 17 + j) % 100 as pick
                        from active, range(0, 9) as r(j)
                        where j < n
                    ),
                    named as (
                        select
                            u, d, j,
                            case
                                when j = 0 or pick < 10 then 'app_start'
                                when pick < 45 then 'view_item'
                                when pick < 60 then 'add_to_cart'
                                when pick < 68 then 'checkout'
                                when pick < 73 then 'pay_order'
                                when pick < 90 then 'search'
                                else 'share'
                            end as event_name,
                            -- ~3 % of the events take the previous event's millisecond
                            base_ms + (j - case when j > 0 and pick % 33 = 0 then 1 else 0 end) * 47123 as ms
                        from events
                    )
                select
                    'e' || u || '-' || d || '-' || j,
                    event_name,
                    'u' || u,
                    cast(:start as timestamp) + to_days(cast(d as integer)) + to_milliseconds(ms),
                    cast(:start as date) + cast(d as integer),
                    cast(:start as timestamp) + to_days(cast(d as integer)) + to_milliseconds(ms),
                    'canonical', null, null, null, null, null, '{}', true, null, null,
                    cast(:start as date) + cast(d as integer),
                    'bench', 0, 'app'
                from named
"""


def _config(workdir: Path):
    funnel = {"name": "purchase", "steps": [{"event": s} for s in STEPS], "window_seconds": WINDOW_SECONDS}
    return bench_config(workdir, {"funnels": [funnel]})


def prepare(workdir: Path, users: int, days: int) -> None:
    end = START + dt.timedelta(days=days - 1)
    prepare_warehouse(
        _config(workdir),
        EVENTS_SQL,
        {"users": users, "days": days, "start": START},
        START,
        end,
        "select user_id, cast(extract(epoch from event_time) * 1000 as bigint) as event_ms, event_name, event_date "
        "from models.stg_events",
        workdir / "stg_events.parquet",
    )


def run_duckdb(workdir: Path, days: int, memory_limit: str | None = None) -> dict:
    seconds, rows = time_model_build(
        _config(workdir),
        ("funnel_user_steps", "funnel_conversion_daily"),
        START,
        START + dt.timedelta(days=days - 1),
        "select entry_date, step_index, reached_users from models.funnel_conversion_daily where breakdown_value = 'all'",
        memory_limit,
    )
    return {"seconds": seconds, "cells": {f"{r[0]}|{r[1]}": r[2] for r in rows}}


def run_postgres(workdir: Path, days: int, chains_only: bool) -> dict:
    import duckdb
    import pyarrow as pa
    import sqlalchemy as sa

    from cohortflow import models
    from cohortflow.config import load_config
    from cohortflow.warehouse import Warehouse

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.conftest import write_config

    url, password = os.environ.get("COHORTFLOW_TEST_PG_URL"), os.environ.get("COHORTFLOW_TEST_PG_PASSWORD")
    if not url or not password:
        raise SystemExit('set COHORTFLOW_TEST_PG_URL and COHORTFLOW_TEST_PG_PASSWORD: scripts/pgcluster.sh start; '
                         'eval "$(scripts/pgcluster.sh env)"')
    end = START + dt.timedelta(days=days - 1)
    db = "bench_" + uuid.uuid4().hex[:8]
    admin = sa.create_engine(sa.make_url(url).set(password=password), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'create database "{db}"'))
    try:
        funnel = {"name": "purchase", "steps": [{"event": s} for s in STEPS], "window_seconds": WINDOW_SECONDS}
        path = write_config(
            workdir / "proj-postgres",
            sources=[{"name": "app", "format": "canonical", "path": "events"}],
            analyses={"funnels": [funnel]},
            warehouse={"url": sa.make_url(url).set(database=db).render_as_string(hide_password=True)},
        )
        cfg = load_config(path, environ={"COHORTFLOW_WAREHOUSE__PASSWORD": password})
        wh = Warehouse(cfg)
        wh.bootstrap()
        duck = duckdb.connect(str(workdir / "proj" / "target" / "warehouse.duckdb"), read_only=True)
        with wh.begin() as conn:
            for batch in duck.sql("select * from raw.events").to_arrow_reader(500_000):
                wh.load_arrow(conn, "raw.events", pa.Table.from_batches([batch]))
        duck.close()
        with wh.begin() as conn:
            conn.execute(sa.text("analyze raw.events"))
        wh.dispose()
        models.build_models(Warehouse(cfg), cfg, START, end, exact_range=True, only={"stg_events", "segment_membership_daily"})
        if chains_only:
            loaded = models.load_models()
            without = {**loaded, "funnel_user_steps": dataclasses.replace(
                loaded["funnel_user_steps"], overrides=tuple(o for o in loaded["funnel_user_steps"].overrides if o[0] != "postgres"))}
            models.load_models = lambda: without
        seconds, rows = time_model_build(
            cfg,
            ("funnel_user_steps", "funnel_conversion_daily"),
            START,
            end,
            "select entry_date, step_index, reached_users from models.funnel_conversion_daily where breakdown_value = 'all'",
        )
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'drop database if exists "{db}" with (force)'))
        admin.dispose()
    return {"seconds": seconds, "cells": {f"{r[0]}|{r[1]}": r[2] for r in rows}}


def _clickhouse_sql(source: str, end: dt.date) -> str:
    conditions = ", ".join([f"event_name = '{STEPS[0]}' and event_date = entry_date"] + [f"event_name = '{s}'" for s in STEPS[1:]])
    names = ", ".join(f"'{s}'" for s in STEPS)
    reach = -(-WINDOW_SECONDS // 86400)
    return f"""
        select toString(entry_date), level, count() from (
            select user_id, entry_date,
                   windowFunnel({WINDOW_SECONDS * 1000}, 'strict_once')(toUInt64(event_ms), {conditions}) as level
            from (
                select user_id, event_ms, event_name, event_date,
                       arrayJoin(arrayMap(k -> event_date - k, range({reach + 1}))) as entry_date
                from {source}
                where event_name in ({names})
            )
            where entry_date between toDate('{START.isoformat()}') and toDate('{end.isoformat()}')
            group by user_id, entry_date
        )
        where level > 0
        group by entry_date, level
        format TSV
    """


def _cells(text: str) -> dict:
    """Users reaching step k (level >= k) per entry date, from the level distribution."""
    levels: dict[str, dict[int, int]] = {}
    for line in text.strip().splitlines():
        day, level, users = line.split("\t")
        levels.setdefault(day, {})[int(level)] = int(users)
    cells = {}
    for day, counts in levels.items():
        for k in range(1, len(STEPS) + 1):
            cells[f"{day}|{k}"] = sum(n for level, n in counts.items() if level >= k)
    return cells


def run_chdb(workdir: Path, days: int, source: str) -> dict:
    end = START + dt.timedelta(days=days - 1)
    seconds, out = time_chdb_query(
        workdir,
        source,
        "(user_id String, event_ms Int64, event_name LowCardinality(String), event_date Date) "
        "engine = MergeTree order by (user_id, event_ms)",
        lambda src: _clickhouse_sql(src, end),
    )
    return {"seconds": seconds, "cells": _cells(out)}


def main() -> int:
    p = engine_arguments(__doc__, 1_000_000, "target/bench_funnel")
    p.add_argument("--only", choices=["duckdb", "chdb-table", "chdb-parquet", "postgres", "postgres-chains"], action="append")
    p.add_argument("--memory-limit", help="DuckDB memory_limit for the model build, e.g. 3GB (default: DuckDB's)")
    args = p.parse_args()

    def child(workdir: Path) -> dict:
        if args.child == "duckdb":
            return run_duckdb(workdir, args.days, args.memory_limit)
        if args.child.startswith("postgres"):
            return run_postgres(workdir, args.days, chains_only=args.child == "postgres-chains")
        return run_chdb(workdir, args.days, args.child.split("-", 1)[1])

    child_args = ["--days", str(args.days)] + (["--memory-limit", args.memory_limit] if args.memory_limit else [])
    children = args.only or ["duckdb", "chdb-table", "chdb-parquet"]
    return run_engines(
        __file__, args, lambda workdir, users: prepare(workdir, users, args.days), child, children, child_args,
        "users per entry date and step",
    )


if __name__ == "__main__":
    sys.exit(main())
