"""Registration for DolphinScheduler 3.2.x with SDK 4.1.0, offline: the compiled payloads, the dry run.

Task codes come from the gateway when the SDK builds a task; like the SDK's
own tests, these tests patch ``pydolphinscheduler.core.task.Task.gen_code_and_version``.
They need apache-dolphinscheduler 4.1.0 (extra ds32): scripts/test.sh runs
them in .venv-ds32. The REST client is tested in test_ds_api.py.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest.mock import patch

import click
import pytest
from click.testing import CliRunner

from cohortflow import register as reg
from cohortflow import sdk_ds32
from cohortflow.cli import main
from cohortflow.config import Config, Source, load_config
from cohortflow.dag import load_workflows
from cohortflow.runner import task_names
from cohortflow.server_dag import BIZ_DATE_REF, compile_workflow
from tests.conftest import write_config

pytestmark = pytest.mark.sdk32

WORKFLOWS = load_workflows()
ZONE = "America/New_York"  # not the SDK's Asia/Shanghai default
TODAY = dt.date(2026, 11, 20)
PG_URL = "postgresql+psycopg://cohortflow@db.internal:5432/analytics"


def _config(tmp_path: Path, **overrides):
    ds = {"project": "analytics", "tenant": "etl", "worker_group": "batch", **overrides.pop("dolphinscheduler", {})}
    path = write_config(tmp_path, timezone=ZONE, dolphinscheduler=ds, **overrides)
    return load_config(path, environ={}), path


@pytest.fixture
def codes():
    """Patch the gateway's task codes as the SDK's tests do (distinct codes, version 1)."""
    sdk_ds32.prepare(Config(sources=[Source(name="app", format="ark", path="ark")]))  # no import-time gateway probe
    counter = itertools.count(7_000_000_000_000)
    with patch("pydolphinscheduler.core.task.Task.gen_code_and_version", side_effect=lambda: (next(counter), 1)):
        yield


@pytest.fixture
def cfg_path(tmp_path):
    cfg, path = _config(tmp_path)
    sdk_ds32.prepare(cfg)  # import the SDK without its import-time gateway probe, before anything patches it
    return cfg, path


def _defs(cfg, path, **kw):
    return {d["name"]: d for d in reg.definitions(cfg, config_path=path, today=TODAY, generation="3.2", **kw)}


def _compiled(name, cfg, path):
    return compile_workflow(WORKFLOWS[name], cfg, "3.2", config_path=path, today=TODAY)


# -- compiled payloads ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_workflow_payload_has_project_schedule_and_project_time_zone(name, cfg_path, codes, monkeypatch):
    cfg, path = cfg_path
    monkeypatch.setenv("PYDS_WORKFLOW_TIME_ZONE", "Asia/Shanghai")  # the config wins over SDK settings
    wf = WORKFLOWS[name]
    d = _defs(cfg, path)[name]
    assert d["name"] == wf.name and d["description"] == wf.description
    assert d["project"] == "analytics" and d["workerGroup"] == "batch"
    assert d["releaseState"] == 1 and d["onlineSchedule"] is True
    assert d["executionType"] == "SERIAL_WAIT"  # DuckDB: instances wait for each other
    schedule = d["schedule"]
    assert schedule["crontab"] == wf.schedule and len(schedule["crontab"].split()) == 7
    assert schedule["timezoneId"] == ZONE
    assert schedule["startTime"] == "2026-11-20 00:00:00" and schedule["endTime"].startswith("9999-12-31")
    assert "Asia/Shanghai" not in json.dumps(d)
    assert (d["warningType"], d["warningGroupId"]) == ("NONE", 0)
    # the business date travels as a workflow parameter
    assert [(p["prop"], p["value"]) for p in d["globalParams"]] == [("bizdate", "${system.biz.date}")]


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_tasks_have_retries_timeouts_and_descriptions(name, cfg_path, codes):
    cfg, path = cfg_path
    compiled = _compiled(name, cfg, path)
    tasks = {t["name"]: t for t in _defs(cfg, path)[name]["taskDefinitionJson"]}
    assert set(tasks) == {t.name for t in compiled.tasks}
    for declared in compiled.tasks:
        t = tasks[declared.name]
        assert t["taskType"] == "SHELL" and t["workerGroup"] == "batch"
        assert t["failRetryTimes"] == declared.retries >= 1
        assert t["failRetryInterval"] == declared.retry_interval_minutes
        assert t["timeout"] == declared.timeout_minutes > 0
        assert t["timeoutFlag"] == "OPEN"  # the SDK derives it from timeout
        assert t["timeoutNotifyStrategy"] == declared.timeout_notify_strategy in {"WARN", "FAILED", "WARNFAILED"}
        assert t["description"] == declared.description


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_every_task_script_is_a_real_cli_verb_with_the_dolphinscheduler_date(name, cfg_path, codes):
    cfg, path = cfg_path
    wf = WORKFLOWS[name]
    for t in _defs(cfg, path)[name]["taskDefinitionJson"]:
        argv = shlex.split(t["taskParams"]["rawScript"])
        assert Path(argv[0]).is_absolute() and Path(argv[0]).name == "cohortflow"
        assert argv[1:5] == ["task", t["name"], "--date", BIZ_DATE_REF]
        assert argv[2] in task_names(wf)
        cmd = main.get_command(click.Context(main), argv[1])
        assert cmd is not None
        # DolphinScheduler substitutes its parameters in the script text; the CLI then parses the result.
        real = [a.replace(BIZ_DATE_REF, "20261101").replace("${system.workflow.instance.id}", "42") for a in argv[2:]]
        with cmd.make_context(argv[1], real, resilient_parsing=False) as sub:
            assert str(sub.params["business_date"]) == "2026-11-01"
            assert sub.params["config_path"] == Path(path)
            assert sub.params["workflow"] == wf.name
            assert sub.params["run_id"] == "ds-42"


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
@pytest.mark.parametrize("url", ["duckdb:///target/warehouse.duckdb", PG_URL])
def test_edges_equal_the_compiled_dag(name, url, tmp_path, codes):
    cfg, path = _config(tmp_path, warehouse={"url": url})
    compiled = _compiled(name, cfg, path)
    d = _defs(cfg, path)[name]
    by_code = {t["code"]: t["name"] for t in d["taskDefinitionJson"]}
    edges = {(by_code.get(r["preTaskCode"]), by_code[r["postTaskCode"]]) for r in d["taskRelationJson"]}
    expected = compiled.edges() | {(None, t.name) for t in compiled.tasks if not t.upstream}  # roots hang off code 0
    assert edges == expected
    assert len(compiled.tasks) > len(WORKFLOWS[name].tasks)  # a task per model


def test_failure_alerts_when_an_alert_group_is_configured(tmp_path, codes):
    cfg, path = _config(tmp_path, dolphinscheduler={"alert_group": "3"})
    d = reg.definitions(cfg, config_path=path, today=TODAY, generation="3.2")[0]
    assert (d["warningType"], d["warningGroupId"]) == ("FAILURE", 3)


def test_a_non_numeric_alert_group_is_a_clear_config_error(tmp_path):
    from cohortflow.config import ConfigError

    with pytest.raises(ConfigError, match=r"dolphinscheduler\.alert_group"):
        _config(tmp_path, dolphinscheduler={"alert_group": "oncall"})


def test_the_config_schedule_overrides_the_declared_one(tmp_path, codes):
    cfg, path = _config(tmp_path, schedule={"cron": "0 15 4 * * ? *"})
    assert reg.definitions(cfg, config_path=path, today=TODAY, generation="3.2")[0]["schedule"]["crontab"] == "0 15 4 * * ? *"


def test_postgresql_workflows_may_run_instances_in_parallel(tmp_path, codes):
    cfg, path = _config(tmp_path, warehouse={"url": PG_URL})
    assert reg.definitions(cfg, config_path=path, today=TODAY, generation="3.2")[0]["executionType"] == "PARALLEL"


# -- dry run --------------------------------------------------------------------------------


def test_dry_run_cli_prints_json_with_placeholder_codes(tmp_path):
    _, path = _config(tmp_path)
    runner = CliRunner()
    env = {"PYDS_JAVA_GATEWAY_AUTH_TOKEN": None, "PYDS_USER_PASSWORD": None}
    first = runner.invoke(main, ["register", "--dry-run", "--config", str(path)], env=env)
    assert first.exit_code == 0, first.output
    doc = json.loads(first.stdout)
    assert doc["dry_run"] is True and "placeholder" in doc["note"] and doc["generation"] == "3.2"
    assert sorted(w["name"] for w in doc["workflows"]) == sorted(WORKFLOWS)
    assert all(w["schedule"]["timezoneId"] == ZONE for w in doc["workflows"])
    codes = [t["code"] for w in doc["workflows"] for t in w["taskDefinitionJson"]]
    assert len(set(codes)) == len(codes)
    again = runner.invoke(main, ["register", "--dry-run", "--config", str(path)], env=env)
    assert again.stdout == first.stdout  # deterministic placeholders


def test_dry_run_opens_no_connection_even_on_a_fresh_sdk_import(tmp_path):
    """In a new interpreter (the SDK not yet imported), with every socket connection refused and recorded."""
    _, path = _config(tmp_path)
    script = textwrap.dedent(
        """
        import socket, sys
        attempts = []
        def refuse(self, address):
            attempts.append(address)
            raise OSError("connections are blocked in this test")
        socket.socket.connect = refuse
        socket.socket.connect_ex = lambda self, address: attempts.append(address) or 111
        from cohortflow.cli import main
        try:
            main(["register", "--dry-run", "--config", sys.argv[1]], standalone_mode=False)
        finally:
            print("SDK_IMPORTED", "pydolphinscheduler.java_gateway" in sys.modules, file=sys.stderr)
            print("ATTEMPTS", attempts, file=sys.stderr)
        """
    )
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("PYDS_")}
    proc = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "SDK_IMPORTED True" in proc.stderr
    assert "ATTEMPTS []" in proc.stderr
    assert "Traceback" not in proc.stderr and "py4j" not in proc.stderr.lower()
    json.loads(proc.stdout)


# -- real registration: what must hold before any connection ----------------------------------


class _FakeApi:
    """Stands in for the REST client (tested in test_ds_api.py): records the schedules brought online."""

    def __init__(self) -> None:
        self.online: list[int] = []

    def ensure_schedule_online(self, code):
        self.online.append(code)
        return {"releaseState": "ONLINE"}


def test_registration_without_a_token_is_a_clear_error(cfg_path, monkeypatch):
    cfg, path = cfg_path
    monkeypatch.delenv("PYDS_JAVA_GATEWAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("PYDS_USER_PASSWORD", "s3cret-user")
    with pytest.raises(reg.RegistrationError, match="PYDS_JAVA_GATEWAY_AUTH_TOKEN is not set") as info:
        reg.register(cfg, dry_run=False, config_path=path)
    assert not isinstance(info.value, reg.GatewayError)
    result = CliRunner().invoke(main, ["register", "--config", str(path)], env={"PYDS_JAVA_GATEWAY_AUTH_TOKEN": None})
    assert result.exit_code == 2
    assert "PYDS_JAVA_GATEWAY_AUTH_TOKEN is not set" in result.stderr and "--dry-run" in result.stderr


def test_registration_without_the_sdk_user_password_is_a_clear_error(cfg_path, monkeypatch):
    cfg, path = cfg_path
    monkeypatch.setenv("PYDS_JAVA_GATEWAY_AUTH_TOKEN", "gateway-token")
    monkeypatch.delenv("PYDS_USER_PASSWORD", raising=False)
    with pytest.raises(reg.RegistrationError, match="PYDS_USER_PASSWORD is not set"):
        reg.register(cfg, dry_run=False, config_path=path)


def test_an_unreachable_gateway_is_a_one_line_error_without_the_token(tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg, path = _config(tmp_path, dolphinscheduler={"gateway_port": port})
    monkeypatch.setenv("PYDS_JAVA_GATEWAY_AUTH_TOKEN", "gateway-token-xyz")
    monkeypatch.setenv("PYDS_USER_PASSWORD", "s3cret-user")
    with pytest.raises(reg.GatewayError, match=f"cannot reach the DolphinScheduler Python gateway at 127.0.0.1:{port}") as info:
        reg.register(cfg, dry_run=False, config_path=path, api=_FakeApi())
    assert "gateway-token-xyz" not in str(info.value) and "\n" not in str(info.value)


def test_registration_submits_each_workflow_with_tenant_and_password_from_the_environment(cfg_path, codes, monkeypatch):
    cfg, path = cfg_path
    monkeypatch.setenv("PYDS_JAVA_GATEWAY_AUTH_TOKEN", "gateway-token")
    monkeypatch.setenv("PYDS_USER_PASSWORD", "s3cret-user")
    connected, submitted = [], []
    monkeypatch.setattr(reg, "_connect", lambda sdk, c, token: connected.append((sdk.GENERATION, token)))

    def fake_submit(self):
        submitted.append((self.name, self.user.tenant, self.user.password, sdk_ds32.payload(self)))
        return 4242

    lines: list[str] = []
    api = _FakeApi()
    with patch("pydolphinscheduler.core.workflow.Workflow.submit", fake_submit):
        out = reg.register(cfg, dry_run=False, config_path=path, echo=lines.append, api=api)
    assert connected == [("3.2", "gateway-token")]
    assert api.online == [4242] * len(WORKFLOWS)
    assert [s[0] for s in submitted] == sorted(WORKFLOWS) and out[0]["code"] == 4242
    assert all(s[1] == "etl" and s[2] == "s3cret-user" for s in submitted)
    assert all(s[3]["schedule"]["timezoneId"] == ZONE for s in submitted)
    assert "updates these workflows in place" in lines[-1]
    assert not any("s3cret" in line or "gateway-token" in line for line in lines)


def test_a_gateway_of_another_generation_is_a_clear_error(cfg_path, monkeypatch):
    """SDK 4.1.0 against a 3.1 server: stop before submitting anything, and say which extra fits."""
    cfg, path = cfg_path
    monkeypatch.setenv("PYDS_JAVA_GATEWAY_AUTH_TOKEN", "gateway-token")
    monkeypatch.setenv("PYDS_USER_PASSWORD", "s3cret-user")
    monkeypatch.setattr(sdk_ds32, "connect", lambda c, token: "3.1.1")
    submitted = []
    monkeypatch.setattr(sdk_ds32, "submit", lambda wf, pw: submitted.append(wf))
    with pytest.raises(reg.GatewayError, match=r"is DolphinScheduler 3\.1\.1; apache-dolphinscheduler 4\.1\.0 needs 3\.2\.x .*ds31"):
        reg.register(cfg, dry_run=False, config_path=path, api=_FakeApi())
    assert submitted == []
