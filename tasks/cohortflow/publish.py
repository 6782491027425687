"""Publish: make the models' changes visible in ``reports`` at once, then snapshot and report.

Each published model is published through some change id (``meta.publish_state``); a publish copies, from
``models`` to ``reports`` through the BI contract's SELECT (which applies the published types and rounding), the
partitions each model changed since then (``meta.model_changes``: dates, or the whole table), for every published
table in a single transaction, so a reader sees either the previous complete state or the new one, and ``reports``
always equals what a full rebuild from everything loaded would publish. Before that, cheap invariants of the rows to
publish are checked, and a date whose latest load failed a critical validation stops the publish (it would publish
the bad day). After the commit the published tables are written as a dated Parquet snapshot with a manifest
(:mod:`cohortflow.snapshots`), copied for BI on DuckDB, and the HTML report of the date is written
(:mod:`cohortflow.report`); only then does the snapshot pointer ``latest`` move.

The whole publish (reports, snapshots, the DuckDB reader copy) runs under one publish lock, so two publishes never
interleave their files. Temporary files have unique names and the ones a killed publish left are removed at the next
publish. ``target/published/state.json`` (:func:`write_state`) says ``publishing`` from before the reports commit
until the snapshots and the reader copy agree with it, then ``complete`` with the business date.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path


from cohortflow.config import Config
from cohortflow.faults import checkpoint
from cohortflow.iofail import OutputError, describe
from cohortflow.models import Model, published_models
from cohortflow.progress import plural
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


def _change_ids(wh: Warehouse, conn, table: str) -> dict[str, int]:
    """Each model's change id in ``meta.model_state`` or ``meta.publish_state``: read once for every model (a
    statement costs tens of milliseconds on Trino, whatever it reads)."""
    return {name: int(change) for name, change in wh.execute(conn, f"select model_name, change_id from {table}")}


def _pending(
    wh: Warehouse, conn, model: Model, built_ids: dict[str, int], published_ids: dict[str, int]
) -> tuple[int, bool, list[dt.date]] | None:
    """(change id to publish through, whole table?, dates) of a published model; None when nothing is new."""
    built = built_ids.get(model.name)
    if built is None:
        raise PublishError(f"model {model.name} has never been built: run the 'models' task first; nothing published")
    published = published_ids.get(model.name)
    if published is not None and published >= built:
        return None
    rows = wh.execute(
        conn,
        "select distinct changed_date, is_all from meta.model_changes "
        "where model_name = :m and change_id > :lo and change_id <= :hi",
        {"m": model.name, "lo": -1 if published is None else published, "hi": built},
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
    *,
    run_id: str | None = None,
) -> dict[str, int]:
    """Publish every published model's changes into ``reports`` at once, then snapshot, copy for BI, report and
    move ``latest``; returns the rows each reports table holds for what was copied."""
    from cohortflow.contract import table as contract_table
    from cohortflow.models import forget_changes

    models = published_models()
    tables = [contract_table(m.name) for m in models]
    wh.bootstrap()
    with wh.session_lock("cohortflow:publish"):
        remove_stale_temp_files(cfg)
        write_state(cfg, "publishing", business_date)
        counts, copied = _publish_reports(wh, cfg, models, tables)
        if progress:
            if not copied:
                progress("  reports already up to date")
            for name, what in copied.items():
                progress(f"  published reports.{name}: {what} ({plural(counts[name], 'row')})")
        after_publish(wh, cfg, business_date, tables, run_id=run_id, progress=progress)
        write_state(cfg, "complete", business_date)
    forget_changes(wh)
    return counts


def _publish_reports(wh: Warehouse, cfg: Config, models: list[Model], tables) -> tuple[dict[str, int], dict[str, str]]:
    """Every published model's changes into ``reports``, in one transaction (under the publish lock)."""
    counts: dict[str, int] = {}
    copied: dict[str, str] = {}
    with wh.begin() as conn:
        built_ids = _change_ids(wh, conn, "meta.model_state")
        published_ids = _change_ids(wh, conn, "meta.publish_state")
        pending = {m.name: _pending(wh, conn, m, built_ids, published_ids) for m in models}
        todo = {name: p for name, p in pending.items() if p is not None}
        if todo:
            low = min(published_ids.get(n, -1) for n in todo)
            high = max(p[0] for p in todo.values())
            failed = _failed_validations(wh, conn, low, high)
            if failed:
                raise PublishError(
                    f"the latest load of {', '.join(failed)} failed a critical validation: nothing published. "
                    "Fix the input and rerun that date (or change the validation settings and rerun its validate task)"
                )
        applied = dict(wh.execute(conn, "select table_name, fingerprint from meta.published_schema").fetchall())
        commented = dict(wh.execute(conn, "select table_name, fingerprint from meta.published_comments").fetchall())
        existing = wh.table_names(conn, "reports")
        states: list[dict] = []
        created: list[dict] = []
        comments: list[dict] = []
        for model, table in zip(models, tables, strict=True):
            recreated = ensure_published_table(wh, conn, table, applied.get(table.name), table.name in existing)
            if recreated:
                created.append({"table_name": table.name, "fingerprint": table.fingerprint, "applied_at": _now()})
            if recreated or commented.get(table.name) != table.comments_fingerprint:
                comment_table(wh, conn, table, "reports")
                comments.append({"table_name": table.name, "fingerprint": table.comments_fingerprint})
            if model.name not in todo and not recreated:
                continue
            built, whole, dates = todo.get(model.name) or (None, True, [])
            whole = whole or recreated
            if whole:
                where = ""
            elif wh.trino is not None:
                # Hive deletes whole partitions only, by a predicate on the partition column itself.
                listed = ", ".join(f"date '{d.isoformat()}'" for d in dates)
                where = f" where {model.partition_by} in ({listed})" if dates else " where 1 = 0"  # (nothing to copy)
            else:
                wh.execute(conn, "drop table if exists publish_dates")
                wh.execute(conn, "create temporary table publish_dates (d date)")
                if dates:
                    wh.insert_rows(conn, "publish_dates", [{"d": d} for d in dates])
                where = f" where {model.partition_by} in (select d from publish_dates)"
            check = CHECKS.get(model.name)
            if check and (bad := wh.scalar(conn, check.format(rows=f"(select * from models.{model.name}{where}) as r"))):
                raise PublishError(f"model {model.name}: {plural(bad, 'row')} break its invariants; nothing published")
            cols = ", ".join(c.name for c in table.columns)
            # No date to copy writes nothing (on Trino, Hive would refuse the DELETE: its predicate is not on partitions).
            if whole or dates:
                wh.execute(conn, f"delete from reports.{table.name}{where}")
                wh.execute(conn, f"insert into reports.{table.name} ({cols})\n" + table.select_sql(where=where))
            counts[model.name] = wh.scalar(conn, f"select count(*) from reports.{table.name}{where}")
            copied[model.name] = (
                "every row (table recreated for a schema change)" if recreated else "whole table" if whole else _describe_dates(dates)
            )
            if built is not None:
                states.append({"model_name": model.name, "change_id": built, "as_of_date": None, "published_at": _now()})
        _replace_rows(wh, conn, "meta.publish_state", "model_name", states)
        _replace_rows(wh, conn, "meta.published_schema", "table_name", created)
        _replace_rows(wh, conn, "meta.published_comments", "table_name", comments)
        checkpoint("publish", cfg.target_path)
    return counts, copied


