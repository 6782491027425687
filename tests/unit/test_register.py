"""Registration on DolphinScheduler, offline: the compiled SDK payloads, the dry run, the REST glue.

Task codes come from the gateway when the SDK builds a task; like the SDK's
own tests, these tests patch ``pydolphinscheduler.core.task.Task.gen_code_and_version``.
The REST client is exercised against a small recording ``http.server`` on
127.0.0.1 (it checks the requests we build, not DolphinScheduler itself).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import shlex
import subprocess
import sys
import textwrap
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from unittest.mock import patch

import click
import pytest
from click.testing import CliRunner

from cohortflow import register as reg
from cohortflow.cli import main
from cohortflow.config import Config, Source, load_config
from cohortflow.dag import BIZ_DATE, load_workflows
from cohortflow.ds_api import (
    RUN_MODE_PARALLEL,
    RUN_MODE_SERIAL,
    DolphinSchedulerApi,
    DSApiError,
    DSConfigError,
    backfill_mode,
    complement_schedule,
    server_status,
)
from cohortflow.runner import STAGES
from tests.conftest import write_config

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
    reg._sdk(Config(sources=[Source(name="app", format="ark", path="ark")]))  # no import-time gateway probe
    counter = itertools.count(7_000_000_000_000)
    with patch("pydolphinscheduler.core.task.Task.gen_code_and_version", side_effect=lambda: (next(counter), 1)):
        yield


@pytest.fixture
def cfg_path(tmp_path):
    cfg, path = _config(tmp_path)
    reg._sdk(cfg)  # import the SDK without its import-time gateway probe, before anything patches it
    return cfg, path


def _defs(cfg, path, **kw):
    return {d["name"]: d for d in reg.definitions(cfg, config_path=path, today=TODAY, **kw)}


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


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_tasks_have_retries_timeouts_and_descriptions(name, cfg_path, codes):
    cfg, path = cfg_path
    wf = WORKFLOWS[name]
    tasks = {t["name"]: t for t in _defs(cfg, path)[name]["taskDefinitionJson"]}
    assert set(tasks) == {t.name for t in wf.tasks}
    for declared in wf.tasks:
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
        assert argv[0] == "cohortflow"
        assert argv[1:5] == wf.task(t["name"]).command_args(BIZ_DATE) == ["task", t["name"], "--date", BIZ_DATE]
        assert argv[2] in STAGES
        cmd = main.get_command(click.Context(main), argv[1])
        assert cmd is not None
        # DolphinScheduler substitutes its parameters in the script text; the CLI then parses the result.
        real = [a.replace(BIZ_DATE, "20261101").replace("${system.workflow.instance.id}", "42") for a in argv[2:]]
        with cmd.make_context(argv[1], real, resilient_parsing=False) as sub:
            assert str(sub.params["business_date"]) == "2026-11-01"
            assert sub.params["config_path"] == Path(path)
            assert sub.params["workflow"] == wf.name
            assert sub.params["run_id"] == "ds-42"


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_edges_equal_the_declaration(name, cfg_path, codes):
    cfg, path = cfg_path
    wf = WORKFLOWS[name]
    d = _defs(cfg, path)[name]
    by_code = {t["code"]: t["name"] for t in d["taskDefinitionJson"]}
    edges = {(by_code.get(r["preTaskCode"]), by_code[r["postTaskCode"]]) for r in d["taskRelationJson"]}
    expected = {(up, t.name) for t in wf.tasks for up in t.upstream}
    expected |= {(None, t.name) for t in wf.tasks if not t.upstream}  # roots hang off code 0
    assert edges == expected


def test_failure_alerts_when_an_alert_group_is_configured(tmp_path, codes):
    cfg, path = _config(tmp_path, dolphinscheduler={"alert_group": "3"})
    d = reg.definitions(cfg, config_path=path, today=TODAY)[0]
    assert (d["warningType"], d["warningGroupId"]) == ("FAILURE", 3)


def test_a_non_numeric_alert_group_is_a_clear_config_error(tmp_path):
    from cohortflow.config import ConfigError

    with pytest.raises(ConfigError, match=r"dolphinscheduler\.alert_group"):
        _config(tmp_path, dolphinscheduler={"alert_group": "oncall"})


def test_the_config_schedule_overrides_the_declared_one(tmp_path, codes):
    cfg, path = _config(tmp_path, schedule={"cron": "0 15 4 * * ? *"})
    assert reg.definitions(cfg, config_path=path, today=TODAY)[0]["schedule"]["crontab"] == "0 15 4 * * ? *"


def test_postgresql_workflows_may_run_instances_in_parallel(tmp_path, codes):
    cfg, path = _config(tmp_path, warehouse={"url": PG_URL})
    assert reg.definitions(cfg, config_path=path, today=TODAY)[0]["executionType"] == "PARALLEL"


# -- dry run --------------------------------------------------------------------------------


def test_dry_run_cli_prints_json_with_placeholder_codes(tmp_path):
    _, path = _config(tmp_path)
    runner = CliRunner()
    env = {"PYDS_JAVA_GATEWAY_AUTH_TOKEN": None, "PYDS_USER_PASSWORD": None}
    first = runner.invoke(main, ["register", "--dry-run", "--config", str(path)], env=env)
    assert first.exit_code == 0, first.output
    doc = json.loads(first.stdout)
    assert doc["dry_run"] is True and "placeholder" in doc["note"]
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
        reg.register(cfg, dry_run=False, config_path=path)
    assert "gateway-token-xyz" not in str(info.value) and "\n" not in str(info.value)


def test_registration_submits_each_workflow_with_tenant_and_password_from_the_environment(cfg_path, codes, monkeypatch):
    cfg, path = cfg_path
    monkeypatch.setenv("PYDS_JAVA_GATEWAY_AUTH_TOKEN", "gateway-token")
    monkeypatch.setenv("PYDS_USER_PASSWORD", "s3cret-user")
    connected, submitted = [], []
    monkeypatch.setattr(reg, "_connect", lambda c, token: connected.append(token))

    def fake_submit(self):
        submitted.append((self.name, self.user.tenant, self.user.password, reg.payload(self)))
        return 4242

    lines: list[str] = []
    with patch("pydolphinscheduler.core.workflow.Workflow.submit", fake_submit):
        out = reg.register(cfg, dry_run=False, config_path=path, echo=lines.append)
    assert connected == ["gateway-token"]
    assert [s[0] for s in submitted] == sorted(WORKFLOWS) and out[0]["code"] == 4242
    assert all(s[1] == "etl" and s[2] == "s3cret-user" for s in submitted)
    assert all(s[3]["schedule"]["timezoneId"] == ZONE for s in submitted)
    assert "updates these workflows in place" in lines[-1]
    assert not any("s3cret" in line or "gateway-token" in line for line in lines)


# -- the REST client ------------------------------------------------------------------------

TOKEN = "api-token-123"
PASSWORD = "admin-pw-456"
SESSION = "session-789"
PROJECT_CODE, WORKFLOW_CODE = 111, 222


class _Server(ThreadingHTTPServer):
    requests: list[dict]


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def _answer(self, status: int, body: dict | None = None) -> None:
        raw = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _handle(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode())) if length else {}
        self.server.requests.append(
            {
                "method": self.command,
                "path": url.path,
                "query": dict(urllib.parse.parse_qsl(url.query)),
                "form": form,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "content_type": self.headers.get("Content-Type"),
            }
        )
        path = url.path.removeprefix("/dolphinscheduler")
        if path == "/login":
            if form.get("userName") == "admin" and form.get("userPassword") == PASSWORD:
                return self._answer(200, {"code": 0, "msg": "login success", "data": {"sessionId": SESSION}})
            return self._answer(200, {"code": 10013, "msg": "user name or password error", "data": None})
        if self.headers.get("token") != TOKEN and self.headers.get("sessionId") != SESSION:
            return self._answer(401)
        page = lambda items: {"code": 0, "msg": "success", "data": {"totalList": items, "total": len(items)}}  # noqa: E731
        if path == "/projects":
            return self._answer(200, page([{"name": "other", "code": 1}, {"name": "analytics", "code": PROJECT_CODE}]))
        if path == f"/projects/{PROJECT_CODE}/process-definition":
            return self._answer(200, page([{"name": "cohortflow_nightly", "code": WORKFLOW_CODE}]))
        if path == f"/projects/{PROJECT_CODE}/executors/start-process-instance":
            return self._answer(200, {"code": 0, "msg": "success", "data": 98765})
        if path == f"/projects/{PROJECT_CODE}/process-instances":
            return self._answer(
                200,
                page(
                    [
                        {
                            "id": 5,
                            "name": "cohortflow_nightly-1-20261102",
                            "state": "FAILURE",
                            "commandType": "COMPLEMENT_DATA",
                            "scheduleTime": "2026-11-02 02:30:00",
                        }
                    ]
                ),
            )
        if path == f"/projects/{PROJECT_CODE}/process-instances/5/tasks":
            tasks = [
                {"name": "ingest", "state": "SUCCESS", "startTime": "2026-11-02 02:30:01", "endTime": "2026-11-02 02:31:00", "retryTimes": 0},
                {"name": "models", "state": "FAILURE", "startTime": "2026-11-02 02:31:02", "endTime": "2026-11-02 02:33:00", "retryTimes": 1},
            ]
            return self._answer(200, {"code": 0, "msg": "success", "data": {"taskList": tasks, "processInstanceState": "FAILURE"}})
        if path == "/projects/broken":
            return self._answer(200, {"code": 50014, "msg": "query project error\nat line two", "data": None})
        return self._answer(404)

    do_GET = do_POST = _handle


@pytest.fixture
def ds_server():
    server = _Server(("127.0.0.1", 0), _Handler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _api_config(tmp_path, server, **overrides):
    url = f"http://127.0.0.1:{server.server_address[1]}/dolphinscheduler"
    return _config(tmp_path, dolphinscheduler={"api_url": url, **overrides.pop("dolphinscheduler", {})}, **overrides)


def test_backfill_request_with_a_token(tmp_path, ds_server):
    cfg, _ = _api_config(tmp_path, ds_server, dolphinscheduler={"alert_group": "3"})
    api = DolphinSchedulerApi(cfg, "cohortflow_nightly", environ={"COHORTFLOW_DS_TOKEN": TOKEN})
    assert api.start_backfill(dt.date(2026, 11, 1), dt.date(2026, 11, 5), parallelism=None, run_mode=RUN_MODE_SERIAL) == 98765
    projects, definitions, start = ds_server.requests
    assert (projects["method"], projects["path"], projects["query"]["searchVal"]) == ("GET", "/dolphinscheduler/projects", "analytics")
    assert definitions["path"] == f"/dolphinscheduler/projects/{PROJECT_CODE}/process-definition"
    assert definitions["query"]["searchVal"] == "cohortflow_nightly"
    assert start["method"] == "POST"
    assert start["path"] == f"/dolphinscheduler/projects/{PROJECT_CODE}/executors/start-process-instance"
    assert start["content_type"] == "application/x-www-form-urlencoded"
    assert all(r["headers"]["token"] == TOKEN for r in ds_server.requests)
    form = start["form"]
    assert form["processDefinitionCode"] == str(WORKFLOW_CODE)
    assert form["execType"] == "COMPLEMENT_DATA"
    # ${system.biz.date} is the schedule date minus one day: business dates 11-01..11-05 are scheduled 11-02..11-06.
    assert json.loads(form["scheduleTime"]) == {
        "complementStartDate": "2026-11-02 00:00:00",
        "complementEndDate": "2026-11-06 23:59:59",
    }
    assert form["runMode"] == "RUN_MODE_SERIAL" and "expectedParallelismNumber" not in form
    assert form["executionOrder"] == "ASC_ORDER" and form["failureStrategy"] == "END"
    assert (form["warningType"], form["warningGroupId"]) == ("FAILURE", "3")
    assert (form["tenantCode"], form["workerGroup"]) == ("etl", "batch")


def test_parallel_backfill_sends_the_expected_parallelism(tmp_path, ds_server):
    cfg, _ = _api_config(tmp_path, ds_server, warehouse={"url": PG_URL})
    run_mode, n = backfill_mode(cfg.warehouse_url, 4)
    api = DolphinSchedulerApi(cfg, "cohortflow_nightly", environ={"COHORTFLOW_DS_TOKEN": TOKEN})
    api.start_backfill(dt.date(2026, 11, 1), dt.date(2026, 11, 30), parallelism=n, run_mode=run_mode)
    form = ds_server.requests[-1]["form"]
    assert (form["runMode"], form["expectedParallelismNumber"]) == ("RUN_MODE_PARALLEL", "4")
    assert (form["warningType"], "warningGroupId" in form) == ("NONE", False)


def test_parallelism_rule():
    assert backfill_mode("duckdb:///w.duckdb", None) == (RUN_MODE_SERIAL, None)
    assert backfill_mode("duckdb:///w.duckdb", 1) == (RUN_MODE_SERIAL, None)
    assert backfill_mode(PG_URL, None) == (RUN_MODE_SERIAL, None)
    assert backfill_mode(PG_URL, 4) == (RUN_MODE_PARALLEL, 4)
    with pytest.raises(DSConfigError, match="DuckDB warehouse takes one writer"):
        backfill_mode("duckdb:///w.duckdb", 4)
    with pytest.raises(DSConfigError, match="end 2026-11-01 is before start"):
        complement_schedule(dt.date(2026, 11, 2), dt.date(2026, 11, 1))


def test_login_then_session_header_and_no_secret_in_errors(tmp_path, ds_server):
    cfg, _ = _api_config(tmp_path, ds_server)
    env = {"COHORTFLOW_DS_USER": "admin", "COHORTFLOW_DS_PASSWORD": PASSWORD}
    api = DolphinSchedulerApi(cfg, "cohortflow_nightly", environ=env)
    assert api.workflow_code == WORKFLOW_CODE
    login = ds_server.requests[0]
    assert (login["method"], login["path"]) == ("POST", "/dolphinscheduler/login")
    assert login["form"] == {"userName": "admin", "userPassword": PASSWORD}
    assert all(r["headers"].get("sessionid") == SESSION for r in ds_server.requests[1:])

    bad = DolphinSchedulerApi(cfg, environ={"COHORTFLOW_DS_USER": "admin", "COHORTFLOW_DS_PASSWORD": "wrong-pw"})
    with pytest.raises(DSApiError) as info:
        bad.project_code
    message = str(info.value)
    assert "POST http://127.0.0.1:" in message and "/dolphinscheduler/login" in message
    assert "user name or password error" in message and "wrong-pw" not in message and "\n" not in message


def test_api_errors_are_one_line_with_the_url(tmp_path, ds_server):
    cfg, _ = _api_config(tmp_path, ds_server)
    bad_token = DolphinSchedulerApi(cfg, environ={"COHORTFLOW_DS_TOKEN": "expired-token"})
    with pytest.raises(DSApiError, match=r"GET http://127\.0\.0\.1:\d+/dolphinscheduler/projects\?.*HTTP 401") as info:
        bad_token.project_code
    assert "expired-token" not in str(info.value)
    api = DolphinSchedulerApi(cfg, environ={"COHORTFLOW_DS_TOKEN": TOKEN})
    with pytest.raises(DSApiError, match=r"error 50014: query project error$"):
        api._call("GET", "/projects/broken")
    missing = DolphinSchedulerApi(cfg, "no_such_workflow", environ={"COHORTFLOW_DS_TOKEN": TOKEN})
    with pytest.raises(DSApiError, match="no workflow in project analytics named 'no_such_workflow'"):
        missing.workflow_code
    cfg_down, _ = _config(tmp_path / "down", dolphinscheduler={"api_url": "http://127.0.0.1:9/dolphinscheduler"})
    with pytest.raises(DSApiError, match=r"GET http://127\.0\.0\.1:9/dolphinscheduler/projects.*cannot connect"):
        DolphinSchedulerApi(cfg_down, environ={"COHORTFLOW_DS_TOKEN": TOKEN}).project_code


def test_missing_api_credentials_are_a_clear_error(tmp_path):
    cfg, _ = _config(tmp_path)
    with pytest.raises(DSConfigError, match="set COHORTFLOW_DS_TOKEN .* or COHORTFLOW_DS_USER and COHORTFLOW_DS_PASSWORD"):
        DolphinSchedulerApi(cfg, environ={"COHORTFLOW_DS_USER": "admin"})


def test_server_status_lists_instances_with_task_states(tmp_path, ds_server):
    cfg, _ = _api_config(tmp_path, ds_server)
    text = server_status(DolphinSchedulerApi(cfg, environ={"COHORTFLOW_DS_TOKEN": TOKEN}), limit=3)
    lines = text.splitlines()
    assert lines[0].startswith("instance 5  cohortflow_nightly-1-20261102  FAILURE  COMPLEMENT_DATA  business date 2026-11-01")
    assert lines[1].split()[:2] == ["ingest", "SUCCESS"] and lines[2].split()[:2] == ["models", "FAILURE"]
    assert "retries=1" in lines[2]
    instances = ds_server.requests[1]
    assert instances["query"]["pageSize"] == "3" and "processDefineCode" not in instances["query"]


# -- the CLI verbs --------------------------------------------------------------------------


def test_backfill_on_dolphinscheduler_cli(tmp_path, ds_server):
    _, path = _api_config(tmp_path, ds_server)
    args = ["backfill", "--config", str(path), "--start", "20261101", "--end", "2026-11-03", "--on", "dolphinscheduler"]
    result = CliRunner().invoke(main, args, env={"COHORTFLOW_DS_TOKEN": TOKEN})
    assert result.exit_code == 0, result.output
    assert "started on DolphinScheduler" in result.stdout
    form = ds_server.requests[-1]["form"]
    assert json.loads(form["scheduleTime"])["complementEndDate"] == "2026-11-04 23:59:59"
    assert form["runMode"] == "RUN_MODE_SERIAL"


def test_backfill_cli_usage_errors(tmp_path, ds_server):
    _, path = _api_config(tmp_path, ds_server)
    runner = CliRunner()
    base = ["backfill", "--config", str(path), "--start", "2026-11-01", "--end", "2026-11-03"]
    duck = runner.invoke(main, [*base, "--on", "dolphinscheduler", "--parallelism", "4"], env={"COHORTFLOW_DS_TOKEN": TOKEN})
    assert duck.exit_code == 2 and "DuckDB warehouse takes one writer" in duck.stderr
    local = runner.invoke(main, [*base, "--parallelism", "2"])
    assert local.exit_code == 2 and "--parallelism applies to --on dolphinscheduler" in local.stderr
    no_creds = runner.invoke(
        main, [*base, "--on", "dolphinscheduler"], env={"COHORTFLOW_DS_TOKEN": None, "COHORTFLOW_DS_USER": None}
    )
    assert no_creds.exit_code == 2 and "COHORTFLOW_DS_TOKEN" in no_creds.stderr
    assert not any(r["path"].endswith("start-process-instance") for r in ds_server.requests)


def test_status_server_cli(tmp_path, ds_server):
    _, path = _api_config(tmp_path, ds_server)
    result = CliRunner().invoke(main, ["status", "--server", "--config", str(path)], env={"COHORTFLOW_DS_TOKEN": TOKEN})
    assert result.exit_code == 0, result.output
    assert "instance 5" in result.stdout and "models" in result.stdout
