"""Publish: make the rebuilt partitions visible in ``reports`` at once, then snapshot.

All published tables are updated in a single transaction (delete the rebuilt
date range, insert it from ``models``), so a reader sees either the previous
complete state or the new one. Before that, cheap invariants of the model
outputs are checked; a violation stops the publish. After the commit each
published table is written as a dated Parquet snapshot.

The whole publish (reports, snapshots, the DuckDB reader copy) runs under one
publish lock, so two publishes never interleave their files. Temporary files
have unique names and the ones a killed publish left are removed at the next
publish. ``target/published/state.json`` (:func:`write_state`) says
``publishing`` from before the reports commit until the snapshots and the
reader copy agree with it, then ``complete`` with the business date.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

from cohortflow.config import Config
from cohortflow.faults import checkpoint
from cohortflow.iofail import OutputError, describe
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
    with wh.session_lock("cohortflow:publish"):
        remove_stale_temp_files(cfg)
        write_state(cfg, "publishing", business_date)
        counts = _publish_reports(wh, cfg, models, ranges)
        snapshot_dir = write_snapshots(wh, cfg, business_date, models)
        if wh.dialect == "duckdb":
            path = publish_reader_file(wh, cfg, models)
            if progress:
                progress(f"  reader copy for BI: {path}")
        write_state(cfg, "complete", business_date)
    if progress:
        for name, n in counts.items():
            lo, hi = ranges[name]
            progress(f"  published reports.{name}: {n:,} rows for {lo}..{hi}")
        progress(f"  snapshots in {snapshot_dir}")
    return counts


def _publish_reports(
    wh: Warehouse, cfg: Config, models: list[Model], ranges: dict[str, tuple[dt.date, dt.date]]
) -> dict[str, int]:
    """Every published model's rebuilt partitions into ``reports``, in one transaction (under the publish lock)."""
    counts: dict[str, int] = {}
    with wh.begin() as conn:
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
        checkpoint("publish", cfg.target_path)
    return counts


def _temp_name(path: Path) -> Path:
    """A temporary name beside ``path``, unique to this process and call (hidden, ends in ``.tmp``)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def remove_stale_temp_files(cfg: Config) -> list[Path]:
    """Remove the temporary files a killed publish left (snapshots, reader copy, state); call under the publish lock."""
    removed = []
    patterns = [
        (cfg.target_path / "snapshots", "*/.*.tmp"),
        (cfg.target_path / "snapshots", "*/*.parquet.tmp"),
        (cfg.target_path / "published", ".*.tmp"),
        (cfg.target_path / "published", ".*.tmp.wal"),
    ]
    for folder, pattern in patterns:
        if folder.is_dir():
            for path in folder.glob(pattern):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def write_snapshots(wh: Warehouse, cfg: Config, business_date: dt.date, models: list[Model]) -> Path:
    """Each published table as ``target/snapshots/<date>/<table>.parquet`` (temporary name, then renamed)."""
    snapshot_dir = cfg.target_path / "snapshots" / business_date.isoformat()
    try:
        snapshot_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(describe(exc, snapshot_dir, "the snapshot folder")) from None
    with wh.begin() as conn:
        for model in models:
            cols = ", ".join(c.name for c in model.columns)
            table = wh.query_arrow(
                conn, f"select {cols} from reports.{model.name} order by {cols}"
            )
            path = snapshot_dir / f"{model.name}.parquet"
            tmp = _temp_name(path)
            try:
                pq.write_table(table, tmp)
                checkpoint("snapshots", cfg.target_path)
                tmp.replace(path)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise OutputError(describe(exc, tmp, "the snapshot")) from None
    return snapshot_dir


def state_path(cfg: Config) -> Path:
    return cfg.target_path / "published" / "state.json"


def write_state(cfg: Config, state: str, business_date: dt.date) -> None:
    """The completion marker: ``complete`` when the night's reports, snapshots and reader copy agree."""
    path = state_path(cfg)
    doc = {
        "state": state,
        "business_date": business_date.isoformat(),
        "updated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "snapshots": str(cfg.target_path / "snapshots" / business_date.isoformat()),
        "reader_file": str(reader_file_path(cfg)) if cfg.warehouse_url.startswith("duckdb") else None,
    }
    tmp = _temp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(describe(exc, path, "the publish state")) from None


def read_state(cfg: Config) -> dict | None:
    """The completion marker, or None when no publish has written one (or it cannot be read)."""
    try:
        return json.loads(state_path(cfg).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


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
    tmp = _temp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with wh.begin() as conn:
            raw = conn.connection.driver_connection
            raw.execute("attach ? as cohortflow_reader", [str(tmp)])
            try:
                for model in models:
                    raw.execute(f"create table cohortflow_reader.main.{model.name} as select * from reports.{model.name}")
                    checkpoint("reader_copy", cfg.target_path)
                # Detaching checkpoints the copy: a full disk shows up here as often as in the inserts.
                raw.execute("detach cohortflow_reader")
            except Exception:
                # Keep the first error (the later "CHECKPOINT during DETACH failed" says less).
                with contextlib.suppress(Exception):
                    raw.execute("detach cohortflow_reader")
                raise
        os.replace(tmp, path)
    except Exception as exc:
        message = describe(exc, tmp, "the BI reader copy")
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
        raise OutputError(message) from None
    return path


def _params(model: Model, ranges: dict[str, tuple[dt.date, dt.date]]) -> dict[str, dt.date]:
    lo, hi = ranges[model.name]
    return {"start_date": lo, "end_date": hi}


def snapshot_path(cfg: Config, business_date: dt.date, table: str) -> Path:
    return cfg.target_path / "snapshots" / business_date.isoformat() / f"{table}.parquet"