def _replace_rows(wh: Warehouse, conn, table: str, key: str, rows: list[dict]) -> None:
    """``rows`` replace the rows of ``table`` with their ``key`` values: one delete and one insert."""
    if not rows:
        return
    names = ", ".join(f":k{i}" for i in range(len(rows)))
    wh.execute(conn, f"delete from {table} where {key} in ({names})", {f"k{i}": row[key] for i, row in enumerate(rows)})
    wh.insert_rows(conn, table, rows)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _describe_dates(dates: list[dt.date]) -> str:
    if not dates:
        return "no date"
    if len(dates) == 1:
        return f"{dates[0]}"
    return f"{len(dates)} dates {dates[0]}..{dates[-1]}"


def ensure_published_table(wh: Warehouse, conn, table, applied: str | None, exists: bool) -> bool:
    """Create ``reports.<table>`` from the contract unless it ``exists`` with the contract's fingerprint (``applied``:
    the one in ``meta.published_schema``); True when it was (re)created (the caller records the fingerprint and
    comments the table)."""
    fresh = not exists or applied != table.fingerprint
    if fresh:
        if exists:
            wh.execute(conn, f"drop table reports.{table.name}")
        wh.execute(conn, table.create_sql("reports"))
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


def _temp_name(path: Path) -> Path:
    """A temporary name beside ``path``, unique to this process and call (hidden, ends in ``.tmp``)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def remove_stale_temp_files(cfg: Config) -> list[Path]:
    """Remove the temporary files a killed publish left (snapshots, reader copy, state); call under the publish lock."""
    removed = []
    snapshots_root = cfg.target_path / "snapshots"
    if snapshots_root.is_dir():
        for folder in snapshots_root.glob(".*.tmp"):  # a snapshot folder written under its temporary name
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
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
    tmp = _temp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with wh.begin() as conn:
            raw = conn.connection.driver_connection
            raw.execute("attach ? as cohortflow_reader", [str(tmp)])
            try:
                for table in tables:
                    raw.execute(f"create table cohortflow_reader.main.{table.name} as select * from reports.{table.name}")
                    comment_table(wh, conn, table, "cohortflow_reader.main")
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
