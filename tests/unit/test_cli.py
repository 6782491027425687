"""The CLI's contract: verbs, dates in both forms, exit codes 0/1/2, clear messages."""

from __future__ import annotations

import json

from click.testing import CliRunner

from cohortflow.cli import main
from cohortflow.models import BIND_PARAMETER
from tests.conftest import write_config


def _invoke(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env or {}, catch_exceptions=False)


def test_unknown_task_is_a_usage_error(tmp_path):
    cfg = write_config(tmp_path)
    result = _invoke("task", "nosuch", "--date", "20261101", "--config", str(cfg))
    assert result.exit_code == 2 and "unknown task 'nosuch'" in result.output


def test_bad_date_is_a_usage_error(tmp_path):
    cfg = write_config(tmp_path)
    result = _invoke("run", "--date", "2026-02-30", "--config", str(cfg))
    assert result.exit_code == 2 and "no such day in the calendar" in result.output
    result = _invoke("run", "--date", "2026-1-30", "--config", str(cfg))
    assert result.exit_code == 2 and "YYYY-MM-DD or YYYYMMDD" in result.output


def test_an_environment_override_error_names_the_variable(tmp_path):
    cfg = write_config(tmp_path)
    result = _invoke("check-config", "--config", str(cfg), env={"COHORTFLOW_INGEST__LOOKBACK_DAYS": "zero"})
    assert result.exit_code == 2 and "COHORTFLOW_INGEST__LOOKBACK_DAYS (environment variable" in result.output


def test_check_config_reports_a_missing_landing_root_and_password(tmp_path):
    cfg = write_config(tmp_path, warehouse={"url": "postgresql+psycopg://cohortflow@127.0.0.1:1/db"})
    result = _invoke("check-config", "--config", str(cfg))
    assert result.exit_code == 2
    assert "landing root" in result.output and "does not exist" in result.output
    assert "COHORTFLOW_WAREHOUSE__PASSWORD is not set" in result.output


def test_a_warehouse_that_does_not_answer_is_one_line(tmp_path):
    cfg = write_config(tmp_path, warehouse={"url": "postgresql+psycopg://cohortflow@127.0.0.1:1/db"})
    result = CliRunner().invoke(main, ["status", "--config", str(cfg)], env={"COHORTFLOW_WAREHOUSE__PASSWORD": "pw"})
    assert result.exit_code == 1
    assert "error: warehouse 127.0.0.1:" in result.output and len(result.output.strip().splitlines()) == 1


def test_bad_config_is_a_usage_error_naming_the_key(tmp_path):
    cfg = write_config(tmp_path, timezone="Nowhere/City")
    result = _invoke("run", "--date", "20261101", "--config", str(cfg))
    assert result.exit_code == 2 and "timezone:" in result.output


def test_a_failed_task_exits_1_and_the_next_run_resumes(tmp_path):
    cfg = write_config(tmp_path)
    (tmp_path / "landing" / "ark" / "2026-11-01").mkdir(parents=True)
    failed = _invoke("run", "--date", "20261101", "--config", str(cfg), env={"COHORTFLOW_FAIL_TASK": "validate"})
    assert failed.exit_code == 1
    assert "failed at task 'validate'" in failed.output and "resume" in failed.output
    resumed = _invoke("run", "--date", "2026-11-01", "--config", str(cfg))
    assert resumed.exit_code == 0, resumed.output
    assert "[ingest] already succeeded" in resumed.output and "[models] already succeeded" in resumed.output
    status = _invoke("status", "--config", str(cfg))
    assert "validate   failed" in status.output and "publish    upstream_failed" in status.output


def test_task_runs_one_stage_and_logs_it(tmp_path):
    cfg = write_config(tmp_path)
    (tmp_path / "landing" / "ark" / "2026-11-01").mkdir(parents=True)
    result = _invoke("task", "ingest", "--date", "20261101", "--config", str(cfg), "--run-id", "ds-42")
    assert result.exit_code == 0, result.output
    assert "ledger 2026-11-01: 0 files" in result.output
    status = _invoke("status", "--config", str(cfg))
    assert "run ds-42" in status.output and "ingest     success" in status.output


def test_render_prints_the_sql_of_each_engine(tmp_path):
    cfg = write_config(tmp_path)
    duck = _invoke("render", "active_users_daily", "--date", "20261101", "--config", str(cfg))
    pg = _invoke("render", "active_users_daily", "--date", "20261101", "--dialect", "postgres", "--config", str(cfg))
    assert duck.exit_code == pg.exit_code == 0
    assert ":start_date" in pg.output and "start_date=2026-11-01" in pg.output
    assert "DOUBLE PRECISION" in pg.output and "DOUBLE PRECISION" not in duck.output


def test_render_lists_every_parameter_the_sql_binds(tmp_path):
    cfg = write_config(tmp_path)
    out = _invoke("render", "funnel_user_steps", "--date", "20261101", "--config", str(cfg)).output
    header = out.splitlines()[0]
    assert header.startswith("-- model funnel_user_steps on duckdb; bound parameters: start_date=2026-11-01,")
    for name in BIND_PARAMETER.findall(out.split("\n", 1)[1]):
        assert f"{name}=" in header and f"{name}=(unset)" not in header
    assert "funnel_pass_max_events=1000" in header


def test_register_dry_run_prints_definitions_without_a_server(tmp_path):
    cfg = write_config(tmp_path)
    result = _invoke("register", "--dry-run", "--config", str(cfg))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["dry_run"] is True and doc["workflows"][0]["name"] == "cohortflow_nightly"
