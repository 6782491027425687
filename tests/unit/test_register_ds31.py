"""Registration for DolphinScheduler 3.1.x with SDK 3.1.1, offline: the payloads the adapter sends.

Task codes are patched as the SDK's own tests do; the real server is
exercised by tests/integration/test_dolphinscheduler.py.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest.mock import patch

import pytest
from click.testing import CliRunner

from cohortflow import register as reg
from cohortflow import sdk_ds31
from cohortflow.cli import main
from cohortflow.config import load_config
from cohortflow.dag import load_workflows
from cohortflow.server_dag import BIZ_DATE_REF, compile_workflow
from tests.conftest import write_config

pytestmark = pytest.mark.sdk31

WF = load_workflows()["cohortflow_nightly"]
ZONE = "Europe/Berlin"
TODAY = dt.date(2026, 11, 20)
PG_URL = "postgresql+psycopg://cohortflow@db.internal:5432/analytics"


def _config(tmp_path: Path, **overrides):
    ds = {"project": "analytics", "tenant": "etl", **overrides.pop("dolphinscheduler", {})}
    path = write_config(tmp_path, timezone=ZONE, dolphinscheduler=ds, **overrides)
    return load_config(path, environ={}), path


@pytest.fixture
def codes():
    counter = itertools.count(8_000_000_000_000)
    with patch("pydolphinscheduler.core.task.Task.gen_code_and_version", side_effect=lambda: (next(counter), 1)):
        yield


def _definition(cfg, path):
    (d,) = reg.definitions(cfg, workflow=WF.name, config_path=path, today=TODAY)
    return d


def test_the_installed_sdk_picks_the_3_1_adapter():
    assert reg.installed_sdk() == ("3.1.1", "3.1")
    assert reg.adapter() is sdk_ds31


def test_payload_carries_zone_parameter_zero_retries_and_serial_wait_on_duckdb(tmp_path, codes):
    cfg, path = _config(tmp_path)
    d = _definition(cfg, path)
    compiled = compile_workflow(WF, cfg, "3.1", config_path=path, today=TODAY)
    assert d["schedule"] == {
        "startTime": "2026-11-20 00:00:00",
        "endTime": "9999-12-31 23:59:59",
        "crontab": WF.schedule,
        "timezoneId": ZONE,
    }
    assert d["globalParams"] == [{"prop": "bizdate", "direct": "IN", "type": "VARCHAR", "value": "${system.biz.date}"}]
    assert d["executionType"] == "SERIAL_WAIT" and d["releaseState"] == 1
    assert (d["project"], d["tenant"], d["warningType"], d["warningGroupId"]) == ("analytics", "etl", "NONE", 0)
    tasks = {t["name"]: t for t in d["taskDefinitionJson"]}
    assert set(tasks) == {t.name for t in compiled.tasks}
    for t in compiled.tasks:
        sent = tasks[t.name]
        assert sent["taskType"] == "SHELL" and sent["failRetryTimes"] == 0  # 3.1.1 stalls a failed task with retries
        assert sent["timeoutFlag"] == "OPEN" and sent["timeout"] == t.timeout_minutes
        assert sent["timeoutNotifyStrategy"] == t.timeout_notify_strategy
        argv = shlex.split(sent["taskParams"]["rawScript"])
        assert Path(argv[0]).is_absolute() and argv[1:5] == ["task", t.name, "--date", BIZ_DATE_REF]
    by_code = {t["code"]: t["name"] for t in d["taskDefinitionJson"]}
    edges = {(by_code.get(r["preTaskCode"]), by_code[r["postTaskCode"]]) for r in d["taskRelationJson"]}
    assert edges == compiled.edges() | {(None, t.name) for t in compiled.tasks if not t.upstream}


def test_parallel_on_postgresql(tmp_path, codes):
    cfg, path = _config(tmp_path, warehouse={"url": PG_URL})
    d = _definition(cfg, path)
    assert d["executionType"] == "PARALLEL"
    by_code = {t["code"]: t["name"] for t in d["taskDefinitionJson"]}
    roots = {by_code[r["postTaskCode"]] for r in d["taskRelationJson"] if r["preTaskCode"] == 0}
    assert roots == {"ingest"}
    after_ingest = {by_code[r["postTaskCode"]] for r in d["taskRelationJson"] if by_code.get(r["preTaskCode"]) == "ingest"}
    assert after_ingest == {"validate", "stg_identities"}  # validate and the models run side by side


def test_registration_submits_with_the_password_and_brings_the_schedule_online(tmp_path, codes, monkeypatch):
    cfg, path = _config(tmp_path, dolphinscheduler={"alert_webhook": "http://127.0.0.1:9/hook"})
    monkeypatch.setenv("PYDS_USER_PASSWORD", "s3cret-user")
    monkeypatch.delenv("PYDS_JAVA_GATEWAY_AUTH_TOKEN", raising=False)  # the 3.1 gateway has no token
    monkeypatch.setattr(reg, "_connect", lambda sdk, c, token: None)
    sent = []

    class Api:
        online: list[int] = []

        def ensure_webhook_alert(self, name, url):
            assert (name, url) == ("cohortflow-analytics", "http://127.0.0.1:9/hook")
            return 6

        def ensure_schedule_online(self, code):
            self.online.append(code)
            return {"releaseState": "ONLINE"}

    def fake_submit(self):
        sent.append((self.user.password, self.user.tenant, sdk_ds31.payload(self)))
        return 4343

    api = Api()
    lines: list[str] = []
    with patch.object(sdk_ds31._definition_class(), "submit", fake_submit):
        out = reg.register(cfg, dry_run=False, config_path=path, echo=lines.append, api=api)
    assert [o["code"] for o in out] == [4343] and api.online == [4343]
    password, tenant, payload = sent[0]
    assert (password, tenant) == ("s3cret-user", "etl")
    assert (payload["warningType"], payload["warningGroupId"]) == ("FAILURE", 6)
    assert "online" in lines[-2] and ZONE in lines[-2]
    assert not any("s3cret" in line for line in lines)


def test_dry_run_needs_no_server_and_opens_no_connection(tmp_path):
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
            print("ATTEMPTS", attempts, file=sys.stderr)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYDS_", "COHORTFLOW_DS"))}
    proc = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ATTEMPTS []" in proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["generation"] == "3.1"
    (wf,) = doc["workflows"]
    assert wf["schedule"]["timezoneId"] == ZONE and all(t["failRetryTimes"] == 0 for t in wf["taskDefinitionJson"])
    again = CliRunner().invoke(main, ["register", "--dry-run", "--config", str(path)], env={"PYDS_USER_PASSWORD": None})
    assert json.loads(again.stdout) == doc  # deterministic placeholder codes


def test_registration_needs_the_user_password_and_the_rest_credentials(tmp_path, monkeypatch):
    cfg, path = _config(tmp_path)
    monkeypatch.delenv("PYDS_USER_PASSWORD", raising=False)
    with pytest.raises(reg.RegistrationError, match="PYDS_USER_PASSWORD is not set"):
        reg.register(cfg, dry_run=False, config_path=path)
    monkeypatch.setenv("PYDS_USER_PASSWORD", "pw")
    for k in ("COHORTFLOW_DS_TOKEN", "COHORTFLOW_DS_USER", "COHORTFLOW_DS_PASSWORD"):
        monkeypatch.delenv(k, raising=False)
    result = CliRunner().invoke(main, ["register", "--config", str(path)])
    assert result.exit_code == 2 and "COHORTFLOW_DS_TOKEN" in result.stderr and "REST API" in result.stderr


def test_the_two_sdk_extras_cannot_be_installed_together():
    """pip refuses both extras at once: they pin the one SDK package to two versions."""
    import tomllib

    from packaging.requirements import Requirement

    extras = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (r31,), (r32,) = (Requirement(x) for x in extras["ds31"]), (Requirement(x) for x in extras["ds32"])
    assert r31.name == r32.name == "apache-dolphinscheduler"
    assert not r32.specifier.contains("3.1.1") and not r31.specifier.contains("4.1.0")
    assert r31.specifier.contains("3.1.1") and r32.specifier.contains("4.1.0")
    deps = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not any(Requirement(d).name == "apache-dolphinscheduler" for d in deps)  # not a core dependency
