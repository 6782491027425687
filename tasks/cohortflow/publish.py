"""Publish: make the rebuilt partitions visible in ``reports`` at once, then snapshot and report.

All published tables are updated in a single transaction (delete the rebuilt
date range, insert it from ``models`` through the BI contract's SELECT, which
applies the published types and rounding), so a reader sees either the
previous complete state or the new one. Before that, cheap invariants of the
model outputs are checked; a violation stops the publish. After the commit
the published tables are written as a dated Parquet snapshot with a manifest
(:mod:`cohortflow.snapshots`), copied for BI on DuckDB, and the HTML report of
the date is written (:mod:`cohortflow.report`); only then does the snapshot
pointer ``latest`` move.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path

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
    *,
    run_id: str | None = None,
) -> dict[str, int]:
    """Check, publish the rebuilt ranges into ``reports`` at once, then snapshot, report and move ``latest``."""
    from cohortflow.contract import table as contract_table
    from cohortflow.progress import plural

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
                raise PublishError(f"model {model.name}: {plural(bad, 'row')} break its invariants; nothing published")
    tables = [contract_table(m.name) for m in models]
    counts: dict[str, int] = {}
    recreated: list[str] = []
    with wh.begin() as conn:
        wh.lock(conn, "cohortflow:publish")
        for model, table in zip(models, tables, strict=True):
            counts[model.name] = publish_table(wh, conn, model, table, _params(model, ranges), recreated)
    if progress:
        for name, n in counts.items():
            lo, hi = ranges[name]
            whole = " (table recreated for a schema change: every row)" if name in recreated else ""
            progress(f"  published reports.{name}: {plural(n, 'row')} for {lo}..{hi}{whole}")
    after_publish(wh, cfg, business_date, tables, run_id=run_id, progress=progress)
    return counts


def publish_table(wh: Warehouse, conn, model: Model, table, params: dict, recreated: list[str]) -> int:
    """Replace the rebuilt range of one published table with the contract's SELECT over the model; rows written.

    When the contract of the table changed since it was created (columns, types, rounding), the table is
    recreated and filled with every row of the model, so old rows never keep an old shape.
    """
    cols = ", ".join(c.name for c in table.columns)
    where = f" where {model.partition_by} between :start_date and :end_date" if model.partition_by else ""
    if ensure_published_table(wh, conn, table):
        recreated.append(table.name)
        where = ""
    wh.execute(conn, f"delete from reports.{table.name}{where}", params)
    wh.execute(conn, f"insert into reports.{table.name} ({cols})\n" + table.select_sql(where=where), params)
    return wh.scalar(conn, f"select count(*) from reports.{table.name}{where}", params)


PUBLISHED_SCHEMA_DDL = (
    "create table if not exists meta.published_schema ("
    "table_name varchar not null, fingerprint varchar not null, applied_at timestamp not null)"
)


def ensure_published_table(wh: Warehouse, conn, table) -> bool:
    """Create ``reports.<table>`` from the contract, with its comments; True when it was (re)created."""
    wh.execute(conn, PUBLISHED_SCHEMA_DDL)
    applied = wh.scalar(conn, "select fingerprint from meta.published_schema where table_name = :t", {"t": table.name})
    exists = wh.table_exists(conn, "reports", table.name)
    fresh = not exists or applied != table.fingerprint
    if fresh:
        if exists:
            wh.execute(conn, f"drop table reports.{table.name}")
        wh.execute(conn, table.create_sql("reports"))
        wh.execute(conn, "delete from meta.published_schema where table_name = :t", {"t": table.name})
        wh.execute(
            conn,
            "insert into meta.published_schema (table_name, fingerprint, applied_at) values (:t, :f, :at)",
            {"t": table.name, "f": table.fingerprint, "at": dt.datetime.now(dt.UTC).replace(tzinfo=None)},
        )
    comment_table(wh, conn, table, "reports")
    return fresh


def comment_table(wh: Warehouse, conn, table, schema: str) -> None:
    """The contract's table and column comments on ``schema.table``."""
    wh.comment(conn, "table", f"{schema}.{table.name}", table.comment)
    for c in table.columns:
        wh.comment(conn, "column", f"{schema}.{table.name}.{c.name}", c.comment)


def after_publish(wh: Warehouse, cfg: Config, business_date: dt.date, tables, *, run_id, progress) -> None:
    """What follows a committed publish: the snapshot, the BI copy, the report; then ``latest`` moves and old
    snapshots and reports are pruned. An error here fails the night and leaves ``latest`` where it was."""
    from cohortflow import snapshots

    say = progress or (lambda _m: None)
    folder = snapshots.write_snapshot(wh, cfg, business_date, tables, run_id=run_id)
    say(f"  snapshot with manifest: {folder}")
    if wh.dialect == "duckdb":
        say(f"  reader copy for BI: {publish_reader_file(wh, cfg, tables)}")
    if cfg.report.enabled:
        from cohortflow.report import write_report

        say(f"  report: {write_report(wh, cfg, business_date).path}")
    snapshots.move_latest(cfg, business_date)
    say(f"  latest snapshot: {business_date}")
    for path in snapshots.prune_snapshots(cfg):
        say(f"  pruned snapshot {path.name} (snapshots.keep_days = {cfg.snapshots.keep_days})")
    if cfg.report.enabled:
        from cohortflow.report import prune_reports, write_index

        pruned = prune_reports(cfg)
        for path in pruned:
            say(f"  pruned report {path.name} (report.keep_days = {cfg.report.keep_days})")
        if pruned:
            write_index(wh, cfg)


def reader_file_path(cfg: Config) -> Path:
    return cfg.target_path / "published" / "reports.duckdb"


def publish_reader_file(wh: Warehouse, cfg: Config, tables) -> Path:
    """DuckDB: a separate file of the ``reports`` tables for BI tools, swapped in atomically.

    A DuckDB file admits one writing process, or many readers and no writer,
    so BI cannot read the working warehouse while a run writes it. Readers
    open ``target/published/reports.duckdb`` (read-only) instead: it is
    written whole under a temporary name and renamed over the previous one,
    so a reader sees the previous complete file or the new one. Its tables
    carry the contract's table and column comments.
    """
    path = reader_file_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    with wh.begin() as conn:
        raw = conn.connection.driver_connection
        raw.execute("attach ? as cohortflow_reader", [str(tmp)])
        try:
            for table in tables:
                raw.execute(f"create table cohortflow_reader.main.{table.name} as select * from reports.{table.name}")
                comment_table(wh, conn, table, "cohortflow_reader.main")
        finally:
            raw.execute("detach cohortflow_reader")
    os.replace(tmp, path)
    return path


def _params(model: Model, ranges: dict[str, tuple[dt.date, dt.date]]) -> dict[str, dt.date]:
    lo, hi = ranges[model.name]
    return {"start_date": lo, "end_date": hi}


def snapshot_path(cfg: Config, business_date: dt.date, table: str) -> Path:
    return cfg.target_path / "snapshots" / business_date.isoformat() / f"{table}.parquet"
