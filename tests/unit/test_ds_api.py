"""The REST client of DolphinScheduler, offline: the requests it builds and how it reads the answers.

The client is exercised against a small recording ``http.server`` on 127.0.0.1
(it checks the requests we build, not DolphinScheduler itself; the real server
is exercised by tests/integration/test_dolphinscheduler.py). 3.1 and 3.2 share
these paths.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from cohortflow.cli import main
from cohortflow.config import load_config
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
from tests.conftest import write_config

ZONE = "America/New_York"
PG_URL = "postgresql+psycopg://cohortflow@db.internal:5432/analytics"


def _config(tmp_path: Path, **overrides):
    ds = {"project": "analytics", "tenant": "etl", "worker_group": "batch", **overrides.pop("dolphinscheduler", {})}
    path = write_config(tmp_path, timezone=ZONE, dolphinscheduler=ds, **overrides)
    return load_config(path, environ={}), path


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
        if path == f"/projects/{PROJECT_CODE}/executors/execute":
            return self._answer(200, {"code": 0, "msg": "success", "data": None})
        if path == f"/projects/{PROJECT_CODE}/schedules" and self.command == "GET":
            return self._answer(200, page([dict(self.server.schedule)]))
        if path == f"/projects/{PROJECT_CODE}/schedules/31/online":
            self.server.schedule["releaseState"] = "ONLINE"
            return self._answer(200, {"code": 0, "msg": "success", "data": None})
        if path == "/ui-plugins/query-by-type":
            plugins = [{"id": 1, "pluginName": "Email"}, {"id": 7, "pluginName": "Http"}]
            return self._answer(200, {"code": 0, "msg": "success", "data": plugins})
        if path == "/ui-plugins/7":
            params = [{"field": f, "name": f"$t('{f}')", "type": "input", "value": None, "props": None}
                      for f in ("url", "requestType", "headerParams", "bodyParams", "contentField")]
            return self._answer(200, {"code": 0, "msg": "success", "data": {"id": 7, "pluginParams": json.dumps(params)}})
        if path == "/alert-plugin-instances/list":
            return self._answer(200, {"code": 0, "msg": "success", "data": list(self.server.instances)})
        if path == "/alert-plugin-instances" and self.command == "POST":
            self.server.instances.append({"id": 12, "instanceName": form["instanceName"]})
            return self._answer(200, {"code": 0, "msg": "success", "data": None})
        if path.startswith("/alert-plugin-instances/") and self.command == "PUT":
            return self._answer(200, {"code": 0, "msg": "success", "data": None})
        if path == "/alert-groups/list":
            return self._answer(200, {"code": 0, "msg": "success", "data": list(self.server.groups)})
        if path == "/alert-groups" and self.command == "POST":
            self.server.groups.append({"id": 4, "groupName": form["groupName"]})
            return self._answer(200, {"code": 0, "msg": "success", "data": None})
        if path.startswith("/alert-groups/") and self.command == "PUT":
            return self._answer(200, {"code": 0, "msg": "success", "data": None})
        if path == "/projects/broken":
            return self._answer(200, {"code": 50014, "msg": "query project error\nat line two", "data": None})
        return self._answer(404)

    do_GET = do_POST = do_PUT = _handle


@pytest.fixture
def ds_server():
    server = _Server(("127.0.0.1", 0), _Handler)
    server.requests = []
    server.schedule = {"id": 31, "releaseState": "OFFLINE", "timezoneId": ZONE, "crontab": "0 30 2 * * ? *"}
    server.instances, server.groups = [], []
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
    assert lines[-1] == f"workflow cohortflow_nightly (code {WORKFLOW_CODE}, ?): schedule '0 30 2 * * ? *' in {ZONE}, OFFLINE"
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


# -- reruns, schedules, alerts --------------------------------------------------------------


def test_rerun_from_the_failed_task_of_the_latest_failed_instance(tmp_path, ds_server):
    _, path = _api_config(tmp_path, ds_server)
    result = CliRunner().invoke(
        main, ["rerun", "--on", "dolphinscheduler", "--config", str(path)], env={"COHORTFLOW_DS_TOKEN": TOKEN}
    )
    assert result.exit_code == 0, result.output
    assert "instance 5 of cohortflow_nightly rerun from its failed tasks" in result.stdout
    execute = ds_server.requests[-1]
    assert (execute["method"], execute["path"]) == ("POST", f"/dolphinscheduler/projects/{PROJECT_CODE}/executors/execute")
    assert execute["form"] == {"processInstanceId": "5", "executeType": "START_FAILURE_TASK_PROCESS"}
    listing = [r for r in ds_server.requests if r["path"].endswith("/process-instances")][0]
    assert listing["query"]["processDefineCode"] == str(WORKFLOW_CODE)


def test_rerun_needs_a_server(tmp_path):
    _, path = _config(tmp_path)
    result = CliRunner().invoke(main, ["rerun", "--config", str(path)])
    assert result.exit_code == 2 and "--on" in result.output


def test_an_offline_schedule_is_brought_online_once(tmp_path, ds_server):
    cfg, _ = _api_config(tmp_path, ds_server)
    api = DolphinSchedulerApi(cfg, "cohortflow_nightly", environ={"COHORTFLOW_DS_TOKEN": TOKEN})
    assert api.ensure_schedule_online(WORKFLOW_CODE)["releaseState"] == "ONLINE"
    online = [r for r in ds_server.requests if r["path"].endswith("/online")]
    assert [(r["method"], r["path"]) for r in online] == [("POST", f"/dolphinscheduler/projects/{PROJECT_CODE}/schedules/31/online")]
    schedules = [r for r in ds_server.requests if r["path"].endswith("/schedules")][0]
    assert schedules["query"]["processDefinitionCode"] == str(WORKFLOW_CODE)
    api.ensure_schedule_online(WORKFLOW_CODE)
    assert len([r for r in ds_server.requests if r["path"].endswith("/online")]) == 1  # already online: no call


def test_webhook_alert_plugin_instance_and_group_are_created_then_updated(tmp_path, ds_server):
    cfg, _ = _api_config(tmp_path, ds_server)
    api = DolphinSchedulerApi(cfg, environ={"COHORTFLOW_DS_TOKEN": TOKEN})
    assert api.ensure_webhook_alert("cohortflow-analytics", "http://127.0.0.1:9999/hook") == 4
    create = next(r for r in ds_server.requests if r["path"].endswith("/alert-plugin-instances") and r["method"] == "POST")
    assert create["form"]["pluginDefineId"] == "7" and create["form"]["instanceName"] == "cohortflow-analytics"
    values = {p["field"]: p["value"] for p in json.loads(create["form"]["pluginInstanceParams"])}
    assert values["url"] == "http://127.0.0.1:9999/hook" and values["requestType"] == "POST"
    assert json.loads(values["bodyParams"]) == {"source": "cohortflow"} and values["contentField"] == "text"
    group = next(r for r in ds_server.requests if r["path"].endswith("/alert-groups") and r["method"] == "POST")
    assert group["form"]["groupName"] == "cohortflow-analytics" and group["form"]["alertInstanceIds"] == "12"

    ds_server.requests.clear()
    assert api.ensure_webhook_alert("cohortflow-analytics", "http://127.0.0.1:9999/other") == 4
    writes = [(r["method"], r["path"]) for r in ds_server.requests if r["method"] != "GET"]
    assert writes == [("PUT", "/dolphinscheduler/alert-plugin-instances/12"), ("PUT", "/dolphinscheduler/alert-groups/4")]


def test_runs_started_here_alert_the_group_register_set_up(tmp_path, ds_server):
    cfg, _ = _api_config(tmp_path, ds_server, dolphinscheduler={"alert_webhook": "http://127.0.0.1:9999/hook"})
    ds_server.groups.append({"id": 4, "groupName": "cohortflow-analytics"})
    api = DolphinSchedulerApi(cfg, "cohortflow_nightly", environ={"COHORTFLOW_DS_TOKEN": TOKEN})
    api.start_date(dt.date(2026, 11, 1))
    form = ds_server.requests[-1]["form"]
    assert (form["warningType"], form["warningGroupId"]) == ("FAILURE", "4")
    assert form["failureStrategy"] == "CONTINUE"  # a failed model stops its downstream only
    assert json.loads(form["scheduleTime"]) == {
        "complementStartDate": "2026-11-02 00:00:00",
        "complementEndDate": "2026-11-02 23:59:59",
    }
