"""Publish: make the rebuilt partitions visible in ``reports`` at once, then snapshot.

All published tables are updated in a single transaction (delete the rebuilt
date range, insert it from ``models``), so a reader sees either the previous
complete state or the new one. Before that, cheap invariants of the model
outputs are checked; a violation stops the publish. After the commit each
published table is written as a dated Parquet snapshot.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

from cohortflow.config import Config
from cohortflow.models import Model, built_ranges, published_models
from cohortflow.warehouse import Warehouse


class PublishError(Exception):
    """Publishing was refused: nothing changed in ``reports``."""


# Invariants that hold for any correct build (source dialect; each query returns violating rows).
CHECKS = {
    "active_users_daily": (
        "select count(*) from models.active_users_daily "
        "where activity_date between :start_date and :end_date "
        "and not (dau <= wau and wau <= mau and dau >= 0)"
    ),
    "event_metrics_daily": (
        "select count(*) from models.event_metrics_daily "
        "where event_date between :start_date and :end_date "
        "and not (count_users <= count_events and count_users >= 1)"
    ),
    "event_metrics_breakdown_daily": (
        "select count(*) from models.event_metrics_breakdown_daily "
        "where event_date between :start_date and :end_date and not (count_users <= count_events)"
    ),
    "session_metrics_daily": (
        "select count(*) from models.session_metrics_daily "
        "where session_date between :start_date and :end_date "
        "and not (users <= sessions and bounce_rate between 0 and 1)"
    ),
    "path_transitions_daily": (
        "select count(*) from models.path_transitions_daily "
        "where session_date between :start_date and :end_date "
        "and not (count_users >= 1 and count_users <= transition_count)"
    ),
    "top_paths_daily": (
        "select count(*) from models.top_paths_daily "
        "where session_date between :start_date and :end_date and not (count_users <= count_sessions)"
    ),
    "retention_cohorts": (
        "select count(*) from models.retention_cohorts "
        "where cohort_date between :start_date and :end_date "
        "and not (retained_users <= cohort_users and (period_number > 0 or retained_users = cohort_users))"
    ),
    "lifecycle_daily": (
        "select count(*) from models.lifecycle_daily "
        "where activity_date between :start_date and :end_date and not (users >= 0)"
    ),
}


def publish(
    wh: Warehouse,
    cfg: Config,
    business_date: dt.date,
    progress: Callable[[str], None] | None = None,
) -> dict[str, int]:
    ranges = built_ranges(wh, business_date)
    models = published_models()
    missing = [m.name for m in models if m.name not in ranges]
    if missing:
        raise PublishError(f"no model build recorded for {business_date} ({', '.join(missing)}): run the 'models' task first")
    with wh.begin() as conn:
        for model in models:
            check = CHECKS.get(model.name)
            params = _params(model, ranges)
            if check and (bad := wh.scalar(conn, check, params)):
                raise PublishError(f"model {model.name}: {bad} rows break its invariants; nothing published")
    counts: dict[str, int] = {}
    with wh.begin() as conn:
        wh.lock(conn, "cohortflow:publish")
        for model in models:
            cols = ", ".join(c.name for c in model.columns)
            params = _params(model, ranges)
            where = f" where {model.partition_by} between :start_date and :end_date" if model.partition_by else ""
            wh.execute(conn, model.create_sql("reports"))
            wh.comment(conn, "table", f"reports.{model.name}", model.description)
            for c in model.columns:
                wh.comment(conn, "column", f"reports.{model.name}.{c.name}", c.description)
            wh.execute(conn, f"delete from reports.{model.name}{where}", params)
            wh.execute(conn, f"insert into reports.{model.name} ({cols}) select {cols} from models.{model.name}{where}", params)
            counts[model.name] = wh.scalar(conn, f"select count(*) from reports.{model.name}{where}", params)
    snapshot_dir = cfg.target_path / "snapshots" / business_date.isoformat()
    snapshot_dir.mkdir(parents=True, exist_ok=True)
    with wh.begin() as conn:
        for model in models:
            cols = ", ".join(c.name for c in model.columns)
            table = wh.query_arrow(
                conn, f"select {cols} from reports.{model.name} order by {cols}"
            )
            path = snapshot_dir / f"{model.name}.parquet"
            tmp = path.with_suffix(".parquet.tmp")
            pq.write_table(table, tmp)
            tmp.replace(path)
    if wh.dialect == "duckdb":
        path = publish_reader_file(wh, cfg, models)
        if progress:
            progress(f"  reader copy for BI: {path}")
    if progress:
        for name, n in counts.items():
            lo, hi = ranges[name]
            progress(f"  published reports.{name}: {n:,} rows for {lo}..{hi}")
        progress(f"  snapshots in {snapshot_dir}")
    return counts


def reader_file_path(cfg: Config) -> Path:
    return cfg.target_path / "published" / "reports.duckdb"


def publish_reader_file(wh: Warehouse, cfg: Config, models: list[Model]) -> Path:
    """DuckDB: a separate file of the ``reports`` tables for BI tools, swapped in atomically.

    A DuckDB file admits one writing process, or many readers and no writer,
    so BI cannot read the working warehouse while a run writes it. Readers
    open ``target/published/reports.duckdb`` (read-only) instead: it is
    written whole under a temporary name and renamed over the previous one,
    so a reader sees the previous complete file or the new one.
    """
    path = reader_file_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    with wh.begin() as conn:
        raw = conn.connection.driver_connection
        raw.execute("attach ? as cohortflow_reader", [str(tmp)])
        try:
            for model in models:
                raw.execute(f"create table cohortflow_reader.main.{model.name} as select * from reports.{model.name}")
        finally:
            raw.execute("detach cohortflow_reader")
    os.replace(tmp, path)
    return path


def _params(model: Model, ranges: dict[str, tuple[dt.date, dt.date]]) -> dict[str, dt.date]:
    lo, hi = ranges[model.name]
    return {"start_date": lo, "end_date": hi}


def snapshot_path(cfg: Config, business_date: dt.date, table: str) -> Path:
    return cfg.target_path / "snapshots" / business_date.isoformat() / f"{table}.parquet"
