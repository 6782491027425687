"""Every documented BI route shows exactly the documented columns and comments, to a reader in its own process.

Routes (README, "Reading the published tables"): the DuckDB copy
``target/published/reports.duckdb`` (read while the pipeline runs the next
night), the Parquet snapshots (``target/snapshots/latest``), and PostgreSQL's
``reports`` schema as the read-only role ``cohortflow grant-reader`` creates.
The expected tables, columns, types and comments come from the contract (the
model ymls), so docs and tables cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner

from cohortflow.cli import main
from cohortflow.contract import published_tables
from cohortflow.dag import load_workflows
from cohortflow.demo import DemoSpec, generate
from cohortflow.publish import reader_file_path
from cohortflow.runner import run_workflow
from cohortflow.snapshots import latest_path
from tests.conftest import short_analyses

START = dt.date(2026, 11, 1)
WF = load_workflows()["cohortflow_nightly"]
READER = str(Path(__file__).with_name("bi_reader.py"))


def _documented() -> dict:
    return {
        name: {"comment": t.comment, "columns": [[c.name, c.type, c.comment] for c in t.columns]}
        for name, t in published_tables().items()
    }


def _assert_documented(seen: dict, route: str) -> None:
    want = _documented()
    assert set(seen["tables"]) == set(want), f"{route}: tables"
    for name, w in want.items():
        got = seen["tables"][name]
        assert got["columns"] == w["columns"], f"{route}: columns, types or comments of {name}"
        assert got["comment"] == w["comment"], f"{route}: comment of {name}"


def _read(route: str, target, env=None) -> dict:
    out = subprocess.run([sys.executable, READER, route, str(target)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _project(make_project, engine):
    project = make_project(engine, timezone="UTC", analyses=short_analyses())
    generate(DemoSpec(users=120, days=2, start_date=START, timezone="UTC", seed=9), project.landing)
    return project


def test_duckdb_copy_and_parquet_snapshots_while_the_pipeline_runs(make_project):
    project = _project(make_project, "duckdb")
    cfg, wh = project.config(), project.warehouse()
    try:
        run_workflow(cfg, wh, WF, START, echo=lambda _m: None)
        reader = subprocess.Popen(
            [sys.executable, READER, "duckdb", str(reader_file_path(cfg)), "--wait"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        first = json.loads(reader.stdout.readline())
        _assert_documented(first, "DuckDB copy")
        # The pipeline writes the warehouse (and swaps in a new copy) while the reader holds the copy it opened.
        run_workflow(cfg, wh, WF, START + dt.timedelta(days=1), echo=lambda _m: None)
        out, err = reader.communicate("go\n", timeout=120)
        assert reader.returncode == 0, err
        _assert_documented(json.loads(out), "DuckDB copy, read again during the next night")
        with wh.begin() as conn:
            counts = {t: wh.scalar(conn, f"select count(*) from reports.{t}") for t in published_tables()}
            # The working warehouse carries the same comments.
            working = {
                name: [[c, k] for c, k in conn.execute(sa.text(
                    "select column_name, comment from duckdb_columns() where schema_name = 'reports' and table_name = :t "
                    "order by column_index"), {"t": name}).fetchall()]
                for name in published_tables()
            }
    finally:
        wh.dispose()
    assert working == {n: [[c[0], c[2]] for c in t["columns"]] for n, t in _documented().items()}
    fresh = _read("duckdb", reader_file_path(cfg))
    _assert_documented(fresh, "DuckDB copy after the night")
    assert {n: t["rows"] for n, t in fresh["tables"].items()} == counts
    parquet = _read("parquet", latest_path(cfg))
    _assert_documented(parquet, "Parquet snapshot")
    assert {n: t["rows"] for n, t in parquet["tables"].items()} == counts


def test_postgres_read_only_role(make_project):
    project = _project(make_project, "postgres")
    cfg, wh = project.config(), project.warehouse()
    try:
        run_workflow(cfg, wh, WF, START, echo=lambda _m: None)
        with wh.begin() as conn:
            counts = {t: wh.scalar(conn, f"select count(*) from reports.{t}") for t in published_tables()}
    finally:
        wh.dispose()
    env = {**project.environ, "COHORTFLOW_READER_PASSWORD": "reader-test-password"}
    granted = CliRunner().invoke(main, ["grant-reader", "--config", str(project.config_path), "--role", "bi_reader_test"], env=env)
    assert granted.exit_code == 0, granted.output
    url = sa.make_url(project.db_url).set(username="bi_reader_test", drivername="postgresql")
    seen = _read("postgres", url.render_as_string(hide_password=False), env={"PGPASSWORD": "reader-test-password", "PATH": "/usr/bin:/bin"})
    _assert_documented(seen, "PostgreSQL role bi_reader_test")
    assert {n: t["rows"] for n, t in seen["tables"].items()} == counts
    assert seen["denied"] == ["meta.run_log", "raw.events", "models.stg_events"], "the role reads reports only"
