"""The compile step: a declared workflow as the DAG the server runs (no SDK, no server)."""

from __future__ import annotations

import datetime as dt
import shlex
from pathlib import Path

import click
import pytest
import yaml

from cohortflow.cli import main
from cohortflow.config import ConfigError, load_config
from cohortflow.dag import Task, Workflow, load_workflows
from cohortflow.server_dag import BIZ_DATE_REF, compile_workflow, expand
from tests.conftest import write_config

WF = load_workflows()["cohortflow_nightly"]
ZONE = "America/New_York"
PG_URL = "postgresql+psycopg://cohortflow@db.internal:5432/analytics"
SQL = Path(__file__).resolve().parents[2] / "sql"


def _declared_models() -> dict[str, set[str]]:
    """Each model and what its yml says it depends on, read from the files (not through cohortflow)."""
    out = {}
    for yml in SQL.glob("*/*.yml"):
        out[yml.stem] = set(yaml.safe_load(yml.read_text())["depends_on"] or [])
    return out


def _compile(tmp_path, generation="3.1", **overrides):
    path = write_config(tmp_path, timezone=ZONE, **overrides)
    cfg = load_config(path, environ={})
    return compile_workflow(WF, cfg, generation, config_path=path, today=dt.date(2026, 11, 20)), path


def test_postgresql_dag_is_a_task_per_model_with_the_declared_edges(tmp_path):
    sw, _ = _compile(tmp_path, warehouse={"url": PG_URL})
    models = _declared_models()
    assert {t.name for t in sw.tasks} == {"ingest", "validate", "publish", *models}
    edges = sw.edges()
    for name, deps in models.items():
        assert {u for u, d in edges if d == name} == (deps or {"ingest"}), name
    read = set().union(*models.values())
    assert {u for u, d in edges if d == "publish"} == {"validate"} | (set(models) - read)
    assert {u for u, d in edges if d == "validate"} == {"ingest"}
    assert sw.execution_type == "PARALLEL"
    # the declaration's parallel branches stay parallel: validate and the models do not wait for each other
    assert "validate" not in {u for t in sw.tasks for u in t.upstream if t.name != "publish"}


def test_duckdb_dag_is_one_chain_that_keeps_every_declared_edge(tmp_path):
    sw, _ = _compile(tmp_path)
    parallel, _ = _compile(tmp_path / "pg", warehouse={"url": PG_URL})
    order = [t.name for t in sw.tasks]
    assert order[0] == "ingest" and order[-1] == "publish"
    for i, t in enumerate(sw.tasks):  # one writer: every task waits for the one before it, nothing else
        assert t.upstream == ((order[i - 1],) if i else ())
    for up, down in parallel.edges():
        assert order.index(up) < order.index(down), (up, down)
    assert sw.execution_type == "SERIAL_WAIT"
    assert sw.downstream("retention_cohorts") == set(order[order.index("retention_cohorts") + 1 :])


def test_business_date_comes_through_the_bizdate_parameter_and_the_zone_is_the_projects(tmp_path):
    sw, path = _compile(tmp_path)
    assert sw.params == {"bizdate": "${system.biz.date}"}
    assert sw.timezone == ZONE and sw.schedule == WF.schedule and sw.start_date == dt.date(2026, 11, 20)
    for t in sw.tasks:
        argv = shlex.split(sw.command(t))
        assert Path(argv[0]).is_absolute() and argv[0].endswith("/cohortflow")
        assert argv[1:5] == ["task", t.name, "--date", BIZ_DATE_REF]
        assert "${system.biz.date}" not in sw.command(t)  # 3.1 does not substitute built-ins in a script
        cmd = main.get_command(click.Context(main), "task")
        real = [a.replace(BIZ_DATE_REF, "20261101").replace("${system.workflow.instance.id}", "42") for a in argv[2:]]
        with cmd.make_context("task", real) as ctx:
            assert str(ctx.params["business_date"]) == "2026-11-01" and ctx.params["config_path"] == Path(path)
            assert ctx.params["run_id"] == "ds-42"


def test_retries_are_zero_on_3_1_and_declared_from_3_2(tmp_path):
    on31, _ = _compile(tmp_path)
    on32, _ = _compile(tmp_path / "32", generation="3.2")
    declared = {t.name: t.retries for t in expand(WF, {})}
    assert all(t.retries == 0 for t in on31.tasks)
    assert {t.name: t.retries for t in on32.tasks if t.name in declared} == declared
    assert all(t.retries >= 1 for t in on32.tasks)
    assert [t.timeout_minutes for t in on31.tasks] == [t.timeout_minutes for t in on32.tasks]


def test_executable_is_configurable_and_must_be_absolute(tmp_path):
    sw, _ = _compile(tmp_path, dolphinscheduler={"executable": "/opt/cohortflow/bin/cohortflow"})
    assert all(shlex.split(sw.command(t))[0] == "/opt/cohortflow/bin/cohortflow" for t in sw.tasks)
    with pytest.raises(ConfigError, match=r"dolphinscheduler\.executable.*absolute"):
        load_config(write_config(tmp_path / "bad", dolphinscheduler={"executable": "cohortflow"}), environ={})


def test_every_model_is_a_task_the_cli_runs(tmp_path):
    from click.testing import CliRunner

    path = write_config(tmp_path)
    result = CliRunner().invoke(main, ["task", "no_such_model", "--date", "20261101", "--config", str(path)])
    assert result.exit_code == 2 and "unknown task 'no_such_model'" in result.stderr
    for name in _declared_models():
        assert name in result.stderr


def test_a_model_task_builds_that_model_only_and_records_its_state(make_project):
    from cohortflow.runner import run_task

    project = make_project("duckdb")
    d = dt.date(2026, 11, 1)
    (project.landing / d.isoformat()).mkdir(parents=True)
    cfg, wh = project.config(), project.warehouse()
    try:
        for name in ("ingest", "stg_identities", "stg_events", "user_activity_daily", "active_users_daily"):
            run_task(cfg, wh, WF, name, d, echo=lambda _m: None)
        with wh.begin() as conn:
            built = {r[0] for r in wh.execute(conn, "select model_name from meta.model_state")}
        assert built == {"user_activity_daily", "active_users_daily"}
        with wh.begin() as conn:
            assert wh.scalar(conn, "select count(*) from meta.run_log where task = 'active_users_daily'") == 1
            tables = {r[0] for r in wh.execute(conn, "select table_name from information_schema.tables where table_schema = 'models'")}
        assert "lifecycle_daily" not in tables  # not built: only the model asked for
    finally:
        wh.dispose()


def test_a_per_model_task_name_may_not_be_a_model_name():
    wf = Workflow("w", "d", "0 0 1 * * ? *", (Task("stg_events", "x"), Task("models", "x", ("stg_events",), per_model=True)))
    with pytest.raises(ValueError, match="also model names"):
        expand(wf, {"stg_events": ()})
