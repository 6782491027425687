"""cohortflow on a real DolphinScheduler 3.1.1 server, on DuckDB and on PostgreSQL.

The server is the one ``scripts/test.sh`` builds and starts once per run
(``scripts/dolphinscheduler.sh``); this module runs inside its network
namespace (``scripts/dolphinscheduler.sh exec``) and reads its settings from
the environment that ``scripts/dolphinscheduler.sh env`` prints. Without them
the tests are skipped locally, and fail under CI (``CI=true``).

One flow per engine, against the real server and SDK 3.1.1:
register (twice: updated in place, schedule online in the project's time zone,
the server's DAG = the compiled one, a task per model) → start one business
date → a backfill of three dates → a model made to fail (the alert reaches a
receiver on 127.0.0.1) → a rerun from the failed task. After each step every
published table equals a local run of the same dates on the same landing files.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cohortflow.dag import load_workflows
from cohortflow.demo import DemoSpec, generate
from cohortflow.ds_api import FINISHED_STATES, DolphinSchedulerApi
from cohortflow.models import published_models
from cohortflow.register import register
from cohortflow.runner import FAIL_ENV, run_workflow
from cohortflow.server_dag import compile_workflow
from tests.conftest import Project, pg_settings, short_analyses

pytestmark = [pytest.mark.dolphinscheduler, pytest.mark.sdk31]

TZ = "Asia/Shanghai"  # not UTC: the schedule must carry the project's zone
START = dt.date(2026, 11, 1)
DAYS = 5
WF = load_workflows()["cohortflow_nightly"]
FAILING_MODEL = "retention_cohorts"  # late in the DuckDB chain; on PostgreSQL only publish depends on it
RUN_TIMEOUT = 900


def _server_env() -> dict[str, str]:
    needed = ["COHORTFLOW_DS_TOKEN", "COHORTFLOW_DS_TASK_ENV", "COHORTFLOW_DOLPHINSCHEDULER__API_URL"]
    missing = [k for k in needed if not os.environ.get(k)]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI=true but {', '.join(missing)} not set: the DolphinScheduler tests cannot be skipped in CI")
        pytest.skip("no DolphinScheduler server (run scripts/test.sh, or eval \"$(scripts/dolphinscheduler.sh env)\")")
    return {k: v for k, v in os.environ.items() if k.startswith(("COHORTFLOW_DS", "COHORTFLOW_DOLPHINSCHEDULER__"))}


class _Receiver(ThreadingHTTPServer):
    """An HTTP endpoint on 127.0.0.1 that records the alerts DolphinScheduler posts to it."""

    def __init__(self) -> None:
        self.alerts: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(handler):  # noqa: N802,N805
                body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
                try:
                    self.alerts.append(json.loads(body))
                except ValueError:
                    self.alerts.append({"raw": body.decode(errors="replace")})
                handler.send_response(200)
                handler.send_header("Content-Length", "2")
                handler.end_headers()
                handler.wfile.write(b"ok")

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/alerts"


@pytest.fixture(scope="module")
def receiver():
    server = _Receiver()
    yield server
    server.shutdown()
    server.server_close()


def _published(project: Project) -> dict[str, list[tuple]]:
    wh = project.warehouse()
    try:
        out = {}
        with wh.begin() as conn:
            for model in published_models():
                cols = ", ".join(c.name for c in model.columns)
                rows = wh.execute(conn, f"select {cols} from reports.{model.name}").fetchall()
                out[model.name] = sorted(
                    (tuple(round(v, 9) if isinstance(v, float) else v for v in row) for row in rows), key=repr
                )
        return out
    finally:
        wh.dispose()


def _run_locally(project: Project, dates) -> None:
    cfg, wh = project.config(), project.warehouse()
    try:
        for d in dates:
            run_workflow(cfg, wh, WF, d, echo=lambda _m: None)
    finally:
        wh.dispose()


class _Flow:
    """The project on the server and its local twin (same config and landing files, its own warehouse)."""

    def __init__(self, root: Path, engine: str, receiver: _Receiver) -> None:
        self.env = _server_env()
        self.engine = engine
        ds = {
            "project": f"cohortflow_it_{engine}",
            "tenant": os.environ.get("COHORTFLOW_DOLPHINSCHEDULER__TENANT") or "root",
            "alert_webhook": receiver.url,
        }
        overrides = {"timezone": TZ, "analyses": short_analyses(), "dolphinscheduler": ds}
        self.server = Project(root / "server", engine, **overrides)
        self.local = Project(root / "local", engine, **overrides)
        generate(DemoSpec(users=150, days=DAYS, start_date=START, timezone=TZ, seed=5, fmt="ark"), self.server.landing)
        shutil.copytree(self.server.landing, self.local.landing)
        self.cfg = self.server.config()
        self.set_task_env()

    def set_task_env(self, **extra: str) -> None:
        """What every task of the server sources first: the warehouse of this project (a secret), and test hooks."""
        values = {**self.server.environ, **extra}
        Path(self.env["COHORTFLOW_DS_TASK_ENV"]).write_text(
            "".join(f"export {k}='{v}'\n" for k, v in values.items()), encoding="utf-8"
        )

    def api(self) -> DolphinSchedulerApi:
        return DolphinSchedulerApi(self.cfg, WF.name)

    def compiled(self):
        return compile_workflow(WF, self.cfg, "3.1", config_path=self.server.config_path)

    def wait(self, api: DolphinSchedulerApi, known: set[int], count: int) -> list[dict]:
        """Wait until ``count`` instances not in ``known`` exist and have all finished; return them, oldest first."""
        deadline = time.monotonic() + RUN_TIMEOUT * count
        while time.monotonic() < deadline:
            new = [i for i in api.recent_instances(20) if i["id"] not in known]
            if len(new) >= count and all(i["state"] in FINISHED_STATES for i in new):
                return sorted(new, key=lambda i: i["id"])
            time.sleep(3)
        raise AssertionError(f"instances not finished in time: {[(i['id'], i['state']) for i in new]}")

    def cleanup(self) -> None:
        Path(self.env["COHORTFLOW_DS_TASK_ENV"]).write_text("", encoding="utf-8")
        self.server.cleanup()
        self.local.cleanup()


def _business_date(instance: dict) -> dt.date:
    return dt.date.fromisoformat(instance["scheduleTime"][:10]) - dt.timedelta(days=1)


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_register_run_backfill_fail_alert_rerun_on_the_server(engine, tmp_path, receiver, monkeypatch):
    if engine == "postgres":
        pg_settings()
    flow = _Flow(tmp_path, engine, receiver)
    try:
        _flow(flow, receiver, monkeypatch)
    finally:
        flow.cleanup()


def _flow(flow: _Flow, receiver: _Receiver, monkeypatch) -> None:
    monkeypatch.setenv("PYDS_USER_PASSWORD", "cohortflow-it-password")
    dates = [START + dt.timedelta(days=i) for i in range(DAYS)]
    compiled = flow.compiled()
    expected_tasks = {t.name for t in compiled.tasks}
    assert {"ingest", "validate", "publish", FAILING_MODEL, "stg_events"} <= expected_tasks

    # -- register twice: updated in place, schedule online in the project's zone ------------------
    lines: list[str] = []
    first = register(flow.cfg, dry_run=False, config_path=flow.server.config_path, echo=lines.append)
    second = register(flow.cfg, dry_run=False, config_path=flow.server.config_path, echo=lines.append)
    assert first[0]["code"] == second[0]["code"]
    api = flow.api()
    code = api.workflow_code
    assert code == first[0]["code"]
    schedule = api.schedule(code)
    assert schedule["releaseState"] == "ONLINE"
    assert schedule["timezoneId"] == TZ and schedule["crontab"] == WF.schedule
    group = api.find_alert_group(f"cohortflow-{flow.cfg.dolphinscheduler.project}")
    assert group is not None and schedule["warningGroupId"] == group and schedule["warningType"] == "FAILURE"

    # the DAG on the server is the compiled one: a task per model, the declared edges
    definition = api.definition(code)
    names = {t["code"]: t["name"] for t in definition["taskDefinitionList"]}
    assert set(names.values()) == expected_tasks
    edges = {(names[r["preTaskCode"]], names[r["postTaskCode"]]) for r in definition["processTaskRelationList"] if r["preTaskCode"]}
    assert edges == compiled.edges()
    assert all(t["failRetryTimes"] == 0 for t in definition["taskDefinitionList"])  # 3.1.1: retries stall a failed run
    assert definition["processDefinition"]["executionType"] == ("SERIAL_WAIT" if flow.engine == "duckdb" else "PARALLEL")

    # -- one business date ------------------------------------------------------------------------
    known = {i["id"] for i in api.recent_instances(50)}
    api.start_date(dates[0])
    (inst,) = flow.wait(api, known, 1)
    assert inst["state"] == "SUCCESS" and _business_date(inst) == dates[0]
    tasks = api.task_instances(inst["id"])
    assert {t["name"] for t in tasks} == expected_tasks and {t["state"] for t in tasks} == {"SUCCESS"}
    _run_locally(flow.local, dates[:1])
    published = _published(flow.server)
    assert published == _published(flow.local)
    assert published["active_users_daily"], "the date's rows are published"

    # -- a backfill of three dates ------------------------------------------------------------------
    known |= {inst["id"]}
    api.start_backfill(dates[1], dates[3])
    backfill = flow.wait(api, known, 3)
    assert [_business_date(i) for i in backfill] == dates[1:4]
    assert all(i["state"] == "SUCCESS" and i["commandType"] == "COMPLEMENT_DATA" for i in backfill)
    for i in backfill:
        assert {t["state"] for t in api.task_instances(i["id"])} == {"SUCCESS"}
    _run_locally(flow.local, dates[1:4])
    assert _published(flow.server) == _published(flow.local)

    # -- a model fails: FAILURE on its task, the alert arrives, a rerun from it finishes the date -----
    known |= {i["id"] for i in backfill}
    alerts_before = len(receiver.alerts)
    flow.set_task_env(**{FAIL_ENV: FAILING_MODEL})
    api.start_date(dates[4])
    (failed,) = flow.wait(api, known, 1)
    assert failed["state"] == "FAILURE"
    states = {t["name"]: t["state"] for t in api.task_instances(failed["id"])}
    assert states[FAILING_MODEL] == "FAILURE"
    downstream = compiled.downstream(FAILING_MODEL)
    assert all(state == "SUCCESS" for name, state in states.items() if name != FAILING_MODEL)
    assert not downstream & set(states), "nothing downstream of the failed task ran"
    deadline = time.monotonic() + 120
    while len(receiver.alerts) == alerts_before and time.monotonic() < deadline:
        time.sleep(2)
    alerts = receiver.alerts[alerts_before:]
    assert alerts, "the failure alert reached the receiver"
    assert alerts[0]["source"] == "cohortflow" and WF.name in alerts[0]["text"]

    flow.set_task_env()
    before = {t["id"] for t in api.task_attempts(failed["id"])}
    api.rerun_failed(failed["id"])
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        current = api.instance(failed["id"])
        if current.get("runTimes", 1) >= 2 and current["state"] in FINISHED_STATES:
            break
        time.sleep(3)
    assert current["state"] == "SUCCESS", current["state"]
    rerun = {t["name"] for t in api.task_attempts(failed["id"]) if t["id"] not in before}
    assert rerun == {FAILING_MODEL} | downstream
    assert {t["state"] for t in api.task_instances(failed["id"])} == {"SUCCESS"}
    _run_locally(flow.local, dates[4:])
    assert _published(flow.server) == _published(flow.local)
