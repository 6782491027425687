"""Snapshots: every night's folder reads back exactly as the published tables and its manifest say; ``latest``
moves only after a whole night succeeded; old snapshots are pruned by ``snapshots.keep_days``."""

from __future__ import annotations

import datetime as dt
import json
import os

import pyarrow.parquet as pq
import pytest

from cohortflow import snapshots
from cohortflow.contract import published_tables
from cohortflow.dag import load_workflows
from cohortflow.demo import DemoSpec, generate
from cohortflow.report import report_path
from cohortflow.runner import FAIL_ENV, TaskFailed, run_workflow
from tests.conftest import short_analyses

START = dt.date(2026, 11, 1)
DAYS = 5
WF = load_workflows()["cohortflow_nightly"]


def _published(wh, table) -> list[tuple]:
    """The published rows in the snapshot's order: every column ascending, text in byte order on every engine (the
    tests' PostgreSQL databases sort text linguistically by default)."""
    cols = ", ".join(c.name for c in table.columns)
    with wh.begin() as conn:
        return [tuple(r) for r in wh.execute(conn, f"select {cols} from reports.{table.name} order by {snapshots.row_order(table)}").fetchall()]


def _read_back(folder, table) -> list[tuple]:
    data = pq.read_table(folder / f"{table.name}.parquet")
    assert data.schema.names == [c.name for c in table.columns]
    assert data.schema == snapshots.arrow_schema(table), f"{table.name}: types and descriptions of the contract"
    return [tuple(row.values()) for row in data.to_pylist()]


def _check_snapshot(cfg, wh, d, run_id) -> dict:
    folder = snapshots.snapshot_dir(cfg, d)
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["business_date"] == d.isoformat() and manifest["run_id"] == run_id
    assert manifest["config_fingerprint"] == snapshots.config_fingerprint(cfg)
    assert manifest["code_version"] == snapshots.code_version() and manifest["code_version"]["cohortflow"]
    tables = published_tables()
    assert set(manifest["tables"]) == set(tables)
    for name, table in tables.items():
        entry = manifest["tables"][name]
        rows = _read_back(folder, table)
        assert rows == _published(wh, table), f"snapshot {d}/{name} differs from reports.{name}"
        assert entry["rows"] == len(rows)
        assert entry["sha256"] == snapshots.sha256_file(folder / entry["file"])
        assert entry["columns"] == [{"name": c.name, "type": c.type} for c in table.columns]
    assert snapshots.verify_snapshot(folder) == []
    return manifest


def test_every_snapshot_reads_back_exactly(make_project, engine):
    project = make_project(engine, timezone="UTC", analyses=short_analyses(), snapshots={"keep_days": 2})
    generate(DemoSpec(users=150, days=DAYS, start_date=START, timezone="UTC", seed=5), project.landing)
    cfg, wh = project.config(), project.warehouse()
    manifests = {}
    try:
        for i in range(DAYS):
            d = START + dt.timedelta(days=i)
            run_id = run_workflow(cfg, wh, WF, d, echo=lambda _m: None)
            manifests[d] = _check_snapshot(cfg, wh, d, run_id)
            assert snapshots.latest_date(cfg) == d
            assert (snapshots.latest_path(cfg) / "manifest.json").read_text(encoding="utf-8") == json.dumps(
                manifests[d], indent=2
            ) + "\n"
    finally:
        wh.dispose()
    kept = sorted(snapshots.dated_folders(snapshots.snapshots_root(cfg)))
    last = START + dt.timedelta(days=DAYS - 1)
    assert kept == [last - dt.timedelta(days=k) for k in (2, 1, 0)], "snapshots.keep_days = 2 keeps the newest three dates"
    for d in kept:
        folder = snapshots.snapshot_dir(cfg, d)
        assert snapshots.verify_snapshot(folder) == [], f"snapshot {d} changed after it was written"
        assert json.loads((folder / "manifest.json").read_text(encoding="utf-8")) == manifests[d]
    assert not [p for p in snapshots.snapshots_root(cfg).iterdir() if p.name.startswith(".")], "no temporary folder left"


def test_a_failed_night_leaves_latest_where_it_was(make_project):
    project = make_project("duckdb", timezone="UTC", analyses=short_analyses(), report={"enabled": True})
    generate(DemoSpec(users=80, days=4, start_date=START, timezone="UTC", seed=6), project.landing)
    cfg, wh = project.config(), project.warehouse()
    d1, d2, d3 = (START + dt.timedelta(days=i) for i in range(3))
    try:
        run_workflow(cfg, wh, WF, d1, echo=lambda _m: None)
        assert snapshots.latest_date(cfg) == d1
        # A night that fails before publishing.
        os.environ[FAIL_ENV] = "validate"
        try:
            with pytest.raises(TaskFailed):
                run_workflow(cfg, wh, WF, d2, echo=lambda _m: None)
        finally:
            del os.environ[FAIL_ENV]
        assert snapshots.latest_date(cfg) == d1 and not snapshots.snapshot_dir(cfg, d2).exists()
        # A night whose publish committed and wrote its snapshot, then failed writing the report.
        report_path(cfg, d3).mkdir(parents=True)
        with pytest.raises(TaskFailed, match="publish"):
            run_workflow(cfg, wh, WF, d3, resume=False, echo=lambda _m: None)
        assert snapshots.latest_date(cfg) == d1, "latest moves only when the whole night succeeded"
        assert snapshots.verify_snapshot(snapshots.snapshot_dir(cfg, d1)) == []
        # Fixed and rerun: the night succeeds and latest moves.
        report_path(cfg, d3).rmdir()
        run_workflow(cfg, wh, WF, d3, echo=lambda _m: None)
        assert snapshots.latest_date(cfg) == d3
        assert snapshots.verify_snapshot(snapshots.latest_path(cfg)) == []
    finally:
        wh.dispose()
