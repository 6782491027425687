"""Publish: make the models' changes visible in ``reports`` at once, then snapshot.

Each published model is published through some change id (``meta.publish_state``); a publish copies, from
``models`` to ``reports``, the partitions each model changed since then (``meta.model_changes``: dates, or the
whole table), for every published table in a single transaction, so a reader sees either the previous complete
state or the new one, and ``reports`` always equals what a full rebuild from everything loaded would publish. Before
that, cheap invariants of the rows to publish are checked, and a date whose latest load failed a critical
validation stops the publish (it would publish the bad day). After the commit each published table is written as a
dated Parquet snapshot.

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
from cohortflow.models import Model, published_models
from cohortflow.warehouse import Warehouse


class PublishError(Exception):
    """Publishing was refused: nothing changed in ``reports``."""


# Invariants that hold for any correct build (source dialect; {rows} selects the rows to publish; each query
# returns the number of violating rows).
CHECKS = {
    "active_users_daily": "select count(*) from {rows} where not (dau <= wau and wau <= mau and dau >= 0)",
    "event_metrics_daily": "select count(*) from {rows} where not (count_users <= count_events and count_users >= 1)",
    "event_metrics_breakdown_daily": "select count(*) from {rows} where not (count_users <= count_events)",
    "session_metrics_daily": "select count(*) from {rows} where not (users <= sessions and bounce_rate between 0 and 1)",
    "path_transitions_daily": "select count(*) from {rows} where not (count_users >= 1 and count_users <= transition_count)",
    "top_paths_daily": "select count(*) from {rows} where not (count_users <= count_sessions)",
    "retention_cohorts": (
        "select count(*) from {rows} "
        "where not (retained_users <= cohort_users and (period_number > 0 or retained_users = cohort_users))"
    ),
    "lifecycle_daily": "select count(*) from {rows} where not (users >= 0)",
}


def _pending(wh: Warehouse, conn, model: Model) -> tuple[int, bool, list[dt.date]] | None:
    """(change id to publish through, whole table?, dates) of a published model; None when nothing is new."""
    state = wh.execute(conn, "select change_id from meta.model_state where model_name = :m", {"m": model.name}).first()
    if state is None:
        raise PublishError(f"model {model.name} has never been built: run the 'models' task first; nothing published")
    built = int(state[0])
    published = wh.scalar(conn, "select change_id from meta.publish_state where model_name = :m", {"m": model.name})
    if published is not None and int(published) >= built:
        return None
    rows = wh.execute(
        conn,
        "select distinct changed_date, is_all from meta.model_changes "
        "where model_name = :m and change_id > :lo and change_id <= :hi",
        {"m": model.name, "lo": -1 if published is None else int(published), "hi": built},
    ).fetchall()
    whole = published is None or any(r[1] for r in rows) or not model.partition_by
    return built, whole, sorted(r[0] for r in rows if r[0] is not None)


def _failed_validations(wh: Warehouse, conn, low: int, high: int) -> list[str]:
    rows = wh.execute(
        conn,
        """
        select v.business_date, min(v.expectation)
        from meta.validation_results as v
        where v.severity = 'critical' and not v.success
            and v.business_date in (
                select business_date from meta.change_log where change_id > :lo and change_id <= :hi and kind = 'load'
            )
        group by v.business_date
        order by v.business_date
        """,
        {"lo": low, "hi": high},
    ).fetchall()
    return [f"{d} ({e})" for d, e in rows]


def publish(
    wh: Warehouse,
    cfg: Config,
    business_date: dt.date,
    progress: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Publish every published model's changes; returns the rows each reports table holds for what was copied."""
    models = published_models()
    with wh.session_lock("cohortflow:publish"):
        remove_stale_temp_files(cfg)
        write_state(cfg, "publishing", business_date)
        counts, copied = _publish_reports(wh, cfg, models)
        snapshot_dir = write_snapshots(wh, cfg, business_date, models)
        if wh.dialect == "duckdb":
            path = publish_reader_file(wh, cfg, models)
            if progress:
                progress(f"  reader copy for BI: {path}")
        write_state(cfg, "complete", business_date)
    if progress:
        if not copied:
            progress("  reports already up to date")
        for name, what in copied.items():
            progress(f"  published reports.{name}: {what} ({counts[name]:,} rows)")
        progress(f"  snapshots in {snapshot_dir}")
    from cohortflow.models import forget_changes

    forget_changes(wh)
    return counts


def _publish_reports(wh: Warehouse, cfg: Config, models: list[Model]) -> tuple[dict[str, int], dict[str, str]]:
    """Every published model's changes into ``reports``, in one transaction (under the publish lock)."""
    counts: dict[str, int] = {}
    copied: dict[str, str] = {}
    with wh.begin() as conn:
        pending = {m.name: _pending(wh, conn, m) for m in models}
        todo = {name: p for name, p in pending.items() if p is not None}
        if todo:
            low = min(
                int(wh.scalar(conn, "select coalesce(max(change_id), -1) from meta.publish_state where model_name = :m", {"m": n}))
                for n in todo
            )
            high = max(p[0] for p in todo.values())
            failed = _failed_validations(wh, conn, low, high)
            if failed:
                raise PublishError(
                    f"the latest load of {', '.join(failed)} failed a critical validation: nothing published. "
                    "Fix the input and rerun that date (or change the validation settings and rerun its validate task)"
                )
        for model in models:
            if model.name not in todo:
                continue
            built, whole, dates = todo[model.name]
            cols = ", ".join(c.name for c in model.columns)
            wh.execute(conn, model.create_sql("reports"))
            wh.comment(conn, "table", f"reports.{model.name}", model.description)
            for c in model.columns:
                wh.comment(conn, "column", f"reports.{model.name}.{c.name}", c.description)
            if whole:
                where = ""
            else:
                wh.execute(conn, "drop table if exists publish_dates")
                wh.execute(conn, "create temporary table publish_dates (d date)")
                if dates:
                    wh.insert_rows(conn, "publish_dates", [{"d": d} for d in dates])
                where = f" where {model.partition_by} in (select d from publish_dates)"
            check = CHECKS.get(model.name)
            if check and (bad := wh.scalar(conn, check.format(rows=f"(select * from models.{model.name}{where}) as r"))):
                raise PublishError(f"model {model.name}: {bad} rows break its invariants; nothing published")
            wh.execute(conn, f"delete from reports.{model.name}{where}")
            wh.execute(conn, f"insert into reports.{model.name} ({cols}) select {cols} from models.{model.name}{where}")
            counts[model.name] = wh.scalar(conn, f"select count(*) from reports.{model.name}{where}")
            copied[model.name] = "whole table" if whole else _describe_dates(dates)
            wh.execute(conn, "delete from meta.publish_state where model_name = :m", {"m": model.name})
            wh.insert_rows(
                conn,
                "meta.publish_state",
                [{"model_name": model.name, "change_id": built, "as_of_date": None, "published_at": _now()}],
            )
        checkpoint("publish", cfg.target_path)
    return counts, copied


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _describe_dates(dates: list[dt.date]) -> str:
    if not dates:
        return "no date"
    if len(dates) == 1:
        return f"{dates[0]}"
    return f"{len(dates)} dates {dates[0]}..{dates[-1]}"


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
            if not wh.table_exists(conn, "reports", model.name):
                wh.execute(conn, model.create_sql("reports"))
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


def snapshot_path(cfg: Config, business_date: dt.date, table: str) -> Path:
    return cfg.target_path / "snapshots" / business_date.isoformat() / f"{table}.parquet"
